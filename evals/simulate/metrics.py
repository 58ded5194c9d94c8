"""Metric samples (long format) with the exporters' own names: DCGM, node exporter, vLLM/SGLang.

Inside the captured trace the values follow what the trace shows (GPU busy, step times);
outside it, the same behaviour is extended over the fault window. Every series carries
routine noise so that a fault has to be told apart from ordinary wiggle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kat.evals.simulate.categories import SEVERITY_INDEX, Category
from kat.evals.simulate.engine import SimResult
from kat.evals.simulate.faults import FaultPlan
from kat.evals.simulate.ground_truth import GroundTruth
from kat.evals.simulate.kernels import GPU_SPEC
from kat.evals.simulate.narrative import _replica_step_ms
from kat.evals.simulate.topology import Layout, Worker

STEP_NS = 1_000_000_000
LABELS = ("host", "gpu", "rank", "cpu", "mode", "device", "node", "quantile")

ENGINE_METRICS = {
    "vllm": {
        "ttft": "vllm:time_to_first_token_seconds",
        "tpot": "vllm:time_per_output_token_seconds",
        "kv": "vllm:gpu_cache_usage_perc",
        "preempt": "vllm:num_preemptions_total",
        "running": "vllm:num_requests_running",
        "waiting": "vllm:num_requests_waiting",
        "gen": "vllm:generation_tokens_total",
        "prompt": "vllm:prompt_tokens_total",
    },
    "sglang": {
        "ttft": "sglang:time_to_first_token_seconds",
        "tpot": "sglang:inter_token_latency_seconds",
        "kv": "sglang:token_usage",
        "preempt": "sglang:num_retracted_reqs_total",
        "running": "sglang:num_running_reqs",
        "waiting": "sglang:num_queue_reqs",
        "gen": "sglang:generation_tokens_total",
        "prompt": "sglang:prompt_tokens_total",
    },
}


class _Rows:
    """Column buffers; every series is added as whole numpy arrays."""

    def __init__(self, ts: np.ndarray):
        self.ts = ts
        self.cols: dict[str, list] = {k: [] for k in ("ts", "name", "value") + LABELS}

    def add(self, name: str, values: np.ndarray, **labels: object) -> None:
        n = len(self.ts)
        self.cols["ts"].append(self.ts)
        self.cols["name"].append(np.full(n, name, dtype=object))
        self.cols["value"].append(np.round(np.asarray(values, dtype=float), 4))
        for k in LABELS:
            v = labels.get(k, "")
            self.cols[k].append(np.full(n, "" if v is None else str(v), dtype=object))

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame({k: np.concatenate(v) for k, v in self.cols.items()})
        return df.sort_values(["ts", "name", "host", "gpu", "cpu", "mode"], kind="stable").reset_index(drop=True)


def _in(ts: np.ndarray, gt: GroundTruth) -> np.ndarray:
    # A sample at t reports the second (t - 1 s, t]: it shows the fault if that second overlaps the window.
    if gt.window is None:
        return np.zeros(len(ts), dtype=bool)
    return (ts > gt.window.start_ns) & (ts - STEP_NS < gt.window.end_ns)


def _ramp(ts: np.ndarray, gt: GroundTruth, seconds: float) -> np.ndarray:
    """0 before onset rising to 1 over `seconds`, back to 0 after the window."""
    if gt.window is None:
        return np.zeros(len(ts))
    r = np.clip((ts - gt.window.start_ns) / (seconds * 1e9), 0.0, 1.0)
    return np.where(ts - STEP_NS < gt.window.end_ns, np.maximum(r, 0.35 * (ts > gt.window.start_ns)), 0.0)


def build_metrics(
    lay: Layout, plan: FaultPlan, res: SimResult, gt: GroundTruth, base_ns: int, start_ns: int, end_ns: int, rng: np.random.Generator
) -> pd.DataFrame:
    ts = np.arange(start_ns, end_ns, STEP_NS, dtype=np.int64)
    n = len(ts)
    rows = _Rows(ts)
    task = lay.task
    spec = GPU_SPEC[task.gpu]
    cat = plan.category
    sev = SEVERITY_INDEX[plan.severity] if plan.severity else 1
    infault = _in(ts, gt)
    affected = set(plan.affected_ranks)
    s0, s1 = plan.steps
    step_dur = np.maximum(res.step_end - res.step_start, 1.0)
    util_all = np.clip(res.busy / step_dur, 0.0, 1.0)
    in_steps = np.zeros(res.step_start.shape[0], dtype=bool)
    in_steps[s0:s1] = True
    spikes = {c.kind: c for c in plan.confounders}
    spike = spikes.get("metric_spike")

    def noise(scale: float) -> np.ndarray:
        return rng.normal(0.0, scale, size=n)

    # ---- per GPU (DCGM exporter) ----
    for w in lay.workers:
        r = w.rank
        lab = {"host": w.host, "gpu": w.gpu, "rank": r}
        healthy_util = float(util_all[~in_steps, r].mean()) if (~in_steps).any() else float(util_all[:, r].mean())
        fault_util = float(util_all[in_steps, r].mean()) if in_steps.any() else healthy_util
        util = np.where(infault, fault_util, healthy_util) * 100.0 + noise(2.0)
        is_aff = r in affected
        clock = spec["clock"] + noise(6.0)
        temp = 55.0 + 12.0 * healthy_util + (r % 4) * 1.5 + noise(0.6)
        limit = np.full(n, spec["tdp"])
        power = spec["tdp"] * (0.35 + 0.45 * util / 100.0) + noise(8.0)
        throttle = np.zeros(n)
        if is_aff and cat == Category.GPU_THERMAL_THROTTLING:
            ramp = _ramp(ts, gt, 2.0)
            temp = temp + ramp * (float(plan.params["temp_c"]) - temp)
            clock = np.where(infault, clock * (1.0 - ramp * (1.0 - float(plan.params["clock_ratio"]))), clock)
            throttle = np.where(infault & (ramp > 0.3), 32 + (64 if sev >= 1 else 0), 0)
            power = np.where(infault, power * 0.85, power)
        if is_aff and cat == Category.GPU_POWER_OR_CLOCK_CAP:
            cap = spec["tdp"] * float(plan.params["limit_ratio"])
            limit = np.where(infault, cap, limit)
            power = np.where(infault, cap - np.abs(noise(3.0)) - 1.0, power)
            clock = np.where(infault, spec["clock"] * float(plan.params["clock_ratio"]) + noise(10.0), clock)
            throttle = np.where(infault, 4, 0)
            temp = np.where(infault, temp - 4.0, temp)
        if spike is not None and r in spike.ranks and spike.detail.get("variant", 0) % 2 == 1:
            # Benign: a brief temperature bump well inside limits (fan curve / neighbour load).
            bump = (ts >= spike.detail["start_ns"]) & (ts <= spike.detail["end_ns"])
            temp = np.where(bump, temp + 9.0, temp)
        rows.add("DCGM_FI_DEV_GPU_UTIL", np.clip(np.rint(util), 0, 100), **lab)
        rows.add("DCGM_FI_DEV_SM_CLOCK", np.rint(clock), **lab)
        rows.add("DCGM_FI_DEV_GPU_TEMP", np.rint(temp), **lab)
        rows.add("DCGM_FI_DEV_POWER_USAGE", np.round(power, 2), **lab)
        rows.add("DCGM_FI_DEV_POWER_MGMT_LIMIT", limit, **lab)
        rows.add("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", throttle, **lab)
        rows.add("DCGM_FI_DEV_FB_USED", np.full(n, int(spec["mem_gb"] * 1024 * 0.9)) + np.rint(noise(3.0)), **lab)
        # PCIe / NVLink throughput (bytes/s) and error counters.
        pcie_rx = 3.0e8 * (1 + 0.1 * noise(1.0))
        pcie_tx = 0.6e8 * (1 + 0.1 * noise(1.0))
        replay = np.zeros(n)
        gen = np.full(n, 5 if task.gpu in ("H100", "H200", "B200") else 4)
        width = np.full(n, 16)
        if is_aff and cat == Category.PCIE_LINK_DEGRADATION:
            replay = np.cumsum(np.where(infault, rng.poisson(4 * (sev + 1), size=n), 0))
            gen = np.where(infault, np.maximum(1, gen - 1 - sev), gen)
            width = np.where(infault & (sev >= 2), 8, width)
            pcie_rx = np.where(infault, pcie_rx / float(plan.params["h2d_factor"]) * 1.5, pcie_rx)
        if cat == Category.STORAGE_IO_STALL and is_aff:
            pcie_rx = np.where(infault & (rng.random(n) < 0.3), pcie_rx + 2.0e9, pcie_rx)
        rows.add("DCGM_FI_PROF_PCIE_RX_BYTES", np.rint(pcie_rx), **lab)
        rows.add("DCGM_FI_PROF_PCIE_TX_BYTES", np.rint(pcie_tx), **lab)
        rows.add("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", replay, **lab)
        rows.add("DCGM_FI_DEV_PCIE_LINK_GEN", gen, **lab)
        rows.add("DCGM_FI_DEV_PCIE_LINK_WIDTH", width, **lab)
        nvl = (0.0 if task.tp == 1 else spec["nvlink"] * 0.12 * util / 100.0) * (1 + 0.05 * noise(1.0))
        crc = np.zeros(n)
        if cat == Category.NVLINK_DEGRADATION and is_aff:
            nvl = np.where(infault, nvl / float(plan.params["link_factor"]), nvl)
            crc = np.cumsum(np.where(infault, rng.poisson(40 * (sev + 1), size=n), 0))
        rows.add("DCGM_FI_PROF_NVLINK_TX_BYTES", np.rint(np.maximum(nvl, 0)), **lab)
        rows.add("DCGM_FI_PROF_NVLINK_RX_BYTES", np.rint(np.maximum(nvl * 0.98, 0)), **lab)
        rows.add("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", crc, **lab)
        xid = np.zeros(n)
        dbe = np.zeros(n)
        if cat == Category.GPU_HARDWARE_ERROR and is_aff and gt.window is not None:
            xid = np.where(ts >= gt.window.start_ns, float(plan.params["xid"]), 0.0)
            if int(plan.params["xid"]) in (48, 94):
                dbe = np.where(ts >= gt.window.start_ns, 1 + sev, 0.0)
        rows.add("DCGM_FI_DEV_XID_ERRORS", xid, **lab)
        rows.add("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", dbe, **lab)

    # ---- per host (node exporter) ----
    for host in lay.hosts:
        workers = [w for w in lay.workers if w.host == host]
        h_aff = host in plan.affected_hosts
        cores: list[tuple[int, Worker | None]] = []  # the spare cores run no worker
        for w in workers:
            cores.append((w.numa_node * 48 + (w.gpu % 4) * 6, w))  # each worker pinned to one core
        cores += [(95, None), (47, None)]
        load = np.full(n, float(len(workers))) + np.abs(noise(0.4))
        for core, pinned in cores:
            busy = np.full(n, 0.92 if pinned is not None else 0.08) + noise(0.02)
            wait = np.abs(noise(0.002))
            if pinned is not None and pinned.rank in affected and cat == Category.HOST_CPU_CONTENTION:
                wait = np.where(infault, 0.35 + 0.15 * sev + np.abs(noise(0.05)), wait)
                busy = np.where(infault, 0.99, busy)
            if pinned is None and cat == Category.HOST_CPU_CONTENTION and h_aff:
                busy = np.where(infault, 0.97, busy)
            if spike is not None and host in spike.hosts and spike.detail.get("variant", 0) % 2 == 0 and pinned is None:
                # Benign: logrotate / backup cron burns a spare core for a few seconds.
                bump = (ts >= spike.detail["start_ns"]) & (ts <= spike.detail["end_ns"])
                busy = np.where(bump, 0.98, busy)
            busy = np.clip(busy, 0.0, 1.0)
            user = np.cumsum(busy * 0.85) + 1.0e5 + core * 37.0
            system = np.cumsum(busy * 0.15) + 2.0e4 + core * 5.0
            idle = np.cumsum(1.0 - busy) + 5.0e5
            rows.add("node_cpu_seconds_total", user, host=host, cpu=core, mode="user")
            rows.add("node_cpu_seconds_total", system, host=host, cpu=core, mode="system")
            rows.add("node_cpu_seconds_total", idle, host=host, cpu=core, mode="idle")
            rows.add("node_schedstat_waiting_seconds_total", np.cumsum(wait) + 3.0e3, host=host, cpu=core)
        if cat == Category.HOST_CPU_CONTENTION and h_aff:
            load = np.where(infault, load + 8 + 6 * sev, load)
        rows.add("node_load1", np.round(load, 2), host=host)
        numa_miss = rng.poisson(2000, size=n).astype(float)
        if cat == Category.NUMA_MISBINDING and h_aff:
            numa_miss = np.where(infault, numa_miss + 4.0e6 * (1 + sev), numa_miss)
        for node in (0, 1):
            rows.add("node_memory_numa_numa_miss_total", np.cumsum(numa_miss / 2) + 1e7, host=host, node=node)
            rows.add("node_memory_numa_other_node_total", np.cumsum(numa_miss / 2 * 0.9) + 8e6, host=host, node=node)
        # Memory bandwidth per socket (pcm-exporter style); remote (cross-socket) traffic rises on misbinding.
        for sock in (0, 1):
            local = 2.2e10 * (1 + 0.05 * noise(1.0))
            remote = 1.5e9 * (1 + 0.1 * noise(1.0))
            if cat == Category.NUMA_MISBINDING and h_aff:
                remote = np.where(infault, remote + 6.0e9 * (1 + sev), remote)
            rows.add("pcm_memory_bandwidth_bytes", np.rint(np.maximum(local, 0)), host=host, node=sock, mode="local")
            rows.add("pcm_memory_bandwidth_bytes", np.rint(np.maximum(remote, 0)), host=host, node=sock, mode="remote")
        crossing = lay.task.tp > lay.task.gpus_per_host or lay.task.pp > 1
        net = (2.0e9 if crossing else 1.0e7) * (1 + 0.05 * noise(1.0))
        retrans = rng.poisson(3, size=n).astype(float)
        xmit_wait = rng.poisson(1000, size=n).astype(float)
        if cat == Category.NETWORK_CONGESTION and h_aff:
            net = np.where(infault, net / float(plan.params["net_factor"]), net)
            retrans = np.where(infault, retrans + rng.poisson(300 * (sev + 1), size=n), retrans)
            xmit_wait = np.where(infault, xmit_wait + rng.poisson(2.0e6 * (sev + 1), size=n), xmit_wait)
        rows.add("node_network_transmit_bytes_total", np.cumsum(np.maximum(net, 0)) + 1e12, host=host, device="ibp26s0")
        rows.add("node_network_receive_bytes_total", np.cumsum(np.maximum(net * 0.99, 0)) + 1e12, host=host, device="ibp26s0")
        rows.add("node_netstat_Tcp_RetransSegs", np.cumsum(retrans) + 5e4, host=host)
        rows.add("node_infiniband_port_transmit_wait_total", np.cumsum(xmit_wait) + 1e9, host=host, device="mlx5_0")
        disk_read = rng.gamma(2.0, 2.0e6, size=n)
        io_time = np.clip(rng.normal(0.03, 0.01, size=n), 0, 1)
        if cat == Category.STORAGE_IO_STALL and h_aff:
            io_time = np.where(infault, np.clip(rng.normal(0.97, 0.02, size=n), 0, 1), io_time)
            disk_read = np.where(infault, rng.gamma(2.0, 1.0e7, size=n), disk_read)
        rows.add("node_disk_read_bytes_total", np.cumsum(disk_read) + 4e11, host=host, device="nvme0n1")
        rows.add("node_disk_io_time_seconds_total", np.cumsum(io_time) + 2e4, host=host, device="nvme0n1")
        rows.add("node_memory_MemAvailable_bytes", 1.6e12 + noise(2e8), host=host)

    # ---- per replica (engine metrics, exported by the replica's API server) ----
    names = ENGINE_METRICS[task.engine]
    rep_ms = _replica_step_ms(res, lay)
    for d in range(task.dp):
        driver = lay.workers[lay.rank_of(d, 0, 0)]
        lab = {"host": driver.host, "rank": driver.rank}
        rep_in = in_steps.copy()
        base = float(np.median(rep_ms[~rep_in, d])) if (~rep_in).any() else float(np.median(rep_ms[:, d])) / 1.3
        hit = float(np.median(rep_ms[rep_in, d])) if rep_in.any() else base
        step_s = np.where(infault, hit, base) / 1e3 * (1 + 0.04 * noise(1.0))
        running = float(res.seqs[:, d].mean())
        kv = np.clip(0.45 + 0.1 * np.sin(np.arange(n) / 17.0 + d) + noise(0.02), 0.05, 0.9)
        waiting = rng.poisson(1.0, size=n).astype(float)
        preempt = np.zeros(n)
        run = running + noise(max(1.0, running * 0.05))
        if cat == Category.KV_CACHE_PRESSURE and d == plan.replica:
            kv = np.where(infault, np.clip(0.985 + noise(0.006), 0.96, 1.0), kv)
            waiting = np.where(infault, waiting + rng.poisson(20 + 15 * sev, size=n), waiting)
            preempt = np.cumsum(np.where(infault, rng.poisson(2 + 3 * sev, size=n), 0))
            run = np.where(infault, run * 0.8, run)
            # Preempted requests sit out and are recomputed: per-request latency rises beyond step time.
            step_s = np.where(infault, step_s * (1.3 + 0.35 * sev), step_s)
        if cat == Category.WORKLOAD_SHIFT:
            waiting = np.where(infault, waiting + rng.poisson(8, size=n), waiting)
            run = np.where(infault, run * float(plan.params.get("batch_scale", 1.0)), run)
        ttft = step_s * (4.0 + 6.0 * waiting / max(1.0, running)) * (1 + np.abs(noise(0.1)))
        gen = np.cumsum(np.maximum(run, 0) / np.maximum(step_s, 1e-3)) + 1e7
        prompt = np.cumsum(np.maximum(run, 0) * 0.3 * task.prompt_tokens / 10.0) + 3e7
        rows.add(names["ttft"], np.round(ttft, 4), quantile="0.5", **lab)
        rows.add(names["tpot"], np.round(step_s, 5), quantile="0.5", **lab)
        rows.add(names["kv"], np.round(kv, 4), **lab)
        rows.add(names["preempt"], preempt, **lab)
        rows.add(names["running"], np.rint(np.maximum(run, 0)), **lab)
        rows.add(names["waiting"], waiting, **lab)
        rows.add(names["gen"], np.rint(gen), **lab)
        rows.add(names["prompt"], np.rint(prompt), **lab)
    return rows.frame()


def write_metrics(df: pd.DataFrame, out: Path, fmt: str = "parquet") -> Path:
    """metrics.parquet (ts as epoch ns) or metrics.csv (ts as RFC 3339)."""
    if fmt == "csv":
        from kat.evals.simulate.ground_truth import rfc3339

        p = out / "metrics.csv"
        df2 = df.copy()
        df2["ts"] = [rfc3339(int(t)) for t in df2["ts"]]
        df2.to_csv(p, index=False)
        return p
    p = out / "metrics.parquet"
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, p, compression="zstd")
    return p
