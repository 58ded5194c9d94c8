"""From a bundle's metrics: one evidence metric, the suspect's series against its peers' band."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from kat.agent.report.model import MAX_METRIC_POINTS, MetricPanel, Series
from kat.tools.telemetry import Bundle


def _rank_of_rows(bundle: Bundle, sel: pd.DataFrame) -> np.ndarray:
    """Each sample's rank: its own label, else its (host, gpu) through the topology's workers."""
    ranks = sel["rank"].to_numpy(dtype=np.int64).copy()
    by_gpu = {(w.host or "", w.gpu): w.rank for w in bundle.manifest.topology.workers if w.gpu is not None}
    if by_gpu and (ranks < 0).any():
        hosts, gpus = sel["host"].astype(str).to_numpy(), sel["gpu"].to_numpy()
        for i in np.flatnonzero(ranks < 0):
            r = by_gpu.get((hosts[i], int(gpus[i])))
            if r is None and len({h for h, _ in by_gpu}) == 1:
                r = by_gpu.get((next(iter(by_gpu))[0], int(gpus[i])))  # one host: the GPU index decides
            if r is not None:
                ranks[i] = r
    return ranks


def _bucket_means(ts: np.ndarray, v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    idx = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, len(edges) - 2)
    sums = np.bincount(idx, weights=v, minlength=len(edges) - 1)
    counts = np.bincount(idx, minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _as_rate(ts: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A cumulative counter as a per-second rate (resets count from zero)."""
    if len(ts) < 2:
        return ts[:0], v[:0]
    dv, dt = np.diff(v), np.diff(ts) / 1e9
    dv = np.where(dv < 0, v[1:], dv)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ts[1:], np.where(dt > 0, dv / dt, np.nan)


def _resolve_name(names: list[str], wanted: str) -> tuple[str | None, str]:
    if wanted in names:
        return wanted, ""
    try:
        pat = re.compile(wanted, re.IGNORECASE)
    except re.error:
        return None, f"no metric named {wanted!r} in the bundle"
    hits = [n for n in names if pat.search(n)]
    if not hits:
        return None, f"no metric named or matching {wanted!r} in the bundle"
    return hits[0], f"{wanted!r} is a pattern: showing {hits[0]!r}" + (f" (1 of {len(hits)} matches)" if len(hits) > 1 else "")


def metric_panel(
    bundle: Bundle,
    wanted: str,
    evidence_ids: list[str],
    suspect: int | None,
    window_ns: tuple[int, int] | None,
    capture_ns: tuple[int, int] | None,
) -> MetricPanel:
    from kat.tools.telemetry.metric_source import metric_source_of

    src = metric_source_of(bundle)  # the bundle's file or Prometheus
    names = src.names()
    panel = MetricPanel(
        name=wanted,
        evidence_ids=evidence_ids,
        suspect_label=f"rank {suspect}" if suspect is not None else "-",
        suspect=None,
        window_ns=window_ns,
        capture_ns=capture_ns,
    )
    if not names:
        why = "the bundle has no metrics" if src.kind == "file" else f"{src.describe()}: " + ("; ".join(src.problems) or "no metrics")
        panel.notes.append(f"missing data: {why}")
        return panel
    name, note = _resolve_name(names, wanted)
    if note:
        panel.notes.append(note)
    if name is None:
        return panel
    panel.name = name
    got = src.select(name, exact=[name])
    if got.status != "ok" or got.frame is None:
        panel.notes.append(f"missing data: {got.message}")
        return panel
    sel = got.frame
    ranks = _rank_of_rows(bundle, sel)
    ts_all, v_all = sel["ts_ns"].to_numpy(dtype=np.int64), sel["value"].to_numpy(dtype=float)
    counter = name.endswith("_total")
    if counter:
        panel.notes.append("cumulative counter: drawn as a rate per second")
    labelled = ranks >= 0
    if not labelled.any():
        panel.notes.append("samples carry no rank (or host+gpu) label: all series form the band, no suspect series")
    # One fine series per label set (rank, host, gpu, cpu, ...); counters become rates within it.
    extra = [c for c in sel.columns if c not in ("ts_ns", "name", "value", "rank")]
    fine = pd.Series(ranks.astype(str))
    for c in extra:
        fine = fine + "|" + sel[c].astype(str).to_numpy()
    per: dict[int | str, tuple[np.ndarray, np.ndarray]] = {}
    for key, mask in fine.groupby(fine, sort=True).indices.items():
        ts, v = ts_all[mask], v_all[mask]
        order = np.argsort(ts, kind="stable")
        ts, v = ts[order], v[order]
        if counter:
            ts, v = _as_rate(ts, v)
        ok = ~np.isnan(v)
        ts, v = ts[ok], v[ok]
        if not len(ts):
            continue
        # Series of one rank are pooled (bucket means average them); unranked ones stay apart.
        owner: int | str = int(ranks[mask][0]) if ranks[mask][0] >= 0 else str(key)
        if owner in per:
            ts, v = np.concatenate([per[owner][0], ts]), np.concatenate([per[owner][1], v])
        per[owner] = (ts, v)
    if not per:
        panel.notes.append("missing data: no samples")
        return panel
    lo = min(int(t.min()) for t, _ in per.values())
    hi = max(int(t.max()) for t, _ in per.values())
    n_ts = len(np.unique(np.concatenate([t for t, _ in per.values()])))
    nb = max(2, min(MAX_METRIC_POINTS, n_ts))
    if n_ts > MAX_METRIC_POINTS:
        panel.notes.append(f"{n_ts} timestamps: bucket means over {nb} intervals")
    edges = np.linspace(lo, hi + 1, nb + 1)
    centers = ((edges[:-1] + edges[1:]) / 2).astype(np.int64)
    peers = []
    for k, (ts, v) in per.items():
        means = _bucket_means(ts, v, edges)
        if suspect is not None and k == suspect:
            ok = ~np.isnan(means)
            panel.suspect = Series(label=f"rank {k}", ts_ns=centers[ok].tolist(), values=np.round(means[ok], 6).tolist())
        else:
            peers.append(means)
    if suspect is not None and panel.suspect is None and labelled.any():
        panel.notes.append(f"missing data: no series of {name} for rank {suspect}")
    if peers:
        stack = np.vstack(peers)
        ok = ~np.all(np.isnan(stack), axis=0)
        with np.errstate(all="ignore"):
            panel.band_ts_ns = centers[ok].tolist()
            panel.band_lo = np.round(np.nanmin(stack[:, ok], axis=0), 6).tolist()
            panel.band_hi = np.round(np.nanmax(stack[:, ok], axis=0), 6).tolist()
            panel.band_median = np.round(np.nanmedian(stack[:, ok], axis=0), 6).tolist()
        panel.peers = len(peers)
    return panel
