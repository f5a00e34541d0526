"""Normalization of what people type into forms: emails, phones, countries, domains."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import email_validator
import idna
import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email

# A conservative shape most addresses have; anything else goes through email-validator.
_PLAIN_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)
# The same with letters and digits of any script before the @-sign (`\w`: Unicode letters,
# digits and `_`), as in "müller@acme.de". email-validator accepts every such address
# whose mailbox name is NFC-normalized and whose UTF-8 form fits in 254 bytes, and gives it
# back unchanged; its checks cost ~60 µs an address, mostly spent on the (ASCII) domain.
_WORD_EMAIL = re.compile(
    r"^[\w!#$%&'*+/=?^`{|}~-]+(\.[\w!#$%&'*+/=?^`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)
_URL_PREFIX = re.compile(r"^[a-z][a-z0-9+.-]*://")
_URL_REST = re.compile(r"[/?#]")  # where a URL's host ends: its path, query or fragment


def normalize_email(raw: str) -> str:
    """Trimmed, lower-cased, domain in IDNA (ASCII) form; raises ValueError if invalid."""
    candidate = raw.strip().lower()
    if candidate.rpartition(".")[2] in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        return _validated(candidate)  # (.local, .test, ...: refused, saying why)
    if len(candidate) <= 254 and _PLAIN_EMAIL.match(candidate):
        return candidate
    if (
        _WORD_EMAIL.match(candidate)
        and len(candidate.encode()) <= 254
        and unicodedata.is_normalized("NFC", candidate)
    ):
        return candidate
    return _validated(candidate)


def _validated(candidate: str) -> str:
    """`normalize_email` of an address in any form email-validator reads."""
    try:
        parsed = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return f"{parsed.local_part.lower()}@{parsed.ascii_domain.lower()}"


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[1]


# A host name on the public internet, in ASCII: labels of letters, digits and inner hyphens,
# and a top-level label that is not a number (so no IP address).
_HOST_NAME = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}|xn--[a-z0-9-]{1,59})")


def normalize_domain(raw: str) -> str:
    """`https://www.Acme.com/about?x=1` -> `acme.com` (IDNA); raises ValueError if it is not
    a company's domain on the internet (an address, `acme.local`, `-acme.com`)."""
    value = _URL_PREFIX.sub("", raw.strip().lower())
    value = _URL_REST.split(value, maxsplit=1)[0].split(":", 1)[0]
    value = value.removeprefix("www.").rstrip(".")
    if value.rpartition(".")[2] in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        raise ValueError(
            f"{raw!r} is a special-use domain (.{value.rpartition('.')[2]}), not a company's"
        )
    try:
        if value.isascii():  # (the codec checks the labels' lengths, in a fraction of the time)
            ascii_domain = value.encode("idna").decode("ascii")
        else:
            # IDNA 2008 with UTS 46 mapping, as email-validator encodes an email's domain: a
            # company's domain and its people's email domain must come out the same
            # ("straße.de" is xn--strae-oqa.de in both, not strasse.de in one).
            ascii_domain = idna.encode(value, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise ValueError(f"{raw!r} is not a valid domain") from None
    if not _HOST_NAME.fullmatch(ascii_domain):
        raise ValueError(f"{raw!r} is not a valid domain")
    return ascii_domain


@lru_cache(maxsize=4096)
def normalize_country(raw: str) -> str:
    """ISO 3166-1 alpha-2 code from a code or a name ("de", "Germany", "Deutschland", "UK" ->
    "DE", "DE", "DE", "GB"): ISO's codes and names first, then the names people type (and
    Kosovo's "XK": see `KOSOVO`)."""
    value = raw.strip()
    try:
        return str(pycountry.countries.lookup(value).alpha_2)
    except LookupError:
        pass
    code = _country_names().get(_name_key(value))
    if code is None:
        raise ValueError(f"{raw!r} is not an ISO 3166 country code or name")
    return code


# Languages whose country names (Unicode CLDR, through Babel) are recognized: forms and
# spreadsheets name countries in their own language ("Deutschland", "Espagne").
CLDR_LANGUAGES = (  # noqa: SIM905 (a list of codes reads better as one string)
    "en de fr es it pt nl sv da nb fi is pl cs sk sl hr hu ro bg el tr ru uk lt lv et "
    "ja zh ko ar he hi id ms th vi"
).split()
# Kosovo: not in ISO 3166-1 proper, but "XK" is the user-assigned code (from the range ISO
# leaves to its users) that the EU, SWIFT, CLDR, phonenumbers (+383) and CRMs use for it.
# Accepted, so that a Kosovo lead is kept rather than lost: it is an alpha-2 code like the
# others, and phone numbers are read in it.
KOSOVO = "XK"
# Names in everyday English use that neither ISO 3166 nor CLDR's main names carry, as
# `_name_key` gives them (no accents, periods or apostrophes, no leading "the"). Names with
# more than a country in them ("Scotland, UK", "Paris, France") are refused: no addresses.
COUNTRY_ALIASES = {
    "uk": "GB",
    "u k": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "turkey": "TR",
    "ivory coast": "CI",
    "holland": "NL",
    "czech republic": "CZ",
    "macedonia": "MK",
    "swaziland": "SZ",
    "burma": "MM",
    "cape verde": "CV",
    "east timor": "TL",
    "vatican": "VA",
    "holy see": "VA",
    "vatican city state": "VA",
    "america": "US",
    "united states of america": "US",
    "usa": "US",
    "us": "US",
    "u s": "US",
    "u s a": "US",
    "us virgin islands": "VI",
    "uae": "AE",
    "u a e": "AE",
    "macau": "MO",
    "republic of ireland": "IE",
    "eire": "IE",
    "dr congo": "CD",
    "drc": "CD",
    "democratic republic of the congo": "CD",
    "democratic republic of congo": "CD",
    "palestine": "PS",
    "state of palestine": "PS",
    "republic of korea": "KR",
    "kosovo": KOSOVO,
    "xk": KOSOVO,
}
# Dropped from a name (periods, apostrophes) or read as a space (commas, hyphens, brackets);
# "&" reads as "and" (CLDR's English "St. Kitts & Nevis").
_NAME_PUNCTUATION = str.maketrans(
    {
        ".": "",
        "'": "",
        "\u2019": "",
        "\u2018": "",
        "`": "",
        ",": " ",
        "-": " ",
        "(": " ",
        ")": " ",
        "&": " and ",
    }
)


def _name_key(name: str) -> str:
    """A country name as compared: case, accents, punctuation, spacing and a leading "the"
    don't matter ("The Bahamas", "Cote d'Ivoire", "U.S.A." -> "bahamas", "cote divoire",
    "usa")."""
    unaccented = "".join(
        c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c)
    )
    words = unicodedata.normalize("NFC", unaccented).casefold().translate(_NAME_PUNCTUATION)
    key = words.split()
    if len(key) > 1 and key[0] == "the":
        del key[0]
    return " ".join(key)


@lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    """Country names (CLDR, in `CLDR_LANGUAGES`, and the aliases) -> alpha-2 code; built on
    the first name ISO 3166 does not know (about 0.1 s)."""
    from babel import Locale  # (loaded only when needed)

    iso = {country.alpha_2 for country in pycountry.countries} | {KOSOVO}
    codes: dict[str, set[str]] = {}
    for language in CLDR_LANGUAGES:
        for code, name in Locale(language).territories.items():
            if code in iso:
                codes.setdefault(_name_key(name), set()).add(code)
    # A name two languages give to two countries ("Kongo") is ambiguous: refused.
    names = {name: next(iter(found)) for name, found in codes.items() if len(found) == 1}
    names.update(COUNTRY_ALIASES)
    return names


class ImpossibleNumber(ValueError):
    """A number its country's plan cannot hold; `why` says how (" (too short)"...)."""

    def __init__(self, raw: str, why: str) -> None:
        super().__init__(f"{raw!r} is not a possible phone number{why}")
        self.why = why


class NeedsCountry(ValueError):
    """A national number (no +country code) and no country to read it in."""


NATIONAL_NUMBER_HINT = "include the +country code, or give the lead's country"


def normalize_phone(raw: str, country: str | None) -> str:
    """E.164 (`+4930123456`, with `;ext=5` for an extension); national numbers need the
    lead's country (`NeedsCountry`)."""
    try:
        number = phonenumbers.parse(raw, country)
    except phonenumbers.NumberParseException as exc:
        national = not raw.lstrip().startswith(("+", "\uff0b"))  # (+ or a full-width +)
        invalid_code = exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE
        if country is None and national and invalid_code:
            raise NeedsCountry(f"{raw!r} is a national number: {NATIONAL_NUMBER_HINT}") from None
        hint = "" if country or not national else f" ({NATIONAL_NUMBER_HINT})"
        raise ValueError(f"{raw!r} is not a phone number{hint}") from None
    # Possible (its length fits its country's plan, dialable from abroad), not "valid" by
    # phonenumbers' metadata of assigned ranges: that lags the numbering plans, and a lead
    # is not refused for a number a new range made real.
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise ImpossibleNumber(raw, _IMPOSSIBLE.get(reason, ""))
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    # An extension ("ext. 5", "x5") is kept as RFC 3966 writes it: a salesperson dials it.
    return f"{e164};ext={number.extension}" if number.extension else e164


_IMPOSSIBLE = {
    phonenumbers.ValidationResult.TOO_SHORT: " (too short)",
    phonenumbers.ValidationResult.TOO_LONG: " (too long)",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: " (a local number: give its area code)",
}


# Other ways people and platforms write a seniority ("Vice President", "C-Suite").
SENIORITY_ALIASES = {
    "vice_president": "vp",
    "c_suite": "c_level",
    "cxo": "c_level",
    "entry_level": "entry",
    "mid_level": "mid",
    "senior_level": "senior",
}


def choice(value: object, aliases: dict[str, str] | None = None) -> object:
    """A pick-list value as files and platforms write it, as its key: "Web Form",
    "web-form" and "WEB_FORM" are `web_form` ("Vice President" `vp` through `aliases`).
    Anything but text is left as it is, for the field to refuse."""
    if not isinstance(value, str):
        return value
    key = "_".join(value.strip().lower().replace("-", " ").split())
    return (aliases or {}).get(key, key)
