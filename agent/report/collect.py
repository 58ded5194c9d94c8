"""Gather everything the report draws from a bundle, Outpost's result and (optionally) a Diagnosis."""

from __future__ import annotations

import numpy as np

from kat.agent.diagnosis import Diagnosis
from kat.agent.report.metric_data import metric_panel
from kat.agent.report.model import MAX_FINDINGS, MAX_METRICS, Finding, ReportData, StepMatrix, Timeline
from kat.agent.report.trace_data import arrivals, rank_spans, read_traces, step_matrix, sync_groups
from kat.agent.report.verdict import evidence_metrics, verdict
from kat.tools.outpost.models import DetectionResult
from kat.tools.telemetry import Bundle


def _findings(det: DetectionResult) -> list[Finding]:
    return [
        Finding(
            index=i,
            rank=a.rank,
            component=a.component,
            method=a.method,
            kind=a.kind,
            name=a.name,
            start_ns=a.start_ns,
            end_ns=a.end_ns,
            steps=a.steps,
            ratio=a.ratio,
            score=a.score,
            detail=a.detail,
            effect_ms=a.effect_ms,
            p_value=a.p_value,
        )
        for i, a in enumerate(det.anomalies[:MAX_FINDINGS], 1)
    ]


def _noise_lines(det: DetectionResult, heat: StepMatrix | None, exclude: set[int]) -> list[str]:
    out = []
    nf = det.noise_floor
    if nf is not None:
        if nf.summary:
            out.append(f"Outpost: {nf.summary}")
        if nf.peer_spread_pct is not None:
            out.append(f"Outpost: peers agree within {nf.peer_spread_pct:.2f}% at the same node and step (typical spread)")
        if nf.largest_deviation_ms is not None:
            where = f" at step {nf.largest_deviation_step}" if nf.largest_deviation_step is not None else ""
            p = f" (p = {nf.largest_deviation_p:.2g})" if nf.largest_deviation_p is not None else ""
            out.append(f"Outpost: largest deviation seen {nf.largest_deviation_ms:.3f} ms{where}{p}")
    else:
        out.append("Outpost reported no noise floor for this capture")
    if heat is not None:
        # A suspect's lock-step peers mirror it (they wait while it works), so the noise comes
        # from groups with no suspect when there are any.
        tainted = {p for g in heat.groups if exclude & set(g) for p in g} | exclude
        clean = [r for r in heat.ranks if r not in tainted]
        scope = "in lock-step groups without a suspect"
        if not clean:
            clean, scope = [r for r in heat.ranks if r not in exclude], "not suspected (their waits may mirror a suspect's)"
        rows = [row for r, row in zip(heat.ranks, heat.deviation_pct) if r in clean]
        vals = np.abs(np.array([v for row in rows for v in row if v is not None], dtype=float))
        if vals.size:
            out.append(
                f"own work of the {len(clean)} rank(s) {scope} stays within {np.median(vals):.2f}% of their lock-step peers "
                f"(median |deviation| over {vals.size} rank-steps; 95th percentile {np.percentile(vals, 95):.2f}%): "
                "deviations of this size are the capture's own noise"
            )
    return out


def _quality_lines(bundle: Bundle, det: DetectionResult, d: Diagnosis | None) -> list[str]:
    out = [f"traces: {len(bundle.ranks)} rank(s), {det.stats.events:,} events"]
    from kat.tools.telemetry.metric_source import metric_source_of

    src = metric_source_of(bundle)
    if src.kind != "file":  # Prometheus: what it served, or why not
        names = src.names()
        out.append(f"metrics: {len(names)} metric name(s) from {src.describe()}" + "".join(f"; missing data: {p}" for p in src.problems))
    else:
        m = bundle.metrics
        out.append(
            f"metrics: {len(m):,} samples of {m['name'].nunique()} metric(s) from {bundle.metrics_path.name}"
            if bundle.metrics_path is not None and not m.empty
            else "metrics: missing data (no metrics file in the bundle)"
        )
    lg = bundle.logs
    out.append(
        f"logs: {len(lg):,} lines from {bundle.logs_path.name}"
        if bundle.logs_path is not None and not lg.empty
        else "logs: missing data (no logs file)"
    )
    if bundle.is_bare_trace_dir:
        out.append("a bare trace directory: no manifest, so no incident window or topology beyond the ranks")
    if d is None:
        out.append("no Diagnosis given: causal chain, evidence metrics and ruled-out alternatives are not shown")
    elif d.status != "complete":
        out.append(f"the Diagnosis is {d.status}: it did not finish within its budget")
    return out


def collect(bundle: Bundle, det: DetectionResult, d: Diagnosis | None = None) -> ReportData:
    culprits = list(d.root_cause.ranks) if d is not None else det.suspect_ranks[:1]
    suspects = list(dict.fromkeys([*culprits, *det.suspect_ranks]))
    findings = _findings(det)
    priority = suspects + [f.rank for f in findings]
    table, source, coll = read_traces(bundle)
    heat = step_matrix(table, coll, sync_groups(bundle, coll), source, priority)
    spans, span_notes = rank_spans(table, priority)
    arr, late, n_coll, arr_notes = arrivals(coll)
    if spans:
        t0 = min(s.spans[0].start_ns for s in spans if s.spans)
        t1 = max(max(x.end_ns for x in s.spans) for s in spans if s.spans)
    elif findings:
        t0, t1 = min(f.start_ns for f in findings), max(f.end_ns for f in findings)
    else:
        t0 = t1 = 0
    notes = span_notes + arr_notes
    if len(det.anomalies) > MAX_FINDINGS:
        notes.append(f"{len(det.anomalies)} findings: the {MAX_FINDINGS} highest-scoring are drawn")
    timeline = (
        Timeline(t0_ns=t0, t1_ns=t1, ranks=spans, findings=findings, arrivals=arr, late=late, collectives=n_coll, notes=notes)
        if t1 > t0
        else None
    )
    win = bundle.manifest.window
    window = (win.start_ns(), win.end_ns()) if win is not None else None
    capture = (t0, t1) if t1 > t0 else None
    metrics = []
    if d is not None:
        wanted = _by_metric(bundle, evidence_metrics(d))
        focus = suspects[0] if suspects else None
        metrics = [metric_panel(bundle, name, ids, focus, window, capture) for name, ids in wanted[:MAX_METRICS]]
        role = "culprit" if focus in culprits else "suspect"
        for p in metrics:
            p.suspect_label = f"rank {focus} ({role})" if focus is not None else "-"
    man = bundle.manifest
    return ReportData(
        incident_id=man.id,
        title=man.title or man.id,
        symptom=man.symptom,
        culprits=culprits,
        suspects=det.suspect_ranks,
        suspect_why={s.rank: s.why for s in det.suspects},
        heatmap=heat,
        timeline=timeline,
        metrics=metrics,
        verdict=verdict(d) if d is not None else None,
        noise_floor=_noise_lines(det, heat, set(suspects)),
        data_quality=_quality_lines(bundle, det, d),
        detection_notes=list(det.notes),
        stats=f"{det.stats.events:,} events, {det.stats.ranks} ranks; Outpost ran in {det.stats.seconds:.2f} s",
    )


def _by_metric(bundle: Bundle, cited: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """Metric name -> evidence ids; a family comparison stands for its metrics (at most two) in this bundle."""
    from kat.agent.report.verdict import FAMILY_KEY
    from kat.tools.metric_series import series_of

    out: dict[str, list[str]] = {}
    for key, ids in cited.items():
        if not key.startswith(FAMILY_KEY):
            out.setdefault(key, []).extend(ids)
            continue
        family = key[len(FAMILY_KEY) :]
        names = sorted({s.name for s in series_of(bundle) if s.family == family})
        for name in names[:2]:
            out.setdefault(name, []).extend(i for i in ids if i not in out.get(name, []))
    return list(out.items())
