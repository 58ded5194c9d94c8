"""Pydantic models at the real-trace generator's boundaries: run config, per-rank report, truth."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FaultKind(str, Enum):
    NONE = "none"
    GEMM = "gemm"
    CPU_STALL = "cpu_stall"
    CPU_CONTENTION = "cpu_contention"
    SLOW_COLLECTIVE = "slow_collective"


# Default strength per fault, chosen so the affected op / step is 2-5x its healthy time on a
# 2-core machine (smaller faults drown in scheduler noise when 4 ranks share 2 cores).
DEFAULT_SEVERITY: dict[FaultKind, float] = {
    FaultKind.NONE: 0.0,
    FaultKind.GEMM: 5.0,  # the GEMM does 5x its work (4 extra matmuls of the same shape)
    FaultKind.CPU_STALL: 30.0,  # ms of CPU-side pause before the step's first op
    FaultKind.CPU_CONTENTION: 3.0,  # bursty CPU-bound processes pinned to the rank's core
    FaultKind.SLOW_COLLECTIVE: 4.0,  # ms of extra latency in each all-reduce of the rank
}


class WorkloadShape(BaseModel):
    """Sizes of the tensor-parallel decode-like model (per step, per rank)."""

    model_config = ConfigDict(extra="forbid")

    layers: int = Field(3, ge=1, le=64)
    hidden: int = Field(1024, ge=16)
    intermediate: int = Field(4096, ge=16)
    kv_len: int = Field(128, ge=1, description="cached tokens per sequence (fixed, like a paged KV block table)")
    batch_sizes: list[int] = Field(
        default_factory=lambda: [12, 14, 16], description="decode batch sizes drawn per step (continuous batching)"
    )
    vocab_shard: int = Field(2048, ge=16)


class RealTraceConfig(BaseModel):
    """One real-trace case: workload, fault and where/when it hits."""

    model_config = ConfigDict(extra="forbid")

    fault: FaultKind = FaultKind.NONE
    rank: int = Field(2, ge=0, description="rank the fault is injected on")
    steps: tuple[int, int] = Field((8, 14), description="half-open [A, B) of profiler step numbers")
    world: int = Field(4, ge=2, le=16)
    seed: int = 0
    num_steps: int = Field(20, ge=2, le=1000, description="profiled steps (ProfilerStep#1..#N)")
    severity: float | None = Field(None, ge=0, description="fault strength; None = the fault's default")
    gemm_layer: int = Field(1, ge=0, description="layer whose MLP up-projection gets the extra compute")
    shape: WorkloadShape = Field(default_factory=WorkloadShape)
    case_id: str | None = None
    timeout_s: float = Field(180.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RealTraceConfig:
        a, b = self.steps
        if self.rank >= self.world:
            raise ValueError(f"rank {self.rank} is outside world size {self.world}")
        if not 1 <= a < b <= self.num_steps + 1:
            raise ValueError(f"steps {a}:{b} must satisfy 1 <= A < B <= num_steps+1 = {self.num_steps + 1}")
        if self.gemm_layer >= self.shape.layers:
            raise ValueError(f"gemm_layer {self.gemm_layer} >= layers {self.shape.layers}")
        return self

    @property
    def fault_steps(self) -> list[int]:
        return list(range(*self.steps)) if self.fault is not FaultKind.NONE else []

    @property
    def strength(self) -> float:
        return DEFAULT_SEVERITY[self.fault] if self.severity is None else self.severity

    def name(self) -> str:
        if self.case_id:
            return self.case_id
        if self.fault is FaultKind.NONE:
            return f"real-none-s{self.seed}"
        return f"real-{self.fault.value}-r{self.rank}-s{self.steps[0]}_{self.steps[1]}-seed{self.seed}"


class StepSpan(BaseModel):
    step: int
    start_ns: int
    end_ns: int


class RankReport(BaseModel):
    """What one rank process says about its run (written by the rank, read by the launcher)."""

    rank: int
    pid: int
    host: str
    cores: list[int]
    trace_file: str
    steps: list[StepSpan] = Field(default_factory=list, description="wall-clock (time.time_ns) step spans")
    fault_start_ns: int | None = None
    fault_end_ns: int | None = None
    hog_pids: list[int] = Field(default_factory=list)
    torch_version: str = ""


class RunReport(BaseModel):
    """The whole multi-process run: per-rank reports plus wall-clock bounds."""

    config: RealTraceConfig
    start_ns: int
    end_ns: int
    ranks: list[RankReport]
    pinning: dict[int, list[int]]
    available_cores: list[int]
