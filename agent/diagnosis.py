"""The Diagnosis contract (ARCHITECTURE.md): what `kat diagnose --json` prints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kat.knowledge.taxonomy import COMPONENT_OF, TAXONOMY, CategoryName, normalize_label

CATEGORIES = TAXONOMY
Category = CategoryName


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RootCause(_Strict):
    category: Category = Field(description="taxonomy category; 'none' = healthy, 'workload_shift' = legitimate load change")
    component: str = Field(
        "",
        description="gpu, gpu_memory, nvlink, pcie, network, host_cpu, host_memory, storage, software or '-' (filled from the category when empty)",
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


class RuledOut(_Strict):
    category: str
    why: str


class Diagnosis(_Strict):
    """Root cause, causal chain and the evidence behind every link."""

    root_cause: RootCause
    causal_chain: list[CausalLink] = Field(default_factory=list)
    evidence: list[EvidenceItem] = Field(default_factory=list)
    confidence: float = Field(ge=0.0, le=1.0)
    alternatives_ruled_out: list[RuledOut] = Field(default_factory=list)
    remediation: list[str] = Field(default_factory=list)
    # Extension to the contract: a partial answer says so instead of pretending.
    status: Literal["complete", "partial"] = "complete"

    def cited_ids(self) -> set[str]:
        ids = {e for link in self.causal_chain for e in link.evidence}
        return ids | {e.id for e in self.evidence}
