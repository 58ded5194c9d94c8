"""Panel: each evidence metric, the suspect's series against its peers' band, the incident window shaded."""

from __future__ import annotations

from datetime import datetime, timezone

from kat.agent.report.model import MetricPanel
from kat.agent.report.svg import GRID, MUTED, SUSPECT, WINDOW, Scale, esc, line, polygon, polyline, rect, svg, text, ticks

W, H = 420, 210
L, R, T, B = 56, 12, 24, 36


def _clock(ns: float) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%H:%M:%S")


def metric_svg(p: MetricPanel) -> str:
    xs = p.band_ts_ns + (p.suspect.ts_ns if p.suspect else [])
    ys = p.band_lo + p.band_hi + (p.suspect.values if p.suspect else [])
    ys = [v for v in ys if v == v]  # drop NaN
    t0, t1 = min(xs), max(xs)
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    x, y = Scale(t0, t1, L, W - R), Scale(lo - pad, hi + pad, H - B, T)
    body: list[str] = []
    if p.window_ns:
        a, b = max(p.window_ns[0], t0), min(p.window_ns[1], t1)
        if b > a:
            body.append(
                rect(x(a), T, x(b) - x(a), H - B - T, WINDOW, "incident window (from the manifest)", 'opacity="0.35" class="window"')
            )
    if p.capture_ns and t0 <= p.capture_ns[1] and p.capture_ns[0] <= t1:
        xc0, xc1 = x(p.capture_ns[0]), x(p.capture_ns[1])
        body.append(rect(xc0, T, max(xc1 - xc0, 2), H - B - T, "#8e44ad", "the trace capture", 'opacity="0.35"'))
    for v in ticks(lo, hi, 4):
        yy = y(v)
        body.append(line(L, yy, W - R, yy, GRID))
        body.append(text(L - 4, yy + 3, f"{v:.4g}", "end", MUTED))
    for v in ticks(t0, t1, 4):
        body.append(text(x(v), H - B + 14, _clock(v), "middle", MUTED))
    if p.band_ts_ns:
        upper = [(x(t), y(v)) for t, v in zip(p.band_ts_ns, p.band_hi)]
        lower = [(x(t), y(v)) for t, v in zip(p.band_ts_ns, p.band_lo)]
        body.append(polygon(upper + lower[::-1], "#5dade2", 'opacity="0.3" class="peer-band"', f"peers' min-max ({p.peers} series)"))
        body.append(polyline([(x(t), y(v)) for t, v in zip(p.band_ts_ns, p.band_median)], "#2471a3", 1.2, 'stroke-dasharray="4 3"'))
    if p.suspect:
        body.append(polyline([(x(t), y(v)) for t, v in zip(p.suspect.ts_ns, p.suspect.values)], SUSPECT, 2.0, 'class="suspect-series"'))
    body.append(text(L, 14, p.name, "start", "#222", 'font-weight="bold"'))
    lx = W - R
    body.append(
        text(
            lx,
            H - 6,
            f"— {p.suspect_label}   ▒ peers' range ({p.peers}), -- median   ▒ incident window",
            "end",
            MUTED,
            'font-size="10"',
        )
    )
    return svg(W, H, body, f"{p.name}: {p.suspect_label} against {p.peers} peers")


def metric_html(p: MetricPanel) -> str:
    refs = " ".join(f'<a href="#{esc(i)}">{esc(i)}</a>' for i in p.evidence_ids)
    notes = "".join(f'<li class="{"missing" if n.startswith("missing") else "cap"}">{esc(n)}</li>' for n in p.notes)
    drawable = bool(p.band_ts_ns or p.suspect)
    chart = metric_svg(p) if drawable else f'<p class="missing">missing data: nothing to draw for {esc(p.name)}.</p>'
    return (
        f'<figure class="metric" data-metric="{esc(p.name)}">{chart}<figcaption>evidence {refs}'
        + (f"<ul>{notes}</ul>" if notes else "")
        + "</figcaption></figure>"
    )


def metrics_html(panels: list[MetricPanel], have_diagnosis: bool) -> str:
    if not have_diagnosis:
        return (
            '<p class="missing">missing data: no Diagnosis given, so no evidence metrics '
            "(run <code>kat diagnose PATH --json &gt; d.json</code> and pass <code>--diagnosis d.json</code>).</p>"
        )
    if not panels:
        return '<p class="missing">missing data: the Diagnosis cites no metric lookups.</p>'
    return '<div class="metrics">' + "".join(metric_html(p) for p in panels) + "</div>"
