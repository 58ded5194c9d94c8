"""Vocabulary shared by the corpus front matter and the search filters (see ARCHITECTURE.md)."""

from __future__ import annotations

FAULT_CATEGORIES: tuple[str, ...] = (
    "gpu_thermal_throttling",
    "gpu_power_or_clock_cap",
    "nvlink_degradation",
    "pcie_link_degradation",
    "network_congestion",
    "host_cpu_contention",
    "numa_misbinding",
    "kv_cache_pressure",
    "gpu_hardware_error",
    "runtime_stall",
    "storage_io_stall",
)
CONTROL_CATEGORIES: tuple[str, ...] = ("none", "workload_shift")
TAXONOMY: tuple[str, ...] = FAULT_CATEGORIES + CONTROL_CATEGORIES
# Documents that are not about one root cause: the systems underneath, and the playbook.
DOC_ONLY_CATEGORIES: tuple[str, ...] = ("reference", "playbook")
CATEGORIES: tuple[str, ...] = TAXONOMY + DOC_ONLY_CATEGORIES

COMPONENTS: tuple[str, ...] = (
    "gpu",
    "nvlink",
    "pcie",
    "network",
    "host_cpu",
    "host_memory",
    "gpu_memory",
    "software",
    "storage",
)


def normalize_label(value: str | None) -> str | None:
    """Lower-case, trim, and accept '-' or ' ' for '_' so 'GPU-Thermal throttling' works."""
    if value is None:
        return None
    v = value.strip().lower().replace("-", "_").replace(" ", "_")
    return v or None
