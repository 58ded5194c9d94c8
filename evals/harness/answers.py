"""OpenSRE-style answer files: optional `answer.yaml` / `answer.json` beside `ground_truth.json`.

    required_evidence: [metric_lookup, NVLINK_CRC]   # each a tool name, or a substring of a query
    forbidden_causes: [network_congestion]           # categories the root cause must not be

Checked against the Diagnosis's evidence list (what the answer cites), case-insensitively.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from kat.evals.harness.models import AnswerCheck

ANSWER_FILES = ("answer.yaml", "answer.yml", "answer.json")


class AnswerSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")
    required_evidence: list[str] = Field(default_factory=list)
    forbidden_causes: list[str] = Field(default_factory=list)


def load_answer(case_dir: Path) -> AnswerSpec | None:
    for name in ANSWER_FILES:
        p = Path(case_dir) / name
        if p.exists():
            raw = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
            return AnswerSpec.model_validate(raw or {})
    return None


def check_answer(spec: AnswerSpec, category: str, evidence: list[dict]) -> AnswerCheck:
    """Which required evidence the diagnosis lacks, and whether its root cause is forbidden."""

    def present(item: str) -> bool:
        needle = item.strip().lower()
        return any(str(e.get("tool", "")).lower() == needle or needle in str(e.get("query", "")).lower() for e in evidence)

    forbidden = [c.strip().lower().replace("-", "_") for c in spec.forbidden_causes]
    return AnswerCheck(
        required_evidence=spec.required_evidence,
        missing_evidence=[r for r in spec.required_evidence if not present(r)],
        forbidden_causes=spec.forbidden_causes,
        forbidden_hit=category in forbidden,
    )
