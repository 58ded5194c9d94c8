"""Panel: per-rank timeline with Outpost's findings as bands, and collective arrival skew."""

from __future__ import annotations

from kat.agent.report.model import Timeline
from kat.agent.report.svg import FINDING, GRID, MUTED, SUSPECT, Scale, esc, line, polygon, rank_label, rect, svg, text, ticks

WIDTH = 940
LEFT = 120
RIGHT = 20
ROW = 18
LANE = 14
MAX_LANES = 10  # lanes in the findings track; findings that do not fit stay boxed on their rank's row


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f} ms"


def timeline_svg(t: Timeline, marks: dict[int, str]) -> str:
    x = Scale(t.t0_ns, t.t1_ns, LEFT, WIDTH - RIGHT)
    body: list[str] = []
    y = 26
    body.append(text(LEFT - 6, y + 6, "KAT findings", "end", FINDING, 'font-weight="bold"'))
    lanes: list[float] = []  # right edge (px) of the last finding in each lane
    hidden = 0
    for f in sorted(t.findings, key=lambda f: f.start_ns):
        x0, x1 = x(f.start_ns), max(x(f.end_ns), x(f.start_ns) + 2)
        lane = next((i for i, end in enumerate(lanes) if end + 2 < x0), None)
        if lane is None:
            if len(lanes) >= MAX_LANES:
                hidden += 1
                continue
            lanes.append(0.0)
            lane = len(lanes) - 1
        lanes[lane] = x1
        ly: float = y + lane * LANE
        tip = (
            f"#{f.index} rank {f.rank} {f.component} ({f.method}) {f.kind}: {f.name}\n{f.detail}\n"
            f"steps {f.steps[0] if f.steps else '-'}..{f.steps[-1] if f.steps else '-'}, ratio {f.ratio:.2f}, "
            f"window {_ms(f.end_ns - f.start_ns)}"
        )
        body.append(rect(x0, ly - 4, x1 - x0, LANE - 3, FINDING, tip, 'opacity="0.85" class="finding-band"'))
        label = f"#{f.index} rank {f.rank} {f.component} · {f.method} · ×{f.ratio:.2f}"
        if x1 - x0 > 5.8 * len(label):
            body.append(text(x0 + 3, ly + 6, label, "start", "#fff", 'font-size="10"'))
        elif x1 - x0 > 22:
            body.append(text(x0 + 2, ly + 6, f"#{f.index}", "start", "#fff", 'font-size="10"'))
    y += max(len(lanes), 1) * LANE
    if hidden:
        body.append(
            text(LEFT, y + 6, f"{hidden} more findings overlap the {MAX_LANES} lanes: they are boxed on their rank's row", "start", MUTED)
        )
        y += 12
    y += 10
    rows: dict[int, float] = {}
    for rt in t.ranks:
        rows[rt.rank] = y
        is_s = marks.get(rt.rank) == "culprit"
        label, colour, attrs = rank_label(rt.rank, marks)
        body.append(text(LEFT - 6, y + ROW / 2 + 3, label, "end", colour, attrs))
        for k, s in enumerate(rt.spans):
            fill = "#9db4c8" if k % 2 == 0 else "#c3d3e0"
            body.append(
                rect(
                    x(s.start_ns),
                    y,
                    max(x(s.end_ns) - x(s.start_ns), 0.5),
                    ROW - 4,
                    fill,
                    f"rank {rt.rank} step {s.step}: {_ms(s.end_ns - s.start_ns)}",
                )
            )
        for f in t.findings:
            if f.rank == rt.rank:
                body.append(
                    rect(
                        x(f.start_ns),
                        y - 1,
                        max(x(f.end_ns) - x(f.start_ns), 2),
                        ROW - 2,
                        "none",
                        f"finding #{f.index}",
                        f'stroke="{FINDING}" stroke-width="2"',
                    )
                )
        if is_s:
            body.append(
                rect(
                    LEFT - 2,
                    y - 3,
                    WIDTH - RIGHT - LEFT + 4,
                    ROW + 1,
                    "none",
                    extra=f'stroke="{SUSPECT}" stroke-width="1.5" class="culprit-row"',
                )
            )
        y += ROW
    # Arrival skew: each peer's wait drawn on its own row, ending where the last rank arrived.
    for a in t.arrivals:
        last_ts = a.ts_ns + a.skew_ns
        if a.last_rank in rows:
            ly = rows[a.last_rank]
            xl = x(last_ts)
            body.append(
                polygon(
                    [(xl - 3, ly - 4), (xl + 3, ly - 4), (xl, ly + 1)],
                    SUSPECT,
                    'class="late-mark"',
                    f"rank {a.last_rank} last at {a.coll} (step {a.step}); skew {_ms(a.skew_ns)}",
                )
            )
        for peer, w in a.waits_ns.items():
            if peer in rows and w > 0:
                py = rows[peer] + ROW / 2 - 2
                body.append(line(x(last_ts - w), py, x(last_ts), py, "#b03a2e", 2.5, 'opacity="0.8" class="wait-mark"'))
    # time axis
    span_ms = (t.t1_ns - t.t0_ns) / 1e6
    for v in ticks(0, span_ms, 8):
        xx = x(t.t0_ns + v * 1e6)
        body.append(line(xx, 20, xx, y, GRID, 1, 'opacity="0.6"'))
        body.append(text(xx, y + 14, f"{v:g}", "middle", MUTED))
    body.append(text(WIDTH - RIGHT, y + 28, "ms since the capture's first step", "end", MUTED))
    return svg(WIDTH, y + 36, body, f"timeline of {len(t.ranks)} ranks with {len(t.findings)} findings")


def _late_table(t: Timeline, marks: dict[int, str]) -> str:
    if not t.late:
        return ""
    top = max((r.waited_on_ms for r in t.late), default=0.0) or 1.0
    rows = []
    for r in t.late[:16]:
        cls = ' class="suspect"' if marks.get(r.rank) == "culprit" else ""
        bar = f'<span class="bar" style="width:{120 * r.waited_on_ms / top:.0f}px"></span>'
        rows.append(f"<tr{cls}><td>rank {r.rank}</td><td>{r.times_last} / {r.instances}</td><td>{r.waited_on_ms:.3f} {bar}</td></tr>")
    more = f"<p class='cap'>{len(t.late) - 16} more ranks not listed.</p>" if len(t.late) > 16 else ""
    return (
        "<h3>Who kept the others waiting</h3><table class='late'><tr><th>rank</th><th>last to arrive</th>"
        "<th>peers' total wait on it (ms)</th></tr>" + "".join(rows) + "</table>" + more
    )


def _skew_table(t: Timeline) -> str:
    if not t.arrivals:
        return ""
    rows = []
    for a in t.arrivals[:10]:
        waits = ", ".join(f"rank {p} {w / 1e6:.3f} ms" for p, w in sorted(a.waits_ns.items()))
        rows.append(
            f"<tr><td>{esc(a.coll)}</td><td>{a.step}</td><td>{esc(a.group)}</td><td>rank {a.last_rank}</td>"
            f"<td>{a.skew_ns / 1e6:.3f}</td><td>{esc(waits)}</td></tr>"
        )
    return (
        "<h3>Largest arrival skews</h3><table><tr><th>collective</th><th>step</th><th>group</th><th>last</th><th>skew (ms)</th>"
        "<th>who waited, how long</th></tr>" + "".join(rows) + "</table>"
    )


def timeline_html(t: Timeline | None, marks: dict[int, str]) -> str:
    if t is None:
        return '<p class="missing">missing data: no step spans or findings to place on a timeline.</p>'
    notes = "".join(f'<li class="cap">{esc(n)}</li>' for n in t.notes)
    return (
        f'<p class="how">Top lane: each Outpost finding over its window. Rows: each rank\'s steps (alternating shades); orange boxes: '
        f"findings on that rank; red triangles: the last rank to arrive at one of the {len(t.arrivals)} most skewed collectives "
        f"(of {t.collectives} matched); dark red strokes: how long each peer waited for it.</p>"
        + timeline_svg(t, marks)
        + (f"<ul>{notes}</ul>" if notes else "")
        + _late_table(t, marks)
        + _skew_table(t)
    )
