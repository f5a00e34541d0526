"""A served process runs the garbage collector as its settings say, startup objects frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import process
from shared.cli import serving
from shared.process import freeze_startup_objects, tune_collector
from shared.settings.loading import SettingsError, load_settings


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_the_young_generation_threshold_is_set_and_0_keeps_pythons() -> None:
    _young, middle, old = gc.get_threshold()
    tune_collector(12_345)
    assert gc.get_threshold() == (12_345, middle, old)
    tune_collector(0)
    assert gc.get_threshold() == (12_345, middle, old)


def test_startup_objects_leave_the_collectors_view() -> None:
    gc.unfreeze()
    freeze_startup_objects()
    assert gc.get_freeze_count() > 0


def test_serve_applies_the_setting_before_it_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def run(app: object, **options: object) -> None:  # stands in for uvicorn.run
        seen["threshold"] = gc.get_threshold()[0]
        seen["frozen"] = gc.get_freeze_count()
        seen["options"] = options

    monkeypatch.setattr(process.uvicorn, "run", run)
    monkeypatch.setenv("HANDOFF_GC_THRESHOLD", "4321")
    monkeypatch.setenv("HANDOFF_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    gc.unfreeze()

    serving.serve("metrics", migrate=False)

    assert seen["threshold"] == 4321
    assert seen["frozen"] > 0
    assert load_settings("metrics").gc_threshold == 4321
    # uvicorn's fast loop and parser, named: its "auto" would fall back to asyncio and h11
    assert seen["options"]["loop"] == "uvloop"
    assert seen["options"]["http"] == "httptools"


def test_the_threshold_must_be_a_count() -> None:
    with pytest.raises(SettingsError, match="HANDOFF_GC_THRESHOLD: Input should be greater"):
        load_settings("metrics", gc_threshold=-1)


def test_dev_serves_through_the_same_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def run(app: object, **options: object) -> None:  # stands in for uvicorn.run
        seen["options"] = options

    monkeypatch.setattr(process.uvicorn, "run", run)
    gc.unfreeze()

    serving.dev(port=8123, data_dir=tmp_path)

    assert seen["options"]["loop"] == "uvloop"
    assert seen["options"]["http"] == "httptools"
    assert seen["options"]["port"] == 8123
