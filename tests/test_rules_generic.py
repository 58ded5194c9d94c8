"""The rules Analyzer reasons from vendor formats, not from the simulator's own lines.

SIMULATOR_ONLY lists strings and constants that evals/simulate writes (invented for generated
incidents) and that no real exporter or driver prints; the Analyzer must not key on them, or
the generated-suite scores measure agreement with the generator instead of diagnosis.
"""

from __future__ import annotations

import json
from pathlib import Path

from kat.agent.rules.signals import log_findings, metric_findings
from kat.agent.rules.topology import Topo
from kat.agent.state import LedgerEntry
from kat.knowledge.log_signatures import GpuSeat, RankJoin, xid_kind

ROOT = Path(__file__).resolve().parents[1]
SIMULATOR_ONLY = {
    "reindex-logs": "the simulator's invented CPU-hog cron job",
    "received request batch": "the simulator's workload-shift engine line",
    "kv offload to /mnt": "the simulator's storage stall line (no engine prints it)",
    "detokenizer backlog": "the simulator's runtime-stall line",
    "gc pause: collected": "the simulator's GC line (CPython prints 'gc: collecting generation')",
    "loading lora adapter": "the simulator's adapter-load line",
    "tenant-": "the simulator's adapter naming",
    ">= 85": "the mildest injected temperature, not a vendor slowdown threshold",
    ">= 0.95": "between the simulator's healthy KV clip 0.9 and its fault floor 0.96",
    # Dialect strings (evals/simulate/metric_dialects.py, log_dialects.py): names the simulator
    # picks for its process-exporter groups, co-tenant jobs, units and pods.
    "vllm_worker_": "the simulator's process-exporter group names for workers",
    "sglang_worker_": "the simulator's process-exporter group names for workers",
    "-batch.service": "the simulator's systemd unit for the co-tenant job",
    "batch run.": "the simulator's co-tenant job wording",
    "clickhouse-backup": "one of the simulator's co-tenant jobs",
    "spark-executor": "one of the simulator's co-tenant jobs",
    "restic backup": "one of the simulator's co-tenant jobs",
    "ffmpeg": "one of the simulator's co-tenant jobs",
    "/data/ckpt/": "the simulator's co-tenant job arguments",
    'namespace="batch"': "the simulator's co-tenant pod namespace",
    "site-packages/vllm/": "the simulator's warnings-format path",
}


def test_no_simulator_only_string_in_the_analyzer() -> None:
    files = list((ROOT / "agent").rglob("*.py")) + [ROOT / "knowledge" / "log_signatures.py", ROOT / "knowledge" / "metric_families.py"]
    hits = [f"{p.relative_to(ROOT)}: {s!r} ({why})" for p in files for s, why in SIMULATOR_ONLY.items() if s in p.read_text().lower()]
    assert not hits, "\n".join(hits)


def _topo() -> Topo:
    t = Topo(ranks=[0, 1, 2, 3])
    for r in range(4):
        t.host_of[r] = "node-x"
        t.rank_of_gpu[("node-x", r)] = r
    t.join = RankJoin([GpuSeat(r, "node-x", r, f"0000:{0x18 + r:02x}:00.0") for r in range(4)], t.ranks)
    t.groups = [[0, 1, 2, 3]]
    return t


def _entry(tool: str, query: dict, data: dict, status: str = "ok") -> LedgerEntry:
    return LedgerEntry(id="ev-7", tool=tool, query=json.dumps(query), status=status, summary="", data=data)


def test_xid_codes_follow_the_catalogue() -> None:
    assert xid_kind("NVRM: Xid (PCI:0000:1a:00): 79, pid=1, GPU has fallen off the bus") == "hardware"
    assert xid_kind("NVRM: Xid (PCI:0000:1a:00): 13, pid=1, Graphics Exception") == "application"
    assert xid_kind("NVRM: Xid (PCI:0000:1a:00): 74, NVLink error") == "nvlink"


def test_host_level_kernel_line_is_joined_to_the_rank_of_its_gpu() -> None:
    group = {
        "example": "NVRM: Xid (PCI:0000:1a:00): 48, pid=9, An uncorrectable double bit error",
        "count": 2,
        "ranks": [],
        "hosts": ["node-x"],
    }
    fs = log_findings(_entry("log_search", {"pattern": "xid"}, {"groups": [group]}), _topo())
    assert [(f.category, f.ranks) for f in fs] == [("gpu_hardware_error", [2])]
    app = dict(group, example="NVRM: Xid (PCI:0000:1a:00): 13, pid=9, Graphics Exception")
    assert log_findings(_entry("log_search", {"pattern": "xid"}, {"groups": [app]}), _topo()) == []


def test_no_data_and_errors_yield_no_findings() -> None:
    row = {
        "series": "DCGM_FI_DEV_GPU_TEMP",
        "metric": "DCGM_FI_DEV_GPU_TEMP",
        "rank": 1,
        "host": "node-x",
        "z": 30,
        "peer_z": 30,
        "peers": 3,
        "rel_change": 0.3,
    }
    for status in ("no_data", "error"):
        assert metric_findings(_entry("metric_compare", {"family": "gpu_temperature"}, {"series": [row]}, status), _topo()) == []
    fs = metric_findings(_entry("metric_compare", {"family": "gpu_temperature"}, {"series": [row]}), _topo())
    assert [(f.category, f.ranks) for f in fs] == [("gpu_thermal_throttling", [1])]
    # A constant high reading (no change inside the window) is not evidence.
    flat = dict(row, z=0.5, peer_z=0.2, rel_change=0.01)
    assert metric_findings(_entry("metric_compare", {"family": "gpu_temperature"}, {"series": [flat]}), _topo()) == []
