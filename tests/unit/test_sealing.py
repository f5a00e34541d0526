"""Secrets kept in a database are sealed with the service's secret key."""

from __future__ import annotations

import pytest

from shared.sealing import PREFIX, Sealer, SealError


def test_a_sealed_secret_opens_only_with_its_key() -> None:
    sealed = Sealer("the-service-secret-key").seal("hubspot-app-secret")

    assert sealed.startswith(PREFIX) and "hubspot-app-secret" not in sealed
    assert Sealer("the-service-secret-key").open(sealed) == "hubspot-app-secret"
    with pytest.raises(SealError, match="HANDOFF_SECRET_KEY"):
        Sealer("another-secret-key").open(sealed)
    with pytest.raises(SealError):
        Sealer("the-service-secret-key").open(sealed[:-4] + "AAAA")  # damaged


def test_a_value_stored_before_sealing_reads_as_it_is() -> None:
    assert Sealer("k").open("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )
