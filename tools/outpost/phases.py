"""Outpost in two phases: per unit of analysis, then one merge over the units' small results.

A unit is a set of ranks no test looks beyond: a tensor-parallel group, joined with every other
group it shares a data-parallel replica test or a recorded collective with. `analyse_unit` runs
every per-group test on one unit's node table and returns what the merge needs: the unit's
findings (Anomaly objects), its rank-level tests before the FDR pass, one row per collective
instance (the link tests compare groups with each other), and per-rank step times and spans.
`merge_parts` runs the steps that span units on those summaries alone: the link tests against
other groups, the peer-spread test pooled over every group (each unit hands over its aligned
deviations), Benjamini-Hochberg over every test of the capture, calibration and ranking.

One process (detector.detect) analyses the whole capture as one unit; the Dask path
(distributed.py) analyses one unit per task. Both merge with the same function, so the answers
are the same. A few facts of the whole capture (its step count, whether it is CPU-only, every
rank's host->device copies) are given to each unit (`CaptureFacts`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kat.tools.outpost.arrival import collective_instances, late_arrivals
from kat.tools.outpost.attribution import h2d_copies
from kat.tools.outpost.calibrate import calibrate
from kat.tools.outpost.inter import Spread
from kat.tools.outpost.intra import StepLoad
from kat.tools.outpost.models import Anomaly, DetectionResult, DetectorConfig, RunStats
from kat.tools.outpost.pooled import pooled_rows
from kat.tools.outpost.rankview import RankTimes, rank_step_spans, step_time
from kat.tools.outpost.replica_rank import replica_tests, replica_values
from kat.tools.outpost.rows import _arrival_rows, _inter_rows, _intra_rows, _link_rows, _merge
from kat.tools.outpost.significance import fdr_pass, few_steps_note, group_tests
from kat.tools.outpost.tree import NodeTable
from kat.tools.telemetry.bundle import Bundle

# One row per collective instance: what the link tests read (arrival.py, rows._link_rows).
_INSTANCE_COLUMNS = ["gkey", "step", "name", "occ", "device", "transfer_ns", "msg_bytes", "ts_ns", "end_ns", "late_ns", "rank", "local"]
# Rank-level tests in one order whatever order the units came back in (ties then break alike).
_TEST_ORDER = ["kind", "label", "rank"]


@dataclass
class Plan:
    """The capture's peer groups (from the manifest, ranks present): the same for every unit."""

    groups: list[list[int]]  # lock-step (tensor-parallel) groups
    replicas: list[list[int]]  # data-parallel replica groups


@dataclass
class CaptureFacts:
    """Facts of the whole capture a unit cannot see from its own ranks."""

    steps: int  # distinct profiler steps over all ranks
    cpu_only: bool  # no rank has a device event
    copies: pd.DataFrame | None = None  # attribution.h2d_copies of every rank; None: read from the table when needed
    # Capture-wide statistics of tests that judge a node against every rank's noise; None: the
    # table is the whole capture, they are measured on it (the distributed path measures them
    # over all units first: distributed.py).
    worker_spread: Spread | None = None  # inter.worker_spread_samples -> spread_of
    replica_peers: pd.DataFrame | None = None  # inter.replica_peers
    replica_spread: Spread | None = None  # inter.replica_spread_samples -> spread_of
    intra_load: StepLoad | None = None  # intra.StepLoad over every rank

    @classmethod
    def of_table(cls, table: NodeTable) -> CaptureFacts:
        n = table.nodes
        return cls(steps=int(n.loc[n["step"].to_numpy() >= 0, "step"].nunique()), cpu_only=not (n["device"].to_numpy() >= 0).any())

    def copy_table(self, table: NodeTable) -> pd.DataFrame:
        if self.copies is None:  # one process: the table is the whole capture, read only if asked
            self.copies = h2d_copies(table)
        return self.copies


@dataclass
class UnitPart:
    """What one unit hands to the merge: findings and summaries, never node rows."""

    events: int = 0
    nodes: int = 0
    inter: list[Anomaly] = field(default_factory=list)
    intra: list[Anomaly] = field(default_factory=list)
    late: list[Anomaly] = field(default_factory=list)
    tests: pd.DataFrame = field(default_factory=pd.DataFrame)  # group_tests rows (before the FDR pass)
    pool: pd.DataFrame = field(default_factory=pd.DataFrame)  # pooled.pool_of rows: the merge pools them over units
    pooled: pd.DataFrame = field(default_factory=pd.DataFrame)  # pooled.candidates with effects, p-values to come
    instances: pd.DataFrame = field(default_factory=pd.DataFrame)  # _INSTANCE_COLUMNS, device collectives
    late_steps: pd.DataFrame = field(default_factory=pd.DataFrame)  # gkey, rank, step of classic late arrivals
    kinds: dict[str, str] = field(default_factory=dict)  # instance name -> kind of its first node
    step_time: pd.Series | None = None  # rankview.step_time (distributed path only)
    spans: pd.DataFrame | None = None  # rankview.rank_step_spans (distributed path only)
    replica_values: pd.DataFrame = field(default_factory=pd.DataFrame)  # replica_rank.replica_values: per (rank, step, quantity)


def analyse_unit(table: NodeTable, plan: Plan, facts: CaptureFacts, cfg: DetectorConfig, with_times: bool = False) -> UnitPart:
    """Every test that needs node rows, on one unit's table. `with_times`: also summarise step
    times and spans (the merge reads the table for them when it has it)."""
    n = table.nodes
    part = UnitPart(events=table.events, nodes=len(n))
    if n.empty:
        return part
    first = n.drop_duplicates("name_code")
    kind_of = dict(zip(first["name_code"].to_numpy(), first["kind"].astype(str).to_numpy()))
    inter = _inter_rows(table, plan.groups, plan.replicas, cfg, facts)
    intra = _intra_rows(table, cfg, facts)
    found = [x for x in (inter, intra) if not x.empty]
    causes = pd.concat(found, ignore_index=True) if found else pd.DataFrame()
    inst = collective_instances(table, plan.groups)
    late_all = late_arrivals(inst, cfg) if not inst.empty else pd.DataFrame()
    late = _arrival_rows(table, late_all, causes, cfg)
    # Blame outliers alone do not excuse a slow link: a late collective in one group delays the
    # members' next collective in another.
    classic = late_all[late_all["classic"]] if not late_all.empty else late_all
    part.inter = _merge(inter, table, kind_of) if not inter.empty else []
    part.intra = _merge(intra, table, kind_of) if not intra.empty else []
    part.late = _merge(late, table, kind_of) if not late.empty else []
    gt = group_tests(table, plan.groups, inst, cfg, facts.steps < cfg.min_steps_for_baseline)
    part.tests, part.pool, part.pooled = gt.tests, gt.pool, gt.pooled
    part.instances = _instances(inst, table)
    part.replica_values = replica_values(table, plan.replicas)
    part.late_steps = (
        classic[["gkey", "rank", "step"]].reset_index(drop=True) if not classic.empty else pd.DataFrame(columns=["gkey", "rank", "step"])
    )
    part.kinds = {str(table.names[c]): kind_of[c] for c in pd.unique(inst["name_code"])} if not inst.empty else {}
    if with_times:
        part.step_time = step_time(table)
        part.spans = rank_step_spans(table)
    return part


def _instances(inst: pd.DataFrame, table: NodeTable) -> pd.DataFrame:
    """One row per device collective instance (its first member's row, in table order), with the
    latest member's lateness: all the link tests read of `collective_instances`."""
    if inst.empty:
        return pd.DataFrame(columns=_INSTANCE_COLUMNS)
    dev = inst[inst["device"].to_numpy() >= 0]
    keys = ["gkey", "step", "name_code", "occ"]
    per = dev.drop_duplicates(keys).copy()
    per["late_ns"] = dev.groupby(keys, sort=False)["late_ns"].max().to_numpy()  # same order: first appearance
    per["name"] = table.names[per["name_code"].to_numpy()] if len(per) else np.zeros(0, dtype=object)
    per["local"] = table.nodes["local"].to_numpy()[per.index.to_numpy()]
    return per[_INSTANCE_COLUMNS].reset_index(drop=True)


class _InstanceNames:
    """The names of the merged collective instances (link findings carry no tree path)."""

    def __init__(self, names: np.ndarray) -> None:
        self.names = names

    def path_of(self, rank: int, local: int, depth: int = 8) -> list[str]:
        return []


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def merge_parts(
    bundle: Bundle, plan: Plan, facts: CaptureFacts, parts: list[UnitPart], times: RankTimes, cfg: DetectorConfig, t0: float
) -> DetectionResult:
    """The capture's answer from its units' parts: link tests across groups, the FDR pass over
    every rank-level test, calibration. `bundle` is read for its topology and metrics only."""
    notes = [f"unreadable trace {name}: {why}; analysed without it" for name, why in sorted(bundle.skipped.items())]
    if sum(p.nodes for p in parts) == 0:
        stats = RunStats(events=0, ranks=len(bundle.ranks), seconds=time.perf_counter() - t0)
        return DetectionResult(stats=stats, notes=[*notes, "no events"])
    if not plan.groups and not plan.replicas:
        notes.append("no synchronous peer group (single rank or pipeline-only layout): intra-worker and arrival tests only")
    anomalies = [a for p in parts for a in p.inter] + [a for p in parts for a in p.intra] + [a for p in parts for a in p.late]
    inst = _concat([p.instances for p in parts])
    link_anoms: list[Anomaly] = []
    if not inst.empty:
        inst = inst.sort_values(["rank", "local"], kind="stable").reset_index(drop=True)
        names, codes = np.unique(inst["name"].to_numpy(dtype=object), return_inverse=True)
        inst = inst.drop(columns="name").assign(name_code=codes)
        kinds: dict[str, str] = {}
        for p in parts:
            for k, v in p.kinds.items():
                kinds.setdefault(k, v)
        classic = _concat([p.late_steps for p in parts])
        link = _link_rows(bundle, inst, classic, cfg, notes)
        if not link.empty:
            link_anoms = _merge(link, _InstanceNames(names), {i: kinds.get(str(x), "kernel") for i, x in enumerate(names)})
    if plan.groups:
        few_steps_note(facts.steps, cfg, notes)
    # The pooled peer-spread test over every unit's rows at once: the same pool as one process.
    pooled = pooled_rows(_concat([p.pool for p in parts]), _concat([p.pooled for p in parts]))
    # Replica tests need every replica's values (units never span replicas): run on the merged table.
    replica = replica_tests(_concat([p.replica_values for p in parts]), plan.replicas, cfg, facts.steps < cfg.min_steps_for_baseline)
    tests = _concat([*(p.tests for p in parts), pooled, replica])
    if not tests.empty:
        tests = fdr_pass(tests.sort_values(_TEST_ORDER, kind="stable"), cfg)
    calibrated = calibrate(times, tests, anomalies, link_anoms, plan.groups + plan.replicas, cfg, notes)
    events = sum(p.events for p in parts)
    stats = RunStats(events=events, ranks=len(bundle.ranks), seconds=round(time.perf_counter() - t0, 3), groups=plan.groups)
    return DetectionResult(
        suspect_ranks=[x.rank for x in calibrated.suspects],
        suspects=calibrated.suspects,
        noise_floor=calibrated.noise_floor,
        anomalies=calibrated.anomalies[: cfg.max_anomalies],
        stats=stats,
        notes=notes,
    )
