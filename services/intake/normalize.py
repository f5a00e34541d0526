"""Normalization of what people type into forms: emails, phones, countries, domains."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email

# A conservative shape most addresses have; anything else goes through email-validator.
_PLAIN_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)
_URL_PREFIX = re.compile(r"^[a-z][a-z0-9+.-]*://")


def normalize_email(raw: str) -> str:
    """Trimmed, lower-cased, domain in IDNA (ASCII) form; raises ValueError if invalid."""
    candidate = raw.strip().lower()
    if len(candidate) <= 254 and _PLAIN_EMAIL.match(candidate):
        return candidate
    try:
        parsed = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return f"{parsed.local_part.lower()}@{parsed.ascii_domain.lower()}"


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[1]


def normalize_domain(raw: str) -> str:
    """`https://www.Acme.com/about` -> `acme.com` (IDNA); raises ValueError if not a domain."""
    value = _URL_PREFIX.sub("", raw.strip().lower()).split("/", 1)[0].split(":", 1)[0]
    value = value.removeprefix("www.").rstrip(".")
    try:
        ascii_domain = value.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{raw!r} is not a valid domain") from None
    if "." not in ascii_domain or not re.fullmatch(r"[a-z0-9.-]+", ascii_domain):
        raise ValueError(f"{raw!r} is not a valid domain")
    return ascii_domain


@lru_cache(maxsize=4096)
def normalize_country(raw: str) -> str:
    """ISO 3166-1 alpha-2 code from a code or a name ("de", "Germany" -> "DE")."""
    try:
        return str(pycountry.countries.lookup(raw.strip()).alpha_2)
    except LookupError:
        raise ValueError(f"{raw!r} is not an ISO 3166 country code or name") from None


def normalize_phone(raw: str, country: str | None) -> str:
    """E.164 (`+4930123456`); national numbers need the lead's country."""
    try:
        number = phonenumbers.parse(raw, country)
    except phonenumbers.NumberParseException:
        hint = "" if country else " (include the +country code, or give the lead's country)"
        raise ValueError(f"{raw!r} is not a phone number{hint}") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"{raw!r} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
