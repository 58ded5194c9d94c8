"""Generate one incident bundle: traces, metrics, logs, manifest and ground truth."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from kat.evals.simulate.categories import Category, Severity, parse_category
from kat.evals.simulate.dialects import Dialect
from kat.evals.simulate.engine import SimResult, Simulator
from kat.evals.simulate.faults import FaultPlan, make_plan, supported
from kat.evals.simulate.ground_truth import GroundTruth, write_ground_truth
from kat.evals.simulate.kernels import GPU_SPEC
from kat.evals.simulate.logs import build_logs, write_logs
from kat.evals.simulate.metric_dialects import gpu_uuid
from kat.evals.simulate.metrics import build_metrics, write_metrics
from kat.evals.simulate.narrative import build_ground_truth, incident_text
from kat.evals.simulate.sizes import SIZES, Size, events_per_rank_step, layers_per_stage, n_steps
from kat.evals.simulate.tasks import TaskConfig, get_task
from kat.evals.simulate.topology import Layout, build_layout, manifest_topology
from kat.evals.simulate.trace_writer import RankTraceWriter
from kat.evals.simulate.workload import make_workload

# Incidents happen on 2026-11-21 (UTC); the seed picks the minute so cases do not all collide.
EPOCH_DAY_NS = 1_795_219_200 * 1_000_000_000
GPU_FULL_NAME = {"A100": "NVIDIA A100-SXM4-80GB", "H100": "NVIDIA H100 80GB HBM3", "H200": "NVIDIA H200", "B200": "NVIDIA B200"}
GPU_CC = {"A100": (8, 0), "H100": (9, 0), "H200": (9, 0), "B200": (10, 0)}


def _rng(seed: int, *parts: str) -> np.random.Generator:
    """An independent stream per purpose, so adding noise to logs never shifts the traces."""
    h = hashlib.sha256(("|".join((str(seed),) + parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _process_groups(lay: Layout) -> tuple[dict[int, list[dict]], dict[int, dict[str, dict]]]:
    """distributedInfo.pg_config per rank and the collective args of its tp/pp groups."""
    world = list(range(lay.world_size))
    named: list[tuple[str, str, list[int]]] = [("0", "default_pg", world)]
    for kind, groups in (("tp", lay.tp_groups), ("pp", lay.pp_groups), ("dp", lay.dp_groups)):
        for i, g in enumerate(groups):
            named.append((str(len(named)), f"{kind}:{i}", g))
    cfg: dict[int, list[dict]] = {r: [] for r in world}
    args: dict[int, dict[str, dict]] = {r: {} for r in world}
    for name, desc, g in named:
        for r in g:
            cfg[r].append({"pg_name": name, "pg_desc": desc, "backend_config": "cuda:nccl", "pg_size": len(g), "ranks": g})
            kind = desc.split(":")[0]
            if kind in ("tp", "pp", "dp"):
                args[r][kind] = {"name": name, "desc": desc, "size": len(g), "ranks": "[" + ", ".join(map(str, g)) + "]"}
    return cfg, args


def _writers(
    out: Path, lay: Layout, size: Size, base_ns: int, incident_id: str, only: list[int] | None = None
) -> tuple[dict[int, RankTraceWriter], dict]:
    cfg, args = _process_groups(lay)
    tdir = out / "traces"
    tdir.mkdir(parents=True, exist_ok=True)
    suffix = ".json.gz" if size.compress else ".json"
    spec = GPU_SPEC[lay.task.gpu]
    writers = {}
    for w in lay.workers:
        if only is not None and w.rank not in only:
            continue
        major, minor = GPU_CC[lay.task.gpu]
        header = {
            "schemaVersion": 1,
            "deviceProperties": [
                {
                    "id": w.gpu,
                    "name": GPU_FULL_NAME[lay.task.gpu],
                    "totalGlobalMem": int(spec["mem_gb"] * 2**30),
                    "computeMajor": major,
                    "computeMinor": minor,
                }
            ],
            "cupti_version": 24,
            "cuda_runtime_version": 12080,
            "cuda_driver_version": 12080,
            "distributedInfo": {
                "backend": "nccl",
                "rank": w.rank,
                "world_size": lay.world_size,
                "pg_count": len(cfg[w.rank]),
                "pg_config": cfg[w.rank],
                "nccl_version": size.nccl_version,
            },
            "record_shapes": 1,
            "with_stack": 1,
            "displayTimeUnit": "ms",
            "baseTimeNanoseconds": base_ns,
        }
        footer = {"traceName": f"/var/log/{lay.task.engine}/traces/{incident_id}/rank-{w.rank}.pt.trace.json"}
        writers[w.rank] = RankTraceWriter(tdir / f"rank-{w.rank}{suffix}", header, footer, compress=size.compress)
    return writers, args


_JOB: tuple | None = None


def _run_part(ranks: list[int]) -> tuple[SimResult, int]:
    """Simulate the whole run (or, with replica streams, the replicas of `ranks`); write the traces of `ranks` only."""
    if _JOB is None:
        raise RuntimeError("_run_part runs only inside generate_incident, which sets the job")
    lay, plan, wl, seed, out, sz, base_ns, incident_id, by_replica = _JOB
    writers, pg_args = _writers(out, lay, sz, base_ns, incident_id, only=ranks)
    for r, w in writers.items():
        wk = lay.workers[r]
        # Process/thread names, as Kineto writes them (viewers use them; the importer skips "M" events).
        meta = [
            {"name": "process_name", "ph": "M", "pid": wk.pid, "tid": 0, "args": {"name": f"python3 (rank {r})"}},
            {"name": "thread_name", "ph": "M", "pid": wk.pid, "tid": wk.pid, "args": {"name": "thread 0 (python3)"}},
            {"name": "process_name", "ph": "M", "pid": wk.gpu, "tid": 0, "args": {"name": f"GPU {wk.gpu}"}},
            {"name": "thread_name", "ph": "M", "pid": wk.gpu, "tid": 7, "args": {"name": "stream 7"}},
            {"name": "thread_name", "ph": "M", "pid": wk.gpu, "tid": 24, "args": {"name": "stream 24 (nccl)"}},
        ]
        w.add(",".join(orjson.dumps(m).decode() for m in meta), len(meta))
    replicas = sorted({lay.workers[r].dp for r in ranks}) if by_replica else None
    sim = Simulator(
        lay,
        plan,
        wl,
        _rng(seed, "trace"),
        writers,
        pg_args,
        layers_per_stage(lay.task, sz),
        flows=sz.flows,
        nccl_version=sz.nccl_version,
        replicas=replicas,
        replica_rng=(lambda d: _rng(seed, "trace", f"replica-{d}")) if by_replica else None,
    )
    try:
        res = sim.run(t0=1.0e6)
    finally:
        for w in writers.values():
            w.close()
    return res, int(sum(w.count for w in writers.values()))


def generate_incident(
    scenario: str | Category,
    task: str | TaskConfig,
    seed: int,
    out: Path | str,
    *,
    severity: str | Severity | None = None,
    size: str = "small",
    incident_id: str | None = None,
    overwrite: bool = True,
    workers: int | None = None,
    metrics_format: str = "parquet",
    single_rank: bool = False,
    replica_streams: bool = False,
    dialect: Dialect | None = None,
) -> GroundTruth:
    """Write a full incident bundle (plus ground_truth.json) to `out` and return its ground truth.

    `single_rank` keeps a per-rank fault to one rank; `replica_streams` gives every replica its
    own random stream, so processes split the replicas between them instead of each simulating
    the whole run (the large-world generator; other bundles keep their byte-identical output).
    """
    t_begin = time.perf_counter()
    cat = scenario if isinstance(scenario, Category) else parse_category(scenario)
    task_cfg = task if isinstance(task, TaskConfig) else get_task(task)
    sev = Severity(severity) if severity else None
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; valid: {', '.join(SIZES)}")
    sz = SIZES[size]
    lay = build_layout(task_cfg)
    why = supported(cat, lay)
    if why:
        raise ValueError(f"scenario {cat.value} cannot run on task {task_cfg.name}: {why}")
    out = Path(out)
    if out.exists() and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    incident_id = incident_id or f"sim-{cat.value}-{task_cfg.name}-s{seed}"

    steps = n_steps(task_cfg, sz)
    if cat != Category.NONE and sev is None:
        sev = [Severity.MILD, Severity.MODERATE, Severity.SEVERE][int(_rng(seed, "severity").integers(0, 3))]
    plan: FaultPlan = make_plan(cat, sev, lay, steps, _rng(seed, "plan", cat.value), single_rank=single_rank)
    wl = make_workload(task_cfg, steps, _rng(seed, "workload"))
    metrics_start = EPOCH_DAY_NS + int(_rng(seed, "clock").integers(0, 20 * 3600)) * 1_000_000_000
    base_ns = metrics_start + sz.lead_s * 1_000_000_000
    est = events_per_rank_step(task_cfg, layers_per_stage(task_cfg, sz)) * task_cfg.world_size * steps
    if workers is None:
        # Split replicas are cheap to share out; a shared simulation pays off only for big runs.
        big = est > (200_000 if replica_streams else 2_000_000)
        workers = min(os.cpu_count() or 1, 4, task_cfg.dp if replica_streams else task_cfg.world_size) if big else 1
    workers = max(1, min(workers, task_cfg.dp if replica_streams else task_cfg.world_size))
    global _JOB
    _JOB = (lay, plan, wl, seed, out, sz, base_ns, incident_id, replica_streams)
    if replica_streams:
        # Whole replicas per process, many small tasks so a slow share does not hold the pool up.
        per = [lay.replica_ranks(d) for d in range(task_cfg.dp)]
        n_tasks = min(task_cfg.dp, workers * 8)
        parts = [[r for rr in per[i::n_tasks] for r in rr] for i in range(n_tasks)]
    else:
        parts = [list(range(lay.world_size))[i::workers] for i in range(workers)]
    if workers == 1:
        results = [_run_part(p) for p in parts]
    else:
        # Each process writes only its share of ranks (simulating the whole run, or its replicas).
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.map(_run_part, parts, chunksize=1)
    _JOB = None
    res = results[0][0] if not replica_streams else _merge([r for r, _ in results])
    total_events = int(sum(n for _, n in results))
    trace_end_abs = base_ns + res.trace_end
    metrics_end = (trace_end_abs // 1_000_000_000 + sz.tail_s + 1) * 1_000_000_000

    crng = _rng(seed, "confounders")
    for c in plan.confounders:
        if c.kind in ("log_warning", "metric_spike"):
            st = metrics_start + int(crng.uniform(0.1, 0.8) * (metrics_end - metrics_start))
            c.detail.update(start_ns=st, end_ns=st + int(crng.uniform(3.0, 8.0) * 1e9))
    gt = build_ground_truth(
        incident_id, cat, plan, lay, res, base_ns, metrics_start, metrics_end, seed, size, _rng(seed, "window"), total_events
    )
    metrics = build_metrics(lay, plan, res, gt, base_ns, metrics_start, metrics_end, _rng(seed, "metrics"), dialect, seed)
    write_metrics(metrics, out, fmt=metrics_format)
    logs = build_logs(lay, plan, res, gt, base_ns, metrics_start, metrics_end, _rng(seed, "logs"), dialect, seed)
    write_logs(logs, out)
    title, symptom = incident_text(gt, lay, res, base_ns)
    manifest: dict[str, Any] = {
        "id": incident_id,
        "title": title,
        "symptom": symptom,
        "window": {"start": _iso(metrics_start), "end": _iso(metrics_end)},
        "model": task_cfg.model_spec.hf_name,
        "framework": task_cfg.engine,
        "topology": manifest_topology(lay),
        "generator": {"tool": "kat simulate", "task": task_cfg.name, "size": size, "seed": seed},
    }
    if dialect is not None:
        # Real manifests name each GPU by UUID (nvidia-smi -L); dialects label GPU series by it.
        for h in manifest["topology"]["hosts"]:
            for g in h["gpus"]:
                g["uuid"] = gpu_uuid(seed, h["name"], g["index"])
        manifest["generator"]["dialect"] = dialect.name
        gt.parameters["dialect"] = dialect.name
    (out / "incident.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    write_ground_truth(gt, out)
    _ = time.perf_counter() - t_begin
    return gt


def _merge(parts: list[SimResult]) -> SimResult:
    """One result from per-replica shares: each share filled only its own replicas' cells."""
    first = parts[0]
    out = SimResult(*(sum((getattr(p, f) for p in parts[1:]), getattr(first, f).copy()) for f in _SIM_ARRAYS))
    out.events = np.sum([p.events for p in parts], axis=0).astype(int).tolist()
    return out


_SIM_ARRAYS = ("step_start", "step_end", "busy", "coll_wait", "h2d_ns", "tokens", "seqs", "prefill")


def _iso(ns: int) -> str:
    from kat.evals.simulate.ground_truth import rfc3339

    return rfc3339(ns)
