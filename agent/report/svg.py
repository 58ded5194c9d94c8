"""A small static SVG toolkit: escaped text, shapes, scales and colour ramps. No JavaScript."""

from __future__ import annotations

import math
from html import escape

SUSPECT = "#c0392b"
FINDING = "#e67e22"
WINDOW = "#f5d76e"
INK = "#222"
MUTED = "#777"
GRID = "#ddd"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif"


def esc(s: object) -> str:
    return escape(str(s), quote=True)


def num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def svg(width: float, height: float, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{num(width)}" height="{num(height)}" '
        f'viewBox="0 0 {num(width)} {num(height)}" role="img" aria-label="{esc(label)}" style="{FONT};font-size:11px">'
        + "".join(body)
        + "</svg>"
    )


def rect(x: float, y: float, w: float, h: float, fill: str, title: str = "", extra: str = "") -> str:
    t = f"<title>{esc(title)}</title>" if title else ""
    return f'<rect x="{num(x)}" y="{num(y)}" width="{num(max(w, 0.0))}" height="{num(max(h, 0.0))}" fill="{fill}" {extra}>{t}</rect>'


def line(x1: float, y1: float, x2: float, y2: float, stroke: str = GRID, width: float = 1.0, extra: str = "") -> str:
    return f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" stroke="{stroke}" stroke-width="{num(width)}" {extra}/>'


def text(x: float, y: float, s: object, anchor: str = "start", fill: str = INK, extra: str = "") -> str:
    return f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}" fill="{fill}" {extra}>{esc(s)}</text>'


def polyline(points: list[tuple[float, float]], stroke: str, width: float = 1.5, extra: str = "") -> str:
    pts = " ".join(f"{num(x)},{num(y)}" for x, y in points)
    return f'<polyline points="{pts}" fill="none" stroke="{stroke}" stroke-width="{num(width)}" {extra}/>'


def polygon(points: list[tuple[float, float]], fill: str, extra: str = "", title: str = "") -> str:
    pts = " ".join(f"{num(x)},{num(y)}" for x, y in points)
    t = f"<title>{esc(title)}</title>" if title else ""
    return f'<polygon points="{pts}" fill="{fill}" {extra}>{t}</polygon>'


class Scale:
    """Linear map from a data interval onto a pixel interval."""

    def __init__(self, d0: float, d1: float, p0: float, p1: float):
        self.d0, self.d1, self.p0, self.p1 = d0, d1 if d1 != d0 else d0 + 1, p0, p1

    def __call__(self, v: float) -> float:
        return self.p0 + (v - self.d0) / (self.d1 - self.d0) * (self.p1 - self.p0)


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def diverging(v: float | None, limit: float) -> str:
    """Blue (faster than peers) - white - red (slower); grey when missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "#eeeeee"
    t = max(-1.0, min(1.0, v / limit)) if limit > 0 else 0.0
    if t >= 0:
        r, g, b = 255, int(255 - 190 * t), int(255 - 200 * t)
    else:
        r, g, b = int(255 + 200 * t), int(255 + 120 * t), 255
    return f"#{r:02x}{g:02x}{b:02x}"


def wrap(s: str, width: int, max_lines: int) -> list[str]:
    import textwrap

    lines = textwrap.wrap(s, width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, width - 1)] + "…"
    return lines


def sequential(v: float | None, lo: float, hi: float) -> str:
    """White (fast) to dark blue (slow); grey when missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "#eeeeee"
    t = 0.0 if hi <= lo else max(0.0, min(1.0, (v - lo) / (hi - lo)))
    r, g, b = int(247 - 200 * t), int(251 - 150 * t), int(255 - 90 * t)
    return f"#{r:02x}{g:02x}{b:02x}"


SUSPECT_ONLY = "#b9770e"


def rank_label(rank: int, marks: dict[int, str]) -> tuple[str, str, str]:
    """(text, colour, attributes) of a rank's row label: culprits red, other suspects amber."""
    mark = marks.get(rank)
    if mark == "culprit":
        return f"rank {rank} ◀ culprit", SUSPECT, 'font-weight="bold" class="culprit-label"'
    if mark == "suspect":
        return f"rank {rank} ◀ suspect", SUSPECT_ONLY, 'font-weight="bold" class="suspect-label"'
    return f"rank {rank}", "#333", ""
