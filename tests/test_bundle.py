"""Incident bundles: manifest validation, metrics and logs loading, cache, containment."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from kat.tools.telemetry import BundleError, open_bundle
from tests.bundle_factory import BASE_NS, make_bundle


def test_open_full_bundle(tmp_path: Path) -> None:
    b = open_bundle(make_bundle(tmp_path / "inc"), cache_dir=tmp_path / "cache")
    assert b.manifest.id == "inc-0001" and not b.is_bare_trace_dir
    assert b.ranks == [0, 1]
    # Unknown manifest fields are kept, not fatal.
    assert b.manifest.model_extra["custom_field"] == {"team": "serving"}
    assert b.manifest.topology.host_of(1) == "node-a"
    assert b.manifest.window is not None and b.manifest.window.start_ns() == BASE_NS
    m = b.metrics
    assert set(m["name"].cat.categories) == {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_SM_CLOCK", "vllm:time_per_output_token_seconds"}
    assert (m.loc[m["name"] == "vllm:time_per_output_token_seconds", "gpu"] == -1).all()
    lg = b.logs
    assert len(lg) == 53
    # RFC 3339 and epoch-ns timestamps land on one clock; levels are normalised.
    assert lg["ts_ns"].is_monotonic_increasing
    assert "error" in set(lg["level"])
    thermal = lg[lg["message"].str.contains("thermal")]
    assert thermal["ts_ns"].iloc[0] == BASE_NS + 70 * 1_000_000_000


def _write_manifest(root: Path, doc: object) -> None:
    (root / "incident.json").write_bytes(orjson.dumps(doc))


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"id": ""}, "id"),
        ({"symptom": None}, "symptom"),
        ({"window": {"start": "2023-11-14T22:23:20Z", "end": "2023-11-14T22:13:20Z"}}, "window"),
        ({"window": {"start": "yesterday", "end": "2023-11-14T22:13:20Z"}}, "window.start"),
        ({"topology": {"workers": [{"rank": 0}, {"rank": 0}]}}, "topology"),
        ({"topology": {"workers": [{"rank": -1}]}}, "topology.workers.0.rank"),
    ],
)
def test_manifest_errors_name_the_field(tmp_path: Path, patch: dict, field: str) -> None:
    root = make_bundle(tmp_path / "inc")
    doc = orjson.loads((root / "incident.json").read_bytes())
    doc.update(patch)
    _write_manifest(root, doc)
    with pytest.raises(BundleError) as info:
        open_bundle(root, cache_dir=tmp_path / "cache")
    assert info.value.field == field
    assert "incident.json" in str(info.value)


def test_manifest_not_json(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    (root / "incident.json").write_text("{id: inc}")
    with pytest.raises(BundleError, match="incident.json.*not valid JSON"):
        open_bundle(root)


def test_group_member_must_be_a_worker(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    doc = orjson.loads((root / "incident.json").read_bytes())
    doc["topology"]["groups"]["tp"] = [[0, 1, 7]]
    _write_manifest(root, doc)
    with pytest.raises(BundleError, match="rank 7") as info:
        open_bundle(root, cache_dir=tmp_path / "cache")
    assert info.value.field == "topology.groups.tp"


def test_bad_metric_value_names_row_and_column(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    with open(root / "metrics.csv", "a") as fh:
        fh.write(f"{BASE_NS},DCGM_FI_DEV_GPU_TEMP,hot,node-a,0,0\n")
    b = open_bundle(root, cache_dir=tmp_path / "cache")
    clean = open_bundle(make_bundle(tmp_path / "clean"), cache_dir=tmp_path / "cache")
    # The bad row is left out, the good ones kept, and data quality names file, line, column and value.
    assert len(b.metrics) == len(clean.metrics)
    q = b.quality().metrics
    assert q.status == "degraded" and q.dropped == 1
    assert "metrics.csv line" in q.examples[0] and "'value'" in q.examples[0] and "'hot'" in q.examples[0]


def test_missing_metric_column(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    (root / "metrics.csv").write_text("time,name,value\n1,a,2\n")
    b = open_bundle(root, cache_dir=tmp_path / "cache")
    assert b.metrics.empty
    q = b.quality().metrics
    assert q.status == "missing" and any("missing required column 'ts'" in r for r in q.reasons)


def test_bad_log_line_names_line_number(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    with open(root / "logs.jsonl", "a") as fh:
        fh.write('{"ts": 1, "message": "ok"}\n{"ts": 2, "message": \n')
    b = open_bundle(root, cache_dir=tmp_path / "cache")
    assert b.logs["message"].tolist()[-1] == "ok" or "ok" in b.logs["message"].tolist()
    q = b.quality().logs
    assert q.dropped == 1 and q.examples[0].startswith("logs.jsonl line 55: not valid JSON")


def test_bad_log_timestamp(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    with open(root / "logs.jsonl", "a") as fh:
        fh.write('{"ts": "not-a-time", "message": "x"}\n')
    b = open_bundle(root, cache_dir=tmp_path / "cache")
    q = b.quality().logs
    assert q.dropped == 1 and "unparseable timestamp" in q.examples[0] and "'not-a-time'" in q.examples[0]


def test_bundle_without_traces_dir(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    for p in (root / "traces").iterdir():
        p.unlink()
    (root / "traces").rmdir()
    with pytest.raises(BundleError, match="no traces/ directory"):
        open_bundle(root)


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    cache = tmp_path / "cache"
    ref = open_bundle(root, cache_dir=cache).events(1)
    for p in cache.glob("*.parquet"):
        p.write_bytes(b"PAR1 garbage")
    again = open_bundle(root, cache_dir=cache).events(1)
    assert len(again) == len(ref)
    assert (again["dur_ns"].to_numpy() == ref["dur_ns"].to_numpy()).all()
    # The loaded rank's entry was written back, so the next open reads it, not the JSON.
    from kat.tools.telemetry.bundle import read_canonical_parquet
    from kat.tools.telemetry.import_worker import cache_path

    assert len(read_canonical_parquet(cache_path(cache, root / "traces" / "rank-1.json.gz"))) == len(ref)


def test_unwritable_cache_still_works(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    b = open_bundle(root, cache_dir=blocker / "sub")
    assert len(b.events(0)) > 0


def test_canonical_parquet_traces(tmp_path: Path) -> None:
    from kat.tools.telemetry.bundle import write_canonical_parquet

    src = open_bundle(make_bundle(tmp_path / "inc"), cache_dir=tmp_path / "cache")
    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    for r in src.ranks:
        write_canonical_parquet(src.events(r), pq_dir / f"rank-{r}.parquet")
    b = open_bundle(pq_dir)
    assert b.ranks == [0, 1]
    assert (b.events(1)["dur_ns"].to_numpy() == src.events(1)["dur_ns"].to_numpy()).all()


def test_resolve_inside_rejects_traversal(tmp_path: Path) -> None:
    b = open_bundle(make_bundle(tmp_path / "inc"), cache_dir=tmp_path / "cache")
    assert b.resolve_inside("traces/rank-0.json.gz").is_file()
    for evil in ("../secret", "/etc/passwd", "traces/../../x"):
        with pytest.raises(BundleError, match="outside the incident bundle"):
            b.resolve_inside(evil)


def test_rank_columns_reads_a_subset_without_keeping_it(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    cache = tmp_path / "cache"
    full = open_bundle(root, cache_dir=cache).events(1)
    b = open_bundle(root, cache_dir=cache)
    part = b.rank_columns(1, ["name", "dur_ns", "parent"])
    assert list(part.columns) == ["name", "dur_ns", "parent"]
    assert (part["dur_ns"].to_numpy() == full["dur_ns"].to_numpy()).all()
    assert part["name"].astype(str).tolist() == full["name"].astype(str).tolist()
    assert 1 not in b._events  # nothing kept: a pass over all ranks holds one rank at a time
    # Damaged cache entries fall back to a full re-import.
    for p in cache.glob("*.parquet"):
        p.write_bytes(b"PAR1 garbage")
    again = open_bundle(root, cache_dir=cache).rank_columns(1, ["dur_ns"])
    assert (again["dur_ns"].to_numpy() == full["dur_ns"].to_numpy()).all()
    with pytest.raises(BundleError, match="unknown canonical column"):
        b.rank_columns(1, ["dur_ms"])
    with pytest.raises(BundleError, match="no trace for rank 7"):
        b.rank_columns(7, ["dur_ns"])


def test_importing_traces_loads_neither_pyarrow_nor_pydantic(tmp_path: Path) -> None:
    """The import path stays light (bench: peak memory vs HTA): both load only when used."""
    import subprocess
    import sys

    root = make_bundle(tmp_path / "inc")
    code = (
        "import sys\n"
        "from kat.tools.telemetry.bundle import open_bundle\n"
        f"b = open_bundle({str(root / 'traces')!r}, cache_dir={str(tmp_path / 'cache')!r})\n"
        "assert b.total_events > 0\n"
        "print(sorted(m for m in ('pyarrow', 'pydantic', 'pandas') if m in sys.modules))\n"
        "print(b.manifest.id, b.manifest.topology.groups.tp)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent, check=True
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == "traces [[0, 1]]"  # the bare directory's manifest is still there when asked for


def test_single_trace_file_manifest_is_named_after_the_file(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    b = open_bundle(root / "traces" / "rank-1.json.gz", cache_dir=tmp_path / "cache")
    assert b.manifest.id == "rank-1.json.gz"
    assert b.ranks == [1]


def test_canonical_parquet_errors_name_the_file_and_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kat.tools.telemetry import TraceImportError
    from kat.tools.telemetry.bundle import read_canonical_parquet

    partial = tmp_path / "rank-0.parquet"
    pq.write_table(pa.table({"rank": [0], "ts_ns": [1]}), partial)
    with pytest.raises(TraceImportError, match=r"missing canonical columns \['id'") as err:
        read_canonical_parquet(partial)
    assert err.value.field == "id" and "rank-0.parquet" in str(err.value)
    assert list(read_canonical_parquet(partial, columns=["ts_ns"]).columns) == ["ts_ns"]  # a subset it has is fine
    garbage = tmp_path / "rank-1.parquet"
    garbage.write_bytes(b"PAR1 not really")
    with pytest.raises(TraceImportError, match="not a readable Parquet file") as err:
        read_canonical_parquet(garbage)
    assert "rank-1.parquet" in str(err.value)
