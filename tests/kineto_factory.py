"""Build small Kineto-format traces for tests (same shape torch.profiler writes)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson


def step_trace(
    rank: int = 0,
    world: int = 2,
    steps: int = 3,
    layers: int = 2,
    base_us: float = 1000.0,
    kernel_us: float = 50.0,
    with_flows: bool = True,
    strip_correlation: bool = False,
) -> dict[str, Any]:
    """A tiny eager trace: ProfilerStep -> cpu_op -> cudaLaunchKernel -> kernel, an NCCL all-reduce per layer."""
    ev: list[dict[str, Any]] = []
    corr = 100
    t = base_us
    pid, tid = 4000 + rank, 4000 + rank
    gpu_t = base_us
    for s in range(steps):
        step_start = t
        for _layer in range(layers):
            for opname, kname, coll in (
                ("aten::mm", "sm90_xmma_gemm_bf16bf16_bf16f32", False),
                ("record_param_comms", "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)", True),
            ):
                corr += 1
                op_args: dict[str, Any] = {
                    "External id": corr,
                    "Input Dims": [[8, 4096], [4096, 4096]],
                    "Input type": ["c10::BFloat16", "c10::BFloat16"],
                }
                if coll:
                    op_args.update(
                        {
                            "Collective name": "allreduce",
                            "In msg nelems": 32768,
                            "Out msg nelems": 32768,
                            "dtype": "BFloat16",
                            "Group size": world,
                            "Process Group Ranks": str(list(range(world))),
                        }
                    )
                ev.append({"ph": "X", "cat": "cpu_op", "name": opname, "pid": pid, "tid": tid, "ts": t + 1, "dur": 20.0, "args": op_args})
                rt_args = {"External id": corr, "cbid": 211, "correlation": corr}
                if strip_correlation:
                    rt_args.pop("correlation")
                ev.append(
                    {
                        "ph": "X",
                        "cat": "cuda_runtime",
                        "name": "cudaLaunchKernel",
                        "pid": pid,
                        "tid": tid,
                        "ts": t + 5,
                        "dur": 8.0,
                        "args": rt_args,
                    }
                )
                gpu_t = max(gpu_t, t + 14)
                k_args = {"External id": corr, "device": rank, "stream": 7, "correlation": corr}
                if strip_correlation:
                    k_args.pop("correlation")
                kdur = kernel_us if not coll else 30.0
                ev.append({"ph": "X", "cat": "kernel", "name": kname, "pid": rank, "tid": 7, "ts": gpu_t, "dur": kdur, "args": k_args})
                if with_flows:
                    ev.append({"ph": "s", "id": corr, "pid": pid, "tid": tid, "ts": t + 5, "cat": "ac2g", "name": "ac2g"})
                    ev.append({"ph": "f", "id": corr, "pid": rank, "tid": 7, "ts": gpu_t, "cat": "ac2g", "name": "ac2g", "bp": "e"})
                gpu_t += kdur + 1
                t += 25
        ev.append(
            {
                "ph": "X",
                "cat": "user_annotation",
                "name": f"ProfilerStep#{s}",
                "pid": pid,
                "tid": tid,
                "ts": step_start,
                "dur": t - step_start + 0.5,
                "args": {"External id": 1},
            }
        )
        t += 2
    return {
        "schemaVersion": 1,
        "distributedInfo": {"backend": "nccl", "rank": rank, "world_size": world},
        "baseTimeNanoseconds": 1_700_000_000_000_000_000,
        "traceEvents": ev,
    }


def write_trace(doc: Any, path: Path, gz: bool | None = None) -> Path:
    data = orjson.dumps(doc)
    if gz if gz is not None else path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_rank_traces(tmp: Path, docs: dict[int, Any]) -> Path:
    """`tmp/traces/rank-<r>.json` for each rank's document; returns the directory."""
    d = tmp / "traces"
    d.mkdir(parents=True)
    for r, doc in docs.items():
        write_trace(doc, d / f"rank-{r}.json")
    return d
