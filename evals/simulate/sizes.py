"""Bundle sizes: how many steps and layers to simulate, and how much metric/log context."""

from __future__ import annotations

import math

from pydantic import BaseModel

from kat.evals.simulate.tasks import TaskConfig


class Size(BaseModel):
    name: str
    steps: int | None = None  # fixed step count, or None to hit `target_events`
    max_layers: int | None = None  # simulated layers (whole model if None)
    target_events: int | None = None
    lead_s: int = 20  # metrics/logs before the trace starts
    tail_s: int = 8  # ... and after it ends
    compress: bool = True  # gzip level 1 traces (plain .json for the largest)
    flows: bool = True  # ac2g flow events, as torch.profiler writes them
    nccl_version: str = "2.26.2"  # recorded in distributedInfo; < 2.19 means ncclKernel_* names


SIZES: dict[str, Size] = {
    "tiny": Size(name="tiny", steps=10, max_layers=2, lead_s=20, tail_s=8),
    "small": Size(name="small", steps=24, max_layers=4, lead_s=30, tail_s=10),
    "medium": Size(name="medium", max_layers=16, target_events=1_000_000, lead_s=45, tail_s=10),
    "large": Size(name="large", target_events=11_000_000, lead_s=60, tail_s=15, compress=False),
}


def layers_per_stage(task: TaskConfig, size: Size) -> int:
    n = task.model_spec.layers if size.max_layers is None else min(task.model_spec.layers, size.max_layers)
    return max(1, n // task.pp)


def events_per_rank_step(task: TaskConfig, layers: int) -> int:
    """Rough event count of one rank's step (used only to size medium/large runs)."""
    if task.mode == "eager":
        per_layer = 65.0
    else:
        # Steps with prefill (or too many tokens for a captured graph) fall back to eager.
        from kat.evals.simulate.workload import PREFILL_PROB

        p_eager = PREFILL_PROB[task.workload]
        per_layer = 65.0 * p_eager + 12.0 * (1.0 - p_eager)
    return int(25 + layers * per_layer + 15)


def n_steps(task: TaskConfig, size: Size) -> int:
    if size.steps is not None:
        return size.steps
    if size.target_events is None:
        raise ValueError(f"size {size.name}: set steps or target_events")
    per_step = events_per_rank_step(task, layers_per_stage(task, size)) * task.world_size
    return max(20, math.ceil(size.target_events / per_step))
