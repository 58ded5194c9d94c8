"""Outpost's row builders: each test's flagged rows, attributed and merged into anomalies (used by phases.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from kat.tools.outpost.arrival import link_shifts, link_slowdowns, slow_groups
from kat.tools.outpost.attribution import h2d_slowdown, is_intra_node, node_component, pin_link
from kat.tools.outpost.inter import inter_replica, inter_worker
from kat.tools.outpost.intra import episodic_frames, intra_worker
from kat.tools.outpost.late_causes import uninstrumented_causes
from kat.tools.outpost.models import Anomaly, DetectorConfig
from kat.tools.outpost.tree import CLS_COPY, CLS_CPU, NodeTable
from kat.tools.telemetry.bundle import Bundle

if TYPE_CHECKING:
    from kat.tools.outpost.phases import CaptureFacts

MERGE_GAP_STEPS = 3  # occurrences this few steps apart belong to one episode
# Share of a CPU-only rank-step's excess one op must carry to be a slow op rather than a starved
# CPU. A span and the ops inside it both count there, so one slow op carries about half at most.
CPU_ONLY_CONCENTRATED = 0.4


def sync_groups(bundle: Bundle) -> list[list[int]]:
    """Tensor-parallel groups from the manifest (a bare trace directory is one group)."""
    present = set(bundle.ranks)
    groups = [[r for r in g if r in present] for g in bundle.manifest.topology.groups.tp]
    return [g for g in groups if len(g) > 1]


def replica_groups(bundle: Bundle) -> list[list[int]]:
    """Ranks that do the same work on different batches: data-parallel peers (same position in
    each replica). Also covers faults that hit a whole tensor-parallel group alike, which the
    lock-step test cannot see."""
    present = set(bundle.ranks)
    groups = [[r for r in g if r in present] for g in bundle.manifest.topology.groups.dp]
    return [g for g in groups if len(g) > 2]


def _episodes(steps: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(set(steps)):
        if out and s - out[-1][-1] <= MERGE_GAP_STEPS:
            out[-1].append(s)
        else:
            out.append([s])
    return out


class Names(Protocol):
    """What `_merge` reads of a node table: names by code and a node's path (a node table, or
    the driver's name list when it merges link findings of groups analysed apart)."""

    names: np.ndarray

    def path_of(self, rank: int, local: int, depth: int = 8) -> list[str]: ...


def _merge(rows: pd.DataFrame, table: Names, kind_of: dict[int, str]) -> list[Anomaly]:
    """Rows with rank, step, component, method, name_code, start_ns, end_ns, observed, baseline,
    count, local -> one anomaly per (rank, component, method) episode."""
    out: list[Anomaly] = []
    if rows.empty:
        return out
    for (rank, comp, method), g in rows.groupby(["rank", "component", "method"], sort=False):
        for ep in _episodes(g["step"].tolist()):
            e = g[g["step"].isin(ep)]
            top = e.sort_values("excess", ascending=False).iloc[0]
            name = str(table.names[int(top["name_code"])])
            observed, baseline = float(e["observed"].sum()), float(e["baseline"].sum())
            excess = observed - baseline
            local = int(top["local"]) if "local" in e and not pd.isna(top.get("local", np.nan)) else -1
            path = table.path_of(int(rank), local) if local >= 0 else [name]
            out.append(
                Anomaly(
                    rank=int(rank),
                    kind=kind_of.get(int(top["name_code"]), "kernel"),
                    name=name,
                    tree_path=path,
                    component=comp,
                    method=method,
                    start_ns=int(e["start_ns"].min()),
                    end_ns=int(e["end_ns"].max()),
                    steps=[int(s) for s in ep if s >= 0],
                    count=int(e["count"].sum()),
                    observed=observed,
                    baseline=baseline,
                    ratio=round(observed / max(baseline, 1.0), 4),
                    score=round(max(excess, 0.0) / 1e6, 4),
                    detail=str(top.get("detail", "")),
                )
            )
    return out


def _inter_rows(
    table: NodeTable, groups: list[list[int]], replicas: list[list[int]], cfg: DetectorConfig, facts: CaptureFacts
) -> pd.DataFrame:
    parts = [
        x
        for x in (
            inter_worker(table, groups, cfg, facts.worker_spread),
            inter_replica(table, replicas, cfg, facts.replica_peers, facts.replica_spread),
        )
        if not x.empty
    ]
    if not parts:
        return pd.DataFrame()
    rows = pd.concat(parts, ignore_index=True)
    rows["local"] = _local_of(table, rows)
    # numa: host-side ops and host->device copies slow together on the same rank (same episode).
    copy_ranks = set(rows.loc[rows["cls"] == CLS_COPY, "rank"])
    cpu_ranks = set(rows.loc[rows["cls"] == CLS_CPU, "rank"])
    kind_of = table.nodes.drop_duplicates("name_code").set_index("name_code")["kind"].astype(str)
    cpu_only = facts.cpu_only
    comps = []
    far_memory: dict[int, bool] = {}  # per rank: its H2D copies slow too (computed once)
    for rank, cls, code, local, share in zip(rows["rank"], rows["cls"], rows["name_code"], rows["local"], rows["top_share"]):
        name = str(table.names[code])
        path = table.path_of(int(rank), int(local))[:-1] if local >= 0 else []
        comp = node_component(cls, name, path, "inter", cpu_only=cpu_only)
        if cpu_only and comp == "gpu" and share < CPU_ONLY_CONCENTRATED:
            # Compute ops stand in for GPU kernels on a CPU-only run, but an excess spread thin
            # over many ops is a starved CPU, not slower compute.
            comp = "host_cpu"
        elif comp in ("pcie", "host_cpu") and rank in copy_ranks and rank in cpu_ranks:
            comp = "host_memory"
        elif comp == "host_cpu" and _far_memory(far_memory, facts.copy_table(table), int(rank), rows, cfg):
            comp = "host_memory"
        elif comp == "host_cpu" and share >= 0.6 and kind_of.get(code) == "python":
            comp = "software"  # one frame's own time carries the excess: a pause, not a slow CPU
        comps.append(comp)
    rows["component"] = comps
    rows["detail"] = [f"{r:.2f}x the peer median over {c} nodes" for r, c in zip(rows["ratio"], rows["count"])]
    return rows


def _far_memory(seen: dict[int, bool], copies: pd.DataFrame, rank: int, rows: pd.DataFrame, cfg: DetectorConfig) -> bool:
    if rank not in seen:
        seen[rank] = _copies_slow(copies, rank, rows, cfg)
    return seen[rank]


def _copies_slow(copies: pd.DataFrame, rank: int, rows: pd.DataFrame, cfg: DetectorConfig) -> bool:
    """Host code slow on this rank *and* its host->device copies slower than the peers' (too
    small to pass the detection floor on their own): far memory, not a busy CPU."""
    steps = sorted(set(rows.loc[rows["rank"] == rank, "step"]))
    ratio = h2d_slowdown(copies, rank, steps)
    return ratio is not None and ratio >= 1.0 + cfg.replica_effect


def _local_of(table: NodeTable, rows: pd.DataFrame) -> list[int]:
    """Local row of each row's top node (first occurrence of that name in that rank-step)."""
    n = table.nodes
    # The first occurrence is the one with occurrence index 0 (occ counts within rank-step-name).
    first = n.loc[n["occ"].to_numpy() == 0, ["rank", "step", "name_code", "local"]].set_index(["rank", "step", "name_code"])["local"]
    idx = pd.MultiIndex.from_frame(rows[["rank", "step", "name_code"]])
    return first.reindex(idx).fillna(-1).astype(int).tolist()


def _intra_rows(table: NodeTable, cfg: DetectorConfig, facts: CaptureFacts) -> pd.DataFrame:
    parts = [x for x in (intra_worker(table, cfg, facts.intra_load), episodic_frames(table, cfg)) if not x.empty]
    if not parts:
        return pd.DataFrame()
    occ = pd.concat(parts, ignore_index=True)
    # A frame caught by both tests is one finding.
    occ = occ.sort_values("excess", ascending=False).drop_duplicates(["rank", "step", "name_code", "ts_ns"])
    if occ.empty:
        return occ
    comps = []
    for rank, local, cls, code in zip(occ["rank"], occ["local"], occ["cls"], occ["name_code"]):
        path = table.path_of(int(rank), int(local))
        comps.append(node_component(cls, str(table.names[code]), path[:-1], "intra"))
    occ = occ.assign(component=comps, observed=occ["value"], count=1, start_ns=occ["ts_ns"], end_ns=occ["ts_ns"] + occ["dur_ns"])
    occ["detail"] = [
        f"{v / b:.1f}x its own median" if b > 0 else f"{v / 1e6:.1f} ms blocking frame" for v, b in zip(occ["value"], occ["baseline"])
    ]
    return occ


def _arrival_rows(table: NodeTable, late: pd.DataFrame, causes: pd.DataFrame, cfg: DetectorConfig) -> pd.DataFrame:
    """Late arrivals with what made them late: slow work found on that rank in the same step,
    else untraced time (the step's own time or the collectives' entry delay, late_causes.py),
    else slow work a few steps away. Late arrivals with no cause at all are not reported."""
    if late.empty:
        return late
    near, same = [], []
    for rank, step in zip(late["rank"], late["step"]):
        c = causes[(causes["rank"] == rank) & ((causes["step"] - step).abs() <= MERGE_GAP_STEPS)] if not causes.empty else causes
        near.append(c.groupby("component")["excess"].sum().idxmax() if len(c) else None)
        c = c[c["step"] == step] if len(c) else c
        same.append(c.groupby("component")["excess"].sum().idxmax() if len(c) else None)
    late = late.assign(component=same, near=near)
    # Baseline: the collectives' pure transfer time; observed adds the lateness peers waited for.
    measured = late[late["classic"]]
    measured = measured.assign(
        observed=measured["transfer_ns"] + measured["total_late"],
        baseline=measured["transfer_ns"],
        count=measured["n"],
        local=-1,
        excess=measured["total_late"],
        detail=[f"last to arrive at {s:.0%} of its collectives" for s in measured["last_share"]],
    )
    # Untraced time is weaker evidence than a slow op: only for ranks that kept their peers
    # waiting far beyond the usual (blame outliers) and that no slow op in the step explains.
    gaps = uninstrumented_causes(table, late[late["blame_outlier"] & ~(late["classic"] & late["component"].notna())], cfg)
    rows = [measured[measured["component"].notna()]]
    if not gaps.empty:
        keys = ["gkey", "rank", "step"]
        g = late.drop(columns=["component", "name_code"]).merge(gaps, on=keys)
        rows.append(
            g.assign(
                count=g["n"],
                detail=[
                    f"peers waited {b / 1e6:.1f} ms on it; its own untraced time in this frame {o / 1e6:.1f} ms vs peers' {m / 1e6:.1f} ms"
                    for b, o, m in zip(g["blame_ns"], g["observed"], g["baseline"])
                ],
            )
        )
        explained = set(zip(gaps["gkey"], gaps["rank"], gaps["step"]))
        rest = measured[np.array([k not in explained for k in zip(measured["gkey"], measured["rank"], measured["step"])], dtype=bool)]
    else:
        rest = measured
    rows.append(rest[rest["component"].isna() & rest["near"].notna()].assign(component=lambda d: d["near"]))
    rows = [r for r in rows if not r.empty]
    return pd.concat(rows, ignore_index=True).drop(columns="near") if rows else late.iloc[0:0]


def _link_rows(bundle: Bundle, inst: pd.DataFrame, late: pd.DataFrame, cfg: DetectorConfig, notes: list[str]) -> pd.DataFrame:
    own = [x for x in (link_slowdowns(inst, cfg), link_shifts(inst, cfg)) if not x.empty]
    own_keys = set(pd.concat(own)["gkey"]) if own else set()
    versus_others = slow_groups(inst, cfg)
    # A group whose own history already shows when its link slowed is judged by that: against
    # other groups it looks slow at every step only because those slow steps lift its median.
    if not versus_others.empty:
        versus_others = versus_others[~versus_others["gkey"].isin(own_keys)]
    parts = [x for x in (*own, versus_others) if not x.empty]
    slow = pd.concat(parts, ignore_index=True).drop_duplicates(["gkey", "step"]) if parts else pd.DataFrame(columns=["gkey", "step"])
    rows = [_counter_led_rows(bundle, inst, set(slow["gkey"]), late, notes)]
    # Every step each group ran a collective in (one pass; only needed when someone was late).
    group_steps = inst[inst["step"] >= 0].groupby("gkey")["step"].unique() if not late.empty and not slow.empty else pd.Series(dtype=object)
    for gkey, g in slow.groupby("gkey"):
        members = [int(x) for x in gkey.split(",")]
        # A group whose collectives are long because someone arrives late is not a link problem,
        # unless the same member arrives late at every step of the capture (a pipeline's sender
        # always reaches its send after the receiver posted): a condition that never changes
        # cannot explain a change against the group's own history.
        if (
            not late.empty
            and late["gkey"].eq(gkey).any()
            and not (_own_history(g) and _late_throughout(late, gkey, set(group_steps.get(gkey, ()))))
        ):
            late_steps = set(late.loc[late["gkey"] == gkey, "step"])
            g = g[~g["step"].isin(late_steps)]
            if g.empty:
                continue
        start, end = int(g["start_ns"].min()), int(g["end_ns"].max())
        intra_node = is_intra_node(bundle, members)
        comp = "nvlink"
        pinned, why = pin_link(bundle, members, "nvlink", start, end, errors_only=not intra_node)
        if not intra_node and pinned == members:
            # A group spanning hosts has NVLink hops and network hops: the counters that single
            # out a member (a GPU's link or a host's NIC) say which one degraded.
            comp = "network"
            pinned, why = pin_link(bundle, members, "network", start, end)
        versus = "its own history" if (g["method"] == "intra").all() else "the other groups'"
        notes.append(f"group [{gkey}]: collective transfer time {g['ratio'].median():.2f}x {versus}; {why}")
        for r in pinned:
            rows.append(
                g.assign(
                    rank=r,
                    component=comp,
                    count=g["n"],
                    local=-1,
                    excess=g["observed"] - g["baseline"],
                    detail=f"group [{gkey}] transfer {g['ratio'].median():.2f}x {versus}; {why}",
                )
            )
    rows = [r for r in rows if not r.empty]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _own_history(g: pd.DataFrame) -> bool:
    """The group's link rows all come from its own history (episodes, level shifts), not from a
    comparison with other groups."""
    return bool((g["method"] == "intra").all())


def _late_throughout(late: pd.DataFrame, gkey: str, steps: set[int]) -> bool:
    """One member of group `gkey` arrives late at every one of `steps` (the steps it ran a
    collective in)."""
    mine = late[late["gkey"] == gkey]
    return bool(steps) and mine["rank"].nunique() == 1 and set(mine["step"]) >= steps


def _counter_led_rows(bundle: Bundle, inst: pd.DataFrame, flagged: set[str], late: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Cross-host groups whose transfer time never changed in the capture (a link already slow
    when profiling began leaves no healthy level to compare with) but whose hosts' NIC counters
    single one host out: that host's members' cross-host collectives are reported, with the
    counters as the evidence and no trace baseline (ratio 1)."""
    inst = inst[(inst["device"] >= 0) & ~inst["gkey"].isin(flagged)]
    rows = []
    for gkey, g in inst.groupby("gkey", sort=False):
        members = [int(x) for x in gkey.split(",")]
        if is_intra_node(bundle, members):
            continue
        # Steps where someone arrived late say nothing about the link, unless one member arrives
        # late at every step (a pipeline's sender): that is the group's order, not a straggler.
        if not late.empty and not _late_throughout(late, gkey, set(g.loc[g["step"] >= 0, "step"])):
            g = g[~g["step"].isin(set(late.loc[late["gkey"] == gkey, "step"]))]
            if g.empty:
                continue
        pinned, why = pin_link(bundle, members, "network", int(g["ts_ns"].min()), int(g["end_ns"].max()))
        if pinned == members:
            continue
        per = (
            g.drop_duplicates(["step", "name_code", "occ"])
            .groupby("step")
            .agg(
                observed=("transfer_ns", "sum"),
                start_ns=("ts_ns", "min"),
                end_ns=("end_ns", "max"),
                name_code=("name_code", "first"),
                n=("transfer_ns", "size"),
            )
            .reset_index()
        )
        detail = f"group [{gkey}] crosses hosts; {why}; no healthy period in the capture to compare transfer time with"
        notes.append(detail)
        for r in pinned:
            rows.append(
                per.assign(
                    rank=r,
                    component="network",
                    method="inter",
                    count=per["n"],
                    local=-1,
                    baseline=per["observed"],
                    ratio=1.0,
                    excess=0.0,
                    detail=detail,
                )
            )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
