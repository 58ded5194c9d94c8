"""Pydantic models at the harness boundaries: per-run results, scores, trajectories."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Trajectory(BaseModel):
    """How the agent got there. Tokens are None where the backend reports no usage (rules)."""

    tool_calls: int = 0
    tool_calls_by_name: dict[str, int] = Field(default_factory=dict)
    steps: int = Field(0, description="Analyzer calls")
    tokens_in: int | None = None
    tokens_out: int | None = None
    wall_s: float = 0.0
    rejected: int = Field(0, description="rejected submissions or malformed calls")
    calls_attempted: int | None = Field(None, description="tool calls attempted, incl. unparsed and in-text ones (toolcalls.py)")
    calls_valid: int | None = Field(None, description="attempted calls that parsed and validated against the tool's args schema")
    valid_call_rate: float | None = Field(None, description="calls_valid / calls_attempted; None when nothing was attempted")
    tool_call_detail: dict[str, int] | None = Field(
        None, description="parsed, unparsed, in_text, unknown_tool, bad_args, replies, no_call_replies"
    )
    status: str = Field("complete", description="Diagnosis.status, or 'error' when the run crashed")


class AnswerCheck(BaseModel):
    """Result of an OpenSRE-style answer file; None fields mean the file had no such section."""

    required_evidence: list[str] = Field(default_factory=list)
    missing_evidence: list[str] = Field(default_factory=list)
    forbidden_causes: list[str] = Field(default_factory=list)
    forbidden_hit: bool = False

    @property
    def ok(self) -> bool:
        return not self.missing_evidence and not self.forbidden_hit


class CaseScores(BaseModel):
    """Deterministic scores of one Diagnosis against one GroundTruth."""

    truth: str
    predicted: str
    ranked: list[str] = Field(description="categories in rank order: root cause, then alternatives_ruled_out")
    top1: bool
    top3: bool
    component_ok: bool
    is_control: bool
    control_ok: bool | None = Field(None, description="controls only: says none/workload_shift and names no rank")
    ranks_truth: list[int]
    ranks_predicted: list[int]
    ranks_exact: bool
    rank_precision: float | None = None
    rank_recall: float | None = None
    chain_predicted: int = 0
    chain_truth: int = 0
    chain_matched: int = 0
    chain_precision: float | None = None
    chain_recall: float | None = None
    link_tags: list[str] = Field(default_factory=list, description="inferred tag of each predicted link")
    faithful_links: int = 0
    faithfulness: float | None = None
    answer: AnswerCheck | None = None
    passed: bool = Field(description="category right, culprit named (faults) / no rank named (controls), answer checks ok")


class CaseRun(BaseModel):
    """One run of one variant on one case (one repeat): what the runner writes per case."""

    case: str
    variant: str
    variant_key: str = Field("", description="hash of the variant's settings: a cached run with another key is rerun")
    repeat: int = 0
    category: str
    severity: str | None = None
    task: str = ""
    scores: CaseScores | None = None
    trajectory: Trajectory = Field(default_factory=Trajectory)
    diagnosis: dict[str, Any] | None = None
    error: str | None = None
