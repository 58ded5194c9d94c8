"""The root-cause taxonomy (ARCHITECTURE.md) and the severity scale the simulator uses."""

from __future__ import annotations

from enum import Enum


class Category(str, Enum):
    GPU_THERMAL_THROTTLING = "gpu_thermal_throttling"
    GPU_POWER_OR_CLOCK_CAP = "gpu_power_or_clock_cap"
    NVLINK_DEGRADATION = "nvlink_degradation"
    PCIE_LINK_DEGRADATION = "pcie_link_degradation"
    NETWORK_CONGESTION = "network_congestion"
    HOST_CPU_CONTENTION = "host_cpu_contention"
    NUMA_MISBINDING = "numa_misbinding"
    KV_CACHE_PRESSURE = "kv_cache_pressure"
    GPU_HARDWARE_ERROR = "gpu_hardware_error"
    RUNTIME_STALL = "runtime_stall"
    STORAGE_IO_STALL = "storage_io_stall"
    NONE = "none"
    WORKLOAD_SHIFT = "workload_shift"


# Taxonomy column "component"; controls have none.
COMPONENT: dict[Category, str] = {
    Category.GPU_THERMAL_THROTTLING: "gpu",
    Category.GPU_POWER_OR_CLOCK_CAP: "gpu",
    Category.NVLINK_DEGRADATION: "nvlink",
    Category.PCIE_LINK_DEGRADATION: "pcie",
    Category.NETWORK_CONGESTION: "network",
    Category.HOST_CPU_CONTENTION: "host_cpu",
    Category.NUMA_MISBINDING: "host_memory",
    Category.KV_CACHE_PRESSURE: "gpu_memory",
    Category.GPU_HARDWARE_ERROR: "gpu",
    Category.RUNTIME_STALL: "software",
    Category.STORAGE_IO_STALL: "storage",
    Category.NONE: "-",
    Category.WORKLOAD_SHIFT: "-",
}

FAULT_CATEGORIES: tuple[Category, ...] = tuple(c for c in Category if COMPONENT[c] != "-")
CONTROL_CATEGORIES: tuple[Category, ...] = (Category.NONE, Category.WORKLOAD_SHIFT)
ALL_CATEGORIES: tuple[Category, ...] = tuple(Category)


class Severity(str, Enum):
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


SEVERITIES: tuple[Severity, ...] = tuple(Severity)
# Index into the per-category (mild, moderate, severe) parameter triples.
SEVERITY_INDEX: dict[Severity, int] = {s: i for i, s in enumerate(SEVERITIES)}


def parse_category(value: str) -> Category:
    """A category from its name; a helpful error lists the valid ones."""
    try:
        return Category(value.strip().lower().replace("-", "_"))
    except ValueError:
        valid = ", ".join(c.value for c in Category)
        raise ValueError(f"unknown scenario {value!r}; valid: {valid}") from None
