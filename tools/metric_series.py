"""Metric series of an incident, identified and placed: family, exporter, labels, rank/host/GPU.

Shared by `metric_catalog` (what is there) and `metric_compare` (what changed where). Labels
come from extra columns and from labels folded into the name (`name{k="v"}`); GPU series
labelled only by uuid or PCI bus id are placed through incident.json topology; process series
(process-exporter group names, fluent-bit inputs) are placed on a rank when their label names
a worker and its number. Counters are read as per-second rates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kat.knowledge.metric_families import classify, is_counter_name, split_folded
from kat.tools.telemetry import Bundle

_BASE = ("ts_ns", "name", "value", "host", "gpu", "rank")
_UUID_KEYS = ("uuid",)
_PCI_KEYS = ("pci_bus_id", "pci.bus_id", "busid", "bus_id")
_HOST_KEYS = ("hostname", "instance", "node", "nodename", "kubernetes_node")
# A label value naming a worker process and its number: "vllm-worker-3", "tail.worker3", "rank3".
_WORKER = re.compile(r"(?:worker|rank)[-_.]?(\d+)$", re.IGNORECASE)


@dataclass
class Series:
    key: str  # display identity: bare name + distinguishing labels
    name: str  # bare metric name
    family: str
    exporter: str
    detail: str
    labels: dict[str, str]
    host: str
    gpu: int | None
    rank: int | None
    ts: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)  # rates for counters
    counter: bool = False


def _norm_uuid(v: str) -> str:
    """nvidia-smi writes 'GPU-<uuid>', nvidia_gpu_exporter labels the bare '<uuid>': compare the bare form."""
    v = v.strip().lower()
    return v[4:] if v.startswith("gpu-") else v


def _norm_pci(v: str) -> str:
    v = v.strip().lower()
    return v[-7:] if len(v) >= 7 else v


@dataclass
class Placement:
    """Topology lookups: uuid / PCI bus id / (host, gpu) / pid -> rank."""

    by_uuid: dict[str, tuple[str, int]]
    by_pci: dict[str, tuple[str, int]]
    rank_of_gpu: dict[tuple[str, int], int]
    rank_of_pid: dict[int, int]
    hosts: list[str]
    ranks: list[int]

    @classmethod
    def of(cls, bundle: Bundle) -> Placement:
        m = bundle.manifest
        by_uuid, by_pci = {}, {}
        for h in m.topology.hosts:
            for g in h.gpus:
                extra = g.model_extra or {}
                if extra.get("uuid"):
                    by_uuid[_norm_uuid(str(extra["uuid"]))] = (h.name, g.index)
                if extra.get("pci_bus_id"):
                    by_pci[_norm_pci(str(extra["pci_bus_id"]))] = (h.name, g.index)
        rog, rop = {}, {}
        for w in m.topology.workers:
            if w.host is not None and w.gpu is not None:
                rog[(w.host, w.gpu)] = w.rank
            if w.pid is not None:
                rop[w.pid] = w.rank
        hosts = sorted({h.name for h in m.topology.hosts} | {w.host for w in m.topology.workers if w.host})
        return cls(by_uuid, by_pci, rog, rop, hosts, sorted(bundle.ranks))

    def place(self, host: str, gpu: int | None, rank: int | None, labels: dict[str, str]) -> tuple[str, int | None, int | None]:
        low = {k.lower(): v for k, v in labels.items() if v != ""}
        if not host:
            for k in _HOST_KEYS:
                if k in low:
                    host = low[k].split(":")[0]
                    break
        if gpu is None:
            for k in ("gpu", "minor_number", "index"):
                if k in low and low[k].isdigit():
                    gpu = int(low[k])
                    break
            if gpu is None and re.fullmatch(r"nvidia\d+", low.get("device", "")):
                gpu = int(low["device"][6:])
        for k in _UUID_KEYS:
            if k in low and _norm_uuid(low[k]) in self.by_uuid:
                host, gpu = self.by_uuid[_norm_uuid(low[k])]
        for k in _PCI_KEYS:
            if k in low and _norm_pci(low[k]) in self.by_pci:
                host, gpu = self.by_pci[_norm_pci(low[k])]
        if rank is None and gpu is not None:
            rank = self.rank_of_gpu.get((host, gpu))
            if rank is None and len(self.hosts) <= 1:
                rank = next((r for (h, g), r in self.rank_of_gpu.items() if g == gpu), None)
        if rank is None and low.get("rank", "").isdigit() and int(low["rank"]) in self.ranks:
            rank = int(low["rank"])  # a rank label folded into the name or in an extra column
        if rank is None and "pid" in low and low["pid"].isdigit():
            rank = self.rank_of_pid.get(int(low["pid"]))
        if rank is None:
            for v in low.values():
                m = _WORKER.search(v)
                if m and int(m.group(1)) in self.ranks:
                    rank = int(m.group(1))
                    break
        return host, gpu, rank


def metrics_frame(bundle: Bundle) -> pd.DataFrame:
    """The metrics the bundle's source serves: its file, or a live source (Prometheus) over the incident window."""
    from kat.tools.telemetry.metric_source import metric_source_of
    from kat.tools.telemetry.tables import empty_metrics

    src = metric_source_of(bundle)
    if getattr(src, "kind", "file") == "file":
        return bundle.metrics
    names = src.names()
    sel = src.select("", exact=names) if names else None
    if sel is not None and sel.echo:
        setattr(bundle, _ECHO_ATTR, dict(sel.echo))
    return sel.frame if sel is not None and sel.frame is not None else empty_metrics()


_ECHO_ATTR = "_kat_live_metrics_echo"


def live_echo(bundle: Bundle) -> dict[str, str]:
    """The exact query (PromQL, range, source) that fetched the series from a live source; empty for a file."""
    return dict(getattr(bundle, _ECHO_ATTR, None) or {})


def searched(bundle: Bundle, what: str, fallback: str) -> str:
    """What a metric tool searched: the live query when Prometheus served the series, else `fallback`."""
    echo = live_echo(bundle)
    if echo:
        return f"{what} via PromQL {echo.get('promql', '')} over {echo.get('range', '')} at {echo.get('source', '')}"
    return fallback


def load_series(bundle: Bundle, families: set[str] | None = None, names: set[str] | None = None) -> list[Series]:
    """Every series of the bundle's metrics (optionally only some families or bare names)."""
    m = metrics_frame(bundle)
    if m.empty:
        return []
    place = Placement.of(bundle)
    extra = [c for c in m.columns if c not in _BASE]
    out: list[Series] = []
    cls_of = {n: classify(str(n)) for n in m["name"].cat.categories}
    wanted = [n for n, c in cls_of.items() if (families is None or c.family in families) and (names is None or split_folded(n)[0] in names)]
    if not wanted:
        return []
    sel = m.loc[m["name"].isin(wanted).to_numpy()]
    keys = ["name", "host", "gpu", "rank", *extra]
    for key, g in sel.groupby(keys, observed=True, sort=True):
        full, host, gpu, rank = str(key[0]), str(key[1]), int(key[2]), int(key[3])
        bare, folded = split_folded(full)
        labels = {c: str(v) for c, v in zip(extra, key[4:]) if str(v) not in ("", "nan")}
        labels.update(folded)
        # Quantile/bucket series are kept apart by their label; the engine's median is the one to read.
        h, gg, r = place.place(host, gpu if gpu >= 0 else None, rank if rank >= 0 else None, labels)
        c = cls_of[full]
        ts, v = g["ts_ns"].to_numpy(), g["value"].to_numpy(dtype=float)
        counter = is_counter_name(bare) or bare.endswith(("_sum", "_count", "_bucket"))
        if counter and len(v) > 1 and bool(np.all(np.diff(v) >= -1e-9)):
            dt = np.maximum(np.diff(ts) / 1e9, 1e-9)
            ts, v = ts[1:], np.diff(v) / dt
        else:
            counter = False
        show = {
            k: v2 for k, v2 in labels.items() if k.lower() not in ("uuid", "modelname", "model_name", "pci_bus_id", "hostname", "device")
        }
        ident = bare + ("{" + ",".join(f'{k}="{v2}"' for k, v2 in sorted(show.items())) + "}" if show else "")
        out.append(Series(ident, bare, c.family, c.exporter, c.detail, labels, h, gg, r, ts, v, counter))
    return _with_means(out)


def _with_means(out: list[Series]) -> list[Series]:
    """Histogram/summary `_sum` and `_count` rates -> the mean per event (e.g. seconds per token)."""
    counts = {(s.name[: -len("_count")], tuple(sorted(s.labels.items())), s.host, s.rank): s for s in out if s.name.endswith("_count")}
    extra = []
    for s in out:
        if not s.name.endswith("_sum"):
            continue
        c = counts.get((s.name[: -len("_sum")], tuple(sorted(s.labels.items())), s.host, s.rank))
        if c is None or len(c.values) != len(s.values):
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(c.values > 0, s.values / np.maximum(c.values, 1e-12), np.nan)
        base = s.name[: -len("_sum")]
        extra.append(
            Series(
                s.key.replace("_sum", "_mean", 1),
                base + "_mean",
                s.family,
                s.exporter,
                s.detail,
                s.labels,
                s.host,
                s.gpu,
                s.rank,
                s.ts,
                mean,
                False,
            )
        )
    return out + extra


def window_stats(s: Series, start_ns: int, end_ns: int) -> dict | None:
    """Inside vs outside a window: means, and a robust z of the inside mean against the outside."""
    inside = (s.ts >= start_ns) & (s.ts < end_ns)
    a, b = s.values[inside], s.values[~inside]
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or b.size < 3:
        return None
    med = float(np.median(b))
    mad = float(np.median(np.abs(b - med))) * 1.4826
    spread = max(mad, float(np.std(b)) * 0.5, 1e-3 * max(abs(med), 1.0), 1e-12)
    return {
        "inside_mean": float(a.mean()),
        "inside_max": float(a.max()),
        "inside_min": float(a.min()),
        "outside_median": med,
        "z": (float(a.mean()) - med) / spread,
        "rel": (float(a.mean()) - med) / max(abs(med), 1e-9),
    }


def peer_z(value: float, peers: list[float]) -> float | None:
    """Robust z of one series' value against its peers' values (None with fewer than 2 peers)."""
    if len(peers) < 2:
        if len(peers) == 1:
            scale = max(abs(peers[0]), 1e-9)
            return (value - peers[0]) / (0.05 * scale + 1e-12)
        return None
    p = np.array(peers, dtype=float)
    med = float(np.median(p))
    mad = float(np.median(np.abs(p - med))) * 1.4826
    spread = max(mad, 0.05 * abs(med), 1e-9)
    return (value - med) / spread


def to_frame(series: list[Series]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"key": s.key, "family": s.family, "exporter": s.exporter, "host": s.host, "gpu": s.gpu, "rank": s.rank, "n": len(s.values)}
            for s in series
        ]
    )


_SERIES_CACHE: dict[int, tuple[Bundle, list[Series]]] = {}


def series_of(bundle: Bundle) -> list[Series]:
    """Every series of a bundle, built once per open bundle (catalogue and comparisons share it)."""
    hit = _SERIES_CACHE.get(id(bundle))
    if hit is not None and hit[0] is bundle:
        return hit[1]
    out = load_series(bundle)
    if len(_SERIES_CACHE) >= 8:
        _SERIES_CACHE.pop(next(iter(_SERIES_CACHE)))
    _SERIES_CACHE[id(bundle)] = (bundle, out)
    return out
