"""Exporter and log dialects of a generated incident, chosen from its seed.

Real incidents arrive in whatever their exporters wrote: DCGM exporter or the nvidia-smi based
nvidia_gpu_exporter, labels as columns or folded into the name (Prometheus text form), node
exporter or cAdvisor or process-exporter for CPU, histogram or summary engine metrics, plain
or journald or dmesg logs, some exporter not deployed at all. A `Dialect` names one such
combination; `metric_dialects` and `log_dialects` render the simulator's canonical series and
lines in it. The physics (what changes where, by how much) is the same in every dialect.

Formats follow the vendors' documentation: NVIDIA DCGM field identifiers (DCGM 3.3 renamed
CLOCK_THROTTLE_REASONS to CLOCKS_EVENT_REASONS), utkuozdemir/nvidia_gpu_exporter METRICS.md
(`nvidia_smi_<query field>`, units in the name, labelled by uuid), node_exporter (meminfo_numa
and infiniband collectors), cAdvisor `container_*`, process-exporter `namedprocess_namegroup_*`,
vLLM `/metrics` (histograms `_bucket/_sum/_count`), systemd-journald JSON export fields,
util-linux dmesg (`[seconds.micros]` since boot), Kubernetes event columns, CPython `logging`
and `warnings` default formats.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

GpuExporter = Literal["dcgm", "dcgm_events", "nvidia_smi"]
LabelLayout = Literal["columns", "native", "folded"]
HostKey = Literal["host", "instance", "hostname"]
CpuExporter = Literal["node", "cadvisor", "process"]
EngineStyle = Literal["quantile", "sum_count", "buckets"]
KernelStyle = Literal["plain", "dmesg"]
SystemStyle = Literal["plain", "journald"]
ProcessStart = Literal["cron", "kubelet", "systemd"]
PythonStyle = Literal["engine", "logging", "warnings"]
# An exporter or collector that is not deployed: every series it would write is absent.
Missing = Literal["", "numa", "memory_bandwidth", "infiniband", "schedstat", "throttle_reasons", "power_limit"]


class Dialect(BaseModel):
    """One combination of exporters, label layouts and log styles."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    gpu_exporter: GpuExporter = "dcgm"
    gpu_labels: LabelLayout = "columns"
    host_key: HostKey = "host"
    cpu_exporter: CpuExporter = "node"
    engine_style: EngineStyle = "quantile"
    kernel_style: KernelStyle = "plain"
    system_style: SystemStyle = "plain"
    process_start: ProcessStart = "cron"
    python_style: PythonStyle = "engine"
    missing: Missing = ""

    @property
    def name(self) -> str:
        """Short id, e.g. 'nvidia_smi/folded/instance/process/buckets/dmesg+journald/kubelet/logging/-numa'."""
        parts = [
            self.gpu_exporter,
            self.gpu_labels,
            self.host_key,
            self.cpu_exporter,
            self.engine_style,
            f"{self.kernel_style}+{self.system_style}",
            self.process_start,
            self.python_style,
        ]
        return "/".join(parts) + (f"/-{self.missing}" if self.missing else "")


CANONICAL = Dialect()

_CHOICES: dict[str, tuple[str, ...]] = {
    "gpu_exporter": ("dcgm", "dcgm_events", "nvidia_smi"),
    "gpu_labels": ("columns", "native", "folded"),
    "host_key": ("host", "instance", "hostname"),
    "cpu_exporter": ("node", "cadvisor", "process"),
    "engine_style": ("quantile", "sum_count", "buckets"),
    "kernel_style": ("plain", "dmesg"),
    "system_style": ("plain", "journald"),
    "python_style": ("engine", "logging", "warnings"),
    "missing": ("", "", "", "", "numa", "memory_bandwidth", "infiniband", "schedstat", "throttle_reasons", "power_limit"),
}


def choose_dialect(seed: int) -> Dialect:
    """The dialect of the case with this seed (deterministic, independent of the other streams)."""
    h = hashlib.sha256(f"{seed}|dialect".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(h[:8], "little"))
    pick = {k: str(v[int(rng.integers(0, len(v)))]) for k, v in _CHOICES.items()}
    # Kubernetes events come with Kubernetes (cAdvisor); bare hosts start jobs from cron or systemd.
    pick["process_start"] = "kubelet" if pick["cpu_exporter"] == "cadvisor" else ("cron", "systemd")[int(rng.integers(0, 2))]
    return Dialect.model_validate(pick)


def parse_dialect(value: str, seed: int) -> Dialect | None:
    """`canonical` -> None (the simulator's own layout), `auto` -> chosen from the seed."""
    v = value.strip().lower()
    if v in ("", "canonical", "none", "off"):
        return None
    if v in ("auto", "seed", "on"):
        return choose_dialect(seed)
    raise ValueError(f"unknown dialect {value!r}; valid: canonical, auto")
