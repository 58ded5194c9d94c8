"""Panel: rank x step heatmaps (step time; own work against lock-step peers), suspects marked."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kat.agent.report.model import Finding, StepMatrix
from kat.agent.report.svg import FINDING, MUTED, SUSPECT, diverging, esc, rank_label, rect, sequential, svg, text

WIDTH = 940
LEFT = 120
TOP = 34


def _grid(
    m: StepMatrix,
    values: list[list[float | None]],
    colour: Callable[[float | None], str],
    tip: Callable[[int, str, int, int], str],
    marks: dict[int, str],
    findings: list[Finding],
    legend: Callable[[float], list[str]],
    label: str,
) -> str:
    n_r, n_s = len(m.ranks), len(m.steps)
    cw = max(3.0, min(44.0, (WIDTH - LEFT - 20) / max(n_s, 1)))
    ch = max(5.0, min(24.0, 420.0 / max(n_r, 1)))
    flagged = {(f.rank, s) for f in findings for s in f.steps}
    label_every = 1 if ch >= 9 else int(np.ceil(9 / ch))
    body: list[str] = []
    for i, r in enumerate(m.ranks):
        y = TOP + i * ch
        is_s = marks.get(r) == "culprit"
        if r in marks or i % label_every == 0:
            lab_text, lab_colour, lab_attrs = rank_label(r, marks)
            body.append(text(LEFT - 6, y + ch / 2 + 4, lab_text, "end", lab_colour, lab_attrs))
        for j in range(n_s):
            body.append(rect(LEFT + j * cw, y, cw - (1 if cw > 6 else 0), ch - 1, colour(values[i][j]), tip(r, m.steps[j], i, j)))
            if any((r, s) in flagged for s in m.step_ids[j]):
                body.append(
                    rect(
                        LEFT + j * cw + 1,
                        y + 1,
                        cw - 3,
                        ch - 3,
                        "none",
                        extra=f'stroke="{FINDING}" stroke-width="1.5" class="finding-cell"',
                    )
                )
        if is_s:
            body.append(
                rect(LEFT - 2, y - 1, n_s * cw + 3, ch + 1, "none", extra=f'stroke="{SUSPECT}" stroke-width="2" class="culprit-row"')
            )
    every = max(1, int(np.ceil(n_s / 25)))  # at most ~25 column labels, so they never overlap
    for j in range(0, n_s, every):
        body.append(text(LEFT + j * cw + cw / 2, TOP - 6, m.steps[j], "middle", MUTED))
    body.append(text(LEFT, 14, "step →", "start", MUTED))
    ly = TOP + n_r * ch + 16
    body.extend(legend(ly))
    body.append(rect(LEFT + 600, ly, 10, 10, "none", extra=f'stroke="{FINDING}" stroke-width="1.5"'))
    body.append(text(LEFT + 616, ly + 9, "step inside an Outpost finding", "start", MUTED))
    return svg(max(WIDTH, LEFT + n_s * cw + 20), ly + 24, body, label)


def _ramp(ly: float, colour: Callable[[float], str], lo: float, hi: float, left: str, right: str) -> list[str]:
    out = [rect(LEFT + k * 6, ly, 6, 10, colour(lo + (hi - lo) * k / 40)) for k in range(41)]
    return out + [text(LEFT - 6, ly + 9, left, "end", MUTED), text(LEFT + 41 * 6 + 6, ly + 9, right, "start", MUTED)]


def heatmap_svgs(m: StepMatrix, marks: dict[int, str], findings: list[Finding]) -> tuple[str, str]:
    ms = np.array([[np.nan if v is None else v for v in row] for row in m.ms], dtype=float)
    fin = ms[np.isfinite(ms)]
    lo, hi = (float(np.percentile(fin, 2)), float(np.percentile(fin, 98))) if fin.size else (0.0, 1.0)
    devs = np.array([[np.nan if v is None else v for v in row] for row in m.deviation_pct], dtype=float)
    dfin = np.abs(devs[np.isfinite(devs)])
    limit = float(max(10.0, np.percentile(dfin, 95))) if dfin.size else 10.0

    def tip_ms(r: int, lab: str, i: int, j: int) -> str:
        v = m.ms[i][j]
        return f"rank {r}, step {lab}: " + ("no data" if v is None else f"step time {v:.3f} ms")

    def tip_dev(r: int, lab: str, i: int, j: int) -> str:
        v = m.deviation_pct[i][j]
        return f"rank {r}, step {lab}: " + ("no peer to compare" if v is None else f"own work {v:+.1f}% vs its lock-step peers' median")

    a = _grid(
        m,
        m.ms,
        lambda v: sequential(v, lo, hi),
        tip_ms,
        marks,
        findings,
        lambda ly: _ramp(ly, lambda v: sequential(v, lo, hi), lo, hi, f"{lo:.3g} ms", f"{hi:.3g} ms step time"),
        f"step time heatmap, {len(m.ranks)} ranks x {len(m.steps)} steps",
    )
    b = _grid(
        m,
        m.deviation_pct,
        lambda v: diverging(v, limit),
        tip_dev,
        marks,
        findings,
        lambda ly: _ramp(
            ly, lambda v: diverging(v, limit), -limit, limit, f"-{limit:.0f}%", f"+{limit:.0f}% own work vs peers (red: slower)"
        ),
        f"deviation heatmap, {len(m.ranks)} ranks x {len(m.steps)} steps",
    )
    return a, b


def heatmap_html(m: StepMatrix | None, marks: dict[int, str], findings: list[Finding]) -> str:
    if m is None:
        return '<p class="missing">missing data: the traces have no steps, so there is no step-time heatmap.</p>'
    a, b = heatmap_svgs(m, marks, findings)
    notes = "".join(f'<li class="cap">{esc(n)}</li>' for n in m.notes)
    groups = "; ".join(",".join(map(str, g)) for g in m.groups[:12]) + (" …" if len(m.groups) > 12 else "")
    return (
        f'<p class="how">Step time from {esc(m.source)} (hover a cell for values). Ranks in one lock-step group wait for each other, '
        f"so their step times match; the second map removes the time spent in collectives and compares each rank's own work "
        f"with its lock-step peers' median (groups: {esc(groups)}). "
        "Culprit ranks are outlined in red; other ranks Outpost suspects are labelled in amber.</p>"
        f"<h3>Step time (ms)</h3>{a}<h3>Own work (step time minus collectives) against lock-step peers</h3>{b}"
        + (f"<ul>{notes}</ul>" if notes else "")
    )
