"""Reading tool results as evidence for or against each root-cause category.

Every finding names the evidence id it came from, so the causal chain cites what was retrieved.
Thresholds are the usual operator rules of thumb (DCGM throttle-reason bits, counters that
should stay at zero on a healthy fleet), applied per series and against peers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from kat.agent.rules.topology import Topo
from kat.agent.state import LedgerEntry

# -- the sweep: (key, metric regex or exact name) ---------------------------------------------
SWEEP: list[tuple[str, str]] = [
    ("temp", "DCGM_FI_DEV_GPU_TEMP"),
    ("throttle", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"),
    ("clock", "DCGM_FI_DEV_SM_CLOCK"),
    ("power_limit", "DCGM_FI_DEV_POWER_MGMT_LIMIT"),
    ("xid", "DCGM_FI_DEV_XID_ERRORS"),
    ("ecc", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"),
    ("nvlink_crc", "NVLINK_CRC|NVLINK_REPLAY|NVLINK_RECOVERY"),
    ("pcie_replay", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER"),
    ("pcie_gen", "DCGM_FI_DEV_PCIE_LINK_GEN"),
    ("retrans", "node_netstat_Tcp_RetransSegs"),
    ("ib_wait", "port_transmit_wait"),
    ("load", "node_load1"),
    ("schedstat", "node_schedstat_waiting_seconds_total"),
    ("numa_miss", "node_memory_numa_numa_miss_total"),
    ("disk_io", "node_disk_io_time_seconds_total"),
    ("kv_usage", "gpu_cache_usage_perc|sglang:token_usage"),
    ("preempt", "num_preemptions_total|num_retracted_reqs_total"),
    ("running", "num_requests_running|num_running_reqs"),
    ("waiting", "num_requests_waiting|num_queue_reqs"),
]
SWEEP_NAMES = dict(SWEEP)

# -- log signatures per category --------------------------------------------------------------
LOG_SIGNATURES: dict[str, str] = {
    "gpu_thermal_throttling": r"thermal slowdown|thermal violation|over ?temperature",
    "gpu_power_or_clock_cap": r"power limit for gpu .* was set|power cap|clocks? locked|applications clocks",
    "gpu_hardware_error": r"xid \(pci:[^)]*\): (?!74\b)\d+|double bit|uncorrectable ecc|row remapp",
    "nvlink_degradation": r"xid \(pci:[^)]*\): 74\b|nvlink: .*(error|replay|crc)",
    "pcie_link_degradation": r"aer: |pcie bus error|limited by .*pcie",
    "network_congestion": r"nccl warn net/ib|net/ib.*slow|transport retry|retry count exceeded",
    "host_cpu_contention": r"rt throttling|hrtimer: interrupt took|reindex-logs",
    "numa_misbinding": r"cpu affinity .*numa node \d+\); gpu .* is on numa node",
    "runtime_stall": r"gc pause|waiting for the gil|detokenizer backlog",
    "storage_io_stall": r"nvme\w*: i/o .*timeout|loading lora adapter|kv offload .* slow",
    "kv_cache_pressure": r"not enough kv cache|is preempted|decode out of memory|retracted_reqs",
    "workload_shift": r"received request batch|\(avg prompt \d+ tokens\)",
}


def _chunks(patterns: list[str], limit: int = 250) -> list[str]:
    """Alternations of the signatures, each within the log tool's pattern length cap."""
    out: list[str] = []
    for p in patterns:
        piece = f"(?:{p})"
        if out and len(out[-1]) + 1 + len(piece) <= limit:
            out[-1] += "|" + piece
        else:
            out.append(piece)
    return out


SIGNATURE_SEARCHES = _chunks(list(LOG_SIGNATURES.values()))

STORAGE_OPS = r"load_file|_load_adapter|load_lora_adapter|transfer_async|write_backup|safetensors|offload"

OUTPOST_COMPONENT = {
    "software": ["runtime_stall"],
    "host_cpu": ["host_cpu_contention"],
    "host_memory": ["numa_misbinding"],
    "storage": ["storage_io_stall"],
    "pcie": ["pcie_link_degradation"],
    "nvlink": ["nvlink_degradation"],
    "network": ["network_congestion"],
    "gpu_memory": ["kv_cache_pressure"],
    "gpu": ["gpu_thermal_throttling", "gpu_power_or_clock_cap", "gpu_hardware_error"],
}


@dataclass
class Finding:
    category: str
    kind: str  # metric | log | trace
    strength: float
    ev: str
    text: str
    ranks: list[int] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


def query_of(e: LedgerEntry) -> dict:
    try:
        return json.loads(e.query)
    except ValueError:
        return {}


def sweep_entry(ledger: list[LedgerEntry], key: str) -> LedgerEntry | None:
    name = SWEEP_NAMES[key]
    for e in ledger:
        q = query_of(e)
        if e.tool == "metric_lookup" and q.get("name") == name and not any(k in q for k in ("host", "gpu", "rank", "labels")):
            return e
    return None


def _rows(e: LedgerEntry | None) -> list[dict]:
    return list(e.data.get("series", [])) if e and e.status == "ok" else []


def _where(row: dict, topo: Topo) -> tuple[int | None, str]:
    host = row.get("host", "")
    return topo.rank_for(host or None, row.get("gpu"), row.get("rank")), host


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"


def metric_findings(ledger: list[LedgerEntry], topo: Topo) -> list[Finding]:
    out: list[Finding] = []

    def gpu_rows(key: str):  # type: ignore[no-untyped-def]
        e = sweep_entry(ledger, key)
        for row in _rows(e):
            r, host = _where(row, topo)
            yield e, row, r, host

    # Thermal vs power cap: the throttle-reason bitmask says which (0x20/0x40 thermal, 0x4 power cap).
    temp_hot: dict[int, float] = {}
    for e, row, r, host in gpu_rows("temp"):
        if r is not None and row.get("max", 0) >= 85:
            temp_hot[r] = row["max"]
            out.append(
                Finding(
                    "gpu_thermal_throttling",
                    "metric",
                    2.5,
                    e.id,
                    f"GPU temperature on rank {r} ({host} gpu {row.get('gpu')}) reached {row['max']:.0f} C",
                    [r],
                    [host],
                )
            )
    for e, row, r, host in gpu_rows("throttle"):
        bits = int(row.get("max", 0) or 0)
        if r is None or bits == 0:
            continue
        if bits & 0x60:
            out.append(
                Finding(
                    "gpu_thermal_throttling",
                    "metric",
                    3,
                    e.id,
                    f"thermal clock-throttle reason set on rank {r} (reasons bitmask {bits})",
                    [r],
                    [host],
                )
            )
        elif bits & 0x4 or bits & 0x1:
            out.append(
                Finding(
                    "gpu_power_or_clock_cap",
                    "metric",
                    3,
                    e.id,
                    f"power-cap clock-throttle reason set on rank {r} (reasons bitmask {bits})",
                    [r],
                    [host],
                )
            )
    for e, row, r, host in gpu_rows("power_limit"):
        o = row.get("outlier", "")
        ch = row.get("change") or {}
        if r is not None and (o.startswith("low") or ch.get("rel_change", 0) < -0.1):
            out.append(
                Finding(
                    "gpu_power_or_clock_cap",
                    "metric",
                    3,
                    e.id,
                    f"power limit of rank {r} lowered to {_fmt(row['min'])} W ({o or 'level shift'})",
                    [r],
                    [host],
                )
            )
    for e, row, r, host in gpu_rows("xid"):
        v = int(row.get("max", 0) or 0)
        if r is not None and v > 0:
            cat = "nvlink_degradation" if v == 74 else "gpu_hardware_error"
            out.append(Finding(cat, "metric", 3, e.id, f"DCGM reports Xid {v} on rank {r} ({host} gpu {row.get('gpu')})", [r], [host]))
    for e, row, r, host in gpu_rows("ecc"):
        if r is not None and row.get("max", 0) > 0:
            out.append(Finding("gpu_hardware_error", "metric", 3, e.id, f"uncorrectable (DBE) ECC errors on rank {r}", [r], [host]))
    for e, row, r, host in gpu_rows("nvlink_crc"):
        if r is not None and (row.get("increase", 0) or 0) > 0:
            out.append(
                Finding(
                    "nvlink_degradation",
                    "metric",
                    3,
                    e.id,
                    f"NVLink CRC/replay errors rising on rank {r} (+{_fmt(row['increase'])})",
                    [r],
                    [host],
                )
            )
    for e, row, r, host in gpu_rows("pcie_replay"):
        if r is not None and (row.get("increase", 0) or 0) > 0:
            out.append(
                Finding(
                    "pcie_link_degradation",
                    "metric",
                    3,
                    e.id,
                    f"PCIe replay counter rising on rank {r} (+{_fmt(row['increase'])})",
                    [r],
                    [host],
                )
            )
    for e, row, r, host in gpu_rows("pcie_gen"):
        if r is not None and str(row.get("outlier", "")).startswith("low"):
            out.append(
                Finding(
                    "pcie_link_degradation",
                    "metric",
                    2.5,
                    e.id,
                    f"PCIe link generation of rank {r} downgraded ({row['outlier']})",
                    [r],
                    [host],
                )
            )
    # Host-level signals.
    for key, cat, thr, what in (
        ("ib_wait", "network_congestion", 1e5, "InfiniBand transmit wait"),
        ("retrans", "network_congestion", 100.0, "TCP retransmits"),
        ("numa_miss", "numa_misbinding", 1e5, "NUMA misses"),
        ("disk_io", "storage_io_stall", 0.5, "disk busy time"),
        ("schedstat", "host_cpu_contention", 0.1, "run-queue wait"),
    ):
        e = sweep_entry(ledger, key)
        for row in _rows(e):
            host = row.get("host", "")
            if (row.get("max", 0) or 0) > thr:
                where = f"{host}" + (f" cpu {row['cpu']}" if row.get("cpu") else "")
                out.append(
                    Finding(
                        cat, "metric", 3, e.id, f"{what} on {where} peaks at {_fmt(row['max'])}/s (healthy below {_fmt(thr)}/s)", [], [host]
                    )
                )
    e = sweep_entry(ledger, "load")
    for row in _rows(e):
        ch = row.get("change") or {}
        if ch.get("rel_change", 0) > 0.5:
            out.append(
                Finding(
                    "host_cpu_contention",
                    "metric",
                    1.5,
                    e.id,
                    f"load average on {row.get('host')} rose from {ch['before']} to {ch['after']}",
                    [],
                    [row.get("host", "")],
                )
            )
    # Engine: KV cache pressure vs workload shift.
    e = sweep_entry(ledger, "kv_usage")
    for row in _rows(e):
        if (row.get("max", 0) or 0) >= 0.95 and row.get("rank") is not None:
            r = row["rank"]
            out.append(
                Finding(
                    "kv_cache_pressure",
                    "metric",
                    2.5,
                    e.id,
                    f"KV cache usage of the replica driven by rank {r} reached {row['max']:.0%}",
                    topo.replica(r),
                    [row.get("host", "")],
                )
            )
    e = sweep_entry(ledger, "preempt")
    for row in _rows(e):
        if (row.get("increase", 0) or 0) > 0 and row.get("rank") is not None:
            r = row["rank"]
            out.append(
                Finding(
                    "kv_cache_pressure",
                    "metric",
                    2.5,
                    e.id,
                    f"{_fmt(row['increase'])} preemptions on the replica driven by rank {r}",
                    topo.replica(r),
                    [row.get("host", "")],
                )
            )
    for key, what in (("running", "running requests"), ("waiting", "waiting requests")):
        e = sweep_entry(ledger, key)
        rows = _rows(e)
        ups = [r for r in rows if (r.get("change") or {}).get("rel_change", 0) > 0.15]
        if rows and len(ups) == len(rows) and (len(rows) > 1 or key == "running"):
            out.append(
                Finding("workload_shift", "metric", 1.5, e.id, f"{what} rose on every replica ({len(rows)}) at the same time", [], [])
            )
    return out


def log_findings(e: LedgerEntry, topo: Topo) -> list[Finding]:
    out = []
    if e.tool != "log_search" or e.status != "ok":
        return out
    for g in e.data.get("groups", []):
        text = str(g.get("example", ""))
        for cat, pat in LOG_SIGNATURES.items():
            if re.search(pat, text, re.IGNORECASE):
                if cat == "numa_misbinding":
                    m = re.search(r"numa node (\d+)\); gpu .* is on numa node (\d+)", text, re.IGNORECASE)
                    if m and m.group(1) == m.group(2):
                        continue
                strength = 1.0 if cat == "workload_shift" else 1.5
                ranks = [int(r) for r in g.get("ranks", [])]
                if cat == "kv_cache_pressure":
                    ranks = sorted({x for r in ranks for x in topo.replica(r)})
                out.append(
                    Finding(
                        cat, "log", strength, e.id, f'{g.get("count", 1)} log line(s) like "{text[:160]}"', ranks, list(g.get("hosts", []))
                    )
                )
                break
    return out


def outpost_findings(e: LedgerEntry) -> list[Finding]:
    out = []
    if e.tool != "outpost_detect" or e.status != "ok":
        return out
    by: dict[str, list[dict]] = {}
    for a in e.data.get("anomalies", []):
        by.setdefault(a["component"], []).append(a)
    for comp, items in by.items():
        ranks = sorted({a["rank"] for a in items})
        names = sorted({a["name"] for a in items})[:2]
        worst = max(items, key=lambda a: a.get("ratio", 1.0))
        cats = OUTPOST_COMPONENT.get(comp, [])
        for cat in cats:
            strength = 1.0 if len(cats) > 1 else 2.0
            out.append(
                Finding(
                    cat,
                    "trace",
                    strength,
                    e.id,
                    f"Outpost: {comp} anomalies on ranks {ranks} ({', '.join(names)}; up to {worst.get('ratio')}x baseline, method {worst.get('method')})",
                    ranks,
                    [],
                )
            )
    return out


def trace_storage_ranks(e: LedgerEntry, min_ms: float = 10.0) -> list[int]:
    """Ranks whose storage-bound ops (weight/adapter loads, KV offload) took long."""
    return sorted(int(p["rank"]) for p in e.data.get("per_rank", []) if p.get("max_us", 0) >= min_ms * 1e3)
