"""Secrets a service keeps in its database, sealed with its `HANDOFF_SECRET_KEY`.

A dump or a backup of the database then does not hand out what it seals (the signing
secrets of the marketing platforms posting webhooks, for one). Values are Fernet tokens
(AES-128-CBC with HMAC-SHA256) under a key derived from the secret key with HKDF, stored
with a prefix that names the scheme. A value stored without the prefix (before sealing
existed) is read as it is.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "sealed:v1:"


class SealError(ValueError):
    """A sealed value that this secret key cannot open."""


class Sealer:
    """Seals and opens stored secrets with a key derived from the service's secret key."""

    def __init__(self, secret_key: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"handoff stored secrets v1"
        ).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    @staticmethod
    @lru_cache(maxsize=4)
    def for_key(secret_key: str) -> Sealer:
        """The sealer of a secret key, its key derived once per process."""
        return Sealer(secret_key)

    def seal(self, value: str) -> str:
        return PREFIX + self._fernet.encrypt(value.encode()).decode("ascii")

    def open(self, stored: str) -> str:
        """The value `seal` was given; a value stored unsealed comes back as it is."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise SealError(
                "sealed under another HANDOFF_SECRET_KEY (or damaged): configure it again"
            ) from None
