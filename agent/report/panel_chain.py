"""Panel: the causal chain as a small graph (links clickable to their evidence), evidence, ruled out."""

from __future__ import annotations

from kat.agent.report.model import Verdict
from kat.agent.report.svg import MUTED, SUSPECT, esc, line, polygon, rect, svg, text, wrap

W = 940
BOX_W = 760
CHARS = 118
LINE_H = 14


def _nodes(v: Verdict) -> list[tuple[str, list[int]]]:
    """Distinct statements in chain order; each with the links (1-based) that lead into it."""
    nodes: list[tuple[str, list[int]]] = []
    for i, link in enumerate(v.chain, 1):
        if not nodes or nodes[-1][0] != link.cause:
            nodes.append((link.cause, []))
        nodes.append((link.effect, [i]))
    return nodes


def chain_svg(v: Verdict) -> str:
    body: list[str] = []
    y = 10.0
    x0 = (W - BOX_W) / 2
    known = {e.id for e in v.evidence}
    nodes = _nodes(v)
    for k, (stmt, into) in enumerate(nodes):
        if into:
            link = v.chain[into[0] - 1]
            ax = W / 2
            body.append(line(ax, y, ax, y + 34, "#555", 2))
            body.append(polygon([(ax - 6, y + 28), (ax + 6, y + 28), (ax, y + 36)], "#555"))
            parts = [
                f'<a href="#link-{into[0]}" class="chain-link">'
                + text(ax + 12, y + 16, f"link {into[0]} · evidence:", "start", MUTED)
                + "</a>"
            ]
            ex = ax + 120
            for eid in link.evidence:
                target = f"#{eid}" if eid in known else f"#link-{into[0]}"
                parts.append(
                    f'<a href="{esc(target)}" class="ev-ref">'
                    + text(ex, y + 16, eid, "start", "#1a5276", 'text-decoration="underline"')
                    + "</a>"
                )
                ex += 8 + 7 * len(eid)
            if not link.evidence:
                parts.append(text(ex, y + 16, "none cited", "start", SUSPECT))
            body.extend(parts)
            y += 38
        lines = wrap(stmt, CHARS, 4)
        h = 10 + LINE_H * len(lines)
        first = k == 0
        fill = "#fdecea" if first else "#f4f6f7"
        stroke = SUSPECT if first else "#aab7b8"
        body.append(rect(x0, y, BOX_W, h, fill, stmt, f'stroke="{stroke}" rx="6" class="chain-node"'))
        for j, ln in enumerate(lines):
            body.append(text(x0 + 10, y + 16 + j * LINE_H, ln))
        y += h
    return svg(W, y + 10, body, f"causal chain of {len(v.chain)} links")


def _ev_links(ids: list[str]) -> str:
    return " ".join(f'<a href="#{esc(i)}">{esc(i)}</a>' for i in ids)


def verdict_html(v: Verdict | None) -> str:
    if v is None:
        return (
            '<p class="missing">missing data: no Diagnosis given '
            "(pass <code>--diagnosis FILE.json</code> from <code>kat diagnose --json</code>).</p>"
        )
    parts = []
    if v.chain:
        parts.append(chain_svg(v))
        rows = "".join(
            f'<tr id="link-{i}"><td>{i}</td><td>{esc(c.cause)}</td><td>{esc(c.effect)}</td>'
            f"<td>{_ev_links(c.evidence) or '<span class=missing>no evidence cited</span>'}</td></tr>"
            for i, c in enumerate(v.chain, 1)
        )
        parts.append(f"<table class='links'><tr><th>#</th><th>cause</th><th>effect</th><th>evidence</th></tr>{rows}</table>")
    else:
        parts.append('<p class="missing">missing data: the Diagnosis has no causal chain.</p>')
    if v.evidence:
        rows = "".join(
            f'<tr id="{esc(e.id)}" class="evidence"><td>{esc(e.id)}</td><td>{esc(e.tool)}</td>'
            f"<td><code>{esc(e.query)}</code></td><td>{esc(e.summary)}</td></tr>"
            for e in v.evidence
        )
        parts.append(
            f"<h3>Evidence</h3><table class='evidence'><tr><th>id</th><th>tool</th><th>exact query</th><th>finding</th></tr>{rows}</table>"
        )
    ro = []
    for a in v.ruled_out:
        if a.evidence:
            backing = _ev_links(a.evidence)
            if a.missing:
                backing += f' <span class="missing">(also cites {esc(", ".join(a.missing))}: not in the Diagnosis\'s evidence list)</span>'
        elif a.missing:
            backing = (
                f'<span class="missing">unbacked here: cites {esc(", ".join(a.missing))}, not in the Diagnosis\'s evidence list</span>'
            )
        else:
            backing = '<span class="missing">missing data: no evidence cited</span>'
        ro.append(f"<tr><td>{esc(a.category)}</td><td>{esc(a.why)}</td><td>{backing}</td></tr>")
    if ro:
        parts.append(
            "<h3>Alternatives ruled out</h3><table class='ruled'><tr><th>category</th><th>why not</th><th>evidence</th></tr>"
            + "".join(ro)
            + "</table>"
        )
    else:
        parts.append('<p class="missing">No alternatives ruled out.</p>')
    if v.remediation:
        parts.append("<h3>Remediation</h3><ul>" + "".join(f"<li>{esc(r)}</li>" for r in v.remediation) + "</ul>")
    return "".join(parts)
