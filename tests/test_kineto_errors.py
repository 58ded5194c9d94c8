"""Malformed, truncated, hostile and ambiguous trace inputs get errors that name the file and field."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from kat.tools.telemetry import BundleError, TraceImportError, open_bundle
from kat.tools.telemetry.kineto import import_kineto, read_json_bytes
from tests.kineto_factory import step_trace, write_trace


def _err(path: Path, **kw) -> str:  # noqa: ANN003
    with pytest.raises(TraceImportError) as info:
        import_kineto(path, **kw)
    msg = str(info.value)
    assert str(path) in msg, msg
    return msg


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "rank-0.json"
    p.write_bytes(b"")
    assert "empty" in _err(p)


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(orjson.dumps(step_trace()))
    p = tmp_path / "rank-0.json.gz"
    p.write_bytes(data[: len(data) // 2])
    assert "truncated" in _err(p)


def test_truncated_json(tmp_path: Path) -> None:
    data = orjson.dumps(step_trace())
    p = tmp_path / "rank-0.json"
    p.write_bytes(data[: len(data) - 40])
    assert "not valid JSON" in _err(p)


def test_not_json(tmp_path: Path) -> None:
    p = tmp_path / "rank-0.json"
    p.write_text("ProfilerStep#1 took 3 ms\n")
    assert "not valid JSON" in _err(p)


def test_wrong_schema_trace_events_not_a_list(tmp_path: Path) -> None:
    p = write_trace({"traceEvents": {"ph": "X"}}, tmp_path / "rank-0.json")
    msg = _err(p)
    assert "traceEvents" in msg


def test_wrong_schema_event_not_an_object(tmp_path: Path) -> None:
    doc = step_trace()
    doc["traceEvents"].insert(3, 42)
    p = write_trace(doc, tmp_path / "rank-0.json")
    msg = _err(p)
    assert "traceEvents[3]" in msg


def test_no_trace_events_key(tmp_path: Path) -> None:
    p = write_trace({"schemaVersion": 1, "events": []}, tmp_path / "rank-0.json")
    assert "traceEvents" in _err(p)


def test_non_numeric_timestamp(tmp_path: Path) -> None:
    doc = step_trace()
    doc["traceEvents"][0]["ts"] = "soon"
    p = write_trace(doc, tmp_path / "rank-0.json")
    msg = _err(p)
    assert "ts" in msg and "soon" in msg


def test_negative_duration(tmp_path: Path) -> None:
    doc = step_trace()
    doc["traceEvents"][0]["dur"] = -5
    p = write_trace(doc, tmp_path / "rank-0.json")
    assert "negative duration" in _err(p)


def test_bad_rank_value(tmp_path: Path) -> None:
    doc = step_trace()
    doc["distributedInfo"]["rank"] = "zero"
    p = write_trace(doc, tmp_path / "trace.json")
    assert "distributedInfo.rank" in _err(p)


def test_gzip_bomb_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "rank-0.json.gz"
    p.write_bytes(gzip.compress(b"[" + b" " * 5_000_000 + b"]"))
    with pytest.raises(TraceImportError, match="refusing"):
        read_json_bytes(p, max_bytes=1_000_000)


def test_bare_array_form_is_accepted(tmp_path: Path) -> None:
    doc = step_trace()
    p = write_trace(doc["traceEvents"], tmp_path / "rank-3.json")
    df, meta = import_kineto(p)
    assert meta.rank == 3 and meta.rank_source == "file name"
    assert (df["kind"] == "kernel").sum() == 6


def test_duplicate_rank_in_directory(tmp_path: Path) -> None:
    write_trace(step_trace(rank=1), tmp_path / "a.json")
    write_trace(step_trace(rank=1), tmp_path / "b.json.gz")
    with pytest.raises(TraceImportError, match="duplicate rank") as info:
        open_bundle(tmp_path, cache_dir=tmp_path / "cache")
    assert "a.json" in str(info.value) and "b.json.gz" in str(info.value)


def test_rank_unknown_in_multi_file_directory(tmp_path: Path) -> None:
    for name in ("x.json", "y.json"):
        doc = step_trace()
        del doc["distributedInfo"]
        write_trace(doc, tmp_path / name)
    with pytest.raises(TraceImportError, match="cannot tell which rank"):
        open_bundle(tmp_path, cache_dir=tmp_path / "cache")


def test_rank_from_file_name_when_distributed_info_missing(tmp_path: Path) -> None:
    for r in (0, 1):
        doc = step_trace(rank=r)
        del doc["distributedInfo"]
        write_trace(doc, tmp_path / f"worker{r}.json")
    b = open_bundle(tmp_path, cache_dir=tmp_path / "cache")
    assert b.ranks == [0, 1]


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no trace files"):
        open_bundle(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such file"):
        open_bundle(tmp_path / "nope")


def test_flows_link_kernels_when_correlation_args_are_missing(tmp_path: Path) -> None:
    p = write_trace(step_trace(strip_correlation=True), tmp_path / "rank-0.json")
    df, _ = import_kineto(p)
    k = df[df["kind"].isin(["kernel", "collective"])]
    assert len(k) == 12 and (k["parent"] >= 0).all()
    assert (df.iloc[k["parent"].to_numpy()]["name"] == "cudaLaunchKernel").all()


def test_synthetic_trace_structure(tmp_path: Path) -> None:
    p = write_trace(step_trace(rank=1, world=4), tmp_path / "t.json.gz")
    df, meta = import_kineto(p)
    assert meta.rank == 1
    coll = df[df["kind"] == "collective"]
    assert len(coll) == 6
    assert (coll["group_ranks"] == "0,1,2,3").all() and (coll["msg_bytes"] == 32768 * 2).all()
    assert sorted(coll["step"].unique()) == [0, 1, 2]
    # kernel -> cudaLaunchKernel -> cpu_op -> ProfilerStep
    k = df[df["kind"] == "kernel"].iloc[0]
    launch = df.iloc[k["parent"]]
    op = df.iloc[launch["parent"]]
    step = df.iloc[op["parent"]]
    assert (launch["name"], op["name"], step["kind"]) == ("cudaLaunchKernel", "aten::mm", "step")
    assert op["shape"] == "[[8,4096],[4096,4096]]"


def test_concatenated_gzip_members(tmp_path: Path) -> None:
    data = orjson.dumps(step_trace(rank=2))
    half = len(data) // 2
    p = tmp_path / "trace.json.gz"
    p.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    df, meta = import_kineto(p)
    assert meta.rank == 2 and (df["kind"] == "collective").sum() == 6


def test_large_trace_is_streamed_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kat.tools.telemetry.kineto_stream as ks

    doc = step_trace(steps=20)
    for e in doc["traceEvents"][::7]:
        if e.get("ph") == "X":
            e["name"] = e["name"] + ' odd}, {"ph": "X"} name'
    ref, _ = import_kineto(write_trace(doc, tmp_path / "ref.json"))  # one chunk
    # Small chunks force many cuts, including through names that contain "}, {".
    monkeypatch.setattr(ks, "CHUNK_BYTES", 2000)
    monkeypatch.setattr(ks, "READ_BYTES", 1500)
    for gz in (False, True):
        df, meta = import_kineto(write_trace(doc, tmp_path / f"rank-0.json{'.gz' if gz else ''}"))
        assert meta.events_in_file == len(doc["traceEvents"])
        assert df["name"].astype(str).tolist() == ref["name"].astype(str).tolist()
        assert (df["parent"].to_numpy() == ref["parent"].to_numpy()).all()


def test_metadata_after_events_is_read(tmp_path: Path) -> None:
    doc = step_trace(rank=5, world=8)
    reordered = {
        "traceEvents": doc["traceEvents"],
        "distributedInfo": doc["distributedInfo"],
        "baseTimeNanoseconds": doc["baseTimeNanoseconds"],
    }
    df, meta = import_kineto(write_trace(reordered, tmp_path / "t.json"))
    assert meta.rank == 5 and meta.world_size == 8
    assert df["ts_ns"].min() >= doc["baseTimeNanoseconds"]


def test_a_failed_import_does_not_poison_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error of a failed file is kept (as a CLI or test runner keeps it); the next file, which
    needs a bigger read buffer, still imports. Before: the failed stream's buffer was reused while
    its traceback still held a view of it, and growing it raised BufferError."""
    import kat.tools.telemetry.kineto_stream as ks

    monkeypatch.setattr(ks, "CHUNK_BYTES", 2000)
    monkeypatch.setattr(ks, "READ_BYTES", 1500)
    monkeypatch.setattr(ks, "_SPARE", [])
    data = gzip.compress(orjson.dumps(step_trace(steps=1)))  # fails within the first read
    cut = tmp_path / "rank-0.json.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceImportError) as kept:
        import_kineto(cut)
    assert "truncated" in str(kept.value)
    df, meta = import_kineto(write_trace(step_trace(steps=40), tmp_path / "rank-1.json"))
    assert meta.events_in_file > 0 and len(df) > 0
    del kept
