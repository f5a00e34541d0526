"""Normalization and identity rules, without a database."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.intake.domains import FREEMAIL_SUPPLEMENT, account_domain, email_kind
from services.intake.identity import KnownLead, MergeRefused, merge
from services.intake.normalize import (
    NeedsCountry,
    _validated,
    normalize_country,
    normalize_domain,
    normalize_email,
    normalize_phone,
)
from tests.infra import ROOT


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("  Ana.Souza@ACME.com ", "ana.souza@acme.com"),
        ("bob+news@Exämple.de", "bob+news@xn--exmple-cua.de"),
        ("o'neil@sub.domain.co.uk", "o'neil@sub.domain.co.uk"),
    ],
)
def test_emails_are_trimmed_lowercased_and_idna_encoded(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


# Mailbox names from many scripts, and characters that email-validator refuses or changes:
# a combining accent, a compatibility ideograph and Hangul letters (changed by NFC), a
# dotted capital I (lower-cased into two), a no-break space, a zero-width space, a quote,
# a space, an @.
_MAILBOX = "abcXYZ019._+-!#$%&'*/=?^`{|}~üßéÄİжД中٣²ﬁ€¡\u0301\uf900\u1100\u1161\u00a0\u200b\" @"
_DOMAINS = ["acme.com", "Mail.Acme-Corp.co.uk", "xn--strae-oqa.de", "münchen.de", "a.b", "x@y.io"]
# special-use and reserved names, which email-validator refuses
_DOMAINS += ["acme.local", "Shop.TEST", "x.invalid", "a.localhost", "hidden.onion", "local.com"]


@settings(max_examples=400, deadline=None)
@example(mailbox="中" * 81, domain="acme.com", padding="")  # 254 bytes in UTF-8
@example(mailbox="中" * 82, domain="acme.com", padding="")  # 257
@example(mailbox="\uf900", domain="acme.com", padding="")
@given(
    mailbox=st.text(alphabet=_MAILBOX, max_size=70),
    domain=st.sampled_from(_DOMAINS),
    padding=st.sampled_from(["", " ", "\t"]),
)
def test_every_address_normalizes_as_email_validator_has_it(
    mailbox: str, domain: str, padding: str
) -> None:
    """The shortcuts for common shapes answer what email-validator answers."""
    raw = f"{padding}{mailbox}@{domain}{padding}"
    try:
        expected: str | None = _validated(raw.strip().lower())
    except ValueError:
        expected = None
    try:
        got: str | None = normalize_email(raw)
    except ValueError:
        got = None

    assert got == expected


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Müller@Acme.de", "müller@acme.de"),
        ("jürgen.ß_1@mail.acme.co.uk", "jürgen.ß_1@mail.acme.co.uk"),
        ("Ле́на@acme.com", "ле́на@acme.com"),  # (a combining accent: email-validator's way)
    ],
)
def test_mailbox_names_in_other_scripts_are_kept(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    ["plainaddress", "a@b", "two@@at.com", "dot.@end.com", "", "ana@acme.local", "jö@x.test"],
)
def test_invalid_emails_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is email-validator's
        normalize_email(raw)


def test_a_company_domain_and_an_email_domain_encode_alike() -> None:
    email_domain = normalize_email("jo@straße.de").split("@")[1]
    assert normalize_domain("https://www.Straße.de/") == email_domain == "xn--strae-oqa.de"


def test_domains_lose_scheme_www_path_query_and_port() -> None:
    assert normalize_domain("https://www.Acme.com/about?x=1") == "acme.com"
    assert normalize_domain("https://acme.com?utm_source=x") == "acme.com"
    assert normalize_domain("www.acme.co.uk:8080#top") == "acme.co.uk"
    assert normalize_domain("münchen.de") == "xn--mnchen-3ya.de"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("localhost", "special-use domain"),
        ("acme.local", "special-use domain"),
        ("intranet.acme.test", "special-use domain"),
        ("127.0.0.1", "not a valid domain"),  # an address, not a company's domain
        ("-acme.com", "not a valid domain"),
        ("acme-.com", "not a valid domain"),
        ("acme..com", "not a valid domain"),
        ("acme.c0m", "not a valid domain"),
        ("acme", "not a valid domain"),
    ],
)
def test_what_is_no_companys_domain_on_the_internet_is_refused(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        normalize_domain(raw)


def test_countries_are_iso_codes_from_codes_or_names() -> None:
    assert [normalize_country(c) for c in ("de", "Germany", "USA", "GB")] == [
        "DE",
        "DE",
        "US",
        "GB",
    ]
    with pytest.raises(ValueError, match="ISO 3166"):
        normalize_country("Atlantis")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("UK", "GB"),
        ("U.K.", "GB"),
        ("Great Britain", "GB"),
        ("Russia", "RU"),
        ("Turkey", "TR"),
        ("South Korea", "KR"),
        ("Ivory Coast", "CI"),
        ("Deutschland", "DE"),
        ("Allemagne", "DE"),
        ("España", "ES"),
        ("Vereinigtes Königreich", "GB"),
        ("u.s.a.", "US"),
    ],
)
def test_countries_are_found_by_the_names_people_type(raw: str, code: str) -> None:
    assert normalize_country(raw) == code


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("Cote d'Ivoire", "CI"),
        ("Cote d\u2019Ivoire", "CI"),
        ("Macau", "MO"),
        ("Kosovo", "XK"),
        ("XK", "XK"),
        ("xk", "XK"),
        ("Republic of Ireland", "IE"),
        ("The Bahamas", "BS"),
        ("DR Congo", "CD"),
        ("Democratic Republic of the Congo", "CD"),
        ("Palestine", "PS"),
        ("State of Palestine", "PS"),
        ("U.A.E.", "AE"),
        ("Republic of Korea", "KR"),
        ("the UK", "GB"),
        ("The United States", "US"),
        ("The Philippines", "PH"),
        ("Espana", "ES"),
        ("Cesko", "CZ"),
        ("Aland Islands", "AX"),
        ("St. Kitts and Nevis", "KN"),
        ("Sao Tome & Principe", "ST"),
        ("Holy See", "VA"),
    ],
)
def test_country_names_are_compared_without_accents_punctuation_or_a_leading_the(
    raw: str, code: str
) -> None:
    assert normalize_country(raw) == code


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("Côte d'Ivoire", "CI"),
        ("Macao", "MO"),
        ("Scotland", "GB"),
        ("England", "GB"),
        ("Wales", "GB"),
        ("Northern Ireland", "GB"),
        ("UAE", "AE"),
        ("USA", "US"),
        ("United States of America", "US"),
        ("Korea, Republic of", "KR"),
        ("Vietnam", "VN"),
        ("Czechia", "CZ"),
        ("Czech Republic", "CZ"),
        ("Holland", "NL"),
        ("Türkiye", "TR"),
        ("Burma", "MM"),
        ("Swaziland", "SZ"),
        ("Macedonia", "MK"),
    ],
)
def test_country_names_recognized_before_still_are(raw: str, code: str) -> None:
    assert normalize_country(raw) == code


def test_a_kosovo_lead_keeps_its_phone_number() -> None:
    assert normalize_phone("044 123 456", normalize_country("Kosovo")) == "+38344123456"


@pytest.mark.parametrize("raw", ["Korea", "Narnia", "Europe", "Kongo", "Scotland, UK", "The"])
def test_ambiguous_or_unknown_country_names_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="ISO 3166"):
        normalize_country(raw)


def test_phones_become_e164_and_national_numbers_need_a_country() -> None:
    assert normalize_phone("030 1234567", "DE") == "+49301234567"
    assert normalize_phone("+1 (415) 555-0100", None) == "+14155550100"
    with pytest.raises(NeedsCountry, match="country"):
        normalize_phone("030 1234567", None)
    with pytest.raises(ValueError, match="not a phone number") as unknown_code:
        normalize_phone("+999 1234567", None)  # international, but no such country code
    assert not isinstance(unknown_code.value, NeedsCountry)


@pytest.mark.parametrize(
    ("raw", "country", "stored"),
    [
        ("+1 415 555 0100 ext. 5", None, "+14155550100;ext=5"),
        ("(415) 555-0100 x123", "US", "+14155550100;ext=123"),
        ("+44 20 7946 0958 extension 12", None, "+442079460958;ext=12"),
    ],
)
def test_a_phone_extension_is_kept(raw: str, country: str | None, stored: str) -> None:
    assert normalize_phone(raw, country) == stored


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("+4912", "a local number: give its area code"),
        ("+33 1 23", "too short"),
        ("+1 415 555 01001", "too long"),
    ],
)
def test_a_number_that_cannot_be_dialled_from_abroad_is_refused_saying_why(
    raw: str, why: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(f"not a possible phone number ({why})")):
        normalize_phone(raw, "DE")


def test_a_possible_number_in_a_range_not_assigned_yet_is_kept() -> None:
    # (phonenumbers says "not valid": its metadata of assigned ranges lags the plans)
    assert normalize_phone("+1 555 555 5555", None) == "+15555555555"


def test_free_and_disposable_mail_never_make_an_account() -> None:
    assert (email_kind("gmail.com"), email_kind("mailinator.com"), email_kind("acme.com")) == (
        "freemail",
        "disposable",
        "business",
    )
    assert account_domain(email_domain="gmail.com", company_domain=None) is None
    assert account_domain(email_domain="gmail.com", company_domain="acme.com") == "acme.com"


@pytest.mark.parametrize(
    "domain",
    [
        "protonmail.com",
        "protonmail.ch",
        "proton.me",
        "pm.me",
        "tutanota.com",
        "tutanota.de",
        "tutamail.com",
        "tuta.io",
        "tuta.com",
        "posteo.de",
        "posteo.net",
        "mailbox.org",
        "hey.com",
        "zohomail.com",
        "aol.de",
        "aol.fr",
        "btinternet.com",
        "virginmedia.com",
        "talktalk.net",
        "sfr.fr",
        "bluewin.ch",
        "shaw.ca",
        "sympatico.ca",
        "o2.pl",
        "t-online.de",
        "gmx.ch",
        "yandex.by",
        "daum.net",
        "eu.protonmail.com",  # a subdomain, as the package's ("mail.yahoo.com")
    ],
)
def test_free_mail_providers_the_freemail_package_misses_are_free_mail(domain: str) -> None:
    assert email_kind(domain) == "freemail"
    assert account_domain(email_domain=domain, company_domain=None) is None


@pytest.mark.parametrize("domain", ["zohocorp.com", "notprotonmail.com", "proton.me.acme.com"])
def test_companies_next_to_free_mail_providers_stay_business(domain: str) -> None:
    assert email_kind(domain) == "business"


def test_the_freemail_supplement_holds_normalized_domains_none_disposable() -> None:
    assert all(normalize_domain(domain) == domain for domain in FREEMAIL_SUPPLEMENT)
    assert all(email_kind(domain) == "freemail" for domain in FREEMAIL_SUPPLEMENT)


def test_domain_lists_load_without_importing_the_freemail_package() -> None:
    """The lists come from freemail's data files; its package (tldextract, requests) is
    never imported, and they are loaded with the module, not by the first lead."""
    code = (
        "import sys\n"
        "from services.intake import domains\n"
        "loaded = {'freemail', 'tldextract', 'requests'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
        "assert len(domains._FREEMAIL) > 1000 and len(domains._DISPOSABLE) > 1000\n"
        "assert {'yahoo.com', 'outlook.com'} <= domains._FREEMAIL\n"
        "print(domains.email_kind('mail.yahoo.com'), domains.email_kind('mailinator.com'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["freemail", "disposable"]


def known(**fields: object) -> KnownLead:
    return KnownLead(
        id="l1",
        email="a@acme.com",
        source="marketing",
        account_id=None,
        profile=dict(fields),
        field_sources=dict.fromkeys(fields, "sales"),
    )


def test_marketing_cannot_overwrite_a_sales_owned_field_but_can_fill_gaps() -> None:
    result = merge(
        known(job_title="CFO"),
        {"job_title": "Finance", "industry": "Retail"},
        source="marketing",
        external_ids={},
        sales_owned=frozenset({"job_title"}),
    )
    assert result.changes == {"industry": "Retail"}
    assert result.protected == ["job_title"]


def test_sales_may_overwrite_anything_and_equal_values_are_no_change() -> None:
    result = merge(
        known(job_title="CFO", country="DE"),
        {"job_title": "CEO", "country": "DE"},
        source="sales",
        external_ids={"hubspot": "1"},
        sales_owned=frozenset({"job_title"}),
    )
    assert result.changes == {"job_title": "CEO"}
    assert result.new_external_ids == {("hubspot", "1")}


def test_sales_confirming_a_value_owns_it_but_naming_the_email_does_not() -> None:
    lead = known(email="a@acme.com", job_title="CFO")
    lead.field_sources = {"email": "marketing", "job_title": "marketing"}
    result = merge(
        lead,
        {"email": "a@acme.com", "job_title": "CFO"},  # (every capture names the email)
        source="sales",
        external_ids={},
        sales_owned=frozenset({"email", "job_title"}),
    )
    assert (result.changes, result.confirmed) == ({}, ["job_title"])


def test_custom_attributes_may_change_but_not_grow_past_the_bound() -> None:
    crowded = known(custom={f"k{i}": i for i in range(60)})  # stored before the bound
    changed = merge(
        crowded,
        {"custom": {"k1": 99}},
        source="marketing",
        external_ids={},
        sales_owned=frozenset(),
    )
    assert changed.changes["custom"]["k1"] == 99

    with pytest.raises(MergeRefused, match="at most 50"):
        merge(
            crowded,
            {"custom": {"new": 1}},
            source="marketing",
            external_ids={},
            sales_owned=frozenset(),
        )


@pytest.mark.parametrize(
    ("email_domain", "company_domain", "account"),
    [
        ("eu.acme.com", None, "acme.com"),
        ("mail.acme.co.uk", None, "acme.co.uk"),
        ("sales.emea.acme.com.au", None, "acme.com.au"),
        ("shop.github.io", None, "shop.github.io"),  # a site on a hosting suffix is its own
        ("gmail.com", "https://eu.acme.com", "acme.com"),
        ("mail.gmail.com", None, None),
    ],
)
def test_an_account_is_keyed_by_the_registrable_domain(
    email_domain: str, company_domain: str | None, account: str | None
) -> None:
    company = normalize_domain(company_domain) if company_domain else None
    assert account_domain(email_domain=email_domain, company_domain=company) == account
