"""Outpost's node table and the memory-bounded passes over it: narrow columns that widen when a
trace needs it, combined group keys, step chunks, and the same findings whatever the chunk size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kat.tools.outpost import detect, inter
from kat.tools.outpost.tree import _Columns, build_nodes, first_rows, group_ids
from kat.tools.telemetry.bundle import Bundle, open_bundle
from tests.test_outpost_rules import _group_trace, _write


def _result(path: Path) -> dict:
    out = detect(path).model_dump()
    out["stats"].pop("seconds")
    return out


def test_group_ids_number_groups_like_pandas() -> None:
    rng = np.random.default_rng(3)
    a, b, c = rng.integers(-1, 4, 5000), rng.integers(0, 900, 5000).astype(np.int32), rng.integers(-3, 3, 5000).astype(np.int8)
    ids = group_ids(a, b, c)
    ref = pd.DataFrame({"a": a, "b": b, "c": c}).groupby(["a", "b", "c"], sort=False).ngroup().to_numpy()
    assert (ids == ref).all()
    assert (first_rows(ids) == pd.Series(ids).drop_duplicates().index.to_numpy()).all()
    # Key ranges whose product overflows int64 still give one id per distinct combination.
    big = [rng.integers(0, 2**40, 3000) for _ in range(3)]
    big[0][1000:] = big[0][:2000]
    big[1][1000:] = big[1][:2000]
    big[2][1000:] = big[2][:2000]
    ref = pd.DataFrame({i: k for i, k in enumerate(big)}).groupby([0, 1, 2], sort=False).ngroup().to_numpy()
    assert (group_ids(*big) == ref).all()


def test_step_chunks_keep_every_step_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inter, "CHUNK_ROWS", 7)
    step = np.random.default_rng(5).integers(-1, 30, 400)
    chunks = list(inter._step_chunks(step))
    assert len(chunks) > 10
    assert np.array_equal(np.sort(np.concatenate(chunks)), np.arange(len(step)))
    seen: set[int] = set()
    for pos in chunks:
        assert (np.diff(pos) > 0).all()
        steps = set(step[pos].tolist())
        assert not steps & seen
        seen |= steps


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_findings_do_not_depend_on_the_chunk_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    d = _write(tmp_path, _group_trace(4, 12, slow_rank=2, slow_steps=range(3, 10), slow_factor=1.5, slow_kind=kind))
    whole = _result(d)
    assert whole["anomalies"]
    monkeypatch.setattr(inter, "CHUNK_ROWS", 16)  # a step of this trace holds more nodes than that
    assert _result(d) == whole


def test_columns_start_narrow_and_widen_when_values_need_it() -> None:
    cols = _Columns(6)
    cols.reserve(3)
    cols.put("device", np.array([0, 1, -1], dtype=np.int32))
    cols.put("step", np.array([1, 2, 3], dtype=np.int64))
    cols.rows += 3
    assert cols.cols["device"].dtype == np.int8 and cols.cols["step"].dtype == np.int32
    cols.reserve(3)
    cols.put("device", np.array([300, 2, 3], dtype=np.int32))
    cols.put("step", np.array([2**40, 5, 6], dtype=np.int64))
    cols.rows += 3
    out = cols.finish()
    assert out["device"].tolist() == [0, 1, -1, 300, 2, 3]
    assert out["step"].tolist() == [1, 2, 3, 2**40, 5, 6]


def test_node_table_keeps_collective_metadata_aside(tmp_path: Path) -> None:
    table = build_nodes(open_bundle(_write(tmp_path, _group_trace(4, 5, None, range(0), 1.0)), cache_dir=tmp_path / "c"))
    coll = table.nodes.index[(table.nodes["kind"] == "collective").to_numpy()]
    assert len(coll) == 4 * 5 * 4  # an all-reduce per layer, step and rank
    assert table.colls.index.equals(coll)
    assert (table.colls["msg_bytes"] > 0).all()
    assert set(table.colls["group_ranks"].astype(str)) == {"0,1,2,3"}
    assert "msg_bytes" not in table.nodes and table.nodes["rank"].dtype == np.int8


def test_detection_never_loads_a_whole_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _write(tmp_path, _group_trace(4, 12, slow_rank=1, slow_steps=range(3, 10), slow_factor=1.5))
    bundle = open_bundle(d, cache_dir=tmp_path / "c")

    def whole_rank(self: Bundle, rank: int) -> pd.DataFrame:
        raise AssertionError(f"rank {rank} loaded with all its columns")

    monkeypatch.setattr(Bundle, "events", whole_rank)
    res = detect(bundle)
    assert res.suspect_ranks[0] == 1
