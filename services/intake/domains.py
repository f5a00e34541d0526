"""Which email domains are a company's, and which are free or disposable mailboxes.

The lists come from maintained packages (`freemail`'s data files, and the community
`disposable-email-domains` block list), plus small hand-kept sets no package holds:
`FREEMAIL_SUPPLEMENT`, the few major free mail providers the `freemail` package does not
list, and `EMAIL_RELAYS`, the services that hide a person's mailbox behind an alias.
Accounts are keyed by the registrable domain (the Public Suffix List), with
`TENANT_MAIL_HOSTS`: the shared mail hosts it lacks, whose every tenant is an organisation.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from itertools import pairwise
from typing import Literal

from disposable_email_domains import blocklist
from publicsuffixlist import PublicSuffixList

EmailKind = Literal["business", "freemail", "disposable"]


def _freemail_lists(*names: str) -> list[set[str]]:
    """The `freemail` distribution's data files `names`, read where it was installed.

    Read through the distribution's metadata rather than `importlib.resources`, which would
    import the `freemail` package, and with it tldextract and requests (about 80 ms and
    several MB that intake never uses).
    """
    distribution = metadata.distribution("freemail")
    return [
        {
            line.strip()
            for line in distribution.locate_file(f"freemail/data/{name}")
            .read_text("utf-8")
            .splitlines()
            if line.strip()
        }
        for name in names
    ]


# Free mail providers missing from the `freemail` package's list (version 1.2.19), kept here:
# large consumer mailbox services and ISPs whose every customer would otherwise land in one
# shared "company" account. Checked one by one against that package's data, not copied from
# any third-party list. Add a domain only when the package lacks it, and only when the domain
# is its provider's customers' mailboxes, not the company's own staff's (so "zohomail.com",
# the free Zoho Mail domain, is here; the package itself lists "zoho.com").
FREEMAIL_SUPPLEMENT = frozenset(
    {
        # Encrypted / privacy mail
        "protonmail.com",
        "protonmail.ch",
        "proton.me",
        "pm.me",
        "tutanota.com",
        "tutanota.de",
        "tutamail.com",
        "tuta.io",
        "tuta.com",
        "keemail.me",
        "posteo.de",
        "posteo.net",
        "posteo.at",
        "posteo.ch",
        "posteo.eu",
        "posteo.org",
        "mailbox.org",
        "hey.com",
        "zohomail.com",
        "zohomail.eu",
        "zohomail.in",
        # Regional domains of providers the package lists under other domains
        "aol.de",
        "aol.fr",
        "aol.it",
        "aol.co.uk",
        "gmx.ch",
        "gmx.fr",
        "gmx.es",
        "gmx.us",
        "gmx.co.uk",
        "yandex.by",
        "yandex.kz",
        "yandex.com.tr",
        "daum.net",
        "kakao.com",
        # Internet providers' customer mailboxes
        "btinternet.com",
        "btopenworld.com",
        "virginmedia.com",
        "ntlworld.com",
        "blueyonder.co.uk",
        "talktalk.net",
        "sfr.fr",
        "neuf.fr",
        "bluewin.ch",
        "t-online.de",
        "magenta.de",
        "shaw.ca",
        "sympatico.ca",
        "o2.pl",
        "tlen.pl",
        "go2.pl",
    }
)

# Email relays ("hide my email", masked or alias addresses): each alias forwards to one
# person's real mailbox and hides it. That is personal mail, as a free mailbox is, and not a
# company's: classified "freemail" (no account; the events' `email_kind` has no other word
# for it). Neither package lists them (a relay is no throwaway: its person reads and answers).
# Each is the domain its service's customers' aliases are under (`alias@user.anonaddy.com`
# goes with `anonaddy.com`); relays with the provider's mailbox domain (iCloud+ "Hide My
# Email" at `icloud.com`, Fastmail's masked email) are free mail already.
EMAIL_RELAYS = frozenset(
    {
        "privaterelay.appleid.com",  # Sign in with Apple's "Hide My Email"
        "duck.com",  # DuckDuckGo Email Protection
        "mozmail.com",  # Firefox Relay
        "relay.firefox.com",  # (Firefox Relay's first aliases)
        "passmail.net",  # Proton Pass
        "passmail.com",
        "passinbox.com",
        "passfwd.com",
        "simplelogin.com",  # SimpleLogin
        "simplelogin.co",
        "simplelogin.fr",
        "slmail.me",
        "slmails.com",
        "aleeas.com",
        "8alias.com",
        "8shield.net",
        "dralias.com",
        "silomails.com",
        "addy.io",  # addy.io, formerly AnonAddy
        "anonaddy.com",
        "anonaddy.me",
        "burnermail.io",  # Burner Mail
    }
)

# Loaded with the module (about 30 ms, at start-up), not by the first lead a service captures.
_free_listed, _disposable_listed = _freemail_lists("free.txt", "disposable.txt")
_FREEMAIL = frozenset(_free_listed) | FREEMAIL_SUPPLEMENT | EMAIL_RELAYS
_DISPOSABLE = frozenset(blocklist) | _disposable_listed


def _suffixes(domain: str) -> list[str]:
    parts = domain.split(".")
    return [".".join(parts[i:]) for i in range(len(parts) - 1)]


@lru_cache(maxsize=65_536)
def email_kind(domain: str) -> EmailKind:
    """Classify a (normalized) email domain, subdomains included."""
    suffixes = _suffixes(domain)
    if any(s in _DISPOSABLE for s in suffixes):
        return "disposable"
    if any(s in _FREEMAIL for s in suffixes):
        return "freemail"
    return "business"


@lru_cache(maxsize=65_536)  # a few thousand domains; imports ask once per row
def account_domain(*, email_domain: str | None, company_domain: str | None) -> str | None:
    """The company domain a lead's account is keyed by, or None for free/disposable mail
    (relays included): the registrable domain (`eu.acme.com`, `mail.acme.co.uk` ->
    `acme.com`, `acme.co.uk`; a tenant's `contoso.onmicrosoft.com` stays its own), so that
    one company's people share one account whichever of its hosts they mail from. A
    company domain that is itself a public suffix (`co.uk`, as a form may be filled in)
    keys none: the email's domain does."""
    if (
        company_domain
        and email_kind(company_domain) == "business"
        and not is_public_suffix(company_domain)  # (`co.uk`: no one company's; `nhs.uk`'s
        # people mail from it, and their email keys their account)
    ):
        return registrable(company_domain)
    if email_domain and email_kind(email_domain) == "business":
        return registrable(email_domain)
    return None


# The Public Suffix List as the `publicsuffixlist` package ships it (no download at run time);
# its private part too, so that a customer's site at a hosting suffix (`shop.github.io`)
# stays its own and is not taken for the host's. Its ICANN part alone says which suffixes
# registries sell domains under (`com`, `co.uk`), none of them a company's. (Each is read
# with the module, in about 25 ms.)
_PUBLIC_SUFFIXES = PublicSuffixList()
_ICANN_SUFFIXES = PublicSuffixList(only_icann=True)

# Shared hosts that give each organisation renting them a mail domain of its own one label
# below them, and that the Public Suffix List does not list (its private part has site hosts,
# `github.io`, `myshopify.com`, but these mail hosts are not in it): each tenant is its own
# account, as if the list's private part held them. Add a host only when the list lacks it
# (a test checks) and its tenants' people or mailboxes send mail from their subdomain of it.
TENANT_MAIL_HOSTS = frozenset(
    {
        "onmicrosoft.com",  # Microsoft 365: a tenant's first domain, contoso.onmicrosoft.com
        "mail.onmicrosoft.com",  # ... and its mail routing domain (hybrid Exchange)
        "onmicrosoft.us",  # Microsoft 365 GCC High and DoD
        "mail.onmicrosoft.us",
        "partner.onmschina.cn",  # Microsoft 365 operated by 21Vianet
        "zendesk.com",  # help desks' support mailboxes: support@acme.zendesk.com
        "freshdesk.com",
        "atlassian.net",  # Jira's and Jira Service Management's: jira@acme.atlassian.net
    }
)


def registrable(domain: str) -> str:
    """`domain`'s registrable part: one label under its public suffix or its tenant mail
    host (a domain that is itself a public suffix, or not under a known one, stays as it is)."""
    suffixes = _suffixes(domain)
    for tenant, host in pairwise(suffixes):  # (the longest host first)
        if host in TENANT_MAIL_HOSTS:
            return tenant
    return _PUBLIC_SUFFIXES.privatesuffix(domain) or domain


def is_public_suffix(domain: str) -> bool:
    """Whether `domain` is itself a suffix registries sell domains under (`com`, `co.uk`,
    the ICANN part of the Public Suffix List): no company's domain."""
    return bool(_ICANN_SUFFIXES.is_public(domain))
