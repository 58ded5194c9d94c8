"""`kat detect --annotate`: the merged Chrome trace re-imports with KAT's own importer intact."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from kat.agent.demo import DEMO_INCIDENT
from kat.tools.outpost import DetectionResult, detect
from kat.tools.outpost.annotate import FINDINGS_NAME, FINDINGS_PID, WAIT_CAT, write_annotated
from kat.tools.telemetry import Bundle, open_bundle
from kat.tools.telemetry.bundle import write_canonical_parquet


@pytest.fixture(scope="module")
def demo() -> tuple[Bundle, DetectionResult]:
    bundle = open_bundle(DEMO_INCIDENT)
    return bundle, detect(bundle)


def _reimport(path: Path, cache: Path) -> pd.DataFrame:
    b = open_bundle(path, cache_dir=cache)
    assert len(b.ranks) == 1  # one file: KAT reads it as one trace, ranks are its processes
    return b.events(b.ranks[0])


def _check_intact(original: Bundle, det: DetectionResult, merged: pd.DataFrame) -> None:
    for r in original.ranks:
        src, got = original.events(r), merged[merged["pid"] == r]
        assert len(got) == len(src), f"rank {r}"
        assert Counter(got["kind"].astype(str)) == Counter(src["kind"].astype(str))
        assert np.array_equal(np.sort(got["ts_ns"].to_numpy()), np.sort(src["ts_ns"].to_numpy()))  # one clock, no drift
        assert np.array_equal(np.sort(got["dur_ns"].to_numpy()), np.sort(src["dur_ns"].to_numpy()))
    track = merged[merged["pid"] == FINDINGS_PID].sort_values("ts_ns")
    assert len(track) == len(det.anomalies) > 0
    assert set(track["kind"].astype(str)) == {"annotation"}
    for i, a in enumerate(det.anomalies, 1):
        row = track[track["name"].astype(str).str.startswith(f"KAT finding #{i}: rank {a.rank} {a.component} ({a.method})")]
        assert len(row) == 1 and int(row["ts_ns"].iloc[0]) == pytest.approx(a.start_ns, abs=1)
        assert int(row["dur_ns"].iloc[0]) == pytest.approx(a.end_ns - a.start_ns, abs=1)


def test_demo_annotated_trace_reimports_intact(tmp_path: Path, demo: tuple[Bundle, DetectionResult]) -> None:
    bundle, det = demo
    out = tmp_path / "annotated.json.gz"
    counts = write_annotated(bundle, det, out)
    assert counts["findings"] == len(det.anomalies) and counts["events"] > 0
    _check_intact(bundle, det, _reimport(out, tmp_path / "cache"))

    doc = orjson.loads(gzip.open(out).read())
    ev = doc["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in ev if e.get("ph") == "M" and e.get("name") == "process_name"}
    assert names[FINDINGS_PID] == FINDINGS_NAME and all(names[r] == f"rank {r}" for r in bundle.ranks)
    slices = [e for e in ev if e["pid"] == FINDINGS_PID and e.get("ph") == "X"]
    for e, a in zip(slices, det.anomalies):  # every field of the finding rides along in args
        assert {k: e["args"][k] for k in ("rank", "component", "method", "start_ns", "end_ns", "steps")} == {
            "rank": a.rank,
            "component": a.component,
            "method": a.method,
            "start_ns": a.start_ns,
            "end_ns": a.end_ns,
            "steps": a.steps,
        }
    # Wait arrows: from the late rank to a peer in its group, each end inside a slice of its thread.
    late = {a.rank for a in det.anomalies if a.method == "arrival"}
    flows: defaultdict[object, dict[str, dict]] = defaultdict(dict)  # flow id -> phase -> event
    for e in ev:
        if e.get("cat") == WAIT_CAT:
            flows[e["id"]][e["ph"]] = e
    assert late and len(flows) == counts["flows"] > 0
    xs: defaultdict[tuple[object, object], list[tuple[float, float]]] = defaultdict(list)
    for e in ev:
        if e.get("ph") == "X" and e["pid"] != FINDINGS_PID:
            xs[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    groups = bundle.manifest.topology.groups.tp
    for pair in flows.values():
        s, f = pair["s"], pair["f"]
        assert s["pid"] in late and f["pid"] != s["pid"] and any({s["pid"], f["pid"]} <= set(g) for g in groups)
        for end in (s, f):
            assert any(a <= end["ts"] <= b for a, b in xs[(end["pid"], end["tid"])]), "flow end binds to no slice"


def test_parquet_traces_and_the_cli(tmp_path: Path, demo: tuple[Bundle, DetectionResult]) -> None:
    bundle, _ = demo
    root = tmp_path / "pq"
    shutil.copytree(DEMO_INCIDENT, root, ignore=shutil.ignore_patterns("traces"))
    (root / "traces").mkdir()
    for r in bundle.ranks:
        write_canonical_parquet(bundle.events(r), root / "traces" / f"rank-{r}.parquet")
    pq = open_bundle(root, cache_dir=tmp_path / "c0")
    det = detect(pq)
    out = tmp_path / "pq.json"
    from kat.agent.cli import app

    res = CliRunner().invoke(app, ["detect", str(root), "--annotate", str(out)])
    assert res.exit_code == 0, res.output
    assert f"{len(det.anomalies)} finding(s)" in res.output
    _check_intact(pq, det, _reimport(out, tmp_path / "c1"))


def test_unwritable_output_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    from kat.agent.cli import app

    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = CliRunner().invoke(app, ["detect", str(DEMO_INCIDENT), "--annotate", str(blocker / "out.json")])
    assert res.exit_code == 2 and "error" in res.output and "Traceback" not in res.output
