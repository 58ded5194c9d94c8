"""The playbook's domain text: titles, mechanisms, look-alikes, what was checked, remediation."""

from __future__ import annotations

from kat.knowledge.cards import CARDS

TITLE = {
    "gpu_thermal_throttling": "GPU thermal throttling",
    "gpu_power_or_clock_cap": "GPU power or clock cap",
    "nvlink_degradation": "NVLink degradation",
    "pcie_link_degradation": "PCIe link degradation",
    "network_congestion": "inter-node network congestion",
    "host_cpu_contention": "host CPU contention",
    "numa_misbinding": "NUMA misbinding",
    "kv_cache_pressure": "KV cache pressure",
    "gpu_hardware_error": "GPU hardware error",
    "runtime_stall": "runtime stall",
    "storage_io_stall": "storage I/O stall",
    "none": "no fault (healthy run)",
    "workload_shift": "workload shift (legitimate load change)",
}

MECHANISM = {
    "gpu_thermal_throttling": "the GPU lowers its SM clock to shed heat, so its compute kernels run slower",
    "gpu_power_or_clock_cap": "the GPU runs at a lowered power limit / clock cap, so its compute kernels run slower"
    " while temperature stays normal",
    "nvlink_degradation": "a degraded NVLink retrains and replays traffic, so intra-node collectives touching this GPU slow down",
    "pcie_link_degradation": "the GPU's PCIe link runs downgraded with replays, so host<->device copies on it slow down",
    "network_congestion": "the host's NICs retransmit and wait, so inter-node collectives and pipeline send/recv slow down",
    "host_cpu_contention": "other processes compete for the worker's CPU core, so kernel launches and CPU-side ops are delayed",
    "numa_misbinding": "the worker runs on the NUMA node remote from its GPU, so host-side ops and H2D copies cross sockets",
    "kv_cache_pressure": "the KV cache is full, so the scheduler preempts requests and recomputes them",
    "gpu_hardware_error": "the GPU hits hardware errors (Xid / ECC) and stalls or retries work",
    "runtime_stall": "the worker process pauses periodically on the CPU side (GC, GIL, detokenizer) before launching work",
    "storage_io_stall": "weight/adapter loads or KV offload block on slow storage before the step's work",
    "workload_shift": "more and longer requests arrive, so every worker does more work per step",
    "none": "every worker behaves like its peers and its own history",
}

SYMPTOM = {
    "gpu_thermal_throttling": "the slow rank arrives late at every collective; its peers wait in all-reduce and step"
    " time (TPOT) rises for the whole group",
    "gpu_power_or_clock_cap": "the slow rank arrives late at every collective; its peers wait in all-reduce and step"
    " time (TPOT) rises for the whole group",
    "nvlink_degradation": "all-reduce / all-gather kernels of the group take longer each step, so step time (TPOT) rises",
    "pcie_link_degradation": "input preparation and copies on that rank take longer, delaying its steps and its peers in collectives",
    "network_congestion": "collectives and send/recv that cross hosts take longer, so step time rises for the affected groups",
    "host_cpu_contention": "the rank arrives late at collectives with the GPU idle between launches; peers wait and step time rises",
    "numa_misbinding": "the rank's steps are slower than its peers', which wait for it in collectives",
    "kv_cache_pressure": "latency spikes on all workers of that replica (recompute prefill, fewer running requests)",
    "gpu_hardware_error": "occasional long stalls on that GPU that its peers wait for in collectives",
    "runtime_stall": "periodic long steps: the rank starts late and peers wait for it in collectives",
    "storage_io_stall": "a few steps take far longer while the load blocks, on the affected ranks",
    "workload_shift": "step time rises on every worker alike; no worker stands out from its peers",
    "none": "no anomaly beyond normal step-to-step variation from continuous batching",
}

NEGATIVE = {
    "gpu_thermal_throttling": "no GPU runs hot and no thermal throttle reason is set",
    "gpu_power_or_clock_cap": "power limits are unchanged and no power-cap throttle reason is set",
    "gpu_hardware_error": "no Xid or uncorrectable ECC error is reported",
    "nvlink_degradation": "NVLink error counters stay flat and there is no Xid 74",
    "pcie_link_degradation": "PCIe replay counters stay flat and link generation is normal",
    "network_congestion": "no NIC retransmits, InfiniBand transmit wait or NCCL NET warnings",
    "host_cpu_contention": "run-queue wait and load stay normal on every host",
    "numa_misbinding": "NUMA miss rates are normal and worker affinity matches the GPUs' NUMA nodes",
    "storage_io_stall": "disk busy time is normal and no slow load/offload is logged",
    "kv_cache_pressure": "KV cache usage stays well below full and there are no preemptions",
    "workload_shift": "request counts do not rise on every replica",
    "runtime_stall": "no periodic CPU-side pause in one process (Outpost, GC/GIL/detokenizer logs)",
    "none": "there are fault signals (see the causal chain)",
}

# Look-alikes come from the signature cards (knowledge/signature_cards/*.yaml).
LOOKALIKES = {cat: list(card.lookalikes) for cat, card in CARDS.items()}

# Remediation, ranked, from the signature cards (one source).
REMEDIATION = {cat: [a.action for a in card.remediation] for cat, card in CARDS.items()}

KB_QUERY = {
    "gpu_thermal_throttling": "GPU hot, SM clock low, thermal throttle, peers wait in all-reduce",
    "gpu_power_or_clock_cap": "power limit lowered clocks capped temperature normal kernel slowdown",
    "nvlink_degradation": "NVLink CRC errors intra-node all-reduce slow Xid 74",
    "pcie_link_degradation": "PCIe link downgraded replay AER host to device copies slow",
    "network_congestion": "inter-node collectives slow NIC retransmits NCCL NET IB warnings",
    "host_cpu_contention": "CPU contention launch gaps run queue wait worker late to collectives",
    "numa_misbinding": "worker on wrong NUMA node remote memory slow host ops H2D copies",
    "kv_cache_pressure": "KV cache full preemption recompute latency spikes",
    "gpu_hardware_error": "Xid ECC double bit error GPU stalls",
    "runtime_stall": "periodic CPU pauses garbage collection GIL detokenizer one process",
    "storage_io_stall": "slow weight or adapter loading storage stall nvme timeout",
    "workload_shift": "longer prompts bigger batches all workers slower not a fault",
    "none": "healthy run step time variation continuous batching",
}
