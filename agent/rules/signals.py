"""Reading tool results as evidence for or against each root-cause category.

Every finding names the evidence id it came from, so the causal chain cites what was retrieved.
Metric findings come from `metric_compare` rows (a series that changed inside a window AND
stands out from its peers); log findings from generic vendor-format signatures
(knowledge/log_signatures.py); trace findings from Outpost's suspects. Thresholds live in
RulesConfig, each marked vendor fact or calibration. A lookup that returned no_data or an
error produces no finding and rules nothing out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from kat.agent.rules.config import CONFIG, RulesConfig
from kat.agent.rules.topology import Topo
from kat.agent.state import LedgerEntry
from kat.knowledge.log_signatures import LOG_FAMILIES, xid_kind
from kat.knowledge.metric_families import POWER_REASONS, THERMAL_REASONS
from kat.knowledge.taxonomy import CATEGORIES_OF_COMPONENT


@dataclass
class Finding:
    category: str
    kind: str  # metric | log | trace
    strength: float  # > 0 supports, < 0 refutes
    ev: str
    text: str
    ranks: list[int] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    family: str = ""
    z: float = 0.0  # robust z of the metric change behind a metric finding (0 when not a metric)


def query_of(e: LedgerEntry) -> dict:
    try:
        return json.loads(e.query)
    except ValueError:
        return {}


def _sig(row: dict, cfg: RulesConfig) -> bool:
    """Changed inside its window and stands out from its peers (or has none to compare with)."""
    z, pz = row.get("z") or 0.0, row.get("peer_z")
    return abs(z) >= cfg.z_min and (pz is None or row.get("peers", 0) == 0 or abs(pz) >= cfg.peer_z_min)


def _where(row: dict) -> str:
    r = row.get("rank")
    return (
        f"rank {r} " if r is not None else ""
    ) + f"({row.get('host') or '?'}{'' if row.get('gpu') is None else ' gpu ' + str(row['gpu'])})"


def _txt(row: dict) -> str:
    rel = row.get("rel_change")
    ch = f"{rel:+.0%}" if rel is not None and abs(rel) < 100 else f"{row.get('outside_median')} -> {row.get('inside_mean')}"
    return f"{row['series']} on {_where(row)} changed {ch} inside its window (z={row.get('z')}, vs peers z={row.get('peer_z')})"


def _is_worker(row: dict) -> bool:
    return row.get("rank") is not None


def metric_findings(e: LedgerEntry, topo: Topo, cfg: RulesConfig = CONFIG) -> list[Finding]:
    """Findings from one metric_compare result."""
    if e.tool != "metric_compare" or e.status != "ok":
        return []
    fam = query_of(e).get("family", "")
    out: list[Finding] = []

    def add(cat: str, s: float, row: dict, text: str | None = None, ranks: list[int] | None = None) -> None:
        rr = ranks if ranks is not None else ([row["rank"]] if row.get("rank") is not None else [])
        out.append(Finding(cat, "metric", s, e.id, text or _txt(row), rr, [row.get("host") or ""], fam, abs(float(row.get("z") or 0.0))))

    rows = e.data.get("series", [])
    for row in rows:
        up = (row.get("z") or 0) > 0
        rel = row.get("rel_change") or 0.0
        sig = _sig(row, cfg)
        if fam == "throttle_reasons":
            reasons = set(row.get("reasons_inside", [])) - set(row.get("reasons_outside", []))
            if row.get("reason") and sig and up:
                reasons = {row["reason"]}
            if reasons & set(THERMAL_REASONS):
                add(
                    "gpu_thermal_throttling",
                    3.0,
                    row,
                    f"thermal clock-throttle reason raised on {_where(row)} inside the window ({row['series']})",
                )
                add("gpu_power_or_clock_cap", -1.0, row)
            if reasons & set(POWER_REASONS):
                add(
                    "gpu_power_or_clock_cap",
                    3.0,
                    row,
                    f"power-cap clock-throttle reason raised on {_where(row)} inside the window ({row['series']})",
                )
                add("gpu_thermal_throttling", -1.0, row)
        elif not sig:
            continue
        elif fam == "gpu_temperature" and up and rel >= cfg.temp_rise_min:
            add("gpu_thermal_throttling", 2.0, row)
        elif fam == "chassis_thermal" and (("fan" in row["series"].lower()) != up) and abs(rel) >= cfg.temp_rise_min:
            add("gpu_thermal_throttling", 1.0, row)
        elif fam == "sm_clock" and not up and rel <= -cfg.clock_drop_min:
            for c in ("gpu_thermal_throttling", "gpu_power_or_clock_cap"):
                add(c, 1.0, row)
        elif fam == "power_limit" and not up and rel <= -cfg.clock_drop_min:
            add("gpu_power_or_clock_cap", 3.0, row)
            add("gpu_thermal_throttling", -1.0, row)
        elif fam == "ecc_xid" and up and re.search(r"xid", row["series"], re.I):
            # DCGM_FI_DEV_XID_ERRORS is a gauge of the last Xid code: read it with the Xid catalogue.
            kind = xid_kind(f"Xid {int(row.get('inside_max') or 0)}")
            if kind in ("hardware", "nvlink"):
                add(
                    "gpu_hardware_error" if kind == "hardware" else "nvlink_degradation",
                    3.0,
                    row,
                    f"Xid {int(row.get('inside_max') or 0)} ({kind}) reported on {_where(row)} inside the window",
                )
        elif fam == "ecc_xid" and up:
            add("gpu_hardware_error", 3.0, row)
        elif fam == "nvlink" and up and re.search(r"crc|replay|recovery|error", row["series"], re.I):
            add("nvlink_degradation", 3.0, row)
        elif fam == "pcie" and (
            (up and re.search(r"replay|error", row["series"], re.I)) or (not up and re.search(r"gen|width", row["series"], re.I))
        ):
            add("pcie_link_degradation", 3.0, row)
        elif fam == "nic_retransmits" and up:
            add("network_congestion", 2.5, row, ranks=topo.on_host(row.get("host") or ""))
        elif fam == "numa" and up and re.search(r"miss|foreign|remote", row["series"], re.I):
            add("numa_misbinding", 2.0, row, ranks=[])  # host-level: the workers come from their own evidence
        elif fam == "disk_io" and up:
            add("storage_io_stall", 1.5, row, ranks=[])
        elif fam == "preemptions" and up:
            add(
                "kv_cache_pressure",
                2.5,
                row,
                ranks=sorted({x for r in topo.ranks for x in topo.replica(r)}) if row.get("rank") is None else topo.replica(row["rank"]),
            )
        elif fam == "kv_cache" and max(row.get("inside_max") or 0, row.get("outside_median") or 0) >= cfg.kv_full:
            add("kv_cache_pressure", 1.5, row, ranks=[])
        elif fam == "runtime_gc" and up and _is_worker(row):
            add("runtime_stall", 2.5, row)
        elif fam == "log_volume" and up and _is_worker(row):
            add("runtime_stall", 2.0, row)
        elif fam == "process_count" and up and _is_worker(row):
            add("runtime_stall", 1.0, row)
        elif fam in ("cpu_usage", "cpu_throttling", "run_queue", "process_count", "load") and not _is_worker(row):
            if fam == "cpu_usage" and up and re.search(r"groupname|container|pod|cgroup|id=", row["series"]):
                add("host_cpu_contention", 2.5, row, f"another process/container took CPU on {row.get('host')}: {_txt(row)}", ranks=[])
            elif fam in ("run_queue", "cpu_throttling", "load") and up:
                add("host_cpu_contention", 1.5 if fam != "load" else 1.0, row, ranks=[])
            elif fam == "process_count" and up:
                add("host_cpu_contention", 1.0, row, ranks=[])
        elif fam in ("cpu_usage", "run_queue", "cpu_throttling") and _is_worker(row):
            # The worker's own CPU: starved (down, or involuntary switches up) = contention; busier alone = its own work.
            if (fam == "cpu_usage" and not up) or (fam != "cpu_usage" and up):
                add("host_cpu_contention", 1.0, row)
            elif fam == "cpu_usage" and up:
                add("runtime_stall", 1.0, row)
    # Engine-wide sustained load change on every replica at once: a workload change, not a fault.
    # A step change is found as either its low or its high part, so both signs count; a short
    # blip (under a quarter of the span) is batching noise.
    if fam in ("request_rate", "prompt_length"):
        steps = [
            r
            for r in rows
            if abs(r.get("z") or 0) >= cfg.z_min
            and abs(r.get("rel_change") or 0) >= cfg.load_rise_min
            and (r.get("window_share") or 0) >= cfg.sustained_share
        ]
        hosts = {r.get("host") for r in rows}
        if len(steps) >= max(2, len(rows) // 2) and {r.get("host") for r in steps} == hosts:
            out.append(
                Finding(
                    "workload_shift",
                    "metric",
                    1.5,
                    e.id,
                    f"{fam.replace('_', ' ')} shifted on every replica for most of the window: " + "; ".join(_txt(r) for r in steps[:2]),
                    [],
                    [],
                    fam,
                )
            )
    return out


def log_findings(e: LedgerEntry, topo: Topo, cfg: RulesConfig = CONFIG) -> list[Finding]:
    out: list[Finding] = []
    if e.tool != "log_search" or e.status != "ok":
        return out
    for g in e.data.get("groups", []):
        text = str(g.get("example", ""))
        for fam, spec in LOG_FAMILIES.items():
            if not re.search(spec.pattern, text, re.IGNORECASE):
                continue
            cats = dict(spec.categories)
            if fam == "xid":
                kind = xid_kind(text)
                cats = {"gpu_hardware_error": 2.5} if kind == "hardware" else {"nvlink_degradation": 2.5} if kind == "nvlink" else {}
            count = int(g.get("count", 1))
            if fam == "numa" and len(set(re.findall(r"numa node (\d+)", text, re.IGNORECASE))) < 2:
                continue  # a worker on the same node as its GPU is the healthy binding
            # Host-level lines (no rank) are joined to the ranks whose GPU or rank they name.
            ranks = sorted({int(r) for r in g.get("ranks", [])}) or topo.ranks_named_in(text, g.get("hosts", []))
            for cat, s in cats.items():
                if spec.min_count > count:
                    s *= 0.3
                elif len(ranks) == 1 and len(topo.ranks) > 1 and count >= cfg.repeated_lines:
                    s *= cfg.concentrated_boost  # repeated, and from one worker only: points at that worker
                out.append(
                    Finding(cat, "log", s, e.id, f'{fam} log: {count} line(s) like "{text[:160]}"', ranks, list(g.get("hosts", [])), fam)
                )
            break
    return out


def outpost_findings(e: LedgerEntry, cfg: RulesConfig = CONFIG) -> list[Finding]:
    """Weak support by component for Outpost's confident suspects (its anomalies alone never make a fault)."""
    out: list[Finding] = []
    if e.tool != "outpost_detect" or e.status != "ok":
        return out
    conf = {s["rank"]: float(s.get("confidence", 0)) for s in e.data.get("suspects", [])}
    by: dict[str, set[int]] = {}
    for a in e.data.get("anomalies", []):
        if conf.get(a["rank"], 0) >= cfg.suspect_conf_min:
            by.setdefault(a["component"], set()).add(a["rank"])
    for comp, ranks in by.items():
        cats = CATEGORIES_OF_COMPONENT.get(comp, ())
        for cat in cats:
            s = max(conf[r] for r in ranks) * cfg.trace_weight / len(cats)
            out.append(
                Finding(
                    cat, "trace", s, e.id, f"Outpost: {comp} anomalies on suspect rank(s) {sorted(ranks)}", sorted(ranks), [], "outpost"
                )
            )
    return out


def suspects(ledger: list[LedgerEntry], cfg: RulesConfig = CONFIG) -> list[tuple[int, float]]:
    e = next((x for x in ledger if x.tool == "outpost_detect" and x.status == "ok"), None)
    if e is None:
        return []
    return [
        (int(s["rank"]), float(s.get("confidence", 0)))
        for s in e.data.get("suspects", [])
        if float(s.get("confidence", 0)) >= cfg.suspect_conf_min
    ]
