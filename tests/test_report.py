"""The incident report renderer: panels present, culprit marked, missing data said, caps applied."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kat.agent.demo import DEMO_INCIDENT
from kat.agent.diagnosis import Diagnosis, RuledOut
from kat.agent.report import build_report
from kat.agent.report.model import (
    MAX_HEATMAP_RANKS,
    MAX_HEATMAP_STEPS,
    MAX_METRIC_POINTS,
    MAX_SKEW_MARKS,
    MAX_TIMELINE_RANKS,
    MAX_TIMELINE_STEPS,
)
from kat.agent.report.png import snapshot_png
from kat.agent.report.trace_data import arrivals, rank_spans, step_matrix
from kat.agent.report.verdict import ReportInputError, load_diagnosis
from kat.tools.outpost import DetectionResult, detect
from kat.tools.telemetry import Bundle, open_bundle

Demo = tuple[Bundle, DetectionResult, Diagnosis]

DATA = Path(__file__).parent / "data" / "report"
PANELS = ("verdict", "heatmap", "timeline", "metrics", "chain", "notes")


@pytest.fixture(scope="module")
def demo() -> Demo:
    bundle = open_bundle(DEMO_INCIDENT)
    return bundle, detect(bundle), load_diagnosis(DATA / "demo-diagnosis.json")


def _section(html: str, panel: str) -> str:
    m = re.search(rf'<section id="panel-{panel}"[^>]*>(.*?)</section>', html, re.S)
    assert m, f"panel {panel} missing"
    return m.group(1)


def test_demo_report_has_every_panel_and_marks_the_culprit(demo: Demo) -> None:
    bundle, det, d = demo
    html, data = build_report(bundle, d, det)
    for p in ("heatmap", "timeline", "metrics", "chain"):
        assert "<svg" in _section(html, p), p
    assert "rank 4 ◀ culprit" in _section(html, "heatmap") and 'class="culprit-row"' in _section(html, "heatmap")
    assert "rank 4 ◀ culprit" in _section(html, "timeline")
    # The culprit's own work is above its lock-step peer's at most steps; the peer (who waits) below.
    m = data.heatmap
    assert m is not None and data.timeline is not None
    dev = dict(zip(m.ranks, m.deviation_pct))
    assert sum(v > 0 for v in dev[4] if v is not None) >= 0.7 * len(m.steps)
    assert sum(v < 0 for v in dev[5] if v is not None) >= 0.7 * len(m.steps)
    # Rank 4 kept its TP peer waiting at more collectives than anyone else.
    assert data.timeline.late[0].rank == 4
    # Each evidence metric: the culprit's series and the peers' band, the incident window shaded.
    metrics = _section(html, "metrics")
    assert data.metrics and all(p.suspect is not None and p.peers >= 1 for p in data.metrics)
    assert 'class="suspect-series"' in metrics and 'class="peer-band"' in metrics and 'class="window"' in metrics
    # Every chain link's evidence id is clickable and lands on an evidence row.
    chain = _section(html, "chain")
    for link in d.causal_chain:
        for eid in link.evidence:
            assert f'href="#{eid}"' in chain and f'id="{eid}"' in chain
    # Each alternative ruled out links to the evidence it cites.
    ruled = chain[chain.index("Alternatives ruled out") :]
    for a in d.alternatives_ruled_out:
        assert a.cited() and all(f'href="#{eid}"' in ruled for eid in a.cited()), a.category
    assert "Noise floor" in _section(html, "notes") and "Data quality" in _section(html, "notes")
    # Self-contained: no script, no external URL, a CSP that forbids fetching anything.
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)
    assert "default-src 'none'" in html


def test_missing_data_is_said(tmp_path: Path, demo: Demo) -> None:
    _, det, d = demo
    bare = tmp_path / "no-metrics"
    shutil.copytree(DEMO_INCIDENT, bare, ignore=shutil.ignore_patterns("metrics.*", "logs.*"))
    html, _ = build_report(bare, None, det)
    assert "missing data: no Diagnosis given" in _section(html, "metrics")
    assert "missing data: no Diagnosis given" in _section(html, "chain")
    notes = _section(html, "notes")
    assert "metrics: missing data" in notes and "logs: missing data" in notes
    # With a Diagnosis but no metrics file: each evidence metric says it has no data.
    unsupported = d.model_copy(update={"alternatives_ruled_out": [RuledOut(category="nvlink_degradation", why="looks fine")]})
    html, data = build_report(bare, unsupported, det)
    assert all("missing data: the bundle has no metrics" in p.notes for p in data.metrics)
    assert "missing data: no evidence cited" in _section(html, "chain")
    # The Diagnosis's own per-source data quality is shown too.
    from kat.tools.telemetry.quality import DataQuality

    q = DataQuality()
    q.metrics.missing("no metrics file in the bundle")
    html, _ = build_report(bare, unsupported.model_copy(update={"data_quality": q}), det)
    assert "Diagnosis: metrics: missing (no metrics file in the bundle)" in _section(html, "notes")


def test_caps_on_a_large_capture() -> None:
    rng = np.random.default_rng(0)
    ranks, steps = 100, 1000
    r, s = np.meshgrid(np.arange(ranks), np.arange(steps), indexing="ij")
    start = (s * 2_000_000 + rng.integers(0, 50_000, size=s.shape)).ravel()
    ms = np.where(r == 77, 2.4, 2.0).ravel()
    table = pd.DataFrame({"rank": r.ravel(), "step": s.ravel(), "start_ns": start, "end_ns": start + (ms * 1e6).astype(int), "ms": ms})
    coll = pd.DataFrame(
        {
            "rank": r.ravel(),
            "step": s.ravel(),
            "ts_ns": start + np.where(r.ravel() == 77, 400_000, 0),
            "dur_ns": 100_000,
            "coll": "all_reduce",
            "group": ",".join(map(str, range(ranks))),
        }
    )
    m = step_matrix(table, coll, [list(range(ranks))], "test", priority=[77])
    assert m is not None
    assert len(m.ranks) == MAX_HEATMAP_RANKS and 77 in m.ranks
    assert len(m.steps) == MAX_HEATMAP_STEPS and all(len(row) == MAX_HEATMAP_STEPS for row in m.ms)
    assert any("100 ranks" in n for n in m.notes) and any("1000 steps" in n for n in m.notes)
    spans, notes = rank_spans(table, priority=[77])
    assert len(spans) == MAX_TIMELINE_RANKS and 77 in [x.rank for x in spans]
    assert all(len(x.spans) == MAX_TIMELINE_STEPS for x in spans) and len(notes) == 2
    arr, late, n, notes = arrivals(coll)
    assert n == steps and len(arr) == MAX_SKEW_MARKS and late[0].rank == 77
    assert all(a.last_rank == 77 for a in arr) and notes


def test_metric_series_are_bucketed(tmp_path: Path) -> None:
    from tests.bundle_factory import make_bundle

    root = make_bundle(tmp_path / "b")
    lines = ["ts,name,value,host,gpu,rank"]
    for i in range(3000):
        for g in range(2):
            lines.append(
                f"{1_700_000_000_000_000_000 + i * 10_000_000},DCGM_FI_DEV_GPU_TEMP,{60 + (30 if g == 1 and i > 1500 else 0)},node-a,{g},"
            )
    (root / "metrics.csv").write_text("\n".join(lines) + "\n")
    from kat.agent.report.metric_data import metric_panel

    p = metric_panel(open_bundle(root), "DCGM_FI_DEV_GPU_TEMP", ["ev-1"], 1, None, None)
    assert p.suspect is not None and len(p.suspect.values) <= MAX_METRIC_POINTS and p.peers == 1
    assert max(p.suspect.values) == pytest.approx(90) and max(p.band_hi) == pytest.approx(60)
    assert any("bucket means" in n for n in p.notes)


def test_png_snapshot(demo: Demo) -> None:
    bundle, det, d = demo
    _, data = build_report(bundle, d, det)
    png = snapshot_png(data)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_bad_inputs_are_named_not_tracebacks(tmp_path: Path) -> None:
    bad = tmp_path / "d.json"
    bad.write_text('{"root_cause": {"category": "gpu_thermal_throttling"}}')
    with pytest.raises(ReportInputError, match=r"d\.json.*root_cause\.summary"):
        load_diagnosis(bad)
    from kat.agent.cli import app

    res = CliRunner().invoke(app, ["report", str(DEMO_INCIDENT), "--diagnosis", str(bad), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 2 and "root_cause.summary" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 2 and "no such file" in res.output


def test_unranked_counters_are_split_by_their_labels(tmp_path: Path) -> None:
    from kat.agent.report.metric_data import metric_panel
    from tests.bundle_factory import make_bundle

    root = make_bundle(tmp_path / "b")
    lines = ["ts,name,value,host,cpu"]
    for i in range(50):
        for cpu in range(4):  # one busy CPU among four; samples of all CPUs share timestamps
            rate = 0.5 if cpu == 2 else 0.01
            lines.append(f"{1_700_000_000_000_000_000 + i * 100_000_000},node_schedstat_waiting_seconds_total,{i * rate},node-a,{cpu}")
    (root / "metrics.csv").write_text("\n".join(lines) + "\n")
    p = metric_panel(open_bundle(root), "node_schedstat_waiting_seconds_total", ["ev-1"], 1, None, None)
    assert p.peers == 4 and p.suspect is None
    assert max(p.band_hi) == pytest.approx(5.0) and min(p.band_lo) == pytest.approx(0.1)  # rates per second, per CPU
    assert any("no rank" in n for n in p.notes) and any("rate" in n for n in p.notes)
