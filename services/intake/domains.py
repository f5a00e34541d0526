"""Which email domains are a company's, and which are free or disposable mailboxes.

The lists come from maintained packages (`freemail`'s data files, and the community
`disposable-email-domains` block list), plus `FREEMAIL_SUPPLEMENT`: the few major free mail
providers the `freemail` package does not list.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata
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

# Loaded with the module (about 30 ms, at start-up), not by the first lead a service captures.
_free_listed, _disposable_listed = _freemail_lists("free.txt", "disposable.txt")
_FREEMAIL = frozenset(_free_listed) | FREEMAIL_SUPPLEMENT
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
    """The company domain a lead's account is keyed by, or None for free/disposable mail:
    the registrable domain (`eu.acme.com`, `mail.acme.co.uk` -> `acme.com`, `acme.co.uk`),
    so that one company's people share one account whichever of its hosts they mail from."""
    if company_domain and email_kind(company_domain) == "business":
        return registrable(company_domain)
    if email_domain and email_kind(email_domain) == "business":
        return registrable(email_domain)
    return None


# The Public Suffix List as the `publicsuffixlist` package ships it (no download at run time);
# its private part too, so that a customer's site at a hosting suffix (`shop.github.io`)
# stays its own and is not taken for the host's.
_PUBLIC_SUFFIXES = PublicSuffixList()


def registrable(domain: str) -> str:
    """`domain`'s registrable part: one label under its public suffix (a domain that is
    itself a public suffix, or not under a known one, stays as it is)."""
    return _PUBLIC_SUFFIXES.privatesuffix(domain) or domain
