"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kat.agent.frontends.incidents import IncidentInfo, IncidentProblem


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a field name is an error, not silently ignored


class DiagnosisRequest(_In):
    incident: str = Field(min_length=1, max_length=512, description="bundle id, or a path relative to the incidents root")
    analyzer: Literal["rules", "openai", "llamacpp"] = Field("rules", description="Analyzer backend")
    time_budget_s: float | None = Field(None, gt=0, description="seconds for this diagnosis; capped by the server's --time-budget")


class DiagnosisCreated(BaseModel):
    id: str
    status: str
    thread_id: str
    links: dict[str, str]


class DiagnosisStatus(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "error"]
    incident: str
    analyzer: str
    thread_id: str
    created: float
    started: float | None = None
    finished: float | None = None
    time_budget_s: float | None = None
    result: dict[str, Any] | None = Field(None, description="the Diagnosis (agent.diagnosis.Diagnosis) when status is done")
    error: str | None = None


class MessageRequest(_In):
    text: str = Field(min_length=1, max_length=4000, description="a follow-up question on this diagnosis's thread")


class MessageReply(BaseModel):
    thread_id: str
    question: str
    answer: str
    events: list[dict[str, Any]] = Field(default_factory=list)


class IncidentList(BaseModel):
    root: str
    incidents: list[IncidentInfo]
    skipped: list[IncidentProblem] = Field(default_factory=list, description="bundles left out of the list, and why")


class ErrorBody(BaseModel):
    error: str
    detail: Any = None
