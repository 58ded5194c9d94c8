"""The report in a Slack thread: a link to the served page, or a PNG when there is no public URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kat.agent.diagnosis import Diagnosis
from kat.agent.frontends.report_route import report_path


def report_url(base: str, job_id: str) -> str:
    return base.rstrip("/") + report_path(job_id)


def report_png(path: Path, d: Diagnosis) -> bytes:
    from kat.agent.report.collect import collect
    from kat.agent.report.png import snapshot_png
    from kat.tools.outpost import detect
    from kat.tools.telemetry import open_bundle

    bundle = open_bundle(path)
    return snapshot_png(collect(bundle, detect(bundle), d))


def post_report(client: Any, channel: str, thread_ts: str, incident: str, path: Path, job_id: str, d: Diagnosis, base: str | None) -> str:
    """Post the link (or the PNG); returns 'link' or 'png'."""
    if base:
        url = report_url(base, job_id)
        client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            text=f"Incident report: {url}",
            blocks=[
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"*Incident report* for `{incident}`: heatmap, timeline, evidence, causal chain"},
                    "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Open report"}, "url": url},
                }
            ],
        )
        return "link"
    client.files_upload_v2(
        channel=channel,
        thread_ts=thread_ts,
        content=report_png(path, d),
        filename=f"kat-report-{Path(incident).name}.png",
        title="Step-time heatmap and timeline (set a public base URL for the full report page)",
    )
    return "png"
