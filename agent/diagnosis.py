"""The Diagnosis contract (ARCHITECTURE.md): what `kat diagnose --json` prints."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from kat.knowledge.taxonomy import COMPONENT_OF, TAXONOMY, CategoryName, normalize_label
from kat.tools.telemetry.quality import DataQuality

CATEGORIES = TAXONOMY
Category = CategoryName


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RootCause(_Strict):
    category: Category = Field(description="taxonomy category; 'none' = healthy, 'workload_shift' = legitimate load change")
    component: str = Field(
        "",
        description=(
            "gpu, gpu_memory, nvlink, pcie, network, host_cpu, host_memory, storage, software or '-' (filled from the category when empty)"
        ),
    )
    ranks: list[int] = Field(default_factory=list, description="affected ranks (the culprits, not the peers that wait)")
    hosts: list[str] = Field(default_factory=list)
    summary: str

    @field_validator("category", mode="before")
    @classmethod
    def _norm(cls, v: object) -> object:
        return normalize_label(v) if isinstance(v, str) else v


class CausalLink(_Strict):
    cause: str
    effect: str
    evidence: list[str] = Field(description="evidence ids (e.g. 'ev-3') returned by tools")
    # Tags the scorer and the front ends read instead of the wording: the category the link is
    # about ('none' = a generic symptom link) and its component. Optional for LLM Analyzers.
    category: CategoryName | None = Field(None, description="taxonomy category this link is about; 'none' for a generic symptom link")
    component: str | None = Field(None, description="component of that category (filled from it when empty)")

    @field_validator("category", mode="before")
    @classmethod
    def _norm_cat(cls, v: object) -> object:
        return normalize_label(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _fill_component(self) -> CausalLink:
        if self.category and not self.component:
            self.component = COMPONENT_OF[self.category]
        return self


class EvidenceItem(_Strict):
    id: str = Field(description="evidence id returned by a tool, e.g. 'ev-3'")
    # Filled from the evidence ledger by the validator: a model only has to name the id.
    tool: str = ""
    query: str = Field("", description="the exact query (tool arguments) that produced it")
    summary: str = ""


EVIDENCE_ID = re.compile(r"\bev-\d+\b")


class RuledOut(_Strict):
    category: str
    why: str
    evidence: list[str] = Field(default_factory=list, description="evidence ids that rule it out (ids named in `why` count too)")

    def cited(self) -> list[str]:
        return list(dict.fromkeys([*self.evidence, *EVIDENCE_ID.findall(self.why)]))


class Diagnosis(_Strict):
    """Root cause, causal chain and the evidence behind every link."""

    root_cause: RootCause
    causal_chain: list[CausalLink] = Field(default_factory=list)
    evidence: list[EvidenceItem] = Field(default_factory=list)
    confidence: float = Field(ge=0.0, le=1.0)
    alternatives_ruled_out: list[RuledOut] = Field(default_factory=list)
    remediation: list[str] = Field(default_factory=list)
    # A partial answer (budget, retries) or one computed from degraded data says so instead of pretending.
    status: Literal["complete", "degraded", "partial"] = "complete"
    data_quality: DataQuality | None = Field(None, description="filled by KAT from the bundle, not by the Analyzer")
    # Sources that failed (e.g. "Prometheus at URL answered 503 for query Q"): missing data rules nothing out.
    missing_data: list[str] = Field(default_factory=list)

    def cited_ids(self) -> set[str]:
        ids = {e for link in self.causal_chain for e in link.evidence}
        ids |= {e for r in self.alternatives_ruled_out for e in r.cited()}
        return ids | {e.id for e in self.evidence}

    @model_validator(mode="after")
    def _cited_ids_exist(self, info: ValidationInfo) -> Diagnosis:
        """Every evidence id cited (chain links, ruled-out entries) is in the evidence list.

        Knowledge-base ids (not `ev-N`) name corpus entries and are not listed. A draft (what an
        Analyzer submits, before the graph's validator completes the list) is not checked. Records
        without `data_quality` predate the ruled-out check (they load; a report marks such ids
        missing): every Diagnosis KAT makes now carries data_quality, so the check always applies.
        """
        if info.context and info.context.get("draft"):
            return self
        listed = {e.id for e in self.evidence}
        cited = {e for link in self.causal_chain for e in link.evidence}
        if self.data_quality is not None:
            cited |= {e for r in self.alternatives_ruled_out for e in r.cited()}
        bad = sorted(i for i in cited if EVIDENCE_ID.fullmatch(i) and i not in listed)
        if bad:
            raise ValueError(f"evidence id(s) {bad} are cited but not in the evidence list {sorted(listed)}")
        return self


# Confidence under imperfect data: each source that is missing costs 30% of the confidence,
# each degraded one 10%. A policy, not a measurement: fewer sources, fewer look-alikes told apart.
MISSING_SOURCE_FACTOR = 0.7
DEGRADED_SOURCE_FACTOR = 0.9


def with_data_quality(d: Diagnosis, q: DataQuality) -> Diagnosis:
    """The Diagnosis with its data quality attached: status, confidence and claims adjusted.

    Empty traces are insufficient data, never a healthy run.
    """
    data = d.model_dump()
    conf = d.confidence
    for src in q.sources().values():
        conf *= MISSING_SOURCE_FACTOR if src.status == "missing" else DEGRADED_SOURCE_FACTOR if src.status == "degraded" else 1.0
    if q.traces.status == "missing" and d.root_cause.category in ("none", "workload_shift"):
        data["root_cause"] = {
            "category": "undetermined",
            "component": "-",
            "ranks": [],
            "hosts": [],
            "summary": "Insufficient data: the traces hold no events, so KAT cannot tell whether the run was healthy. "
            "Capture a profile that covers the slow period and diagnose again.",
        }
        data["causal_chain"], data["alternatives_ruled_out"] = [], []
        conf = 0.0
    data["confidence"] = round(conf, 2)
    data["data_quality"] = q.model_dump()
    if d.status != "partial":
        data["status"] = "degraded" if q.degraded else "complete"
    return Diagnosis.model_validate(data)
