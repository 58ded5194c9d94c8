"""What the incident report draws: plain data, already downsampled and capped server-side."""

from __future__ import annotations

from pydantic import BaseModel, Field

# Drawing caps: they keep the page small and the browser responsive on large captures. They are
# display budgets, not statistics: every cap that bites is said on the page.
MAX_HEATMAP_RANKS = 64
MAX_HEATMAP_STEPS = 200
MAX_TIMELINE_RANKS = 32
MAX_TIMELINE_STEPS = 300
MAX_SKEW_MARKS = 40
MAX_FINDINGS = 50
MAX_METRICS = 6
MAX_METRIC_POINTS = 200


class StepMatrix(BaseModel):
    """Step time per rank and step (ms); None where a rank has no such step."""

    ranks: list[int]
    steps: list[str] = Field(description="column labels: a step number, or 'a..b' for a bucket of steps")
    step_ids: list[list[int]] = Field(description="the step numbers each column covers")
    ms: list[list[float | None]]
    deviation_pct: list[list[float | None]] = Field(
        description="the rank's own work (step time minus time in collectives) against its lock-step peers' median at that step, %"
    )
    groups: list[list[int]] = Field(default_factory=list, description="the lock-step groups peers were taken from")
    source: str = Field(description="how step time was measured (step events or the span of a step's events)")
    notes: list[str] = Field(default_factory=list)


class StepSpan(BaseModel):
    step: int
    start_ns: int
    end_ns: int


class RankTimeline(BaseModel):
    rank: int
    spans: list[StepSpan]


class Finding(BaseModel):
    """An Outpost anomaly as the report shows it (a copy of the contract's fields)."""

    index: int
    rank: int
    component: str
    method: str
    kind: str
    name: str
    start_ns: int
    end_ns: int
    steps: list[int]
    ratio: float
    score: float
    detail: str = ""
    effect_ms: float | None = None
    p_value: float | None = None


class Arrival(BaseModel):
    """One collective instance across its group: who arrived last and how long the others waited."""

    coll: str
    step: int
    group: list[int]
    ts_ns: int = Field(description="earliest arrival")
    last_rank: int
    skew_ns: int
    waits_ns: dict[int, int] = Field(description="peer rank -> how long it waited for the last one")


class LateSummary(BaseModel):
    rank: int
    times_last: int
    instances: int
    waited_on_ms: float = Field(description="total time peers waited on this rank")


class Timeline(BaseModel):
    t0_ns: int
    t1_ns: int
    ranks: list[RankTimeline]
    findings: list[Finding]
    arrivals: list[Arrival] = Field(description="largest skews first, capped")
    late: list[LateSummary]
    collectives: int = Field(description="collective instances matched across their groups")
    notes: list[str] = Field(default_factory=list)


class Series(BaseModel):
    label: str
    ts_ns: list[int]
    values: list[float]


class MetricPanel(BaseModel):
    name: str
    evidence_ids: list[str]
    suspect_label: str
    suspect: Series | None
    band_ts_ns: list[int] = Field(default_factory=list)
    band_lo: list[float] = Field(default_factory=list)
    band_hi: list[float] = Field(default_factory=list)
    band_median: list[float] = Field(default_factory=list)
    peers: int = 0
    window_ns: tuple[int, int] | None = None
    capture_ns: tuple[int, int] | None = None
    notes: list[str] = Field(default_factory=list)


class ChainLink(BaseModel):
    cause: str
    effect: str
    evidence: list[str]


class EvidenceRow(BaseModel):
    id: str
    tool: str
    query: str
    summary: str


class RuledOutRow(BaseModel):
    category: str
    why: str
    evidence: list[str] = Field(description="evidence ids cited in the reason")
    missing: list[str] = Field(default_factory=list, description="cited ids absent from the evidence list")


class Verdict(BaseModel):
    category: str
    component: str
    ranks: list[int]
    hosts: list[str]
    summary: str
    confidence: float
    status: str
    chain: list[ChainLink]
    evidence: list[EvidenceRow]
    ruled_out: list[RuledOutRow]
    remediation: list[str]
    data_quality: list[str] = Field(default_factory=list, description="the Diagnosis's per-source data quality, one line each")


class ReportData(BaseModel):
    incident_id: str
    title: str
    symptom: str
    culprits: list[int] = Field(description="the Diagnosis's root-cause ranks; without one, Outpost's most likely suspect")
    suspects: list[int] = Field(description="every rank Outpost suspects, most likely first")
    suspect_why: dict[int, str] = Field(default_factory=dict)
    heatmap: StepMatrix | None
    timeline: Timeline | None
    metrics: list[MetricPanel]
    verdict: Verdict | None
    noise_floor: list[str]
    data_quality: list[str]
    detection_notes: list[str]
    stats: str


def rank_marks(r: ReportData) -> dict[int, str]:
    """rank -> 'culprit' or 'suspect', as every panel labels it."""
    marks = {s: "suspect" for s in r.suspects}
    marks.update({c: "culprit" for c in r.culprits})
    return marks
