"""The Diagnosis as the report shows it: chain, evidence, alternatives and their backing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from kat.agent.diagnosis import Diagnosis
from kat.agent.report.model import ChainLink, EvidenceRow, RuledOutRow, Verdict

if TYPE_CHECKING:
    from kat.tools.outpost.models import DetectionResult

METRIC_TOOLS = ("metric_lookup", "metric_compare")
FAMILY_KEY = "family:"  # a metric_compare over a whole family, resolved to its metrics against the bundle


class ReportInputError(ValueError):
    """Bad input to the report (a file or field), said in one line."""


def load_diagnosis(path: Path | str) -> Diagnosis:
    """A `kat diagnose --json` file; errors name the file and the field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportInputError(f"{path}: cannot read the diagnosis ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise ReportInputError(f"{path}: not JSON ({exc})") from exc
    if isinstance(raw, dict) and isinstance(raw.get("result"), dict) and "root_cause" not in raw:
        raw = raw["result"]  # a GET /v1/diagnoses/{id} body holds the Diagnosis under `result`
    try:
        return Diagnosis.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e.get("loc", ())) or "(top level)"
        raise ReportInputError(f"{path}: not a KAT Diagnosis: field {where}: {e.get('msg', '')}") from exc


def verdict(d: Diagnosis) -> Verdict:
    known = {e.id for e in d.evidence}
    ruled = []
    for a in d.alternatives_ruled_out:
        cited = a.cited()
        ruled.append(
            RuledOutRow(
                category=a.category, why=a.why, evidence=[i for i in cited if i in known], missing=[i for i in cited if i not in known]
            )
        )
    quality = d.data_quality.lines() if d.data_quality is not None else []
    quality += [f"missing data: {m}" for m in d.missing_data]
    rc = d.root_cause
    return Verdict(
        category=rc.category,
        component=rc.component,
        ranks=rc.ranks,
        hosts=rc.hosts,
        summary=rc.summary,
        confidence=d.confidence,
        status=d.status,
        chain=[ChainLink(cause=c.cause, effect=c.effect, evidence=c.evidence) for c in d.causal_chain],
        evidence=[EvidenceRow(id=e.id, tool=e.tool, query=e.query, summary=e.summary) for e in d.evidence],
        ruled_out=ruled,
        remediation=d.remediation,
        data_quality=quality,
    )


def evidence_metrics(d: Diagnosis) -> dict[str, list[str]]:
    """Metric name -> the evidence ids that looked it up, in the order the chain cites them."""
    order = {eid: i for i, eid in enumerate(e for link in d.causal_chain for e in link.evidence)}
    out: dict[str, list[str]] = {}
    for e in sorted(d.evidence, key=lambda e: order.get(e.id, len(order))):
        if e.tool not in METRIC_TOOLS:
            continue
        try:
            args = json.loads(e.query) if e.query else {}
        except ValueError:
            continue
        name = args.get("name") if isinstance(args, dict) else None
        family = args.get("family") if isinstance(args, dict) else None
        if isinstance(name, str) and name:
            out.setdefault(name, []).append(e.id)
        elif isinstance(family, str) and family:
            out.setdefault(FAMILY_KEY + family, []).append(e.id)
    return out


def load_detection(path: Path | str) -> DetectionResult:
    """A `kat detect --json` file; errors name the file and the field."""
    from kat.tools.outpost.models import DetectionResult

    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportInputError(f"{path}: cannot read the detection result ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise ReportInputError(f"{path}: not JSON ({exc})") from exc
    try:
        return DetectionResult.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e.get("loc", ())) or "(top level)"
        raise ReportInputError(f"{path}: not an Outpost result: field {where}: {e.get('msg', '')}") from exc
