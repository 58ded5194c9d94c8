"""The Diagnosis as Slack Block Kit, and the progress line."""

from __future__ import annotations

from typing import Any

from kat.agent.diagnosis import Diagnosis

TEXT_MAX = 2900  # Slack: 3000 characters per section text
HEADER_MAX = 150
TOP = 5  # key evidence / ruled-out items shown; the rest is in the attached JSON


def _cut(s: str, n: int = TEXT_MAX) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _esc(s: str) -> str:
    # mrkdwn control characters; user-visible text must not ping or link by accident
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text)}}


def diagnosis_blocks(d: Diagnosis, incident: str) -> list[dict[str, Any]]:
    rc = d.root_cause
    partial = f" ({d.status})" if d.status != "complete" else ""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"Root cause: {rc.category}{partial}", HEADER_MAX)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Component*\n{_esc(rc.component or '-')}"},
                {"type": "mrkdwn", "text": f"*Confidence*\n{d.confidence:.2f}"},
                {"type": "mrkdwn", "text": f"*Ranks*\n{', '.join(map(str, rc.ranks)) or '-'}"},
                {"type": "mrkdwn", "text": f"*Hosts*\n{_esc(', '.join(rc.hosts)) or '-'}"},
            ],
        },
        _section(_esc(rc.summary) or "_no summary_"),
    ]
    if d.causal_chain:
        lines = [f"{i}. {_esc(c.cause)} → {_esc(c.effect)}  `{', '.join(c.evidence)}`" for i, c in enumerate(d.causal_chain, 1)]
        blocks += [{"type": "divider"}, _section("*Causal chain*\n" + "\n".join(lines))]
    if d.evidence:
        lines = [f"• `{e.id}` *{_esc(e.tool)}* {_esc(_cut(e.summary, 300))}" for e in d.evidence[:TOP]]
        more = f"\n_+{len(d.evidence) - TOP} more in the JSON_" if len(d.evidence) > TOP else ""
        blocks.append(_section("*Key evidence*\n" + "\n".join(lines) + more))
    if d.alternatives_ruled_out:
        lines = [f"• *{_esc(a.category)}*: {_esc(_cut(a.why, 200))}" for a in d.alternatives_ruled_out[:TOP]]
        blocks.append(_section("*Ruled out*\n" + "\n".join(lines)))
    if d.remediation:
        blocks.append(_section("*Remediation*\n" + "\n".join(f"• {_esc(r)}" for r in d.remediation)))
    if d.data_quality is not None:
        icon = ":warning: " if d.data_quality.degraded else ""
        blocks.append(_section(f"*{icon}Data quality*\n" + "\n".join(f"• {_esc(_cut(x, 300))}" for x in d.data_quality.lines()[:8])))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _cut(f"incident `{_esc(incident)}` · ask follow-up questions in this thread (mention me in channels)", 2000),
                }
            ],
        }
    )
    return blocks


def diagnosis_fallback(d: Diagnosis) -> str:
    """Notification text (and what clients without Block Kit show)."""
    rc = d.root_cause
    return _cut(f"Root cause: {rc.category} on ranks {rc.ranks or '-'} (confidence {d.confidence:.2f})", 300)


def progress_text(incident: str, calls: int, last: str, done: bool = False, error: str | None = None) -> str:
    if error:
        return _cut(f":x: Diagnosis of `{_esc(incident)}` failed: {_esc(error)}")
    if done:
        return f":white_check_mark: Diagnosed `{_esc(incident)}` ({calls} tool calls)."
    tail = f"\n> {_esc(_cut(last, 200))}" if last else ""
    return f":hourglass_flowing_sand: Diagnosing `{_esc(incident)}`… {calls} tool call(s) so far{tail}"
