"""Log lines (logs.jsonl): vLLM/SGLang engine, NCCL, kernel (dmesg) and system sources.

Most lines are routine noise, as in production; the fault adds a few characteristic lines
(Xid, AER, NCCL transport warnings, preemption warnings, ...), sometimes before the trace.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from kat.evals.simulate.categories import SEVERITY_INDEX, Category
from kat.evals.simulate.engine import SimResult
from kat.evals.simulate.faults import FaultPlan
from kat.evals.simulate.ground_truth import GroundTruth, rfc3339
from kat.evals.simulate.topology import Layout

UNRELATED_WARNINGS = [
    (
        "kernel",
        "warning",
        "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#3_DIMM#0 (channel:3 slot:0 page:0x1a2b3c offset:0x0 grain:32 syndrome:0x0)",
    ),
    ("system", "warning", "systemd-journald[812]: Under memory pressure, flushing caches."),
    ("nccl", "warning", "NCCL WARN NET/Plugin: Could not find: libnccl-net.so. Using internal network plugin."),
    ("system", "warning", "chronyd[1043]: System clock wrong by 0.000812 seconds"),
]


def _line(ts: int, host: str, rank: int | None, source: str, level: str, message: str) -> dict:
    return {"ts": rfc3339(ts), "host": host, "rank": "" if rank is None else rank, "source": source, "level": level, "message": message}


def _engine_prefix(engine: str, ts: int, where: str) -> str:
    t = rfc3339(ts)
    return f"INFO {t[5:7]}-{t[8:10]} {t[11:19]} [{where}]" if engine == "vllm" else f"[{t[:10]} {t[11:19]}]"


def build_logs(
    lay: Layout, plan: FaultPlan, res: SimResult, gt: GroundTruth, base_ns: int, start_ns: int, end_ns: int, rng: np.random.Generator
) -> list[dict]:
    task = lay.task
    out: list[dict] = []
    span = end_ns - start_ns
    eng = task.engine
    # Routine engine stats every 10 s and HTTP access lines from each replica's API server.
    for d in range(task.dp):
        drv = lay.workers[lay.rank_of(d, 0, 0)]
        t = start_ns + int(rng.uniform(0, 10e9))
        while t < end_ns:
            running = int(res.seqs[:, d].mean() * rng.uniform(0.9, 1.1))
            kvp = rng.uniform(30, 70)
            if (
                plan.category == Category.KV_CACHE_PRESSURE
                and d == plan.replica
                and gt.window
                and gt.window.start_ns <= t <= gt.window.end_ns
            ):
                kvp = rng.uniform(97, 100)
            if eng == "vllm":
                msg = (
                    f"{_engine_prefix(eng, t, 'loggers.py:123')} Engine {d:03d}: Avg prompt throughput: {rng.uniform(800, 6000):.1f} tokens/s, "
                    f"Avg generation throughput: {rng.uniform(900, 4000):.1f} tokens/s, Running: {running} reqs, Waiting: {int(rng.poisson(1))} reqs, "
                    f"GPU KV cache usage: {kvp:.1f}%, Prefix cache hit rate: {rng.uniform(5, 40):.1f}%"
                )
            else:
                msg = (
                    f"{_engine_prefix(eng, t, '')} Decode batch. #running-req: {running}, #token: {int(running * task.context_tokens)}, "
                    f"token usage: {kvp / 100:.2f}, gen throughput (token/s): {rng.uniform(900, 4000):.2f}, #queue-req: {int(rng.poisson(1))}"
                )
            out.append(_line(t, drv.host, drv.rank, eng, "info", msg))
            t += int(10e9 * rng.uniform(0.95, 1.05))
        n_http = int(span / 1e9 * 2)
        for t in np.sort(rng.integers(start_ns, end_ns, size=n_http)).tolist():
            ip = f"10.12.{int(rng.integers(0, 8))}.{int(rng.integers(2, 250))}:{int(rng.integers(30000, 60000))}"
            out.append(_line(t, drv.host, drv.rank, eng, "info", f'INFO:     {ip} - "POST /v1/chat/completions HTTP/1.1" 200 OK'))
    # System and kernel chatter on every host.
    for host in lay.hosts:
        for t in np.sort(rng.integers(start_ns, end_ns, size=max(1, int(span / 15e9)))).tolist():
            msg = str(
                rng.choice(
                    [
                        f"systemd[1]: Started Session {int(rng.integers(1000, 9999))} of User root.",
                        f"sshd[{int(rng.integers(2000, 60000))}]: Accepted publickey for svc-monitor from 10.0.0.4 port {int(rng.integers(30000, 60000))} ssh2",
                        'kubelet[2211]: I1121 volume_manager.go:457] "All volumes are attached and mounted" pod="serving/llm-0"',
                        'dcgm-exporter[1877]: level=info msg="Collecting metrics" interval=1s',
                    ]
                )
            )
            out.append(_line(t, host, None, "system", "info", msg))
        t = int(rng.integers(start_ns, end_ns))
        out.append(
            _line(
                t,
                host,
                None,
                "kernel",
                "info",
                "perf: interrupt took too long (2503 > 2500), lowering kernel.perf_event_max_sample_rate to 79750",
            )
        )
    # NCCL: a late communicator init (sampler/metadata group) is routine.
    w0 = lay.workers[0]
    t = start_ns + int(rng.uniform(1e9, 5e9))
    out.append(
        _line(
            t,
            w0.host,
            0,
            "nccl",
            "info",
            f"{w0.host}:{w0.pid}:{w0.pid + 31} [0] NCCL INFO comm 0x55d1c3a0 rank 0 nranks {lay.world_size} cudaDev 0 nvmlDev 0 busId {w0.pci_bus[5:7]}000 commId 0x7d1f2c3e4b5a6978 - Init COMPLETE",
        )
    )
    out.extend(_fault_lines(lay, plan, gt, rng))
    out.extend(_confounder_lines(lay, plan, rng))
    out.sort(key=lambda x: (x["ts"], x["host"], x["message"]))
    return out


def _fault_lines(lay: Layout, plan: FaultPlan, gt: GroundTruth, rng: np.random.Generator) -> list[dict]:
    cat, out = plan.category, []
    if gt.window is None or not plan.is_fault:
        if cat == Category.WORKLOAD_SHIFT and gt.window is not None:
            for d in range(lay.task.dp):
                drv = lay.workers[lay.rank_of(d, 0, 0)]
                out.append(
                    _line(
                        gt.window.start_ns + int(rng.uniform(0, 2e9)),
                        drv.host,
                        drv.rank,
                        lay.task.engine,
                        "info",
                        f"{_engine_prefix(lay.task.engine, gt.window.start_ns, 'api_server.py:412')} Received request batch from tenant 'batch-summarize' (avg prompt {int(lay.task.prompt_tokens * float(plan.params['prompt_scale']))} tokens)",
                    )
                )
        return out
    assert plan.severity is not None, "a fault plan always has a severity (faults.make_plan)"
    w0, w1 = gt.window.start_ns, gt.window.end_ns
    sev = SEVERITY_INDEX[plan.severity]
    eng = lay.task.engine

    def when(k: int) -> list[int]:
        return sorted(int(x) for x in rng.integers(w0, max(w0 + 1, w1), size=k))

    for r in plan.affected_ranks:
        w = lay.workers[r]
        bus = w.pci_bus
        if cat == Category.GPU_THERMAL_THROTTLING:
            out.append(
                _line(
                    w0 + int(15e9),
                    w.host,
                    None,
                    "system",
                    "warning",
                    f"nv-hostengine[1502]: GPU {w.gpu} ({bus}): Clocks throttled: HW thermal slowdown active (GPU temperature {int(plan.params['temp_c'])} C)",
                )
            )
        elif cat == Category.GPU_POWER_OR_CLOCK_CAP:
            limit = 700 if lay.task.gpu in ("H100", "H200") else (1000 if lay.task.gpu == "B200" else 400)
            new = limit * float(plan.params["limit_ratio"])
            out.append(
                _line(
                    w0 - int(2e9),
                    w.host,
                    None,
                    "system",
                    "info",
                    f"nvidia-smi[{int(rng.integers(20000, 40000))}]: Power limit for GPU {bus.upper().replace('0000:', '00000000:')} was set to {new:.2f} W from {limit:.2f} W.",
                )
            )
        elif cat == Category.NVLINK_DEGRADATION:
            for t in when(2 + sev * 2):
                out.append(
                    _line(
                        t,
                        w.host,
                        None,
                        "kernel",
                        "error",
                        f"NVRM: Xid (PCI:{bus}): 74, pid='<unknown>', name=<unknown>, NVLink: fatal error detected on link {int(plan.params['nvlink'])}(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)"
                        if sev == 2 and t == w1
                        else f"NVRM: Xid (PCI:{bus}): 74, pid='<unknown>', name=<unknown>, NVLink: link {int(plan.params['nvlink'])} replay errors above threshold, CRC errors detected; link retrained",
                    )
                )
        elif cat == Category.PCIE_LINK_DEGRADATION:
            port = f"0000:{int(bus[5:7], 16) - 1:02x}:00.0"
            out.append(
                _line(
                    w0 + int(1e9),
                    w.host,
                    None,
                    "kernel",
                    "info",
                    f"nvidia {bus}: {[16, 8, 4][sev] * 8:.3f} Gb/s available PCIe bandwidth, limited by {['16.0', '8.0', '2.5'][sev]} GT/s PCIe x{[16, 16, 8][sev]} link at {port} (capable of 504.112 Gb/s with 32.0 GT/s PCIe x16 link)",
                )
            )
            for t in when(3 + 3 * sev):
                out.append(_line(t, w.host, None, "kernel", "warning", f"pcieport {port}: AER: Corrected error received: {bus}"))
                out.append(
                    _line(
                        t + 1000,
                        w.host,
                        None,
                        "kernel",
                        "warning",
                        f"nvidia {bus}: PCIe Bus Error: severity=Corrected, type=Physical Layer, (Receiver ID)",
                    )
                )
                out.append(
                    _line(
                        t + 2000,
                        w.host,
                        None,
                        "kernel",
                        "warning",
                        f"nvidia {bus}:   device [10de:2330] error status/mask=00000001/0000e000",
                    )
                )
        elif cat == Category.NETWORK_CONGESTION:
            for t in when(2 + 2 * sev):
                peer = f"10.20.{int(rng.integers(0, 4))}.{int(rng.integers(10, 60))}"
                out.append(
                    _line(
                        t,
                        w.host,
                        r,
                        "nccl",
                        "warning",
                        f"{w.host}:{w.pid}:{w.pid + 88} [{w.gpu}] NCCL WARN NET/IB : mlx5_{w.gpu % 4}:1 send to {peer} slow: completion took {int(rng.uniform(2, 40) * (sev + 1))} ms (retry count {int(rng.integers(1, 7))})",
                    )
                )
        elif cat == Category.HOST_CPU_CONTENTION:
            pass  # host-level lines below
        elif cat == Category.NUMA_MISBINDING:
            wrong = 1 - (w.numa_node % 2)
            out.append(
                _line(
                    w0 - int(1e9),
                    w.host,
                    r,
                    eng,
                    "info",
                    f"{_engine_prefix(eng, w0, 'worker.py:198')} Worker rank {r} pid {w.pid}: cpu affinity {wrong * 48}-{wrong * 48 + 47} (NUMA node {wrong}); GPU {w.gpu} ({bus}) is on NUMA node {w.numa_node}",
                )
            )
        elif cat == Category.GPU_HARDWARE_ERROR:
            xid = int(plan.params["xid"])
            text = {
                48: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.",
                63: "Row Remapper: New row marked for remapping, reset gpu to activate.",
                94: "Contained: SM (0x1). RST: No, D-RST: No",
            }[xid]
            for t in when(1 + sev):
                out.append(_line(t, w.host, None, "kernel", "error", f"NVRM: Xid (PCI:{bus}): {xid}, pid={w.pid}, name=python3, {text}"))
        elif cat == Category.RUNTIME_STALL:
            src = str(plan.params["stall_source"])
            for t in when(2 + sev):
                msg = {
                    "gc": f"GC pause: collected {int(rng.integers(80000, 400000))} objects in {float(plan.params['pause_ms']) * rng.uniform(0.8, 1.2):.1f} ms (generation 2)",
                    "gil": f"Worker rank {r}: main thread blocked {float(plan.params['pause_ms']) * rng.uniform(0.8, 1.2):.1f} ms waiting for the GIL (busy output thread)",
                    "detokenizer": f"Detokenizer backlog {int(rng.integers(200, 900))} requests; output processing took {float(plan.params['pause_ms']) * rng.uniform(0.8, 1.2):.1f} ms",
                }[src]
                out.append(_line(t, w.host, r, eng, "debug" if src == "gc" else "warning", msg))
    if cat == Category.HOST_CPU_CONTENTION:
        for host in plan.affected_hosts:
            out.append(
                _line(
                    w0 - int(3e9),
                    host,
                    None,
                    "system",
                    "info",
                    f"CRON[{int(rng.integers(10000, 60000))}]: (root) CMD (/opt/ops/bin/reindex-logs --threads 16 >/dev/null 2>&1)",
                )
            )
            out.append(
                _line(
                    w0 + int(20e9),
                    host,
                    None,
                    "kernel",
                    "warning",
                    "sched: RT throttling activated" if sev == 2 else "hrtimer: interrupt took 1530122 ns",
                )
            )
    if cat == Category.KV_CACHE_PRESSURE:
        drv = lay.workers[lay.rank_of(plan.replica, 0, 0)]
        total = 0
        for t in when(3 + 4 * sev):
            total += int(rng.integers(1, 4))
            msg = (
                f"WARNING {rfc3339(t)[5:10]} {rfc3339(t)[11:19]} [scheduler.py:1560] Sequence group cmpl-{int(rng.integers(10**9, 9 * 10**9)):x} is preempted by PreemptionMode.RECOMPUTE mode because there is not enough KV cache space. This can affect the end-to-end performance. Increase gpu_memory_utilization or tensor_parallel_size to provide more KV cache memory. total_num_cumulative_preemption={total}"
                if eng == "vllm"
                else f"[{rfc3339(t)[:10]} {rfc3339(t)[11:19]}] Decode out of memory happened. #retracted_reqs: {int(rng.integers(1, 5))}, #new_token_ratio: 0.3000 -> 0.5500"
            )
            out.append(_line(t, drv.host, drv.rank, eng, "warning", msg))
    if cat == Category.STORAGE_IO_STALL:
        what = str(plan.params["what"])
        for host in plan.affected_hosts:
            r = next(x for x in plan.affected_ranks if lay.workers[x].host == host)
            for t in when(1 + sev):
                msg = (
                    f"{_engine_prefix(eng, t, 'worker_manager.py:91')} Loading LoRA adapter 'tenant-{int(rng.integers(1, 40))}' from /mnt/shared/adapters (took {float(plan.params['stall_ms']) * rng.uniform(0.8, 1.3) / 1000:.2f} s)"
                    if what == "lora_adapter"
                    else f"{_engine_prefix(eng, t, 'cpu_gpu.py:140')} KV offload to /mnt/nvme/kv slow: {float(plan.params['stall_ms']) * rng.uniform(0.8, 1.3):.0f} ms for 512 blocks"
                )
                out.append(_line(t, host, r, eng, "warning", msg))
                out.append(
                    _line(
                        t + 5000,
                        host,
                        None,
                        "kernel",
                        "warning",
                        f"nvme nvme0: I/O {int(rng.integers(1, 1024))} QID {int(rng.integers(1, 64))} timeout, completion polled",
                    )
                )
    return out


def _confounder_lines(lay: Layout, plan: FaultPlan, rng: np.random.Generator) -> list[dict]:
    out = []
    for c in plan.confounders:
        if c.kind == "log_warning":
            src, lvl, msg = UNRELATED_WARNINGS[c.detail.get("variant", 0) % len(UNRELATED_WARNINGS)]
            out.append(_line(c.detail["start_ns"], c.hosts[0], c.ranks[0] if src == "nccl" else None, src, lvl, msg))
        elif c.kind == "metric_spike" and c.detail.get("variant", 0) % 2 == 0:
            out.append(
                _line(
                    c.detail["start_ns"] - int(1e9),
                    c.hosts[0],
                    None,
                    "system",
                    "info",
                    f"CRON[{int(rng.integers(10000, 60000))}]: (root) CMD (/usr/sbin/logrotate /etc/logrotate.conf)",
                )
            )
    return out


def write_logs(lines: list[dict], out: Path) -> Path:
    p = out / "logs.jsonl"
    with open(p, "wb") as fh:
        for line in lines:
            fh.write(orjson.dumps(line) + b"\n")
    return p
