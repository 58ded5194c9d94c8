"""Log families: generic signatures written from vendor log formats, not from any incident.

Sources: NVIDIA driver `NVRM: Xid (PCI:<bus>): <code>, ...` lines and the Xid catalogue
(docs.nvidia.com/deploy/xid-errors); DCGM health-watch messages; Linux kernel AER
(`pcieport ...: AER: ... error`) and hung-task/blk messages; IPMI SEL records
(`<sensor type> <name> | <event> | Asserted`); NCCL `NCCL WARN` lines; CPython gc debug output
(`gc: collecting generation`, `gc: done`); py-spy dumps (`waiting for the GIL`, `take_gil`);
vLLM/SGLang scheduler warnings; cron/systemd/kubelet process-start lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class LogFamily:
    pattern: str
    categories: tuple[tuple[str, float], ...]  # (category, strength of support)
    min_count: int = 1  # fewer lines than this: a weak hint only (one-off lines are common noise)


LOG_FAMILIES: dict[str, LogFamily] = {
    "xid": LogFamily(r"\bXid\b.*?:\s*\d+", ()),  # strength by code (xid_kind)
    "thermal": LogFamily(
        r"thermal (slowdown|violation|policy)|slowed by thermal|over-?temperature|temperature .*(above|exceed).*threshold|"
        r"\| *Temperature .*going high.*\| *Asserted",
        (("gpu_thermal_throttling", 2.0),),
    ),
    "cooling": LogFamily(r"\| *Fan .*going low.*\| *Asserted|fan (failure|fault)", (("gpu_thermal_throttling", 1.0),)),
    "power_cap": LogFamily(
        r"power (limit|cap)\w* .*(set|lower|reduc|to \d+ ?W)|capping .*to \d+ ?W|power brake|clocks? locked|applications clocks",
        (("gpu_power_or_clock_cap", 2.0),),
    ),
    "ecc": LogFamily(r"double.bit|uncorrectable ecc|\b(SBE|DBE)\b.*errors|row remap|retired pages?", (("gpu_hardware_error", 2.0),)),
    "aer": LogFamily(r"\bAER:.*error|PCIe Bus Error|link (speed|width) (degraded|downgraded)", (("pcie_link_degradation", 2.0),)),
    "nvlink": LogFamily(r"nvlink.*(error|crc|replay|down|inactive)", (("nvlink_degradation", 1.5),)),
    "nccl_net": LogFamily(
        r"NCCL WARN .*(NET/\w+).*(timeout|timed out|retry|retries|error \d|failed|unreachable)|transport retry counter",
        (("network_congestion", 1.5),),
        min_count=2,
    ),
    "kv_preempt": LogFamily(r"preempted|not enough KV cache|retract\w* \d+ req", (("kv_cache_pressure", 2.0),), min_count=2),
    "slow_io": LogFamily(
        r"nvme\w*:? .*timeout|I/O error|blk_update_request|blocked for more than \d+ seconds|"
        r"nfs: server .* not responding|slow (read|write|load)",
        (("storage_io_stall", 2.0),),
    ),
    "numa": LogFamily(r"numa node \d+.*(remote|mismatch|wrong)|affinity .*numa", (("numa_misbinding", 1.5),)),
    "gc": LogFamily(
        r"\bgc: (collecting|done)|garbage collect|gc pause|gc\.(freeze|collect|set_debug)", (("runtime_stall", 2.5),), min_count=2
    ),
    "gil": LogFamily(r"waiting for the GIL|take_gil|GIL (held|contention)", (("runtime_stall", 2.5),)),
    "worker_hotpath": LogFamily(
        r"(took|in) \d+(\.\d+)? ?ms|detokeniz|py-spy|attached to pid|log level .*DEBUG|set_debug|capture enabled|reporter thread",
        (("runtime_stall", 1.5),),
        min_count=2,
    ),
    "process_start": LogFamily(
        r"CRON\[\d+\]: .*CMD|Scheduled\b.*pod/|Started container|Created container|CPU affinity|taskset",
        (("host_cpu_contention", 1.0),),
    ),
}

# Xid codes (NVIDIA Xid catalogue): hardware-side vs NVLink; the rest (13, 31, 43, 45, ...) are
# usually raised by the application and are not by themselves a hardware fault.
XID_HARDWARE = {48, 61, 62, 63, 64, 79, 92, 94, 95, 119, 120, 140}
XID_NVLINK = {74}
_XID = re.compile(r"\bXid\b\s*(?:\([^)]*\))?:?\s*(\d+)", re.IGNORECASE)


def xid_kind(text: str) -> str:
    """hardware | nvlink | application | unknown, from the Xid code in an NVRM line."""
    m = _XID.search(text)
    if not m:
        return "unknown"
    code = int(m.group(1))
    return "hardware" if code in XID_HARDWARE else "nvlink" if code in XID_NVLINK else "application"


def search_patterns(limit: int = 250) -> list[str]:
    """Alternations of every family's pattern, each within the log tool's pattern length cap."""
    out: list[str] = []
    for fam in LOG_FAMILIES.values():
        piece = f"(?:{fam.pattern})"
        if out and len(out[-1]) + 1 + len(piece) <= limit:
            out[-1] += "|" + piece
        else:
            out.append(piece)
    return out


# -- host-level lines -> ranks ------------------------------------------------------------------
# Kernel/driver/BMC lines carry no rank; they name a GPU by PCI bus id (NVRM writes
# 'PCI:0000:3b:00' = domain:bus:device, the kernel '0000:3b:00.0': bus:device is compared), by
# 'GPU N' (an index on its host), or name a rank outright.
_RANK_RE = re.compile(r"\brank[ =#:]*(\d+)", re.IGNORECASE)
_PCI_RE = re.compile(r"(?:PCI:)?(?:[0-9a-f]{4,8}:)?([0-9a-f]{2}:[0-9a-f]{2})(?:\.[0-9a-f])?\b", re.IGNORECASE)
_GPU_RE = re.compile(r"\bGPU\s*#?(\d+)\b")


@dataclass(frozen=True)
class GpuSeat:
    """One worker's place: its rank, host, GPU index and (when known) PCI bus id."""

    rank: int
    host: str
    gpu: int
    pci_bus_id: str = ""  # any of '0000:3b:00.0', '00000000:3B:00.0', '3b:00'


def pci_bus_device(bus_id: str) -> str:
    """'bb:dd' from a PCI bus id in any of the usual spellings ('' when it is not one)."""
    m = _PCI_RE.search(bus_id or "")
    return m.group(1).lower() if m else ""


class RankJoin:
    """Which ranks a host-level log line names, and why (the one join every layer uses)."""

    def __init__(self, seats: list[GpuSeat], ranks: list[int]) -> None:
        self.ranks = sorted(ranks)
        self.rank_of_gpu = {(s.host, s.gpu): s.rank for s in seats}
        self.rank_of_pci = {(s.host, pci_bus_device(s.pci_bus_id)): s.rank for s in seats if pci_bus_device(s.pci_bus_id)}

    def reasons(self, text: str, hosts: list[str]) -> dict[int, str]:
        """rank -> why this line names it. `hosts`: the line's host(s); empty = any host."""
        out: dict[int, str] = {}
        for m in _RANK_RE.finditer(text):
            r = int(m.group(1))
            if r in self.ranks:
                out.setdefault(r, f"the line names rank {r}")
        for m in _PCI_RE.finditer(text):
            bus = m.group(1).lower()
            hits = {(h, r) for (h, b), r in self.rank_of_pci.items() if b == bus and (not hosts or h in hosts)}
            if len({r for _, r in hits}) == 1:  # the same bus id on several hosts names nobody
                h, r = next(iter(hits))
                out.setdefault(r, f"PCI bus {bus} is rank {r}'s GPU on {h}")
        if not out:
            for m in _GPU_RE.finditer(text):
                g = int(m.group(1))
                for (h, gg), r in self.rank_of_gpu.items():
                    if gg == g and (not hosts or h in hosts):
                        out.setdefault(r, f"GPU {g} on {h} is rank {r}'s")
        return dict(sorted(out.items()))

    def ranks_named_in(self, text: str, hosts: list[str]) -> list[int]:
        return list(self.reasons(text, hosts))
