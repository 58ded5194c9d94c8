"""Trace import and Outpost on a Dask cluster (`--cluster dask` or `--cluster tcp://HOST:PORT`).

What runs where: the `kat` process (the driver) only submits one task, `detect` itself
(cluster.detect_on_cluster); that task runs `detect_with_client` on a worker, outside the
worker's thread pool, and submits the rest:
- phase A, one task per trace file on the workers: import it into the Parquet cache (the same
  layout as a single process writes), then read back the few facts of that rank the units need
  (its steps, whether it has device events, its recorded collective groups, its host->device
  copies). Workers get the file's path, never its bytes: the bundle and the cache must be on
  a filesystem every worker sees at the same path.
- the detect task opens the bundle (manifest, metrics; the traces are already cached) and cuts the
  capture into units: tensor-parallel groups, joined where a replica test or a recorded
  collective spans groups (phases.py).
- phase B, one task per unit: build that unit's node table from the cache and run every test
  that reads node rows (phases.analyse_unit). A worker holds one unit's table at a time. When
  the capture has several units, a first round measures the capture-wide statistics the tests
  share (`capture_statistics`); it builds each unit's table once and leaves it in a directory
  of the run beside the cache, where the later rounds (on any worker) read it back.
- the detect task merges the units' small results (phases.merge_parts): the same function a
  single process uses, so the answer is the same. Only the answer, as JSON, reaches the driver.

A worker that dies mid-task loses only its task: the scheduler runs it again elsewhere (the
detect task too: it starts over, on the traces already in the cache).
"""

from __future__ import annotations

import os
import pickle  # the unit's node table between rounds (a file this run wrote itself)
import shutil
import time
import uuid  # task keys unique per call: a key resubmitted while the scheduler still forgets the last run's is cancelled
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kat.tools.outpost.attribution import h2d_copies
from kat.tools.outpost.inter import (
    Spread,
    replica_peers,
    replica_rank_medians,
    replica_spread_samples,
    spread_of,
    worker_spread_samples,
)
from kat.tools.outpost.intra import StepLoad, intra_spikes
from kat.tools.outpost.models import DetectionResult, DetectorConfig
from kat.tools.outpost.phases import CaptureFacts, Plan, UnitPart, analyse_unit, merge_parts
from kat.tools.outpost.rankview import SummaryTimes, concat_step_times
from kat.tools.outpost.rows import replica_groups, sync_groups
from kat.tools.outpost.tree import NodeTable, build_nodes
from kat.tools.telemetry.bundle import (
    Bundle,
    TraceFile,
    cached_meta,
    error_reason,
    import_into_cache,
    is_trace_name,
    open_bundle,
    parquet_rank,
)
from kat.tools.telemetry.errors import BundleError

if TYPE_CHECKING:
    from distributed import Client

TASK_RETRIES = 2  # a task that raises (e.g. a worker's disk hiccup) runs again this many times


# ---------------------------------------------------------------------------------------------
# Phase A: import, one task per trace file


@dataclass
class RankFacts:
    """One imported rank, as phase A returns it (no events)."""

    trace: TraceFile
    steps: list[int] = field(default_factory=list)
    has_device: bool = False
    coll_groups: list[str] = field(default_factory=list)  # recorded member lists of its collectives
    copies: pd.DataFrame = field(default_factory=pd.DataFrame)  # attribution.h2d_copies
    summary: dict[str, Any] | None = None  # summary.rank_summary, when asked (kat import)


@dataclass
class Unreadable:
    name: str
    reason: str


def trace_dir(path: Path) -> Path:
    """Where a bundle's (or a bare directory's) trace files are, as open_bundle looks for them."""
    if path.is_file():
        return path.parent
    return path / "traces" if (path / "traces").is_dir() else path


def trace_paths(path: Path) -> list[Path]:
    """The trace files open_bundle would import (the rest it lists as ignored or refuses itself)."""
    if path.is_file():
        return [path]
    d = trace_dir(path)
    try:
        return sorted(p for p in d.iterdir() if is_trace_name(p) and p.is_file())
    except OSError as exc:
        raise BundleError(f"cannot list the directory ({exc.strerror})", path=d) from exc


def import_rank(path: str, cache_root: str, default_rank: int | None, with_summary: bool = False) -> RankFacts | Unreadable:
    """Phase A task: import one trace into the shared cache and read back its rank's facts."""
    p, cache = Path(path), Path(cache_root)
    try:
        if p.name.endswith(".parquet"):
            tf = TraceFile(p, parquet_rank(p), "parquet")
        else:
            meta = cached_meta(p, cache)
            if meta is None:
                frames: dict[Path, pd.DataFrame] = {}
                failed: dict[Path, str] = {}
                metas = import_into_cache([p], cache, default_rank, frames, failed)
                if p in failed:
                    return Unreadable(p.name, failed[p])
                if p in frames:
                    return Unreadable(p.name, f"the trace cache {cache} is not writable on this worker")
                meta = metas[p]
            tf = TraceFile(p, meta.rank, "kineto", meta)
    except BundleError as exc:
        return Unreadable(p.name, error_reason(exc, p))
    bundle = _unit_bundle(p.parent, cache, {tf.rank: tf})
    table = build_nodes(bundle)
    n = table.nodes
    facts = RankFacts(
        trace=tf,
        steps=sorted(int(s) for s in np.unique(n["step"].to_numpy()) if s >= 0),
        has_device=bool((n["device"].to_numpy() >= 0).any()),
        coll_groups=sorted({str(g) for g in table.colls["group_ranks"].astype(object).dropna().unique() if str(g)}),
        copies=h2d_copies(table),
    )
    del table, n
    if with_summary:
        from kat.tools.telemetry.summary import rank_summary

        facts.summary = rank_summary(bundle.events(tf.rank), p.name)
    return facts


def _unit_bundle(root: Path, cache_root: Path, traces: dict[int, TraceFile]) -> Bundle:
    """A bundle of some ranks only (traces already imported): what build_nodes reads."""
    return Bundle(root, None, traces, None, None, cache_root)


def import_on_cluster(client: Client, path: Path, cache_root: Path, with_summary: bool = False) -> list[RankFacts | Unreadable]:
    """Phase A over every trace file of `path`, on the cluster's workers."""
    files = trace_paths(path)
    if not files:
        raise BundleError(f"no trace files (*.json, *.json.gz, *.parquet) in {trace_dir(path)}", path=trace_dir(path))
    default_rank = 0 if len(files) == 1 else None
    futures = [
        client.submit(
            import_rank,
            str(f.resolve()),
            str(cache_root),
            default_rank,
            with_summary,
            key=f"kat-import-{uuid.uuid4().hex[:8]}-{i}-{f.name}",
            retries=TASK_RETRIES,
        )
        for i, f in enumerate(files)
    ]
    return list(client.gather(futures))


# ---------------------------------------------------------------------------------------------
# Phase B: one unit of analysis per task


def units_of(ranks: list[int], plan: Plan, recorded: list[str]) -> list[list[int]]:
    """Connected components of the ranks, joined by lock-step groups and the member lists
    collectives recorded: no test of one unit reads another unit's rows."""
    parent = {r: r for r in ranks}

    def find(r: int) -> int:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    # Replica groups do not join units: their comparisons get capture-wide statistics instead
    # (`capture_statistics`), which a fleet of replicas would otherwise be a single unit of.
    links = [*plan.groups, *([int(x) for x in g.split(",") if x.strip().lstrip("-").isdigit()] for g in recorded)]
    for g in links:
        members = [r for r in g if r in parent]
        for r in members[1:]:
            a, b = find(members[0]), find(r)
            if a != b:
                parent[max(a, b)] = min(a, b)
    out: dict[int, list[int]] = {}
    for r in sorted(ranks):
        out.setdefault(find(r), []).append(r)
    return sorted(out.values(), key=lambda u: u[0])


@dataclass
class UnitStats:
    """Round 1 of a unit: the samples of the capture-wide statistics (no node rows)."""

    worker: pd.DataFrame  # inter.worker_spread_samples
    spikes: pd.DataFrame  # step, rank of every intra-worker spike (before the load filter)
    replica: pd.DataFrame  # inter.replica_rank_medians
    ranks_with_nodes: int


def _unit_table(root: str, cache_root: str, traces: dict[int, TraceFile], facts: CaptureFacts, saved: str) -> NodeTable:
    """The unit's node table: read back from `saved` when an earlier round of this run wrote it
    there (any worker: it is on the shared filesystem), else built from the Parquet cache."""
    try:
        with open(saved, "rb") as f:
            table = pickle.load(f)  # written by this run's own tasks into a directory named for the run
        if isinstance(table, NodeTable):
            return table
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
        pass  # not written (one unit, a worker lost mid-write): build it
    return build_nodes(_unit_bundle(Path(root), Path(cache_root), traces), cpu_only=facts.cpu_only)


def _save_table(table: NodeTable, saved: str) -> None:
    """Keep the unit's table for the later rounds (building it costs several times reading it).
    Written whole or not at all: a retried task may write the same file."""
    tmp = f"{saved}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(saved), exist_ok=True)
        with open(tmp, "wb") as f:
            pickle.dump(table, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, saved)
    except OSError:
        Path(tmp).unlink(missing_ok=True)  # a read-only cache: the later rounds build it again


def unit_stats_on_worker(
    root: str, cache_root: str, traces: dict[int, TraceFile], saved: str, plan: Plan, facts: CaptureFacts, cfg: DetectorConfig
) -> UnitStats:
    table = _unit_table(root, cache_root, traces, facts, saved)
    _save_table(table, saved)
    spikes = intra_spikes(table, cfg) if len(table.nodes) else pd.DataFrame(columns=["step", "rank"])
    return UnitStats(
        worker=worker_spread_samples(table, plan.groups),
        spikes=spikes[["step", "rank"]].drop_duplicates().reset_index(drop=True)
        if not spikes.empty
        else pd.DataFrame(columns=["step", "rank"]),
        replica=replica_rank_medians(table, plan.replicas),
        ranks_with_nodes=len(table.offsets),
    )


def replica_samples_on_worker(
    root: str, cache_root: str, traces: dict[int, TraceFile], saved: str, plan: Plan, facts: CaptureFacts
) -> pd.DataFrame:
    return replica_spread_samples(_unit_table(root, cache_root, traces, facts, saved), plan.replicas, facts.replica_peers)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True)


def reduce_stats(stats: list[UnitStats], with_replicas: bool) -> tuple[Spread, StepLoad, pd.DataFrame | None]:
    """Round 1's reduction, run on a worker: the samples of every unit never reach the detect
    task (they grow with the ranks), only the statistics do."""
    spikes = _concat([s.spikes for s in stats])
    peers = replica_peers(_concat([s.replica for s in stats])) if with_replicas else None
    return spread_of(_concat([s.worker for s in stats])), StepLoad.of(spikes, sum(s.ranks_with_nodes for s in stats)), peers


def reduce_spread(samples: list[pd.DataFrame]) -> Spread:
    """Round 2's reduction, run on a worker: the replicas' noise scale."""
    return spread_of(_concat(samples))


def capture_statistics(
    client: Client, submit_units: Callable[..., list[Any]], plan: Plan, facts: CaptureFacts, cfg: DetectorConfig
) -> CaptureFacts:
    """The statistics a unit's tests share with the whole capture, from every unit's samples:
    the inter-worker noise scale, the per-step spike load, the replicas' medians and their
    noise scale (two rounds: the replica noise is measured against the replica medians). Each
    round is reduced on a worker: the detect task receives only the statistics."""
    replicas = bool([g for g in plan.replicas if len(g) > 2])
    stats = submit_units(unit_stats_on_worker, "stats", plan, facts, cfg)
    worker, load, peers = client.submit(reduce_stats, stats, replicas, key=_key("reduce-stats"), retries=TASK_RETRIES).result()
    del stats  # the units' samples are released on the workers
    facts = replace(facts, worker_spread=worker, intra_load=load)
    if replicas:
        facts = replace(facts, replica_peers=peers)
        samples = submit_units(replica_samples_on_worker, "replica", plan, facts)
        spread = client.submit(reduce_spread, samples, key=_key("reduce-replica"), retries=TASK_RETRIES).result()
        del samples
        facts = replace(facts, replica_spread=spread)
    return facts


def _key(what: str) -> str:
    return f"kat-{what}-{uuid.uuid4().hex[:8]}"


def analyse_on_worker(
    root: str, cache_root: str, traces: dict[int, TraceFile], saved: str, plan: Plan, facts: CaptureFacts, cfg: DetectorConfig
) -> UnitPart:
    """Phase B task: one unit's node table (as the statistics round left it, or from the
    cache), every per-group test on it. The saved table is removed once analysed."""
    table = _unit_table(root, cache_root, traces, facts, saved)
    part = analyse_unit(table, plan, facts, cfg, with_times=True)
    Path(saved).unlink(missing_ok=True)
    return part


def detect_with_client(client: Client, path: Path, cache_root: Path, run: str, cfg: DetectorConfig) -> DetectionResult:
    """`detect` of `path` (resolved, existing) with import and per-unit tests as tasks of
    `client`; the merge where this runs (cluster.detect_on_cluster: on a worker). `run` names
    the directory of the unit tables between rounds."""
    t0 = time.perf_counter()
    ranks = [x for x in import_on_cluster(client, path, cache_root) if isinstance(x, RankFacts)]
    bundle = open_bundle(path, cache_dir=cache_root)  # the traces are in the cache now: only their metadata is read
    by_rank = {x.trace.rank: x for x in ranks if x.trace.rank in bundle.traces}
    plan = Plan(sync_groups(bundle), replica_groups(bundle))
    present = [by_rank[r] for r in bundle.ranks if r in by_rank]
    copies = [x.copies for x in present if not x.copies.empty]
    facts = CaptureFacts(
        steps=len({s for x in present for s in x.steps}),
        cpu_only=not any(x.has_device for x in present),
        copies=pd.concat(copies, ignore_index=True) if copies else pd.DataFrame(columns=["rank", "step", "name", "shape", "value"]),
    )
    units = units_of(bundle.ranks, plan, sorted({g for x in present for g in x.coll_groups}))
    root, cache = str(bundle.root), str(bundle.cache_root)
    # Where each unit's node table waits between the rounds: one directory per run.
    saved = bundle.cache_root / f"units-{run}"

    def submit_units(fn: Callable[..., Any], what: str, *args: Any) -> list[Any]:
        shared = client.scatter(list(args), broadcast=True)
        return [
            client.submit(
                fn,
                root,
                cache,
                {r: bundle.traces[r] for r in unit},
                str(saved / f"{i}.pkl"),
                *shared,
                key=f"kat-{what}-{uuid.uuid4().hex[:8]}-{i}-{unit[0]}",
                retries=TASK_RETRIES,
            )
            for i, unit in enumerate(units)
        ]

    try:
        if len(units) > 1:  # one unit is the whole capture: it measures these itself
            facts = capture_statistics(client, submit_units, plan, facts, cfg)
        parts: list[UnitPart] = list(client.gather(submit_units(analyse_on_worker, "unit", plan, facts, cfg)))
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    step_times = concat_step_times([p.step_time for p in parts if p.step_time is not None])
    spans = [p.spans for p in parts if p.spans is not None and not p.spans.empty]
    times = SummaryTimes(
        step_times,
        pd.concat(spans, ignore_index=True) if spans else pd.DataFrame(columns=["rank", "step", "start_ns", "end_ns"]),
        len(bundle.ranks),
    )
    return merge_parts(bundle, plan, facts, parts, times, cfg, t0)
