"""Which email domains are a company's, and which are free or disposable mailboxes.

The lists come from maintained packages (`freemail`'s data files, and the community
`disposable-email-domains` block list), never from a hand-typed set.
"""

from __future__ import annotations

from functools import cache, lru_cache
from importlib import resources
from typing import Literal

from disposable_email_domains import blocklist

EmailKind = Literal["business", "freemail", "disposable"]


@cache
def _freemail() -> frozenset[str]:
    text = (resources.files("freemail") / "data" / "free.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


@cache
def _disposable() -> frozenset[str]:
    text = (resources.files("freemail") / "data" / "disposable.txt").read_text()
    return frozenset(blocklist) | {line.strip() for line in text.splitlines() if line.strip()}


def _suffixes(domain: str) -> list[str]:
    parts = domain.split(".")
    return [".".join(parts[i:]) for i in range(len(parts) - 1)]


@lru_cache(maxsize=65_536)
def email_kind(domain: str) -> EmailKind:
    """Classify a (normalized) email domain, subdomains included."""
    suffixes = _suffixes(domain)
    if any(s in _disposable() for s in suffixes):
        return "disposable"
    if any(s in _freemail() for s in suffixes):
        return "freemail"
    return "business"


@lru_cache(maxsize=65_536)  # a few thousand domains; imports ask once per row
def account_domain(*, email_domain: str | None, company_domain: str | None) -> str | None:
    """The company domain a lead's account is keyed by, or None for free/disposable mail."""
    if company_domain and email_kind(company_domain) == "business":
        return company_domain
    if email_domain and email_kind(email_domain) == "business":
        return email_domain
    return None
