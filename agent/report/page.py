"""The report as one self-contained HTML page: inline CSS and SVG, no script, no external request."""

from __future__ import annotations

from kat.agent.report.model import ReportData, rank_marks
from kat.agent.report.panel_chain import verdict_html
from kat.agent.report.panel_heatmap import heatmap_html
from kat.agent.report.panel_metrics import metrics_html
from kat.agent.report.panel_timeline import timeline_html
from kat.agent.report.svg import esc

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1c2833;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#d5d8dc}main{padding:8px 24px 40px;max-width:1000px}
section{background:#fff;border:1px solid #e5e7e9;border-radius:8px;padding:12px 16px;margin:14px 0}
h2{font-size:16px;margin:0 0 6px}h3{font-size:14px;margin:14px 0 4px}
.verdict{border-left:6px solid #c0392b}.verdict .cat{font-size:18px;font-weight:bold;color:#c0392b}
.how{color:#555;font-size:12.5px;margin:2px 0 8px}.cap{color:#7d6608}.missing{color:#a04000;font-weight:600}
table{border-collapse:collapse;font-size:12.5px;width:100%}
td,th{border-bottom:1px solid #eee;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f6f7}tr.suspect td{color:#c0392b;font-weight:bold}tr:target{background:#fff3cd}
code{font-size:11.5px;word-break:break-all}.bar{display:inline-block;height:8px;background:#c0392b;margin-left:6px}
.metrics{display:flex;flex-wrap:wrap;gap:10px}figure.metric{margin:0;border:1px solid #eee;padding:4px}
figcaption{font-size:12px;color:#555}nav a{color:#aed6f1;margin-right:14px;font-size:13px}svg a{cursor:pointer}
"""


def render_html(r: ReportData) -> str:
    findings = r.timeline.findings if r.timeline else []
    v = r.verdict
    if v is not None:
        head = (
            f'<div class="cat">{esc(v.category)}</div><p>component <b>{esc(v.component or "-")}</b> · ranks '
            f'<b class="culprit">{esc(", ".join(map(str, v.ranks)) or "-")}</b> · hosts {esc(", ".join(v.hosts) or "-")} · '
            f"confidence {v.confidence:.2f}{' · <span class=missing>partial</span>' if v.status != 'complete' else ''}</p>"
            f"<p>{esc(v.summary)}</p>"
        )
    else:
        head = "<p class='missing'>No Diagnosis given: showing Outpost's findings only.</p>"
    why = "".join(f"<li>rank {r_}: {esc(w)}</li>" for r_, w in r.suspect_why.items())
    suspects = (
        f"<p>Outpost suspects (most likely first): <b>{esc(', '.join(f'rank {s}' for s in r.suspects))}</b></p><ul>{why}</ul>"
        if r.suspects
        else "<p>Outpost found no suspect rank.</p>"
    )
    if v is None and r.culprits:
        suspects += f"<p>Most likely culprit (Outpost): <b class='culprit'>rank {r.culprits[0]}</b></p>"
    marks = rank_marks(r)
    notes = "".join(f"<li>{esc(n)}</li>" for n in r.noise_floor)
    dq = "".join(f"<li class='{'missing' if 'missing' in n else ''}'>{esc(n)}</li>" for n in r.data_quality)
    if v is not None and v.data_quality:
        dq += "".join(f"<li class='{'' if ': ok' in n else 'missing'}'>Diagnosis: {esc(n)}</li>" for n in v.data_quality)
    dn = "".join(f"<li>{esc(n)}</li>" for n in r.detection_notes)
    sections = [
        ("verdict", "Verdict", head + suspects, "verdict"),
        ("heatmap", "Step time, rank × step", heatmap_html(r.heatmap, marks, findings), ""),
        ("timeline", "Timeline, findings and collective arrival skew", timeline_html(r.timeline, marks), ""),
        ("metrics", "Evidence metrics: culprit against its peers", metrics_html(r.metrics, v is not None), ""),
        ("chain", "Causal chain, evidence and alternatives", verdict_html(v), ""),
        (
            "notes",
            "Noise floor and data quality",
            f"<h3>Noise floor</h3><ul>{notes}</ul><h3>Data quality</h3><ul>{dq}</ul>"
            + (f"<h3>Outpost notes</h3><ul>{dn}</ul>" if dn else "")
            + f"<p class='how'>{esc(r.stats)}</p>",
            "",
        ),
    ]
    nav = "".join(f'<a href="#panel-{sid}">{esc(title.split(",")[0])}</a>' for sid, title, _, _ in sections)
    body = "".join(
        f'<section id="panel-{sid}" data-panel="{sid}" class="{cls}"><h2>{esc(title)}</h2>{html}</section>'
        for sid, title, html, cls in sections
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>KAT report: {esc(r.incident_id)}</title>'
        f"<style>{CSS}</style></head><body><header><h1>KAT incident report: {esc(r.title)}</h1>"
        f"<p>{esc(r.incident_id)} · {esc(r.symptom)}</p><nav>{nav}</nav></header><main>{body}</main></body></html>"
    )
