"""Render the simulator's canonical metric series in a `Dialect` (evals/simulate/dialects.py).

Canonical series (DCGM names with host/gpu/rank columns, node exporter per-core CPU, engine
quantile gauges) become: another GPU exporter's names and units, the exporter's own labels or
labels folded into the name, another host label, per-process or per-container CPU instead of
per-core CPU, engine histograms, and no series at all for an exporter that is not deployed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kat.evals.simulate.categories import Category
from kat.evals.simulate.dialects import Dialect
from kat.evals.simulate.faults import FaultPlan
from kat.evals.simulate.topology import Layout
from kat.knowledge.metric_families import THROTTLE_BITS

_KEYS = ("host", "gpu", "rank", "cpu", "mode", "device", "node", "quantile")

# Series a missing exporter/collector would have written (canonical names, prefix match).
MISSING_PREFIX: dict[str, tuple[str, ...]] = {
    "numa": ("node_memory_numa_",),  # node_exporter's meminfo_numa collector is off by default
    "memory_bandwidth": ("pcm_memory_bandwidth",),
    "infiniband": ("node_infiniband_",),
    "schedstat": ("node_schedstat_",),
    "throttle_reasons": ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",),
    "power_limit": ("DCGM_FI_DEV_POWER_MGMT_LIMIT",),
}

# nvidia_gpu_exporter: nvidia-smi query field -> metric, unit converted as the exporter does
# ([MHz] -> _clock_hz, [MiB] -> _bytes, [%] -> _ratio). DCGM fields nvidia-smi cannot query
# (Xid, NVLink counters, PCIe replay and throughput) have no counterpart and are absent.
NVIDIA_SMI: dict[str, tuple[str, float]] = {
    "DCGM_FI_DEV_GPU_UTIL": ("nvidia_smi_utilization_gpu_ratio", 0.01),
    "DCGM_FI_DEV_SM_CLOCK": ("nvidia_smi_clocks_current_sm_clock_hz", 1e6),
    "DCGM_FI_DEV_GPU_TEMP": ("nvidia_smi_temperature_gpu", 1.0),
    "DCGM_FI_DEV_POWER_USAGE": ("nvidia_smi_power_draw_watts", 1.0),
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": ("nvidia_smi_enforced_power_limit_watts", 1.0),
    "DCGM_FI_DEV_FB_USED": ("nvidia_smi_memory_used_bytes", 2.0**20),
    "DCGM_FI_DEV_PCIE_LINK_GEN": ("nvidia_smi_pcie_link_gen_current", 1.0),
    "DCGM_FI_DEV_PCIE_LINK_WIDTH": ("nvidia_smi_pcie_link_width_current", 1.0),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": ("nvidia_smi_ecc_errors_uncorrected_volatile_total", 1.0),
}
# NVML clock event reason bits, one 0/1 series each in nvidia_gpu_exporter: the bits up to
# hw_power_brake_slowdown of the one table of them (knowledge/metric_families.py).
REASON_BITS: dict[str, int] = {name: bit for name, bit in THROTTLE_BITS.items() if bit <= 0x80}
# vLLM's own histogram buckets (vllm/engine/metrics.py) for TTFT and TPOT, seconds.
TTFT_LE = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_LE = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
# Scrape ports by exporter (their documented defaults): what `instance` carries after the host.
PORT = {"gpu_dcgm": 9400, "gpu_smi": 9835, "node": 9100, "cadvisor": 8080, "process": 9256, "engine": 8000}
# Batch jobs a co-tenant might run; a process-exporter config lists them by name.
BATCH_JOBS = ("rsync", "ffmpeg", "spark-executor", "xz", "clickhouse-backup", "tar", "restic")


@dataclass
class _S:
    """One output series: name, labels (column or folded), samples."""

    name: str
    labels: dict[str, str]
    ts: np.ndarray
    values: np.ndarray
    kind: str  # gpu | host | engine (which exporter wrote it: decides host label and port)


def gpu_uuid(seed: int, host: str, gpu: int) -> str:
    """A stable GPU UUID in NVIDIA's 'GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx' form."""
    h = hashlib.sha256(f"{seed}|{host}|{gpu}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def batch_job(seed: int) -> str:
    return BATCH_JOBS[int(hashlib.sha256(f"{seed}|job".encode()).hexdigest(), 16) % len(BATCH_JOBS)]


def _series(frame: pd.DataFrame) -> list[_S]:
    out = []
    for key, g in frame.groupby(["name", *_KEYS], sort=False):
        labels = {k: str(v) for k, v in zip(_KEYS, key[1:]) if str(v) != ""}
        out.append(_S(str(key[0]), labels, g["ts"].to_numpy(), g["value"].to_numpy(dtype=float), "host"))
    return out


def _busy(s: _S) -> np.ndarray:
    """Per-second share of a core from a cumulative CPU-seconds counter."""
    d = np.diff(s.values, prepend=s.values[0] - (s.values[1] - s.values[0] if len(s.values) > 1 else 0.0))
    return np.clip(d, 0.0, None)


def _cpu_series(
    series: list[_S],
    d: Dialect,
    lay: Layout,
    plan: FaultPlan,
    core_owner: dict[tuple[str, int], int | None],
    window: tuple[int, int] | None,
    seed: int,
) -> list[_S]:
    """Per-core node_cpu_seconds_total -> process-exporter groups or cAdvisor containers.

    Workers keep their core's CPU time; what the spare cores burn beyond idle goes to the process
    that burned it: the co-tenant job inside the fault window on its hosts, logrotate during the
    benign spike. Idle groups use next to nothing.
    """
    keep = [s for s in series if s.name != "node_cpu_seconds_total"]
    busy: dict[tuple[str, int], np.ndarray] = {}
    ts: np.ndarray | None = None
    for s in series:
        if s.name == "node_cpu_seconds_total" and s.labels.get("mode") in ("user", "system"):
            k = (s.labels["host"], int(s.labels["cpu"]))
            busy[k] = busy.get(k, 0.0) + _busy(s)
            ts = s.ts
    wait = {(s.labels["host"], int(s.labels["cpu"])): _busy(s) for s in series if s.name == "node_schedstat_waiting_seconds_total"}
    if ts is None:
        return series
    rng = np.random.default_rng(seed)
    n = len(ts)
    job = batch_job(seed)
    spike = next((c for c in plan.confounders if c.kind == "metric_spike" and c.detail.get("variant", 0) % 2 == 0), None)
    hog_on = np.zeros(n, dtype=bool)
    if window is not None and plan.category == Category.HOST_CPU_CONTENTION:
        hog_on = (ts > window[0]) & (ts - 1_000_000_000 < window[1])
    out: list[_S] = []
    eng = lay.task.engine
    for host in lay.hosts:
        spare = sum((b - 0.08 for (h, core), b in busy.items() if h == host and core_owner.get((h, core)) is None), np.zeros(n))
        spare = np.clip(spare, 0.0, None)
        in_spike = np.zeros(n, dtype=bool)
        if spike is not None and host in spike.hosts:
            in_spike = (ts >= spike.detail["start_ns"]) & (ts <= spike.detail["end_ns"] + 1_000_000_000)
        idle = np.abs(rng.normal(0.002, 0.001, size=n))
        # The co-tenant job is multi-threaded: it spreads over more cores than the model tracks one by one.
        hog = np.where(hog_on & (host in plan.affected_hosts), spare * 4.0, 0.0)
        others = {job: idle + hog, "logrotate": idle + np.where(in_spike, np.minimum(spare, 1.0), 0.0), "sshd": idle}
        owned = {(core, r) for (h, core), r in core_owner.items() if h == host and r is not None}
        if d.cpu_exporter == "process":
            for core, r in sorted(owned, key=lambda x: x[1]):
                b = busy.get((host, core), np.zeros(n))
                w = wait.get((host, core), np.zeros(n))
                # Involuntary switches: a steady base, more when the worker waits for its core.
                ctx = rng.poisson(150.0 + 4.0e4 * np.clip(w - 0.01, 0.0, None)).astype(float)
                out += _process_group(f"{eng}_worker_{r}", host, ts, b, ctx)
            for g, b in others.items():
                out += _process_group(g, host, ts, b, rng.poisson(20.0, size=n).astype(float))
        else:
            ns = "inference"
            for dp in range(lay.task.dp):
                ranks = {w.rank for w in lay.workers if w.dp == dp and w.host == host}
                if not ranks:
                    continue
                b = sum((busy[(host, core)] for core, r in owned if r in ranks and (host, core) in busy), np.zeros(n))
                lab = {"host": host, "namespace": ns, "pod": f"{eng}-{dp}", "container": "engine"}
                out.append(_S("container_cpu_usage_seconds_total", lab, ts, np.cumsum(b) + 3.0e5, "cadvisor"))
            pod = {"host": host, "namespace": "batch", "pod": f"{job}-{seed % 99991:05x}", "container": job}
            out.append(_S("container_cpu_usage_seconds_total", pod, ts, np.cumsum(others[job]) + 50.0, "cadvisor"))
    return keep + out


def _process_group(g: str, host: str, ts: np.ndarray, busy: np.ndarray, ctx: np.ndarray) -> list[_S]:
    lab = {"host": host, "groupname": g}
    return [
        _S("namedprocess_namegroup_cpu_seconds_total", {**lab, "mode": "user"}, ts, np.cumsum(busy * 0.85) + 4.0e4, "process"),
        _S("namedprocess_namegroup_cpu_seconds_total", {**lab, "mode": "system"}, ts, np.cumsum(busy * 0.15) + 6.0e3, "process"),
        _S(
            "namedprocess_namegroup_context_switches_total", {**lab, "ctxswitchtype": "nonvoluntary"}, ts, np.cumsum(ctx) + 1.0e6, "process"
        ),
        _S("namedprocess_namegroup_num_procs", lab, ts, np.ones(len(ts)), "process"),
    ]


def _gpu_series(s: _S, d: Dialect) -> list[_S]:
    if not s.name.startswith("DCGM_"):
        return [s]
    s.kind = "gpu"
    if d.gpu_exporter == "dcgm_events" and s.name == "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS":
        s.name = "DCGM_FI_DEV_CLOCKS_EVENT_REASONS"
    if d.gpu_exporter != "nvidia_smi":
        return [s]
    if s.name == "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS":
        mask = s.values.astype(np.int64)
        return [
            _S(f"nvidia_smi_clocks_throttle_reasons_{r}", dict(s.labels), s.ts, ((mask & bit) != 0).astype(float), "gpu")
            for r, bit in REASON_BITS.items()
        ]
    if s.name not in NVIDIA_SMI:
        return []
    name, scale = NVIDIA_SMI[s.name]
    return [_S(name, s.labels, s.ts, np.round(s.values * scale, 4), "gpu")]


def _engine_series(series: list[_S], d: Dialect, engine: str) -> list[_S]:
    """Quantile gauges -> histograms (`_sum`/`_count`, optionally `_bucket`); vLLM V1 KV-cache name."""
    if d.engine_style == "quantile":
        return series
    gen = {(s.labels.get("host"), s.labels.get("rank")): s for s in series if s.name.endswith(":generation_tokens_total")}
    out: list[_S] = []
    for s in series:
        if engine == "vllm" and s.name == "vllm:gpu_cache_usage_perc":
            s.name = "vllm:kv_cache_usage_perc"
        if "quantile" not in s.labels:
            out.append(s)
            continue
        labels = {k: v for k, v in s.labels.items() if k != "quantile"}
        g = gen.get((s.labels.get("host"), s.labels.get("rank")))
        tokens = np.diff(g.values, prepend=g.values[0]) if g is not None else np.full(len(s.values), 100.0)
        per_s = np.maximum(tokens, 1.0) if "token" in s.name and "first" not in s.name else np.maximum(tokens / 200.0, 0.5)
        count = np.cumsum(np.rint(per_s))
        out.append(_S(s.name + "_count", labels, s.ts, count, s.kind))
        out.append(_S(s.name + "_sum", labels, s.ts, np.round(np.cumsum(np.rint(per_s) * s.values), 4), s.kind))
        if d.engine_style == "buckets":
            les = TTFT_LE if "first_token" in s.name else TPOT_LE
            for le in (*les, math.inf):
                frac = np.ones(len(s.values)) if le == math.inf else _below(le, s.values)
                b = np.cumsum(np.rint(np.rint(per_s) * frac))
                out.append(_S(s.name + "_bucket", {**labels, "le": "+Inf" if le == math.inf else f"{le:g}"}, s.ts, b, s.kind))
    return out


def _below(le: float, median: np.ndarray) -> np.ndarray:
    """Share of a log-normal latency (sigma 0.35 around the median) at or below `le`."""
    z = (math.log(le) - np.log(np.maximum(median, 1e-6))) / 0.35
    return np.array([0.5 * (1.0 + math.erf(x / math.sqrt(2.0))) for x in z])


def _layout(s: _S, d: Dialect, uuid_of: dict[tuple[str, int], str], model: str) -> _S:
    """Host label, the exporter's own GPU labels, and folding into the name."""
    lab = dict(s.labels)
    host = lab.pop("host", "")
    port = {"gpu": PORT["gpu_smi" if d.gpu_exporter == "nvidia_smi" else "gpu_dcgm"]}.get(s.kind, PORT.get(s.kind, PORT["node"]))
    if s.kind == "gpu" and d.gpu_labels != "columns":
        gpu = int(lab.pop("gpu"))
        lab.pop("rank", None)
        uid = uuid_of.get((host, gpu), "")
        if d.gpu_exporter == "nvidia_smi":
            lab = {"uuid": uid[4:]}  # the exporter's label carries the bare UUID
        else:
            lab = {"gpu": str(gpu), "UUID": uid, "device": f"nvidia{gpu}", "modelName": model, "Hostname": host}
    if d.host_key == "instance":
        lab["instance"] = f"{host}:{port}"
    elif d.host_key == "hostname" and "Hostname" not in lab:
        lab["hostname"] = host
    elif d.host_key == "host":
        lab["host"] = host
    if "host" not in lab and "instance" not in lab and "hostname" not in lab and "Hostname" not in lab:
        lab["host"] = host
    if d.gpu_labels == "folded":
        body = ",".join(f'{k}="{v}"' for k, v in lab.items())
        return _S(f"{s.name}{{{body}}}", {}, s.ts, s.values, s.kind)
    return _S(s.name, lab, s.ts, s.values, s.kind)


def render_metrics(
    frame: pd.DataFrame,
    d: Dialect,
    lay: Layout,
    plan: FaultPlan,
    core_owner: dict[tuple[str, int], int | None],
    window: tuple[int, int] | None,
    seed: int,
) -> pd.DataFrame:
    """The canonical long-format frame rendered in dialect `d` (columns: ts, name, value, label columns)."""
    series = _series(frame)
    if d.cpu_exporter != "node":
        series = _cpu_series(series, d, lay, plan, core_owner, window, seed)
    if d.missing:
        series = [s for s in series if not s.name.startswith(MISSING_PREFIX[d.missing])]
    engine_names = [s for s in series if s.name.startswith(("vllm:", "sglang:"))]
    for s in engine_names:
        s.kind = "engine"
    rest = [x for s in series if not s.name.startswith(("vllm:", "sglang:")) for x in _gpu_series(s, d)]
    series = rest + _engine_series(engine_names, d, lay.task.engine)
    uuid_of = {(w.host, w.gpu): gpu_uuid(seed, w.host, w.gpu) for w in lay.workers}
    model = {"A100": "NVIDIA A100-SXM4-80GB", "H100": "NVIDIA H100 80GB HBM3", "H200": "NVIDIA H200", "B200": "NVIDIA B200"}[lay.task.gpu]
    series = [_layout(s, d, uuid_of, model) for s in series]
    cols: list[str] = []
    for s in series:
        for k in s.labels:
            if k not in cols:
                cols.append(k)
    parts = []
    for s in series:
        n = len(s.ts)
        part = {"ts": s.ts, "name": np.full(n, s.name, dtype=object), "value": np.round(s.values.astype(float), 4)}
        for k in cols:
            part[k] = np.full(n, s.labels.get(k, ""), dtype=object)
        parts.append(pd.DataFrame(part))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["ts", "name"], kind="stable").reset_index(drop=True)
