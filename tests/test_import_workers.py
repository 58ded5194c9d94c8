"""Imports through forked worker processes give the same tables and errors as in-process ones."""

from __future__ import annotations

from pathlib import Path

import pytest

import kat.tools.telemetry.import_worker as iw
from kat.tools.telemetry import TraceImportError, open_bundle
from tests.kineto_factory import step_trace, write_trace


def _traces(d: Path, n: int = 3) -> Path:
    d.mkdir()
    for r in range(n):
        write_trace(step_trace(rank=r, world=n, steps=3), d / f"rank-{r}.json.gz")
    return d


@pytest.mark.parametrize("native", ["1", "0"])
def test_worker_pool_matches_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: str) -> None:
    monkeypatch.setenv("KAT_KINETO_NATIVE", native)
    d = _traces(tmp_path / "traces")
    monkeypatch.setenv("KAT_IMPORT_WORKERS", "1")
    one = open_bundle(d, cache_dir=tmp_path / "c1")
    monkeypatch.setenv("KAT_IMPORT_WORKERS", "2")
    monkeypatch.setattr(iw, "PARALLEL_IMPORT_MIN_BYTES", 0)
    two = open_bundle(d, cache_dir=tmp_path / "c2")
    assert sorted(one.ranks) == sorted(two.ranks) == [0, 1, 2]
    assert one.total_events == two.total_events > 0
    assert len(list((tmp_path / "c2").glob("*.parquet"))) == 3
    for r in one.ranks:
        assert one.events(r).equals(two.events(r)), r


def test_worker_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _traces(tmp_path / "traces")
    (d / "rank-1.json.gz").write_bytes((d / "rank-1.json.gz").read_bytes()[:200])
    monkeypatch.setenv("KAT_IMPORT_WORKERS", "2")
    monkeypatch.setattr(iw, "PARALLEL_IMPORT_MIN_BYTES", 0)
    with pytest.raises(TraceImportError, match="rank-1.json.gz"):
        open_bundle(d, cache_dir=tmp_path / "c")
