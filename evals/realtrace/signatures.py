"""Is the injected fault actually visible in the traces? One measurement per fault kind.

Each check compares the target rank inside the fault window with itself outside the window
and with its peers inside it, on canonical events (`Bundle.all_events()`), so a generated case
can be verified before it is used and tests can assert presence / absence. Thresholds sit well
below the default fault strength and well above what 4 ranks sharing 2 cores produce unaided.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

from kat.evals.realtrace.models import FaultKind, RealTraceConfig


class SignatureCheck(BaseModel):
    fault: FaultKind
    rank: int
    steps: list[int]
    value: float
    threshold: float
    present: bool
    detail: str


def _median(s: pd.Series) -> float:
    return float(np.median(s.to_numpy())) if len(s) else float("nan")


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def gemm_ratio(ev: pd.DataFrame, rank: int, steps: list[int], layer: int, core_mates: list[int] | None = None) -> tuple[float, str]:
    """How much longer the target's up-projection span is in the window, against three baselines:
    the peers in the window, its own other steps, and the ranks sharing its core in the window.

    The smallest ratio counts. The core-mate baseline cancels noise that hits one core (another
    tenant's process, a kernel thread) and would otherwise mimic the fault on both ranks there.
    """
    sp = ev[ev["name"] == f"layers.{layer}.mlp.gate_up_proj"]
    inw = sp["step"].isin(steps)
    tgt = sp["rank"] == rank
    here = _median(sp.loc[inw & tgt, "dur_ns"])
    # Median over peers of each peer's median: a peer sharing the target's core is slowed by the
    # extra compute too, and must not drag the baseline up on its own.
    per_peer = sp.loc[inw & ~tgt].groupby("rank", observed=True)["dur_ns"].median()
    peers = _median(per_peer)
    before = _median(sp.loc[~inw & tgt & (sp["step"] >= 0), "dur_ns"])
    ratios = [_ratio(here, peers), _ratio(here, before)]
    detail = f"gate_up_proj median {here / 1e3:.0f} us vs peers {peers / 1e3:.0f} us, own outside window {before / 1e3:.0f} us"
    mates = [q for q in (core_mates or []) if q != rank and q in per_peer.index]
    if mates:
        mate = float(per_peer.loc[mates].max())
        ratios.append(_ratio(here, mate))
        detail += f", core mates {mates} {mate / 1e3:.0f} us"
    return min(ratios), detail


def mm_per_gate_up(ev: pd.DataFrame, rank: int, layer: int) -> dict[int, int]:
    """step -> number of aten::mm calls inside rank's layers.<layer>.mlp.gate_up_proj (structure)."""
    r = ev[ev["rank"] == rank]
    spans = r[r["name"] == f"layers.{layer}.mlp.gate_up_proj"]
    kids = r[(r["name"] == "aten::mm") & r["parent"].isin(spans["id"])]
    counts = kids.groupby("parent").size()
    return {int(s): int(counts.get(i, 0)) for i, s in zip(spans["id"], spans["step"])}


def step_start_gaps_ms(ev: pd.DataFrame, rank: int) -> dict[int, float]:
    """step -> ms from the ProfilerStep start to the step's first traced op (scheduler.schedule)."""
    r = ev[ev["rank"] == rank]
    steps = r[r["kind"] == "step"].set_index("step")["ts_ns"]
    first = r[r["name"] == "scheduler.schedule"].groupby("step")["ts_ns"].min()
    both = pd.concat([steps, first], axis=1, keys=["s", "f"]).dropna()
    return {int(k): float((v.f - v.s) / 1e6) for k, v in both.iterrows()}


def comm_entry_delay_ms(ev: pd.DataFrame, rank: int) -> pd.DataFrame:
    """Per all-reduce of a rank: time from entering tp_all_reduce to gloo starting the collective.

    gloo's span lives on a pt_gloo_runloop thread with no parent link, so calls are paired by
    order: the k-th tp_all_reduce on the main thread feeds the k-th gloo:all_reduce.
    """
    r = ev[ev["rank"] == rank]
    wrap = r[r["name"] == "tp_all_reduce"].sort_values("ts_ns")
    coll = r[r["kind"] == "collective"].sort_values("ts_ns")
    n = min(len(wrap), len(coll))
    return pd.DataFrame(
        {
            "step": wrap["step"].to_numpy()[:n],
            "delay_ms": (coll["ts_ns"].to_numpy()[:n] - wrap["ts_ns"].to_numpy()[:n]) / 1e6,
            "coll_ms": coll["dur_ns"].to_numpy()[:n] / 1e6,
        }
    )


def check_signature(ev: pd.DataFrame, cfg: RealTraceConfig, pinning: dict[int, list[int]] | None = None) -> SignatureCheck:
    """Measure the configured fault's signature on rank `cfg.rank` in `cfg.steps`.

    For `none` the GEMM, stall and communication measurements are all taken on `cfg.rank` /
    `cfg.steps` and `present` means any of them fired (it must not).
    """
    rank, steps = cfg.rank, list(range(*cfg.steps))
    fault = cfg.fault

    def core_mates() -> list[int]:
        cores = set((pinning or {}).get(rank) or [])
        return sorted(q for q, c in (pinning or {}).items() if cores & set(c))

    def gemm() -> tuple[float, float, str]:
        v, d = gemm_ratio(ev, rank, steps, cfg.gemm_layer, core_mates())
        return v, 2.0, d

    def stall(ms: float) -> tuple[float, float, str]:
        gaps = step_start_gaps_ms(ev, rank)
        v = min((gaps[s] for s in steps if s in gaps), default=0.0)
        return v, 0.6 * ms, f"smallest pre-step gap in window {v:.2f} ms (healthy ~0.05 ms)"

    def comm(ms: float) -> tuple[float, float, str]:
        d = comm_entry_delay_ms(ev, rank)
        v = _median(d.loc[d["step"].isin(steps), "delay_ms"])
        return v, 0.6 * ms, f"median entry->gloo delay in window {v:.2f} ms"

    def contention() -> tuple[float, float, str]:
        cores = (pinning or {}).get(rank) or []
        mates = [q for q, c in (pinning or {}).items() if set(c) & set(cores)] or [rank]
        mm = ev[(ev["name"] == "aten::mm") & ev["rank"].isin(mates)]
        inw = mm["step"].isin(steps)
        v = _ratio(_median(mm.loc[inw, "dur_ns"]), _median(mm.loc[~inw & (mm["step"] >= 0), "dur_ns"]))
        return v, 1.4, f"aten::mm on ranks {sorted(mates)} (core {cores}) in/out of window: x{v:.2f}"

    if fault is FaultKind.GEMM:
        v, t, d = gemm()
    elif fault is FaultKind.CPU_STALL:
        v, t, d = stall(cfg.strength)
    elif fault is FaultKind.SLOW_COLLECTIVE:
        v, t, d = comm(cfg.strength)
    elif fault is FaultKind.CPU_CONTENTION:
        v, t, d = contention()
    else:
        from kat.evals.realtrace.models import DEFAULT_SEVERITY

        parts = [
            (gemm(), "gemm"),
            (stall(DEFAULT_SEVERITY[FaultKind.CPU_STALL]), "stall"),
            (comm(DEFAULT_SEVERITY[FaultKind.SLOW_COLLECTIVE]), "comm"),
        ]
        fired = [name for (v, t, _), name in parts if v >= t]
        worst = max(v / t for (v, t, _), _ in parts)
        return SignatureCheck(
            fault=fault,
            rank=rank,
            steps=steps,
            value=worst,
            threshold=1.0,
            present=bool(fired),
            detail="; ".join(f"{name}: {d}" for (_, _, d), name in parts) + (f"; fired: {fired}" if fired else ""),
        )
    return SignatureCheck(fault=fault, rank=rank, steps=steps, value=v, threshold=t, present=bool(v >= t), detail=d)
