"""Attribution: which hardware component an anomalous node points at, and for group-wide link
slowdowns, which member's hardware counters explain it (when the bundle has metrics)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from kat.tools.outpost.tree import CLS_COPY, CLS_CPU, CLS_GPU, H2D, KV_NAMES, STORAGE_NAMES, NodeTable
from kat.tools.telemetry.bundle import Bundle
from kat.tools.telemetry.manifest import Topology

# Framework compute: on a CPU-only run (gloo) these stand in for the GPU kernels they launch.
COMPUTE_OPS = re.compile(r"aten::(mm|bmm|addmm|matmul|linear|baddbmm|convolution)|gemm|_proj\b|proj$|attn|attention|mlp", re.IGNORECASE)


def node_component(cls: str, name: str, path: list[str], method: str, cpu_only: bool = False) -> str:
    """Component of one anomalous node from its class, name and ancestry."""
    if cpu_only and cls == CLS_CPU and method == "inter" and COMPUTE_OPS.search(name):
        return "gpu"
    text = " ".join(path + [name])
    if STORAGE_NAMES.search(text):
        return "storage"
    if KV_NAMES.search(text):
        return "gpu_memory"
    if cls == CLS_GPU:
        return "gpu"
    if cls == CLS_COPY:
        return "pcie"
    if cls == CLS_CPU:
        # A spike inside one frame of a worker's own history is a pause (GC, GIL, scheduler);
        # a broad slowdown against peers is a starved CPU.
        return "software" if method == "intra" else "host_cpu"
    return "software"


def h2d_copies(table: NodeTable) -> pd.DataFrame:
    """Host->device copies of every rank in `table`: rank, step, name, shape, value (ns). Names
    and shapes as strings, so copies of tables built apart (one per group) compare alike."""
    n = table.nodes
    h2d = np.fromiter((H2D.search(x) is not None for x in table.names), dtype=bool, count=len(table.names))
    c = n.loc[(n["cls"] == CLS_COPY).to_numpy() & h2d[n["name_code"].to_numpy()], ["rank", "step", "name_code", "shape_key", "value"]]
    return pd.DataFrame(
        {
            "rank": c["rank"].to_numpy(),
            "step": c["step"].to_numpy(),
            "name": table.names[c["name_code"].to_numpy()] if len(c) else np.zeros(0, dtype=object),
            "shape": np.asarray(c["shape_key"].astype(object).to_numpy(), dtype=object),
            "value": c["value"].to_numpy(dtype=float),
        }
    )


def h2d_slowdown(copies: pd.DataFrame, rank: int, steps: list[int]) -> float | None:
    """How much slower this rank's host->device copies ran than the other ranks' same copies
    (same name and batch shape) over `steps`; None without comparable copies. A worker bound to
    the far NUMA node copies from far memory: its copies slow down along with its host code.
    `copies`: `h2d_copies` of every rank of the capture."""
    c = copies[copies["step"].isin(steps).to_numpy()]
    if c.empty:
        return None
    med = c.groupby(["name", "shape", "rank"])["value"].agg(["median", "size"]).reset_index()
    mine = med[med["rank"] == rank].set_index(["name", "shape"])
    others = med[med["rank"] != rank].groupby(["name", "shape"])["median"].median()
    both = mine.join(others.rename("others"), how="inner")
    both = both[both["others"] > 0]
    if both.empty:
        return None
    ratios = both["median"] / both["others"]
    return float(np.average(ratios, weights=both["size"]))


# Exporters scrape every few seconds while a trace covers milliseconds: look a little around it.
METRIC_PAD_NS = 5_000_000_000


def _window(m: pd.DataFrame, start_ns: int, end_ns: int) -> pd.DataFrame:
    return m[(m["ts_ns"] >= start_ns - METRIC_PAD_NS) & (m["ts_ns"] <= end_ns + METRIC_PAD_NS)]


def _counter_increase(m: pd.DataFrame, start_ns: int, end_ns: int) -> pd.Series:
    """Increase of monotone counters per label set around a window."""
    w = _window(m, start_ns, end_ns)
    if w.empty:
        return pd.Series(dtype=float)
    g = w.groupby(["host", "gpu", "rank"], observed=True)["value"]
    return (g.max() - g.min()).astype(float)


def _level(m: pd.DataFrame, start_ns: int, end_ns: int) -> pd.Series:
    w = _window(m, start_ns, end_ns)
    return w.groupby(["host", "gpu", "rank"], observed=True)["value"].mean().astype(float)


def _per_member(values: pd.Series, members: list[int], topo: Topology) -> dict[int, float]:
    out: dict[int, float] = {}
    for r in members:
        w = topo.worker(r)
        sel = [idx for idx in values.index if idx[2] == r or (w is not None and idx[0] == w.host and idx[1] == w.gpu)]
        if sel:
            out[r] = float(values[sel].max())
    return out


def _outlier_labels(values: pd.Series) -> list:
    """Labels whose value stands far above the rest (robust)."""
    if values.empty or values.max() <= 0:
        return []
    if len(values) < 4:
        # Too few for a spread: a label must exceed every other one several times over.
        out = []
        for k, v in values.items():
            others = values.drop(k)
            if len(others) and v > 0 and v >= 3.0 * float(others.max()) + 1e-9:
                out.append(k)
        return out
    med = float(values.median())
    mad = float((values - med).abs().median())
    thresh = med + max(5 * 1.4826 * mad, 0.5 * (values.max() - med), 1e-9)
    return [k for k, v in values.items() if v >= thresh and v > med]


_LINK_METRICS = (
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
    "DCGM_FI_PROF_NVLINK_TX_BYTES",
    "DCGM_FI_PROF_NVLINK_RX_BYTES",
    "node_netstat_Tcp_RetransSegs",
    "node_infiniband_port_transmit_wait_total",
)


def _link_metrics(bundle: Bundle) -> pd.DataFrame:
    """The link counters pin_link reads, from the bundle's metric source (file or Prometheus)."""
    from kat.tools.telemetry.metric_source import metric_source_of

    src = metric_source_of(bundle)
    if not src.names():
        return pd.DataFrame()
    got = src.select("link counters", exact=list(_LINK_METRICS))
    if got.status != "ok" or got.frame is None:
        return pd.DataFrame({"name": pd.Series(["(none)"], dtype=str)})  # metrics exist, none of these
    return got.frame


def pin_link(
    bundle: Bundle, members: list[int], component: str, start_ns: int, end_ns: int, errors_only: bool = False
) -> tuple[list[int], str]:
    """Narrow a group-wide link slowdown to the members whose counters moved; all members if none did.
    errors_only: trust NVLink error counters only (traffic levels differ by role across hosts)."""
    try:
        m = _link_metrics(bundle)
    except Exception:  # noqa: BLE001 - a broken metrics file must not stop trace-based detection
        return members, "metrics unreadable; reporting every group member"
    if m.empty:
        return members, "no metrics in the bundle; reporting every group member"
    topo = bundle.manifest.topology
    names = set(m["name"].astype(str).unique())
    if component == "nvlink":
        for metric in (
            "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
            "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
            "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
            "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
        ):
            if metric not in names:
                continue
            by_rank = _per_member(_counter_increase(m[m["name"] == metric], start_ns, end_ns), members, topo)
            hot = _outlier_labels(pd.Series(by_rank, dtype=float))
            if hot:
                return sorted(hot), f"{metric} rose on rank(s) {sorted(hot)} only"
        for metric in () if errors_only else ("DCGM_FI_PROF_NVLINK_TX_BYTES", "DCGM_FI_PROF_NVLINK_RX_BYTES"):
            if metric not in names:
                continue
            by_rank = _per_member(_level(m[m["name"] == metric], start_ns, end_ns), members, topo)
            # A degraded link carries much less than its peers': a low outlier.
            low = _outlier_labels(-pd.Series(by_rank, dtype=float) + max(by_rank.values(), default=0.0)) if by_rank else []
            if low and len(low) < len(members):
                return sorted(low), f"{metric} on rank(s) {sorted(low)} far below the other members'"
        return members, "no NVLink error counter singles out a member; reporting every group member"
    # network: the host(s) whose NIC counters moved
    hosts = {r: topo.host_of(r) for r in members}
    for metric in ("node_netstat_Tcp_RetransSegs", "node_infiniband_port_transmit_wait_total"):
        if metric not in names:
            continue
        inc = _counter_increase(m[m["name"] == metric], start_ns, end_ns)
        by_host = inc.groupby(level=0).max()
        by_host = by_host[[h for h in by_host.index if h in set(hosts.values())]]
        hot = _outlier_labels(by_host)
        if hot:
            ranks = sorted(r for r, h in hosts.items() if h in hot)
            return ranks, f"{metric} rose on host(s) {sorted(hot)}"
    return members, "no NIC counter singles out a host; reporting every group member"


def is_intra_node(bundle: Bundle, members: list[int]) -> bool:
    hosts = {bundle.manifest.topology.host_of(r) for r in members}
    return len(hosts) == 1 and None not in hosts
