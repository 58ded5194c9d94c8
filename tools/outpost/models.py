"""Pydantic models at Outpost's boundary: configuration in, anomalies out."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from kat.knowledge.taxonomy import ComponentName

Component = ComponentName  # the domain contract (knowledge/taxonomy.py)
Method = Literal["inter", "intra", "arrival"]


class DetectorConfig(BaseModel):
    """Thresholds: effect sizes are relative, floors absolute, so tiny-variance nodes never alarm."""

    min_effect: float = Field(0.10, ge=0, description="inter-worker: minimum relative excess over the peer median")
    min_excess_ns: int = Field(20_000, ge=0, description="inter-worker: minimum absolute excess per rank and step")
    replica_effect: float = Field(0.25, ge=0, description="minimum relative excess when comparing data-parallel replicas")
    replica_copy_effect: float = Field(
        0.5,
        ge=0,
        description="minimum relative excess of host<->device copies compared across "
        "data-parallel replicas (tiny transfers whose batches differ)",
    )
    min_copy_excess_ns: int = Field(2_000, ge=0, description="inter-worker floor for host<->device copies (small, low-noise)")
    z: float = Field(5.0, gt=0, description="robust z-score a deviation must exceed (MAD-scaled)")
    node_share: float = Field(0.05, ge=0, le=1, description="share of a rank-step's class time a single node needs to be tested alone")
    sustained_steps: int = Field(3, ge=2, description="consecutive moderately-deviating steps that together count as one anomaly")
    intra_effect: float = Field(0.5, ge=0, description="intra-worker: minimum relative excess over the node's own median")
    intra_min_ns: int = Field(200_000, ge=0, description="intra-worker: minimum absolute excess of one occurrence")
    arrival_share: float = Field(0.6, gt=0, le=1, description="share of a step's collectives a rank must reach last")
    arrival_min_ns: int = Field(15_000, ge=0, description="minimum lateness over the peers' median arrival")
    blame_factor: float = Field(
        3.0,
        gt=1,
        description="a rank keeping its peers waiting this many times the group's usual "
        "worst wait per step is late (two thirds of it over sustained_steps steps in a row)",
    )
    link_effect: float = Field(0.25, ge=0, description="group-wide collective transfer time rise to flag a link")
    min_steps_for_baseline: int = Field(4, ge=2, description="repetitions a node needs before its own history is trusted")
    max_anomalies: int = Field(50, ge=1, description="report at most this many anomalies (highest score first)")
    fdr: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="false discovery rate controlled (Benjamini-Hochberg) over all rank-level tests of a capture",
    )
    min_effect_ms: float = Field(
        0.1,
        ge=0,
        description="a significant finding is material only if its excess over its episode reaches this many ms "
        "(a tenth of a millisecond: below it, timer and scheduler granularity)",
    )
    min_effect_share: float = Field(
        0.02,
        ge=0,
        le=1,
        description="a significant finding is material from this share of the rank's step time over its episode (2%); "
        "slow work is also material at min_effect relative to the peers' time in that work",
    )


class Anomaly(BaseModel):
    """One anomalous kernel/op, pinned to a worker, a time window and a hardware component."""

    rank: int
    kind: str = Field(description="canonical event kind of the anomalous node")
    name: str
    tree_path: list[str] = Field(default_factory=list, description="names from the step root down to the node")
    component: Component
    method: Method
    start_ns: int
    end_ns: int
    steps: list[int] = Field(default_factory=list)
    count: int = Field(1, description="occurrences merged into this anomaly")
    observed: float = Field(description="observed ns (total over the merged occurrences)")
    baseline: float = Field(description="what peers / the node's own history predict, same unit")
    ratio: float
    score: float = Field(description="ranking score: excess time x confidence")
    detail: str = ""
    effect_ms: float | None = Field(None, description="excess over the baseline, in ms (summed over the merged occurrences)")
    effect_share: float | None = Field(None, description="excess as a share of the rank's step time over the same steps")
    noise_floor_ms: float | None = Field(None, description="the spread of this test's null distribution it was judged against, ms")
    p_value: float | None = Field(None, ge=0, le=1, description="calibrated p-value of the deviation under the capture's own noise")

    @field_validator("observed", "baseline", "ratio", "score", "effect_ms", "effect_share", "noise_floor_ms", "p_value")
    @classmethod
    def _plain_float(cls, v: float | None) -> float | None:
        # numpy scalars pass a float check but not every serialiser (the agent's checkpoints use msgpack)
        return None if v is None else float(v)


class Suspect(BaseModel):
    """One rank Outpost blames, with how sure it is and which evidence decided."""

    rank: int
    confidence: float = Field(ge=0, le=1)
    why: str = ""

    @field_validator("confidence")
    @classmethod
    def _plain_float(cls, v: float) -> float:
        return float(v)


class NoiseFloor(BaseModel):
    """What the capture's own noise looks like: how closely peers agree and the largest deviation seen."""

    peer_spread_pct: float | None = Field(None, description="typical relative spread between peers at the same node per step, %")
    largest_deviation_ms: float | None = None
    largest_deviation_step: int | None = None
    largest_deviation_p: float | None = None
    summary: str = ""

    @field_validator("peer_spread_pct", "largest_deviation_ms", "largest_deviation_p")
    @classmethod
    def _plain_float(cls, v: float | None) -> float | None:
        return None if v is None else float(v)

    @field_validator("largest_deviation_step")
    @classmethod
    def _plain_int(cls, v: int | None) -> int | None:
        return None if v is None else int(v)


class RunStats(BaseModel):
    events: int
    ranks: int
    seconds: float
    groups: list[list[int]] = Field(default_factory=list)


class DetectionResult(BaseModel):
    """The `kat detect --json` contract (ARCHITECTURE.md)."""

    suspect_ranks: list[int] = Field(default_factory=list, description="most likely culprit first; empty when healthy")
    suspects: list[Suspect] = Field(default_factory=list, description="the same ranks, in the same order, with confidence and why")
    noise_floor: NoiseFloor | None = None
    anomalies: list[Anomaly] = Field(default_factory=list)
    stats: RunStats
    notes: list[str] = Field(default_factory=list)
