"""Metric families: what a metric measures, whatever exporter wrote it.

Part of the domain contract. Signature cards name families, never metric names; the
`metric_catalog` tool sorts an incident's metrics into these families by known exporter names
(first) and by name/unit/label heuristics (then), so an unknown exporter still lands in a
family or in `unclassified`. Sources of the exporter names: NVIDIA DCGM field identifiers
(dcgm-exporter default counters), utkuozdemir/nvidia_gpu_exporter (`nvidia_smi_*`, one series
per `nvidia-smi --query-gpu` field), Prometheus node_exporter, cAdvisor, process-exporter
(`namedprocess_namegroup_*`), kube-state-metrics, prometheus_client's default Python
collectors, fluent-bit's Prometheus endpoint, vLLM and SGLang `/metrics`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# family -> (what it measures, scope: gpu | host | process | engine)
FAMILIES: dict[str, tuple[str, str]] = {
    "gpu_temperature": ("GPU core or memory temperature (C)", "gpu"),
    "chassis_thermal": ("chassis/BMC temperatures and fan speeds (IPMI/Redfish)", "host"),
    "sm_clock": ("current SM (graphics) clock", "gpu"),
    "sm_clock_max": ("maximum SM clock the GPU supports (reference for the current clock)", "gpu"),
    "throttle_reasons": ("clock throttle / clock event reasons (NVML bitmask or one 0/1 series per reason)", "gpu"),
    "power_draw": ("GPU power draw (W)", "gpu"),
    "power_limit": ("enforced / management power limit (W)", "gpu"),
    "gpu_utilization": ("GPU busy share", "gpu"),
    "gpu_memory_used": ("frame-buffer memory used", "gpu"),
    "ecc_xid": ("Xid codes, ECC error counters, row remapping and retired pages", "gpu"),
    "nvlink": ("NVLink traffic and CRC/replay/recovery error counters", "gpu"),
    "pcie": ("PCIe traffic, replay counter, link generation and width", "gpu"),
    "nic_retransmits": ("NIC retransmits, drops, errors, InfiniBand transmit wait", "host"),
    "network_traffic": ("NIC bytes/packets", "host"),
    "cpu_usage": ("CPU time by process, cgroup/container or mode", "process"),
    "cpu_throttling": ("CFS quota throttling of a cgroup/container", "process"),
    "run_queue": ("run-queue wait, CPU pressure (PSI), involuntary context switches", "host"),
    "load": ("load average, runnable processes", "host"),
    "process_count": ("processes/threads per process group", "process"),
    "numa": ("NUMA hits/misses/foreign allocations, local vs remote (cross-socket) memory traffic", "host"),
    "disk_io": ("disk and NFS latency, busy time, throughput", "host"),
    "kv_cache": ("KV-cache usage of an inference engine", "engine"),
    "preemptions": ("requests preempted or retracted for lack of KV cache", "engine"),
    "request_rate": ("requests running/waiting/finished, throughput", "engine"),
    "prompt_length": ("prompt tokens per request", "engine"),
    "latency": ("TTFT, TPOT / inter-token latency, end-to-end latency", "engine"),
    "runtime_gc": ("Python runtime: garbage collections, objects collected, GC time", "process"),
    "process_memory": ("resident/virtual memory of a process", "process"),
    "log_volume": ("log records/bytes written or shipped (fluent-bit, process write bytes)", "process"),
    "unclassified": ("not recognised; still searchable with metric_lookup", "-"),
}

# Ordered: first match wins. (family, regex on the bare metric name, case-insensitive).
# Known exporter names first; the generic heuristics after them.
_RULES: list[tuple[str, str]] = [
    # DCGM exporter
    ("throttle_reasons", r"^DCGM_FI_DEV_CLOCK(S_EVENT|_THROTTLE)_REASONS$"),
    ("gpu_temperature", r"^DCGM_FI_DEV_(GPU|MEMORY)_TEMP$"),
    ("sm_clock", r"^DCGM_FI_DEV_SM_CLOCK$"),
    ("sm_clock_max", r"^DCGM_FI_DEV_MAX_SM_CLOCK$"),
    ("power_limit", r"^DCGM_FI_DEV_(POWER_MGMT_LIMIT|ENFORCED_POWER_LIMIT)"),
    ("power_draw", r"^DCGM_FI_DEV_(POWER_USAGE|TOTAL_ENERGY_CONSUMPTION)"),
    ("ecc_xid", r"^DCGM_FI_DEV_(XID_ERRORS|ECC_|ROW_REMAP|RETIRED_|UNCORRECTABLE_REMAPPED|CORRECTABLE_REMAPPED)"),
    ("nvlink", r"NVLINK"),
    ("pcie", r"^DCGM_FI_(DEV|PROF)_PCIE"),
    ("gpu_utilization", r"^DCGM_FI_(DEV_GPU_UTIL|PROF_GR_ENGINE_ACTIVE|PROF_SM_ACTIVE)"),
    ("gpu_memory_used", r"^DCGM_FI_DEV_FB_(USED|FREE)"),
    # nvidia_gpu_exporter (nvidia-smi query fields, '.' -> '_')
    ("throttle_reasons", r"^nvidia_smi_clocks_(throttle|event)_reasons_"),
    ("gpu_temperature", r"^nvidia_smi_temperature_(gpu|memory)"),
    ("sm_clock_max", r"^nvidia_smi_clocks_max_(sm|graphics)"),
    ("sm_clock", r"^nvidia_smi_clocks_(current_)?(sm|graphics)"),
    ("power_limit", r"^nvidia_smi_(enforced_power_limit|power_limit|power_max_limit)"),
    ("power_draw", r"^nvidia_smi_power_draw"),
    ("ecc_xid", r"^nvidia_smi_(ecc_|retired_pages|remapped_rows)"),
    ("pcie", r"^nvidia_smi_pcie_"),
    ("gpu_utilization", r"^nvidia_smi_utilization_gpu"),
    ("gpu_memory_used", r"^nvidia_smi_memory_(used|free)"),
    # node exporter
    ("nic_retransmits", r"^node_netstat_Tcp_(RetransSegs|OutRsts)|^node_netstat_TcpExt_(TCPLost|TCPTimeouts)"),
    ("nic_retransmits", r"^node_infiniband_(port_transmit_wait|port_xmit_wait|.*error)|^node_network_(receive|transmit)_(errs|drop)"),
    ("network_traffic", r"^node_network_(receive|transmit)_(bytes|packets)|^node_infiniband_port_(data|packets)"),
    ("cpu_usage", r"^node_cpu_seconds_total"),
    ("run_queue", r"^node_schedstat_waiting|^node_pressure_cpu|^node_procs_blocked"),
    ("load", r"^node_load(1|5|15)$|^node_procs_running"),
    ("numa", r"^node_memory_numa_"),
    ("disk_io", r"^node_disk_|^node_nfs|^node_mountstats_nfs"),
    # cAdvisor
    ("cpu_throttling", r"^container_cpu_cfs_throttled"),
    ("cpu_usage", r"^container_cpu_(usage|user|system)_seconds"),
    ("disk_io", r"^container_fs_(reads|writes|io_time)"),
    # process-exporter
    ("cpu_usage", r"^namedprocess_namegroup_cpu_(seconds|user_seconds|system_seconds)"),
    ("run_queue", r"^namedprocess_namegroup_context_switches"),
    ("process_count", r"^namedprocess_namegroup_(num_procs|num_threads)"),
    ("log_volume", r"^namedprocess_namegroup_write_bytes"),
    ("disk_io", r"^namedprocess_namegroup_read_bytes"),
    ("process_memory", r"^namedprocess_namegroup_memory_bytes"),
    # kube-state-metrics
    ("process_count", r"^kube_pod_(status_phase|container_status_running|start_time)"),
    ("cpu_usage", r"^kube_pod_container_resource_(requests|limits)_cpu"),
    # prometheus_client default collectors (Python process)
    ("runtime_gc", r"^python_gc_"),
    ("cpu_usage", r"^process_cpu_seconds"),
    ("process_memory", r"^process_(resident|virtual)_memory"),
    # fluent-bit
    ("log_volume", r"^fluentbit_(input|output)_(records|bytes)"),
    # IPMI / BMC exporters
    ("chassis_thermal", r"^ipmi_(temperature|fan)|^redfish_.*(temperature|fan)"),
    # vLLM / SGLang engines
    ("kv_cache", r"^(vllm:(gpu_|kv_)?cache_usage|vllm:kv_cache_usage|sglang:token_usage)"),
    ("preemptions", r"^(vllm:num_preemptions|sglang:num_retracted)"),
    ("prompt_length", r"^vllm:(request_)?prompt_tokens|^sglang:prompt_tokens"),
    ("latency", r"^(vllm|sglang):(time_to_first_token|time_per_output_token|inter_token_latency|e2e_request_latency|request_latency)"),
    (
        "request_rate",
        r"^(vllm|sglang):(num_requests_(running|waiting|swapped)|num_running_reqs|num_queue_reqs|request_success|gen_throughput|generation_tokens)",
    ),
    # Generic heuristics: an unknown exporter still lands somewhere sensible.
    ("throttle_reasons", r"thrott.*reason|clock.*event.*reason"),
    ("cpu_throttling", r"cpu.*thrott"),
    ("ecc_xid", r"\bxid|ecc|row_?remap|retired_?page"),
    ("nvlink", r"nvlink"),
    ("pcie", r"pcie|pci_e"),
    ("nic_retransmits", r"retrans|xmit_wait|transmit_wait"),
    ("power_limit", r"power.*(limit|cap)"),
    ("power_draw", r"power.*(draw|usage|watts)"),
    ("sm_clock", r"(sm|graphics|gpu).*clock|clock.*(sm|graphics)"),
    ("chassis_thermal", r"fan|inlet|ambient"),
    ("gpu_temperature", r"temp"),
    ("kv_cache", r"kv.*(usage|util)|cache_usage"),
    ("preemptions", r"preempt|retract"),
    ("latency", r"ttft|tpot|time_to_first|per_output_token|latency"),
    ("prompt_length", r"prompt.*tokens|input.*tokens"),
    ("runtime_gc", r"(^|_)gc_|garbage|gil"),
    ("run_queue", r"schedstat|pressure|run_?queue|context_switch"),
    ("load", r"load(1|5|15|avg)"),
    ("numa", r"numa|memory_bandwidth|mem_?bw|remote_?(memory|dram)|(memory|dram)_?remote"),
    ("disk_io", r"disk|nfs|nvme|io_time|iowait"),
    ("cpu_usage", r"cpu.*seconds|cpu_usage|cpu_util"),
    ("request_rate", r"requests?_(running|waiting|total)|throughput|qps"),
]
_COMPILED = [(fam, re.compile(p, re.IGNORECASE)) for fam, p in _RULES]

EXPORTERS: list[tuple[str, str]] = [
    ("dcgm-exporter", r"^DCGM_FI_"),
    ("nvidia_gpu_exporter", r"^nvidia_(smi|gpu)_"),
    ("node-exporter", r"^node_"),
    ("cadvisor", r"^container_"),
    ("process-exporter", r"^namedprocess_"),
    ("kube-state-metrics", r"^kube_"),
    ("python-client", r"^(python_|process_)"),
    ("fluent-bit", r"^fluentbit_"),
    ("ipmi", r"^ipmi_"),
    ("vllm", r"^vllm:"),
    ("sglang", r"^sglang:"),
]

# NVML clock-throttle / clock-event reason bits (nvml.h nvmlClocksThrottleReason*, renamed
# nvmlClocksEventReason* in recent drivers; the same values DCGM reports in
# DCGM_FI_DEV_CLOCK_THROTTLE_REASONS / DCGM_FI_DEV_CLOCKS_EVENT_REASONS). Vendor fact.
THROTTLE_BITS: dict[str, int] = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}
THERMAL_REASONS = ("sw_thermal_slowdown", "hw_thermal_slowdown")
POWER_REASONS = ("sw_power_cap", "hw_power_brake_slowdown", "applications_clocks_setting")


@dataclass(frozen=True)
class Classified:
    family: str
    exporter: str
    # e.g. the throttle reason of a per-reason series ("sw_power_cap")
    detail: str = ""


_FOLDED = re.compile(r"^([^{]+)\{(.*)\}$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def split_folded(name: str) -> tuple[str, dict[str, str]]:
    """`name{k="v",...}` (Prometheus text form) -> (bare name, labels); plain names pass through."""
    m = _FOLDED.match(name.strip())
    if not m:
        return name.strip(), {}
    return m.group(1).strip(), {k: v for k, v in _LABEL.findall(m.group(2))}


def classify(name: str) -> Classified:
    """Family and exporter of a bare metric name (labels folded into the name are ignored)."""
    bare, _ = split_folded(name)
    exporter = next((e for e, p in EXPORTERS if re.search(p, bare, re.IGNORECASE)), "unknown")
    for fam, pat in _COMPILED:
        if pat.search(bare):
            detail = ""
            if fam == "throttle_reasons":
                m = re.search(r"reasons?_(\w+)$", bare, re.IGNORECASE)
                detail = m.group(1).lower() if m and m.group(1).lower() in THROTTLE_BITS else ""
            return Classified(fam, exporter, detail)
    return Classified("unclassified", exporter)


def is_counter_name(name: str) -> bool:
    """Prometheus counters end in _total (node_netstat_* are kernel counters without it)."""
    bare, _ = split_folded(name)
    n = bare.lower()
    return n.endswith(("_total", "_counter")) or n.startswith("node_netstat_")
