"""The domain contract (ARCHITECTURE.md): categories, components, the component of each
category, and label normalisation. Every layer imports these; nothing else spells them out
(tests/test_domain_contract.py fails when another module does)."""

from __future__ import annotations

from enum import Enum
from typing import Literal


class Category(str, Enum):
    """The 11 fault scenarios, then the 2 controls, in the taxonomy's order (ARCHITECTURE.md).
    The one spelling of the vocabulary: the tuples below are read off it."""

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
    # Controls: a healthy run, and a legitimate load change; neither is a fault.
    NONE = "none"
    WORKLOAD_SHIFT = "workload_shift"


CONTROL_CATEGORIES: tuple[str, ...] = (Category.NONE.value, Category.WORKLOAD_SHIFT.value)
FAULT_CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category if c.value not in CONTROL_CATEGORIES)
TAXONOMY: tuple[str, ...] = FAULT_CATEGORIES + CONTROL_CATEGORIES
# Only in an honest partial answer (budget or repeated tool-call failure), never ground truth.
UNDETERMINED = "undetermined"
DIAGNOSIS_CATEGORIES: tuple[str, ...] = TAXONOMY + (UNDETERMINED,)
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
NO_COMPONENT = "-"

# Pydantic/typing views of the same tuples (Literal over a tuple expands to its members).
CategoryName = Literal[DIAGNOSIS_CATEGORIES]  # type: ignore[valid-type]
ComponentName = Literal[COMPONENTS]  # type: ignore[valid-type]

COMPONENT_OF: dict[str, str] = {
    "gpu_thermal_throttling": "gpu",
    "gpu_power_or_clock_cap": "gpu",
    "nvlink_degradation": "nvlink",
    "pcie_link_degradation": "pcie",
    "network_congestion": "network",
    "host_cpu_contention": "host_cpu",
    "numa_misbinding": "host_memory",
    "kv_cache_pressure": "gpu_memory",
    "gpu_hardware_error": "gpu",
    "runtime_stall": "software",
    "storage_io_stall": "storage",
    "none": NO_COMPONENT,
    "workload_shift": NO_COMPONENT,
    UNDETERMINED: NO_COMPONENT,
}
# Fault categories whose component is c, in taxonomy order.
CATEGORIES_OF_COMPONENT: dict[str, tuple[str, ...]] = {c: tuple(k for k in FAULT_CATEGORIES if COMPONENT_OF[k] == c) for c in COMPONENTS}


def normalize_label(value: str | None) -> str | None:
    """Lower-case, trim, and accept '-' or ' ' for '_' so 'GPU-Thermal throttling' works."""
    if value is None:
        return None
    v = value.strip().lower().replace("-", "_").replace(" ", "_")
    return v or None


def is_fault(category: str) -> bool:
    return normalize_label(category) in FAULT_CATEGORIES


def is_control(category: str) -> bool:
    return normalize_label(category) in CONTROL_CATEGORIES
