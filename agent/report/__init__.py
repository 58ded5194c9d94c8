"""The incident report: one self-contained HTML page (and a PNG snapshot) of a diagnosis."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kat.agent.diagnosis import Diagnosis
    from kat.agent.report.model import ReportData
    from kat.tools.outpost.models import DetectionResult
    from kat.tools.telemetry import Bundle


def build_report(
    source: Bundle | Path | str, diagnosis: Diagnosis | None = None, detection: DetectionResult | None = None, prometheus: str | None = None
) -> tuple[str, ReportData]:
    """(HTML, the data drawn). Runs Outpost when no detection result is given."""
    from kat.agent.report.collect import collect
    from kat.agent.report.page import render_html
    from kat.tools.outpost import detect
    from kat.tools.telemetry import Bundle, open_bundle
    from kat.tools.telemetry.prometheus import use_prometheus

    bundle = source if isinstance(source, Bundle) else open_bundle(source)
    if not isinstance(source, Bundle):
        use_prometheus(bundle, prometheus)  # metrics from Prometheus: the argument, else incident.json's
    det = detection if detection is not None else detect(bundle)
    data = collect(bundle, det, diagnosis)
    return render_html(data), data
