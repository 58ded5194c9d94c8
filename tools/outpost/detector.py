"""Outpost facade: run every test over a bundle, attribute, merge repeats, rank suspects."""

from __future__ import annotations

import time
from pathlib import Path

from kat.tools.outpost.models import DetectionResult, DetectorConfig
from kat.tools.outpost.phases import CaptureFacts, Plan, analyse_unit, merge_parts
from kat.tools.outpost.rankview import TableTimes
from kat.tools.outpost.rows import replica_groups, sync_groups
from kat.tools.outpost.tree import build_nodes
from kat.tools.telemetry.bundle import Bundle, open_bundle

__all__ = ["detect", "replica_groups", "sync_groups"]


def detect(source: Bundle | str | Path, config: DetectorConfig | None = None) -> DetectionResult:
    """Run Outpost on a bundle (or a path to one / to a directory of Kineto traces).

    In one process: the whole capture is one unit of analysis (phases.py), merged on its own.
    `kat detect --cluster` runs the same two phases with one unit per group on Dask workers
    (distributed.py)."""
    cfg = config or DetectorConfig()
    t0 = time.perf_counter()
    bundle = source if isinstance(source, Bundle) else open_bundle(source)
    table = build_nodes(bundle)
    plan = Plan(sync_groups(bundle), replica_groups(bundle))
    facts = CaptureFacts.of_table(table)
    part = analyse_unit(table, plan, facts, cfg)
    return merge_parts(bundle, plan, facts, [part], TableTimes(table), cfg, t0)
