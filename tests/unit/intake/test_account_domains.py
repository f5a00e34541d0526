"""Which domains make an account: relays make none, tenants of shared hosts one each, and a
bare public suffix keys no account."""

from __future__ import annotations

import pytest
from publicsuffixlist import PublicSuffixList

from services.intake import domains
from services.intake.domains import (
    EMAIL_RELAYS,
    TENANT_MAIL_HOSTS,
    account_domain,
    email_kind,
    registrable,
)
from services.intake.normalize import normalize_domain


@pytest.mark.parametrize(
    "domain",
    [
        "privaterelay.appleid.com",
        "duck.com",
        "mozmail.com",
        "a1b2.mozmail.com",  # a premium subdomain
        "simplelogin.com",
        "slmail.me",
        "passmail.net",
        "addy.io",
        "ana.anonaddy.com",  # a username subdomain
    ],
)
def test_relay_addresses_are_personal_mail_and_make_no_account(domain: str) -> None:
    assert email_kind(domain) == "freemail"
    assert account_domain(email_domain=domain, company_domain=None) is None


def test_two_people_behind_apples_relay_are_no_company() -> None:
    relay = "privaterelay.appleid.com"  # x7fk2@ and q9zz1@: strangers to each other

    assert account_domain(email_domain=relay, company_domain=None) is None
    assert account_domain(email_domain=relay, company_domain="acme.com") == "acme.com"


@pytest.mark.parametrize("domain", ["duckduckgo.com", "mozilla.com", "apple.com", "notduck.com"])
def test_the_companies_behind_relays_stay_business(domain: str) -> None:
    assert email_kind(domain) == "business"


def test_the_relay_set_holds_normalized_domains_no_other_list_has() -> None:
    """When a package takes one in, its entry here can go."""
    others = domains._free_listed | domains._DISPOSABLE | domains.FREEMAIL_SUPPLEMENT

    assert all(normalize_domain(domain) == domain for domain in EMAIL_RELAYS)
    assert EMAIL_RELAYS.isdisjoint(others)


@pytest.mark.parametrize(
    ("email_domain", "account"),
    [
        ("contoso.onmicrosoft.com", "contoso.onmicrosoft.com"),
        ("fabrikam.onmicrosoft.com", "fabrikam.onmicrosoft.com"),
        ("contoso.mail.onmicrosoft.com", "contoso.mail.onmicrosoft.com"),  # not "mail"'s
        ("contoso.onmicrosoft.us", "contoso.onmicrosoft.us"),
        ("contoso.partner.onmschina.cn", "contoso.partner.onmschina.cn"),
        ("acme.zendesk.com", "acme.zendesk.com"),
        ("eu.acme.atlassian.net", "acme.atlassian.net"),  # below the tenant: the tenant's
        ("zendesk.com", "zendesk.com"),  # the host's own people
    ],
)
def test_each_tenant_of_a_shared_mail_host_is_an_account_of_its_own(
    email_domain: str, account: str
) -> None:
    assert email_kind(email_domain) == "business"
    assert account_domain(email_domain=email_domain, company_domain=None) == account


def test_a_tenant_named_as_the_company_keeps_its_tenant_label() -> None:
    company = normalize_domain("https://contoso.onmicrosoft.com/")

    assert account_domain(email_domain="gmail.com", company_domain=company) == company


def test_the_tenant_mail_hosts_are_ones_the_public_suffix_list_lacks() -> None:
    """When the list takes one in, its entry here can go."""
    listed = PublicSuffixList()

    assert all(normalize_domain(host) == host for host in TENANT_MAIL_HOSTS)
    assert [host for host in TENANT_MAIL_HOSTS if listed.is_public(host)] == []
    assert all(registrable(f"acme.{host}") == f"acme.{host}" for host in TENANT_MAIL_HOSTS)


@pytest.mark.parametrize(
    ("email_domain", "company_domain", "account"),
    [
        ("ex.com", "co.uk", "ex.com"),  # the email's domain keys the account
        ("gmail.com", "com.au", None),
        ("nhs.net", "nhs.uk", "nhs.net"),
        ("nhs.uk", "nhs.uk", "nhs.uk"),  # a public body mailing from its suffix
        ("ex.com", "anything.kawasaki.jp", "ex.com"),  # a wildcard rule: *.kawasaki.jp
    ],
)
def test_a_company_domain_that_is_a_bare_public_suffix_keys_no_account(
    email_domain: str, company_domain: str, account: str | None
) -> None:
    assert account_domain(email_domain=email_domain, company_domain=company_domain) == account


@pytest.mark.parametrize("raw", ["co.uk", "https://www.nhs.uk/", "公司.cn"])
def test_a_bare_public_suffix_is_a_domain_still(raw: str) -> None:
    """(A public body's site may be one: `nhs.uk`. The lead is kept; see above.)"""
    assert (
        normalize_domain(raw)
        == raw.removeprefix("https://www.").rstrip("/").encode("idna").decode()
    )


@pytest.mark.parametrize(
    ("raw", "domain"),
    [
        ("acme.co.uk", "acme.co.uk"),
        ("https://www.acme.com.au/", "acme.com.au"),
        ("city.kawasaki.jp", "city.kawasaki.jp"),  # the wildcard's exception
        ("shop.github.io", "shop.github.io"),  # under a hosting suffix (the private part)
    ],
)
def test_a_domain_registered_under_a_public_suffix_is_a_companys(raw: str, domain: str) -> None:
    assert normalize_domain(raw) == domain
