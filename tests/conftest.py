"""Shared test setup: offline, isolated caches, paths to bundled data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from tests.live_servers import live_prometheus  # noqa: E402, F401 - one real Prometheus shared by the live-source tests

DATA = Path(__file__).parent / "data"
REAL_TRACES = DATA / "real-traces"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Never read or write the user's cache from tests.
    os.environ["KAT_CACHE_DIR"] = str(tmp_path_factory.mktemp("kat-cache"))


@pytest.fixture
def real_traces() -> Path:
    return REAL_TRACES
