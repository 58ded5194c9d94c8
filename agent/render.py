"""The Diagnosis for a terminal (rich) and as plain text."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kat.agent.diagnosis import Diagnosis


def render_rich(d: Diagnosis) -> Panel:
    rc = d.root_cause
    head = Text()
    head.append(f"{rc.category}", style="bold red" if rc.category not in ("none", "workload_shift") else "bold green")
    head.append(
        f"  component {rc.component}  ranks {rc.ranks or '-'}  hosts {', '.join(rc.hosts) or '-'}  "
        f"confidence {d.confidence:.2f}" + (f"  ({d.status.upper()})" if d.status != "complete" else "")
    )
    parts: list = [head, Text(rc.summary)]
    if d.causal_chain:
        t = Table(title="Causal chain", show_lines=True, expand=True)
        t.add_column("#", width=3)
        t.add_column("cause")
        t.add_column("effect")
        t.add_column("evidence", min_width=6, overflow="fold")
        for i, link in enumerate(d.causal_chain, 1):
            t.add_row(str(i), link.cause, link.effect, ", ".join(link.evidence))
        parts.append(t)
    if d.evidence:
        t = Table(title="Evidence", expand=True)
        t.add_column("id", no_wrap=True)
        t.add_column("tool", overflow="fold")
        t.add_column("query", overflow="fold")
        t.add_column("finding", overflow="fold")
        for e in d.evidence:
            t.add_row(e.id, e.tool, e.query, e.summary)
        parts.append(t)
    if d.alternatives_ruled_out:
        t = Table(title="Ruled out", expand=True)
        t.add_column("category", overflow="fold")
        t.add_column("why", overflow="fold")
        for a in d.alternatives_ruled_out:
            t.add_row(a.category, a.why)
        parts.append(t)
    if d.remediation:
        parts.append(Text("Remediation:\n" + "\n".join(f"  - {r}" for r in d.remediation)))
    if d.data_quality is not None:
        parts.append(
            Text(
                "Data quality:\n" + "\n".join(f"  - {x}" for x in d.data_quality.lines()), style="yellow" if d.data_quality.degraded else ""
            )
        )
    if d.missing_data:
        parts.append(Text("Missing data:\n" + "\n".join(f"  - {m}" for m in d.missing_data), style="yellow"))
    return Panel(Group(*parts), title="KAT diagnosis", border_style="cyan")


def print_diagnosis(console: Console, d: Diagnosis) -> None:
    console.print(render_rich(d))
