"""Large worlds for scale tests: N ranks as N/8 tensor-parallel groups of 8, one host each.

The deployment is a fleet of identical TP-8 replicas (data parallel), the shape a production
inference fleet has; the fault (from the one taxonomy) sits on one rank the seed picks, except
for the faults that are replica- or host-wide by nature (kv_cache_pressure hits a replica).
Each replica draws from its own random stream, so generation splits over a process pool.
"""

from __future__ import annotations

from pathlib import Path

from kat.evals.simulate.categories import Category, parse_category
from kat.evals.simulate.generate import generate_incident
from kat.evals.simulate.ground_truth import GroundTruth
from kat.evals.simulate.sizes import SIZES
from kat.evals.simulate.tasks import TaskConfig, get_task

TP = 8
# The replica every large world is made of: Llama-3.1-70B, tp8 on one 8x H100 host, decode-heavy.
BASE_TASK = "vllm-l70b-tp8-h100-decode-eager"


def world_task(world: int) -> TaskConfig:
    """The TaskConfig of a world of `world` ranks (validated: a positive multiple of 8)."""
    if isinstance(world, bool) or not isinstance(world, int) or world < TP or world % TP:
        raise ValueError(f"--world {world!r}: must be a multiple of {TP} and at least {TP} (TP-{TP} groups, one host each)")
    base = get_task(BASE_TASK)
    if base.tp != TP or base.pp != 1 or base.gpus_per_host != TP:
        raise ValueError(f"task {BASE_TASK} is no longer a single-host tp{TP} replica; update evals/simulate/world.py")
    return base.model_copy(
        update={
            "name": f"world{world}-{BASE_TASK.removeprefix('vllm-')}",
            "description": f"{world} ranks: {world // TP} replicas of {base.description}",
            "dp": world // TP,
        }
    )


def generate_world(
    scenario: str | Category,
    world: int,
    seed: int,
    out: Path | str,
    *,
    size: str = "tiny",
    severity: str | None = None,
    workers: int | None = None,
    metrics_format: str = "parquet",
) -> GroundTruth:
    """Write a `world`-rank incident bundle with one injected fault and return its ground truth."""
    cat = scenario if isinstance(scenario, Category) else parse_category(scenario)
    if size not in SIZES:
        raise ValueError(f"--size {size!r}: unknown; valid: {', '.join(SIZES)}")
    task = world_task(world)
    return generate_incident(
        cat,
        task,
        seed,
        out,
        severity=severity,
        size=size,
        incident_id=f"sim-{cat.value}-world{world}-s{seed}",
        workers=workers,
        metrics_format=metrics_format,
        single_rank=True,
        replica_streams=True,
    )
