"""From rank-level tests to the answer: suspects (culprit first), kept findings, background notes
and the capture's noise floor.

A rank is a suspect when one of its rank-level tests (significance.py) survives the FDR
procedure *and* shows a material effect. Findings of the per-node tests are kept on suspect
ranks; on other ranks they are the host's background noise (transient hiccups every rank has)
and go to `notes` with their rate per rank. Group-level link findings (every member's transfer
slowed, nobody late) are judged by their own tests and kept.

Far memory, not the link: copies slower on a rank point at its PCIe link, unless the same rank's
host code is also significantly slower than its peers' (a sustained class[cpu] test that survives
the FDR pass, material or not). A degraded link slows DMA transfers only; a worker bound to the
far NUMA node reads far memory in its own code and in the copies staged from it. Then its copy
findings are `host_memory`.

Culprit before victim: evidence that a rank made its peers wait (its untraced time grew, peers
waited on it at collectives) is cause evidence; a rank whose traced ops merely ran slower while
another rank shows cause evidence may be a victim sharing its CPU, so it comes after, with half
the confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kat.tools.outpost.attribution import node_component
from kat.tools.outpost.models import Anomaly, DetectorConfig, NoiseFloor, Suspect
from kat.tools.outpost.rankview import RankTimes
from kat.tools.outpost.significance import CAUSE_TESTS, effect_floor_ms
from kat.tools.outpost.tree import CLS_CPU, CLS_GPU, CLS_STEP

VICTIM_WEIGHT = 0.5  # confidence factor for a rank with only slow-op evidence beside a rank with cause evidence
PEAK_WEIGHT = 0.5  # ... and for a rank whose only evidence is one event (its tail model is the weakest assumption)
_WHAT = {
    "blame": "peers waited on it at collectives",
    "untraced": "untraced time in its steps (a pause or spin outside any traced op)",
    "work": "time in",
}
_REPLICA = "replica"  # replica_rank.py: against the ranks at the same TP position in the other replicas


@dataclass
class Calibrated:
    suspects: list[Suspect] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    noise_floor: NoiseFloor | None = None


def _why(row: pd.Series) -> str:
    kind = str(row["kind"]).removeprefix("peak_").removeprefix("spread_")
    if kind == _REPLICA:
        what = f"its {row['label']} per step above the other data-parallel replicas' median (same TP position)"
    else:
        what = _WHAT[kind] if kind != "work" else f"its {row['label']} ran longer than its peers'"
    if str(row["kind"]).startswith("peak_"):
        what = f"one-off, beyond every other rank's tail: {what}"
    elif str(row["kind"]).startswith("spread_"):
        what = f"beyond the run's peer-to-peer spread (all groups) in several steps: {what}"
    share = "" if np.isnan(row["effect_share"]) else f", {row['effect_share']:.1%} of its step time"
    return (
        f"{what}: +{row['effect_ms']:.3g} ms over steps {int(row['first_step'])}..{int(row['last_step'])}{share} "
        f"(z {row['z']:.1f} against a peer spread of {row['noise_floor_ms']:.3g} ms per step, q {row['q']:.1e})"
    )


def _suspects(tests: pd.DataFrame) -> tuple[list[Suspect], dict[int, pd.Series]]:
    hits = tests[tests["significant"] & tests["material"]] if not tests.empty else tests
    if hits.empty:
        return [], {}
    # Evidence order: a sustained excess (over many strata) beats a one-off peak; within each,
    # cause evidence (the rank made others wait) beats slow work (possibly a victim).
    hits = hits.assign(cause=hits["kind"].isin(CAUSE_TESTS), sustained=~hits["kind"].str.startswith("peak_"))
    any_cause = bool((hits["cause"] & hits["sustained"]).any())
    rows = []
    best: dict[int, pd.Series] = {}
    for rank, g in hits.groupby("rank"):
        g = g.sort_values(["sustained", "cause", "z"], ascending=False)
        top = g.iloc[0]
        best[int(rank)] = top
        weight = 1.0 if (top["cause"] or not any_cause) else VICTIM_WEIGHT
        why = _why(top)
        if not top["sustained"]:
            weight *= PEAK_WEIGHT
        elif weight < 1.0:
            why += "; no cause evidence of its own while another rank has some: possibly a victim sharing its CPU"
        conf = float(np.clip(weight * (1.0 - float(top["q"])) * float(1.0 - np.exp(-top["z"] / 4.0)), 0.0, 1.0))
        key = (not bool(top["sustained"]), not bool(top["cause"]), -float(top["z"]))
        rows.append((key, Suspect(rank=int(rank), confidence=round(conf, 3), why=why)))
    rows.sort(key=lambda x: x[0])
    return [s for _, s in rows], best


def _fill(a: Anomaly, step_time: pd.Series, test: pd.Series | None) -> Anomaly:
    excess = max(a.observed - a.baseline, 0.0)
    span = step_time.reindex(pd.MultiIndex.from_product([[a.rank], a.steps])).fillna(0.0).sum() if a.steps else 0.0
    a.effect_ms = round(excess / 1e6, 4)
    a.effect_share = round(excess / span, 4) if span > 0 else None
    if test is not None:
        a.noise_floor_ms = round(float(test["noise_floor_ms"]), 4)
        a.p_value = float(test["p"])
    return a


def _component(test: pd.Series) -> str:
    """What a rank-level test measured: a class of work names its component (attribution's
    mapping), a traced op the clock that timed it; time outside traced work (untraced, blame,
    step time) is the rank's own software."""
    label = str(test["label"])
    if label.startswith("class["):
        return node_component(label[len("class[") : -1], "", [], "inter")
    if test["kind"] in CAUSE_TESTS or not label.startswith("op["):
        return node_component(CLS_STEP, label, [], "inter")
    return node_component(CLS_GPU if bool(test.get("device", False)) else CLS_CPU, label, [], "inter")


def _from_test(rank: int, test: pd.Series, times: RankTimes) -> Anomaly:
    """A finding for a suspect that no per-node test pinned: the rank-level evidence itself."""
    lo, hi = int(test["first_step"]), int(test["last_step"])
    start, end = times.span(rank, lo, hi)
    effect_ns = float(test["effect_ms"]) * 1e6
    comp = _component(test)
    return Anomaly(
        rank=rank,
        kind="step",
        name=str(test["label"]),
        component=comp,
        method="arrival" if str(test["kind"]).endswith("blame") else "inter",
        start_ns=start,
        end_ns=end,
        steps=list(range(lo, hi + 1)) if lo >= 0 else [],
        count=max(hi - lo + 1, 1),
        observed=effect_ns,
        baseline=0.0,
        ratio=0.0,
        score=round(effect_ns / 1e6, 4),
        detail=_why(test),
    )


def _noise_floor(tests: pd.DataFrame, step_time: pd.Series, quiet: bool) -> NoiseFloor | None:
    if tests.empty:
        return None
    mean_step = float(step_time.groupby(level=0).mean().mean()) if len(step_time) else np.nan
    # The spread of each rank's total traced work per step (class tests): ops' spreads are tiny.
    work = tests[tests["label"].str.startswith("class[")]
    spread = float(work["noise_floor_ms"].max()) if len(work) else float(tests["noise_floor_ms"].median())
    pct = 100.0 * spread * 1e6 / mean_step if mean_step and not np.isnan(mean_step) else None
    # The largest excess in time (a tiny op can have the largest z and no weight).
    top = tests.sort_values("T", ascending=False).iloc[0]
    nf = NoiseFloor(
        peer_spread_pct=round(pct, 2) if pct is not None else None,
        largest_deviation_ms=round(float(max(top["T"], 0.0)) / 1e6, 3),
        largest_deviation_step=int(top["first_step"]) if int(top["first_step"]) >= 0 else None,
        largest_deviation_p=float(top["p"]),
    )
    head = "no significant anomaly" if quiet else "noise floor"
    agree = f"peers agree within ±{pct:.1f}% of a step per step" if pct is not None else f"peers agree within ±{spread:.2f} ms per step"
    verdict = "significant" if bool(top["significant"] and top["material"]) else "not significant"
    if bool(top["significant"]) and not bool(top["material"]):
        verdict = "significant but below the minimum material effect"
    nf.summary = (
        f"{head}: {agree}; largest deviation rank {int(top['rank'])} {top['label']} "
        f"+{max(float(top['T']), 0.0) / 1e6:.2f} ms over the capture, p = {float(top['p']):.2g}, {verdict}"
    )
    return nf


def _material(a: Anomaly, test: pd.Series, cfg: DetectorConfig) -> bool:
    floor = effect_floor_ms(bool(test.get("device", False)), cfg)
    return (a.effect_ms or 0.0) >= floor and (a.effect_share is None or a.effect_share >= cfg.min_effect_share)


def _slow_host_code(sig: pd.DataFrame) -> set[int]:
    """Ranks whose host code is significantly slower than their peers' over the capture (a
    sustained class[cpu] test among the significant ones `sig`)."""
    if sig.empty:
        return set()
    hit = (sig["label"] == f"class[{CLS_CPU}]") & ~sig["kind"].astype(str).str.startswith("peak_")
    return {int(r) for r in sig.loc[hit, "rank"]}


def _relabel_far_memory(keep: list[Anomaly], slow_host: set[int]) -> None:
    """Copy findings (`pcie`) of a rank whose host code is also significantly slower: far memory."""
    for a in keep:
        if a.component == "pcie" and a.rank in slow_host:
            a.component = "host_memory"
            a.detail = f"{a.detail}; its host code is significantly slower too: far (NUMA) memory, not the link".lstrip("; ")


def _background(dropped: list[Anomaly], times: RankTimes, notes: list[str]) -> None:
    if not dropped:
        return
    steps = times.steps_per_rank()
    per = pd.Series([a.rank for a in dropped]).value_counts().sort_index()
    rates = ", ".join(f"rank {r}: {c} in {int(steps.get(r, 0))} steps" for r, c in per.items())
    if times.n_ranks == 1:
        notes.append(f"background: {len(dropped)} transient deviation(s) from the rank's own repetitions, none sustained: {rates}")
        return
    notes.append(
        f"background: {len(dropped)} transient deviation(s) on {len(per)} of {times.n_ranks} ranks, not significant under "
        f"the capture's own noise (hiccups every rank has at similar rates: host scheduling noise): {rates}"
    )


def calibrate(
    times: RankTimes,
    tests: pd.DataFrame,
    anomalies: list[Anomaly],
    link: list[Anomaly],
    groups: list[list[int]],
    cfg: DetectorConfig,
    notes: list[str],
) -> Calibrated:
    """Suspects, kept findings (with effect, noise floor and p-value), background notes, noise floor."""
    step_time = times.step_time()
    suspects, best = _suspects(tests)
    keep, dropped = [], []
    peered = {r for g in groups if len(g) > 1 for r in g}
    sig = tests[tests["significant"]] if not tests.empty else tests
    own = {(int(r), str(lbl)): row for (r, lbl), row in zip(zip(sig.get("rank", []), sig.get("label", [])), sig.to_dict("records"))}
    for a in anomalies:
        mine = own.get((a.rank, f"op[{a.name}]"))
        if a.rank in best:
            keep.append(_fill(a, step_time, best[a.rank]))
        elif mine is not None and _material(_fill(a, step_time, pd.Series(mine)), pd.Series(mine), cfg):
            keep.append(a)  # its own op is significantly slower on this rank over the capture, by a material effect
        elif a.rank not in peered and len(a.steps) >= cfg.sustained_steps:
            keep.append(_fill(a, step_time, None))  # no peers to judge against: only a sustained excess speaks
        elif a.component in ("storage", "gpu_memory") and a.method == "intra":
            keep.append(_fill(a, step_time, None))  # episodic frames (a blocking load, a KV swap) hold every rank alike
        else:
            dropped.append(a)
    if suspects and not any(a.rank == suspects[0].rank for a in keep):
        top = suspects[0].rank  # the culprit always carries its evidence as a finding
        keep.append(_fill(_from_test(top, best[top], times), step_time, best[top]))
    _relabel_far_memory(keep, _slow_host_code(sig))
    keep += [_fill(a, step_time, None) for a in link]
    # Ties broken by what the finding is, not by the order the tests ran in (groups may run apart).
    keep.sort(key=lambda a: (a.rank not in best, -a.score, a.rank, a.start_ns, a.method, a.component, a.name))
    _background(dropped, times, notes)
    if peered and keep:
        # Ranks named only by group-level or per-op findings (a slow link, a KV swap, one op
        # significantly slower): after the rank-level suspects, by their findings' excess.
        named = {x.rank for x in suspects}
        score: dict[int, float] = {}
        for a in keep:
            if a.rank not in named:
                score[a.rank] = score.get(a.rank, 0.0) + a.score
        suspects += [
            Suspect(rank=r, confidence=0.5, why="named by its own findings (link, episodic frame or a significantly slower op)")
            for r, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
    if not peered and keep:
        notes.append("no peers to compare with: findings are sustained excesses over the rank's own repetitions, without a p-value")
    return Calibrated(suspects=suspects, anomalies=keep, noise_floor=_noise_floor(tests, step_time, quiet=not suspects and not keep))
