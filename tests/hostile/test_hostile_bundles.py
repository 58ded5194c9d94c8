"""Hostile manifests, metrics and logs (through `kat import`), and what the agent makes of them.

Damaged tables keep their good rows and say what they dropped; a diagnosis over a few damaged
rows is the clean one, with data_quality naming the damage; missing data rules nothing out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from hostile_corpus import append_lines, cut_file, damage_rows, demo_copy, edit_manifest, small_bundle, trace_with
from test_hostile_traces import kat

from kat.agent.diagnosis import Diagnosis
from kat.agent.graph import validate_diagnosis
from kat.agent.session import Session
from kat.agent.state import LedgerEntry
from tests.kineto_factory import write_trace


def summary(root: Path) -> dict:
    r = kat("import", root, "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


# -- manifests: a one-line error naming the file and the field -----------------------------------
def _manifest_bytes(data: bytes) -> Callable[[Path], Path]:
    def build(t: Path) -> Path:
        root = small_bundle(t)
        (root / "incident.json").write_bytes(data)
        return root

    return build


MANIFESTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "json-array": (_manifest_bytes(b'[{"id": "x", "symptom": "y"}]'), "must be a JSON object ({...}), but it is an array"),
    "json-number": (_manifest_bytes(b"42"), "but it is a number"),
    "invalid-json": (_manifest_bytes(b'{"id": "x",'), "not valid JSON"),
    "id-number": (lambda t: edit_manifest(small_bundle(t), id=42), "[field 'id']"),
    "id-missing": (_manifest_bytes(b'{"symptom": "slow"}'), "[field 'id']"),
    "title-list": (lambda t: edit_manifest(small_bundle(t), title=["a"]), "[field 'title']"),
    "window-reversed": (
        lambda t: edit_manifest(small_bundle(t), window={"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}),
        "window end",
    ),
    "worker-rank-huge": (
        lambda t: edit_manifest(small_bundle(t), topology={"workers": [{"rank": 10**15}]}),
        "topology.workers.0.rank",
    ),
    "deep-manifest": (_manifest_bytes(b'{"id": "x", "symptom": "y", "z": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "not valid JSON"),
    "not-utf8": (_manifest_bytes(b'{"id": "\xff\xfe", "symptom": "y"}'), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_bad_manifest_is_a_clear_error(case: str, tmp_path: Path) -> None:
    build, needle = MANIFESTS[case]
    r = kat("import", build(tmp_path))
    msg = " ".join(r.stderr.split())
    assert r.exit_code == 2 and "incident.json" in msg and needle in msg, msg


def test_manifest_with_bom_and_unknown_fields_loads(tmp_path: Path) -> None:
    root = edit_manifest(small_bundle(tmp_path), team={"on_call": "x"})
    (root / "incident.json").write_bytes(b"\xef\xbb\xbf" + (root / "incident.json").read_bytes())
    assert summary(root)["id"] == "inc-0001"


# -- metrics and logs: good rows kept, bad ones counted with file, line, reason ----------------------
TABLES: dict[str, tuple[Callable[[Path], None], str, str, str]] = {
    # name: (damage, source, expected status, a reason or example substring)
    "metrics-short-row": (
        lambda r: append_lines(r / "metrics.csv", b"1700000000000000000,DCGM_FI_DEV_GPU_TEMP"),
        "metrics",
        "degraded",
        "expected 6 fields, got 2",
    ),
    "metrics-non-utf8": (
        lambda r: append_lines(r / "metrics.csv", b"1700000000000000000,DCGM_FI_DEV_GPU_TEMP,61,node-\xff,0,0"),
        "metrics",
        "degraded",
        "non-UTF-8 byte 0xff",
    ),
    "metrics-not-a-number": (
        lambda r: append_lines(r / "metrics.csv", b"1700000000000000000,DCGM_FI_DEV_GPU_TEMP,hot,node-a,0,0"),
        "metrics",
        "degraded",
        "'hot'",
    ),
    "metrics-bad-ts": (
        lambda r: append_lines(r / "metrics.csv", b"yesterday,DCGM_FI_DEV_GPU_TEMP,61,node-a,0,0"),
        "metrics",
        "degraded",
        "unparseable timestamp",
    ),
    "metrics-rank-20-digits": (
        lambda r: append_lines(r / "metrics.csv", b"1700000000000000000,DCGM_FI_DEV_GPU_TEMP,61,node-a,0,99999999999999999999"),
        "metrics",
        "degraded",
        "'rank'",
    ),
    "metrics-missing-ts": (
        lambda r: (r / "metrics.csv").write_text("time,name,value\n1,a,2\n"),
        "metrics",
        "missing",
        "missing required column 'ts'",
    ),
    "metrics-empty-file": (lambda r: (r / "metrics.csv").write_text(""), "metrics", "missing", "no rows"),
    "metrics-binary-garbage": (lambda r: (r / "metrics.csv").write_bytes(bytes(range(256)) * 50), "metrics", "missing", "metrics.csv"),
    "logs-bad-json-line": (lambda r: append_lines(r / "logs.jsonl", b'{"ts": 1, "message": '), "logs", "degraded", "not valid JSON"),
    "logs-array-line": (lambda r: append_lines(r / "logs.jsonl", b"[1, 2]"), "logs", "degraded", "a JSON array, not an object"),
    "logs-non-utf8": (
        lambda r: append_lines(r / "logs.jsonl", b'{"ts": 1700000000000000000, "message": "x\xff"}'),
        "logs",
        "degraded",
        "non-UTF-8 byte 0xff",
    ),
    "logs-deep-line": (
        lambda r: append_lines(r / "logs.jsonl", b'{"ts": 1, "message": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        "logs",
        "degraded",
        "not valid JSON",
    ),
    "logs-rank-string": (
        lambda r: append_lines(r / "logs.jsonl", b'{"ts": 1700000000000000000, "rank": "zero", "message": "m"}'),
        "logs",
        "degraded",
        "'rank'",
    ),
    "logs-missing-message": (
        lambda r: (r / "logs.jsonl").write_text('{"ts": 1}\n'),
        "logs",
        "missing",
        "missing required column 'message'",
    ),
}


@pytest.fixture(scope="module")
def clean_small(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return summary(small_bundle(tmp_path_factory.mktemp("clean-small")))


@pytest.mark.parametrize("case", sorted(TABLES))
def test_damaged_table_keeps_good_rows_and_reports(case: str, tmp_path: Path, clean_small: dict) -> None:
    damage, source, status, needle = TABLES[case]
    clean = clean_small
    root = small_bundle(tmp_path)
    damage(root)
    s = summary(root)
    q = s["data_quality"][source]
    assert q["status"] == status, q
    text = json.dumps(q)
    assert needle in text, text
    if status == "degraded":  # nothing good was lost: a repaired row is kept, a bad one dropped
        assert s[source] == q["kept"] == clean[source] + (1 if q["repaired"] else 0)
        assert q["dropped"] + q["repaired"] == 1
        assert any(f"{q['files'][0]} line" in e for e in q["examples"])
    assert "np.float64" not in text


def test_damaged_parquet_metrics_and_logs_are_missing_with_reason(tmp_path: Path) -> None:
    root = demo_copy(tmp_path)
    cut_file(root / "metrics.parquet", 0.5)
    df = pd.read_json(root / "logs.jsonl", lines=True, dtype=False).astype(str)
    df.to_parquet(root / "logs.parquet", row_group_size=50)
    (root / "logs.jsonl").unlink()
    cut_file(root / "logs.parquet", 0.7)
    s = summary(root)
    for src in ("metrics", "logs"):
        q = s["data_quality"][src]
        assert q["status"] == "missing" and "Parquet" in json.dumps(q["reasons"]), q


def test_metric_value_1e300_is_kept_without_numpy_reprs(tmp_path: Path) -> None:
    root = small_bundle(tmp_path)
    append_lines(root / "metrics.csv", b"1700000000000000000,DCGM_FI_DEV_GPU_TEMP,1e300,node-a,0,0", b"1e300,X,1,,,")
    s = summary(root)
    q = s["data_quality"]["metrics"]
    assert q["dropped"] == 1 and "np.float64" not in json.dumps(q) and "'1e300'" in json.dumps(q)
    assert s["metrics"] == q["kept"]  # the 1e300 value itself is a number, and kept


# -- the agent over damaged, missing and empty data -------------------------------------------------
def _diagnose(root: Path) -> Diagnosis:
    s = Session(root, "rules")
    try:
        return s.diagnose()
    finally:
        s.close()


def _same(a: Diagnosis, b: Diagnosis) -> None:
    assert (a.root_cause.category, a.root_cause.ranks, a.root_cause.hosts) == (
        b.root_cause.category,
        b.root_cause.ranks,
        b.root_cause.hosts,
    )
    assert len(a.causal_chain) == len(b.causal_chain)


@pytest.fixture(scope="module")
def clean_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Diagnosis]:
    root = demo_copy(tmp_path_factory.mktemp("clean"))
    df = pd.read_parquet(root / "metrics.parquet")
    df.to_csv(root / "metrics.csv", index=False)  # the CSV dialect, to damage it line by line
    (root / "metrics.parquet").unlink()
    d = _diagnose(root)
    assert d.status == "complete" and d.data_quality is not None and not d.data_quality.degraded
    return root, d


def test_few_damaged_metric_rows_give_the_clean_diagnosis(clean_demo: tuple[Path, Diagnosis], tmp_path: Path) -> None:
    import shutil

    src, clean = clean_demo
    root = tmp_path / "damaged"
    shutil.copytree(src, root)
    n = damage_rows(root / "metrics.csv", 997, b"\xff\xfe,garbage")
    n += damage_rows(root / "metrics.csv", 1999, b"2026-13-45T99:00:00Z,DCGM_FI_DEV_GPU_TEMP,70,x,0,0")
    d = _diagnose(root)
    _same(d, clean)
    q = d.data_quality.metrics
    assert d.status == "degraded" and q.status == "degraded" and q.dropped == n >= 5
    assert any("metrics.csv line" in e for e in q.examples)
    assert d.confidence < clean.confidence


def test_few_damaged_log_lines_give_the_clean_diagnosis(clean_demo: tuple[Path, Diagnosis], tmp_path: Path) -> None:
    import shutil

    src, clean = clean_demo
    root = tmp_path / "damaged"
    shutil.copytree(src, root)
    n = damage_rows(root / "logs.jsonl", 41, b'{"ts": "not a time", "message": "x"}')
    append_lines(root / "logs.jsonl", b"\x00\x01 not json", b'["an", "array"]')
    d = _diagnose(root)
    _same(d, clean)
    q = d.data_quality.logs
    assert d.status == "degraded" and q.dropped == n + 2
    assert "logs.jsonl" in " ".join(q.examples)


def test_empty_trace_is_insufficient_data_not_healthy(tmp_path: Path) -> None:
    root = small_bundle(tmp_path, ranks=2)
    for r in range(2):
        write_trace(trace_with(traceEvents=[], distributedInfo={"rank": r, "world_size": 2}), root / "traces" / f"rank-{r}.json.gz")
    (root / "metrics.csv").unlink()
    (root / "logs.jsonl").unlink()
    d = _diagnose(root)
    assert d.root_cause.category == "undetermined" and "Insufficient data" in d.root_cause.summary
    assert d.confidence == 0.0 and d.status == "degraded" and d.data_quality.traces.status == "missing"


def test_missing_metrics_rule_nothing_out_and_ids_exist(tmp_path: Path) -> None:
    root = small_bundle(tmp_path)
    (root / "metrics.csv").unlink()
    d = _diagnose(root)
    listed = {e.id for e in d.evidence}
    assert d.status == "degraded" and d.data_quality.metrics.status == "missing"
    for r in d.alternatives_ruled_out:
        assert r.evidence and set(r.evidence) <= listed
        assert "metric" not in r.why.lower() or r.evidence  # nothing ruled out by a lookup that found nothing
    for link in d.causal_chain:
        assert {i for i in link.evidence if i.startswith("ev-")} <= listed


def test_validator_rejects_unlisted_ids_and_drops_unbacked_ruled_out() -> None:
    base = {
        "root_cause": {"category": "none", "summary": "healthy"},
        "causal_chain": [{"cause": "a", "effect": "b", "evidence": ["ev-9"]}],
        "evidence": [{"id": "ev-1"}],
        "confidence": 0.5,
    }
    with pytest.raises(ValueError, match=r"ev-9"):
        Diagnosis.model_validate(base)
    ledger = [
        LedgerEntry(id="ev-1", tool="outpost_detect", query="{}", status="ok", summary="nothing"),
        LedgerEntry(id="ev-2", tool="metric_lookup", query='{"name": "DCGM_FI_DEV_POWER_USAGE"}', status="no_data", summary=""),
        LedgerEntry(id="ev-3", tool="metric_lookup", query='{"name": "x"}', status="error", summary="failed"),
    ]
    args = {
        **base,
        "causal_chain": [{"cause": "a", "effect": "b", "evidence": ["ev-1"]}],
        "alternatives_ruled_out": [
            {"category": "gpu_power_or_clock_cap", "why": "power limits are unchanged (ev-2)"},
            {"category": "kv_cache_pressure", "why": "KV usage well below full", "evidence": ["ev-3"]},
            {"category": "runtime_stall", "why": "no pauses (ev-1)"},
        ],
    }
    from kat.tools.telemetry.quality import DataQuality

    d, reason = validate_diagnosis(args, ledger, DataQuality())
    assert d is not None, reason
    assert [r.category for r in d.alternatives_ruled_out] == ["runtime_stall"]
    assert any("gpu_power_or_clock_cap is not ruled out" in n for n in d.data_quality.notes)
    assert {e.id for e in d.evidence} == {"ev-1"}
