"""The timing engine: runs each replica's engine steps on every rank and emits Kineto events.

Per rank there is a CPU thread clock (Python + framework ops + launches) and a GPU stream
clock. A kernel starts when both its launch has happened and the stream is free. Collective
physics: every member's collective kernel starts when *that* rank's stream reaches it; all
members finish together at (last arrival + transfer time), so the last to arrive shows the
shortest collective kernel and its peers show long ones (they wait).

Work is vectorised over the tensor-parallel ranks of one pipeline stage; replicas (dp) run
independently, stages hand hidden states on with send/recv.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from kat.evals.simulate import kernels as K
from kat.evals.simulate.costs import CostModel, Shapes, graph_size
from kat.evals.simulate.faults import FaultPlan
from kat.evals.simulate.topology import Layout
from kat.evals.simulate.trace_writer import RankTraceWriter
from kat.evals.simulate.workload import Workload

COMPUTE_STREAM = 7
NCCL_STREAM = 24
STEP_OFFSET = 0  # ProfilerStep#N numbering of the first captured step

# Framework-op CPU cost (us) including its launch call, eager mode.
CPU_US = {
    "embed": 8.0,
    "norm": 7.0,
    "qkv": 9.0,
    "rotary": 7.0,
    "cache": 8.0,
    "attn": 14.0,
    "o_proj": 9.0,
    "gate_up": 9.0,
    "act": 6.0,
    "down": 9.0,
    "final_norm": 7.0,
    "lm_head": 9.0,
    "softmax": 6.0,
    "argmax": 6.0,
}
LAYER_OPS = ("norm", "qkv", "rotary", "cache", "attn", "o_proj", "AR", "norm", "gate_up", "act", "down", "AR")
GEMMS = {"qkv", "o_proj", "gate_up", "down", "lm_head"}


# (tokens, prefill, context, seqs, captured graph size or None) of one replica's step
StepShape = tuple[int, int, int, int, int | None]
# A posted pipeline receive: (cpu, cpu cost, runtime start) of its launch, per rank
RecvLaunch = tuple[np.ndarray, np.ndarray, np.ndarray]
KernelTimer = Callable[[str], np.ndarray]


def _js(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _x(cat: str, name_js: str, pid: int, tid: int, s: int, e: int, args: str | None = None) -> str:
    a = f',"args":{args}' if args else ""
    return f'{{"ph":"X","cat":"{cat}","name":{name_js},"pid":{pid},"tid":{tid},"ts":{s / 1000:.3f},"dur":{(e - s) / 1000:.3f}{a}}}'


def _us_pair(start: np.ndarray, end: np.ndarray) -> tuple[list[float], list[float]]:
    """Start and duration in microseconds (3 decimals = whole ns), rounded as the importer reads them."""
    s = np.rint(start)
    return (s / 1000.0).tolist(), ((np.rint(end) - s) / 1000.0).tolist()


@dataclass
class SimResult:
    """What metrics, logs and ground truth need from the run (times are ns from base)."""

    step_start: np.ndarray  # [steps, world]
    step_end: np.ndarray  # [steps, world]
    busy: np.ndarray  # [steps, world] GPU busy ns
    coll_wait: np.ndarray  # [steps, world] ns in collectives beyond the pure transfer
    h2d_ns: np.ndarray  # [steps, world]
    tokens: np.ndarray  # [steps, dp]
    seqs: np.ndarray  # [steps, dp]
    prefill: np.ndarray  # [steps, dp]
    events: list[int] = field(default_factory=list)

    @property
    def trace_start(self) -> int:
        return int(np.rint(self.step_start.min()))

    @property
    def trace_end(self) -> int:
        return int(np.rint(self.step_end.max()))


class _Rank:
    """Per-rank emission state: ids, pid/device, event buffer."""

    __slots__ = ("rank", "pid", "dev", "ext", "corr", "out", "pg_tp", "pg_pp")

    def __init__(self, rank: int, pid: int, dev: int, writer: RankTraceWriter | None):
        self.rank, self.pid, self.dev = rank, pid, dev
        self.ext, self.corr = 0, 100
        self.out = writer
        self.pg_tp = self.pg_pp = ""


class Simulator:
    def __init__(
        self,
        lay: Layout,
        plan: FaultPlan,
        wl: Workload,
        rng: np.random.Generator,
        writers: dict[int, RankTraceWriter],
        pg_args: dict[int, dict[str, dict]],
        layers_per_stage: int,
        flows: bool = True,
        nccl_version: str = "2.26.2",
        replicas: list[int] | None = None,
        replica_rng: Callable[[int], np.random.Generator] | None = None,
    ):
        # `replica_rng` gives each replica its own stream, so a process can simulate a subset
        # of `replicas` and still get the same numbers as a run over all of them.
        self.replicas = list(range(lay.task.dp)) if replicas is None else replicas
        self.replica_rng = replica_rng
        self.lay, self.task, self.plan, self.wl, self.rng = lay, lay.task, plan, wl, rng
        self.eff = plan.effects
        self.cost = CostModel(lay.task)
        self.sh = Shapes.of(lay.task)
        self.flows = flows
        self.nccl_allreduce = _js(K.nccl_kernel(K.NCCL_ALLREDUCE, nccl_version))
        self.nccl_sendrecv = _js(K.nccl_kernel(K.NCCL_SENDRECV, nccl_version))
        self.fr = K.frames(lay.task.engine, lay.task.model_spec.arch)
        self.kn = {k: _js(v) for k, v in K.kernel_names(lay.task.engine, lay.task.gpu).items()}
        self.names = {k: _js(getattr(self.fr, k)) for k in self.fr.__dataclass_fields__}
        # Ranks without a writer are simulated (collectives need them) but not emitted: parallel
        # writers each run the same deterministic simulation and format only their own ranks.
        self.rk = [_Rank(w.rank, w.pid, w.gpu, writers.get(w.rank)) for w in lay.workers]
        self.emit = [w.rank in writers for w in lay.workers]
        self.pg = pg_args
        n, world = wl.n_steps, lay.world_size
        self.res = SimResult(
            np.zeros((n, world)),
            np.zeros((n, world)),
            np.zeros((n, world)),
            np.zeros((n, world)),
            np.zeros((n, world)),
            np.zeros((n, lay.task.dp), np.int64),
            np.zeros((n, lay.task.dp), np.int64),
            np.zeros((n, lay.task.dp), np.int64),
        )
        self.speed = 1.0 + rng.normal(0.0, 0.008, size=world)  # silicon lottery: static per-GPU spread
        self.layers_per_stage = layers_per_stage
        self.tp_cross = [lay.group_crosses_hosts(g) for g in lay.tp_groups]

    # ---- small helpers -------------------------------------------------------------
    def _cpu(self, base_us: float, ranks: np.ndarray, s: int) -> np.ndarray:
        f = self.eff.cpu[s, ranks]
        c = base_us * 1000.0 * self.rng.lognormal(0.0, 0.12, size=len(ranks)) * f
        spiky = self.eff.cpu_spiky[s, ranks]
        if spiky.any():
            c = np.where(spiky, c * self.rng.lognormal(0.0, 0.55, size=len(ranks)), c)
        return c

    @staticmethod
    def _i(a: np.ndarray) -> list[int]:
        return np.rint(a).astype(np.int64).tolist()

    def _dims(self, key: str, t: int) -> str:
        sh = self.sh
        if key in GEMMS:
            k, n = {
                "qkv": (sh.hidden, sh.qkv_n),
                "o_proj": (sh.attn_out_k, sh.hidden),
                "gate_up": (sh.hidden, sh.gate_up_n),
                "down": (sh.down_k, sh.hidden),
                "lm_head": (sh.hidden, sh.vocab_n),
            }[key]
            return f'"Input Dims":[[{t},{k}],[{k},{n}]],"Input type":["c10::BFloat16","c10::BFloat16"]'
        if key in ("norm", "final_norm"):
            return (
                f'"Input Dims":[[{t},{sh.hidden}],[{t},{sh.hidden}],[{sh.hidden}],[]],'
                '"Input type":["c10::BFloat16","c10::BFloat16","c10::BFloat16","Scalar"]'
            )
        if key == "attn":
            q = sh.q_heads * sh.head_dim
            kv = sh.kv_heads * sh.head_dim
            return (
                f'"Input Dims":[[{t},{q}],[{t},{kv}],[{t},{kv}],[{t},{q}]],'
                '"Input type":["c10::BFloat16","c10::BFloat16","c10::BFloat16","c10::BFloat16"]'
            )
        if key == "act":
            return f'"Input Dims":[[{t},{sh.down_k}],[{t},{sh.gate_up_n}]],"Input type":["c10::BFloat16","c10::BFloat16"]'
        return f'"Input Dims":[[{t}],[{t},{sh.hidden}]],"Input type":["long int","c10::BFloat16"]'

    def _op_name(self, key: str) -> str:
        if key in GEMMS:
            return '"aten::mm"'
        return {
            "norm": self.names["norm_op"],
            "final_norm": self.names["norm_op"],
            "rotary": self.names["rotary_op"],
            "cache": self.names["cache_op"],
            "attn": self.names["attn_op"],
            "act": self.names["act_op"],
            "embed": '"aten::embedding"',
            "softmax": '"aten::softmax"',
            "argmax": '"aten::argmax"',
        }[key]

    def _kernel_name(self, key: str, t: int, prefill: int) -> str:
        kn = self.kn
        if key in GEMMS:
            return kn["gemm_small"] if t <= 64 else kn["gemm_large"]
        if key == "attn":
            return kn["attn_prefill"] if prefill else kn["attn_decode"]
        if key == "final_norm":
            return kn["norm"]
        return kn[key]

    # ---- emission of common patterns ------------------------------------------------
    def _py(self, ranks: list[int], name_js: str, s: np.ndarray, e: np.ndarray) -> None:
        si, ei = self._i(s), self._i(e)
        for j, r in enumerate(ranks):
            rk = self.rk[r]
            out = rk.out
            if out is None:  # simulated for the collectives, emitted by another writer
                continue
            out.add(_x("python_function", name_js, rk.pid, rk.pid, si[j], ei[j]))

    def _launch(
        self,
        ranks: list[int],
        op_js: str,
        op_args: str,
        op_s: np.ndarray,
        op_e: np.ndarray,
        rt_s: np.ndarray,
        rt_e: np.ndarray,
        k_js: str,
        k_s: np.ndarray,
        k_e: np.ndarray,
        stream: int,
        cat: str = "kernel",
        kargs: str = "",
        rt_name: str = '"cudaLaunchKernel"',
    ) -> None:
        """cpu_op > cuda_runtime launch > GPU event, linked by correlation / External id (one string per rank)."""
        os_, od = _us_pair(op_s, op_e)
        rs, rd = _us_pair(rt_s, rt_e)
        ks, kd = _us_pair(k_s, k_e)
        flows = self.flows
        for j, r in enumerate(ranks):
            rk = self.rk[r]
            out = rk.out
            if out is None:  # simulated for the collectives, emitted by another writer
                continue
            rk.ext += 1
            rk.corr += 1
            ext, c, pid, dev = rk.ext, rk.corr, rk.pid, rk.dev
            text = (
                f'{{"ph":"X","cat":"cpu_op","name":{op_js},"pid":{pid},"tid":{pid},"ts":{os_[j]:.3f},"dur":{od[j]:.3f},'
                f'"args":{{"External id":{ext},{op_args}}}}},'
                f'{{"ph":"X","cat":"cuda_runtime","name":{rt_name},"pid":{pid},"tid":{pid},"ts":{rs[j]:.3f},"dur":{rd[j]:.3f},'
                f'"args":{{"External id":{ext},"cbid":211,"correlation":{c}}}}},'
                f'{{"ph":"X","cat":"{cat}","name":{k_js},"pid":{dev},"tid":{stream},"ts":{ks[j]:.3f},"dur":{kd[j]:.3f},'
                f'"args":{{"External id":{ext},"device":{dev},"context":1,"stream":{stream},"correlation":{c}{kargs}}}}}'
            )
            if flows:
                text += (
                    f',{{"ph":"s","id":{c},"pid":{pid},"tid":{pid},"ts":{rs[j]:.3f},"cat":"ac2g","name":"ac2g"}},'
                    f'{{"ph":"f","id":{c},"pid":{dev},"tid":{stream},"ts":{ks[j]:.3f},"cat":"ac2g","name":"ac2g","bp":"e"}}'
                )
                out.add(text, 5)
            else:
                out.add(text, 3)

    def _copy(
        self,
        ranks: list[int],
        dims: str,
        op_s: np.ndarray,
        op_e: np.ndarray,
        rt_s: np.ndarray,
        rt_e: np.ndarray,
        k_js: str,
        k_s: np.ndarray,
        k_e: np.ndarray,
        nbytes: int,
    ) -> None:
        """aten::copy_ > cudaMemcpyAsync > the memcpy on the compute stream (host <-> device copies)."""
        self._launch(
            ranks,
            '"aten::copy_"',
            dims,
            op_s,
            op_e,
            rt_s,
            rt_e,
            k_js,
            k_s,
            k_e,
            COMPUTE_STREAM,
            cat="gpu_memcpy",
            kargs=f',"bytes":{nbytes}',
            rt_name='"cudaMemcpyAsync"',
        )

    def _coll_args(self, rank: int, coll: str, nelems: int, group: str) -> str:
        pg = self.pg[rank][group]
        return (
            f'"Collective name":"{coll}","In msg nelems":{nelems},"Out msg nelems":{nelems},'
            f'"Group size":{pg["size"]},"dtype":"BFloat16","In split size":"[]","Out split size":"[]",'
            f'"Process Group Name":"{pg["name"]}","Process Group Description":"{pg["desc"]}",'
            f'"Process Group Ranks":"{pg["ranks"]}"'
        )

    # ---- the run --------------------------------------------------------------------
    def run(self, t0: float) -> SimResult:
        for d in self.replicas:
            if self.replica_rng is not None:
                self.rng = self.replica_rng(d)
            self._run_replica(d, t0 + float(self.rng.uniform(0.0, 2.0e6)))
        self.res.events = [rk.out.count + rk.out.pending if rk.out else 0 for rk in self.rk]
        return self.res

    def _run_replica(self, d: int, t_start: float) -> None:
        task, lay = self.task, self.lay
        pp, tp = task.pp, task.tp
        stage_ranks = [np.array([lay.rank_of(d, p, t) for t in range(tp)]) for p in range(pp)]
        gpu = [np.full(tp, t_start) for _ in range(pp)]
        t_step = t_start
        for s in range(self.wl.n_steps):
            seqs = max(1, int(round(self.wl.seqs[s, d] * self.eff.seq_scale[s, d])))
            prefill = int(self.wl.prefill[s, d] + self.eff.extra_prefill[s, d])
            context = int(self.wl.context[s, d] * seqs / max(1, self.wl.seqs[s, d]))
            tokens = seqs + prefill
            g = graph_size(tokens) if task.mode == "cuda_graph" and prefill == 0 else None
            self.res.tokens[s, d], self.res.seqs[s, d], self.res.prefill[s, d] = tokens, seqs, prefill
            shape = (tokens, prefill, context, seqs, g)
            cpu, execs, recv_arr, recv_launch = [], [], {}, {}
            for p in range(pp):
                c, ra, ex = self._prelude(s, d, p, stage_ranks[p], t_step, gpu[p], shape)
                cpu.append(c)
                execs.append(ex)
                if ra is not None:
                    recv_arr[p], recv_launch[p] = ra
            ends = []
            for p in range(pp):
                end = self._body(s, d, p, stage_ranks, cpu[p], execs[p], gpu, shape, recv_arr, recv_launch)
                ends.append(end)
            t_step = max(float(e.max()) for e in ends) + float(self.rng.uniform(40e3, 120e3))

    # ---- one step, one stage -------------------------------------------------------------
    def _prelude(
        self, s: int, d: int, p: int, ranks: np.ndarray, t_step: float, gpu: np.ndarray, shape: StepShape
    ) -> tuple[np.ndarray, tuple[np.ndarray, RecvLaunch] | None, np.ndarray]:
        tokens, prefill, context, seqs, g = shape
        fr = self.names
        rl = ranks.tolist()
        tp = len(rl)
        self.res.step_start[s, ranks] = t_step
        driver = p == 0
        sched = (150e3 + 1.2e3 * seqs + 0.02e3 * prefill) * float(self.eff.cpu[s, ranks[0]] if driver else 1.0)
        exec_start = t_step + sched + self.rng.uniform(4e3, 20e3, size=tp)
        # Scheduler runs on the driver worker; the others wait for its broadcast.
        st = np.full(tp, t_step + 2e3)
        if driver:
            self._py(rl[:1], fr["schedule"], st[:1], st[:1] + sched)
            if tp > 1:
                self._py(rl[1:], fr["dequeue"], st[1:], exec_start[1:] - 1e3)
        else:
            self._py(rl, fr["dequeue"], st, exec_start - 1e3)
        cpu = exec_start + 2e3
        pause = self.eff.pause_ns[s, ranks]
        cpu = cpu + pause  # runtime stall: an untraced pause (GC, GIL) at the top of execute_model
        storage = self.eff.storage_ns[s, ranks]
        if storage.any():
            idx = np.flatnonzero(storage > 0)
            rs = [rl[i] for i in idx]
            a = cpu[idx]
            read_end = a + 3e3 + storage[idx]
            nbytes = 64 << 20
            cp = self.cost.copy_ns(nbytes) * self.eff.h2d[s, ranks[idx]]
            k_s = np.maximum(read_end + 12e3, gpu[idx])
            k_e = k_s + cp
            self._py(rs, fr["storage_load"], a, k_e + 6e3)
            self._py(rs, fr["storage_read"], a + 2e3, read_end)
            self._copy(
                rs,
                f'"Input Dims":[[{nbytes // 2}],[{nbytes // 2}]],"Input type":["c10::BFloat16","c10::BFloat16"]',
                read_end + 4e3,
                k_e + 5e3,
                read_end + 8e3,
                k_e + 3e3,
                _js(K.MEMCPY_H2D_PAGEABLE),
                k_s,
                k_e,
                nbytes,
            )
            gpu[idx] = k_e
            cpu[idx] = k_e + 8e3
            self.res.busy[s, ranks[idx]] += cp
        # _prepare_inputs: token ids, positions, block tables / slot mapping go host -> device.
        prep_s = cpu.copy()
        for nbytes in (8 * tokens, 8 * tokens, 4 * seqs * max(1, context // max(1, seqs) // 16) + 8 * tokens):
            c = self._cpu(9.0, ranks, s)
            rt_s = cpu + 0.35 * c
            rt_e = rt_s + 0.45 * c
            dur = self.cost.copy_ns(nbytes) * self.eff.h2d[s, ranks] * self.rng.lognormal(0, 0.05, size=tp)
            k_s = np.maximum(rt_s + 2e3, gpu)
            k_e = k_s + dur
            self._copy(
                rl,
                f'"Input Dims":[[{tokens}],[{tokens}]],"Input type":["long int","long int"]',
                cpu,
                cpu + c,
                rt_s,
                rt_e,
                _js(K.MEMCPY_H2D),
                k_s,
                k_e,
                nbytes,
            )
            gpu[:] = k_e
            self.res.busy[s, ranks] += dur
            self.res.h2d_ns[s, ranks] += dur
            cpu = cpu + c + 1.5e3
        self._py(rl, fr["prepare"], prep_s - 1e3, cpu)
        swap = int(self.eff.kv_swap_bytes[s, d])
        if swap:
            nbytes = swap // tp
            c = self._cpu(12.0, ranks, s)
            dur = self.cost.copy_ns(nbytes) * self.eff.h2d[s, ranks]
            k_s = np.maximum(cpu + 0.4 * c + 2e3, gpu)
            k_e = k_s + dur
            self._py(rl, fr["kv_swap"], cpu - 1e3, cpu + c + 1e3)
            self._copy(
                rl,
                f'"Input Dims":[[{nbytes // 2}],[{nbytes // 2}]],"Input type":["c10::BFloat16","c10::BFloat16"]',
                cpu,
                cpu + c,
                cpu + 0.4 * c,
                cpu + 0.8 * c,
                _js(K.MEMCPY_D2H_PINNED),
                k_s,
                k_e,
                nbytes,
            )
            gpu[:] = k_e
            self.res.busy[s, ranks] += dur
            cpu = cpu + c + 2e3
        recv = None
        if p > 0:
            # Launch the receive of the previous stage's hidden states; it completes in _body(p-1).
            c = self._cpu(16.0, ranks, s)
            rt_s = cpu + 0.6 * c
            arrival = np.maximum(rt_s + 2e3, gpu)
            recv = (arrival, (cpu, c, rt_s))
            cpu = cpu + c + 2e3
        # execute_model opens after the scheduler/dequeue span; a runtime-stall pause sits inside it.
        return cpu, recv, exec_start + 1e3

    def _body(
        self,
        s: int,
        d: int,
        p: int,
        stage_ranks: list[np.ndarray],
        cpu: np.ndarray,
        exec_start: np.ndarray,
        gpu: list[np.ndarray],
        shape: StepShape,
        recv_arr: dict[int, np.ndarray],
        recv_launch: dict[int, RecvLaunch],
    ) -> np.ndarray:
        """One stage's forward pass of step `s`, then sampling (last stage) or the send to the next stage."""
        tokens, prefill, context, seqs, g = shape
        ranks = stage_ranks[p]
        rl = ranks.tolist()
        last = p == self.task.pp - 1
        kt = g or tokens  # graphs run the padded batch they were captured for
        if p > 0 and p not in recv_arr:
            raise AssertionError("receive not posted")
        kernel_dur = self._kernel_timer(s, ranks, kt, prefill, context, seqs)
        ar_ns = self._allreduce_ns(s, ranks, kt)
        nelems = kt * self.sh.hidden
        keys = self._stage_keys(p, len(rl), last)
        ops = self._eager_ops if g is None else self._graph_ops
        cpu = ops(s, ranks, keys, cpu, gpu[p], kernel_dur, ar_ns, nelems, kt, prefill)
        if last:
            cpu = self._sample(s, ranks, cpu, gpu, p, kernel_dur, ar_ns, nelems, seqs)
        else:
            cpu = self._send_to_next(s, p, stage_ranks, cpu, gpu, kt, recv_arr, recv_launch)
        return self._close_step(s, ranks, exec_start, cpu)

    def _kernel_timer(self, s: int, ranks: np.ndarray, kt: int, prefill: int, context: int, seqs: int) -> Callable[[str], np.ndarray]:
        """Duration of the stage's next kernel of a kind, per rank: cost x slowdowns x noise, plus stalls."""
        dur = {key: self.cost.kernel_ns(key, kt, prefill, context, seqs) for key in CPU_US}
        comp = self.eff.compute[s, ranks] * self.speed[ranks]
        stall_p = self.eff.stall_prob[s, ranks]
        stall_at = self.eff.stall_at[s, ranks]
        tp = len(ranks)
        ordinal = [0]

        def kernel_dur(key: str) -> np.ndarray:
            k = dur[key] * comp * self.rng.lognormal(0.0, 0.03, size=tp)
            if stall_p.any():
                hit = self.rng.random(tp) < stall_p
                k = k + np.where(hit, self.eff.stall_ns * self.rng.lognormal(0.0, 0.5, size=tp), 0.0)
            if (stall_at >= 0).any():
                k = k + np.where(stall_at == ordinal[0], self.eff.stall_ns, 0.0)
            ordinal[0] += 1
            return k

        return kernel_dur

    def _allreduce_ns(self, s: int, ranks: np.ndarray, kt: int) -> float:
        """The TP group's all-reduce time, slowed by the worst link it crosses."""
        rl = ranks.tolist()
        tp_idx = next(i for i, grp in enumerate(self.lay.tp_groups) if grp[0] == rl[0])
        cross = self.tp_cross[tp_idx]
        link = float(self.eff.link_intra[s, ranks].max())
        if cross:
            hosts = sorted({self.lay.workers[r].host_index for r in rl})
            link = max(link, float(self.eff.link_inter[s, hosts].max()))
        return self.cost.allreduce_ns(kt, len(rl), cross) * link

    def _stage_keys(self, p: int, tp: int, last: bool) -> list[str]:
        """The ops of one stage in order; "|" marks a layer boundary."""
        keys: list[str] = []
        if p == 0:
            keys.append("embed")
        for _ in range(self.layers_per_stage):
            keys.extend(LAYER_OPS if tp > 1 else [k for k in LAYER_OPS if k != "AR"])
            keys.append("|")
        if last:
            keys.append("final_norm")
        return keys

    def _sample(
        self,
        s: int,
        ranks: np.ndarray,
        cpu: np.ndarray,
        gpu: list[np.ndarray],
        p: int,
        kernel_dur: KernelTimer,
        ar_ns: float,
        nelems: int,
        seqs: int,
    ) -> np.ndarray:
        """The last stage: lm_head, softmax, argmax, and the sampled ids copied back to the host."""
        rl = ranks.tolist()
        samp_s = cpu.copy()
        cpu = self._eager_ops(s, ranks, ["lm_head", "softmax", "argmax"], cpu, gpu[p], kernel_dur, ar_ns, nelems, seqs, 0)
        # Sampled token ids go back to the host: a pageable copy, so the CPU waits for the GPU.
        nbytes = 8 * seqs
        c = self._cpu(8.0, ranks, s)
        rt_s = cpu + 0.3 * c
        k_s = np.maximum(rt_s + 2e3, gpu[p])
        cp = self.cost.copy_ns(nbytes) * self.eff.h2d[s, ranks]
        k_e = k_s + cp
        rt_e = k_e + 3e3
        self._copy(
            rl,
            f'"Input Dims":[[{seqs}],[{seqs}]],"Input type":["long int","long int"]',
            cpu,
            rt_e + 2e3,
            rt_s,
            rt_e,
            _js(K.MEMCPY_D2H),
            k_s,
            k_e,
            nbytes,
        )
        gpu[p] = k_e
        self.res.busy[s, ranks] += cp
        cpu = rt_e + 3e3
        self._py(rl, self.names["sampler"], samp_s - 1e3, cpu)
        return cpu

    def _send_to_next(
        self,
        s: int,
        p: int,
        stage_ranks: list[np.ndarray],
        cpu: np.ndarray,
        gpu: list[np.ndarray],
        kt: int,
        recv_arr: dict[int, np.ndarray],
        recv_launch: dict[int, RecvLaunch],
    ) -> np.ndarray:
        """Pipeline send of the hidden states to stage p+1 (completing its posted receive), then sync."""
        ranks, nxt = stage_ranks[p], stage_ranks[p + 1]
        rl = ranks.tolist()
        c = self._cpu(16.0, ranks, s)
        rt_s = cpu + 0.6 * c
        arrival = np.maximum(rt_s + 2e3, gpu[p])
        r_arr = recv_arr[p + 1]
        w = self.lay.workers
        crosses = np.array([w[a].host != w[b].host for a, b in zip(rl, nxt.tolist())])
        f = np.where(
            crosses,
            np.maximum(
                self.eff.link_inter[s, [w[a].host_index for a in rl]], self.eff.link_inter[s, [w[b].host_index for b in nxt.tolist()]]
            ),
            np.maximum(self.eff.link_intra[s, ranks], self.eff.link_intra[s, nxt]),
        )
        xfer = np.array([self.cost.p2p_ns(kt, bool(x)) for x in crosses]) * f
        end = np.maximum(arrival, r_arr) + xfer
        self._emit_p2p(rl, "send", cpu, c, rt_s, arrival, end, kt, p)
        rc_cpu, rc_c, rc_rt = recv_launch[p + 1]
        self._emit_p2p(nxt.tolist(), "recv", rc_cpu, rc_c, rc_rt, r_arr, end, kt, p + 1)
        self.res.busy[s, ranks] += end - arrival
        self.res.busy[s, nxt] += end - r_arr
        self.res.coll_wait[s, ranks] += np.maximum(0.0, r_arr - arrival)
        self.res.coll_wait[s, nxt] += np.maximum(0.0, arrival - r_arr)
        gpu[p] = end
        gpu[p + 1] = np.maximum(gpu[p + 1], end)
        cpu = cpu + c + 2e3
        # The worker returns its output only once the send has drained.
        sync_e = np.maximum(cpu + 3e3, gpu[p] + 2e3)
        for j, r in enumerate(rl):
            rk = self.rk[r]
            out = rk.out
            if out is None:  # simulated for the collectives, emitted by another writer
                continue
            out.add(
                _x("cuda_runtime", '"cudaStreamSynchronize"', rk.pid, rk.pid, int(round(cpu[j])), int(round(sync_e[j])), '{"cbid":131}')
            )
        return sync_e + 2e3

    def _close_step(self, s: int, ranks: np.ndarray, exec_start: np.ndarray, cpu: np.ndarray) -> np.ndarray:
        """execute_model's span and the ProfilerStep annotation around the whole step."""
        rl = ranks.tolist()
        end = cpu + 5e3
        self._py(rl, self.names["execute"], exec_start, end)
        step_end = end + 4e3
        self.res.step_end[s, ranks] = step_end
        se, ss = self._i(step_end), self._i(self.res.step_start[s, ranks])
        name = _js(f"ProfilerStep#{s + STEP_OFFSET}")
        for j, r in enumerate(rl):
            rk = self.rk[r]
            out = rk.out
            if out is None:  # simulated for the collectives, emitted by another writer
                continue
            rk.ext += 1
            out.add(_x("user_annotation", name, rk.pid, rk.pid, ss[j], se[j], f'{{"External id":{rk.ext}}}'))
        return step_end

    def _emit_p2p(
        self,
        rl: list[int],
        kind: str,
        cpu: np.ndarray,
        c: np.ndarray,
        rt_s: np.ndarray,
        arrival: np.ndarray,
        end: np.ndarray,
        kt: int,
        stage: int,
    ) -> None:
        fr = self.names
        py = fr["pp_send_py"] if kind == "send" else fr["pp_recv_py"]
        self._py(rl, py, cpu - 1e3, cpu + c + 1e3)
        args = [self._coll_args(r, kind, kt * self.sh.hidden * 2, "pp") for r in rl]
        lists = [self._i(a) for a in (cpu, cpu + c, rt_s, rt_s + 0.3 * c, arrival, end)]
        kn = self.nccl_sendrecv
        for j, r in enumerate(rl):
            rk = self.rk[r]
            out = rk.out
            if out is None:  # simulated for the collectives, emitted by another writer
                continue
            os_, oe, rs, re_, ks, ke = (x[j] for x in lists)
            rk.ext += 1
            rk.corr += 1
            ext, cc = rk.ext, rk.corr
            a = args[j]
            add = out.add
            add(_x("cpu_op", '"record_param_comms"', rk.pid, rk.pid, os_, oe, f'{{"External id":{ext},{a}}}'))
            add(_x("cuda_runtime", '"cudaLaunchKernel"', rk.pid, rk.pid, rs, re_, f'{{"External id":{ext},"cbid":211,"correlation":{cc}}}'))
            add(
                _x(
                    "kernel",
                    kn,
                    rk.dev,
                    NCCL_STREAM,
                    ks,
                    ke,
                    f'{{"External id":{ext},"device":{rk.dev},"context":1,"stream":{NCCL_STREAM},"correlation":{cc},{a}}}',
                )
            )

    def _eager_ops(
        self,
        s: int,
        ranks: np.ndarray,
        keys: list[str],
        cpu: np.ndarray,
        gpu: np.ndarray,
        kernel_dur: KernelTimer,
        ar_ns: float,
        nelems: int,
        kt: int,
        prefill: int,
    ) -> np.ndarray:
        rl = ranks.tolist()
        tp = len(rl)
        fr = self.names
        layer_s = cpu.copy()
        for key in keys:
            if key == "|":
                self._py(rl, fr["layer"], layer_s - 1e3, cpu)
                layer_s = cpu.copy()
                continue
            if key == "AR":
                c_py = self._cpu(4.0, ranks, s)
                c = self._cpu(14.0, ranks, s)
                op_s = cpu + c_py
                rt_s = op_s + 0.65 * c
                rt_e = rt_s + 0.25 * c
                arrival = np.maximum(rt_s + 2e3, gpu)
                end = arrival.max() + ar_ns * self.rng.lognormal(0.0, 0.02)
                args = [self._coll_args(r, "allreduce", nelems, "tp") for r in rl]
                self._emit_ar(rl, op_s, op_s + c, rt_s, rt_e, arrival, np.full(tp, end), kt, args)
                self._py(rl, fr["all_reduce_py"], cpu, op_s + c + 1e3)
                self.res.busy[s, ranks] += end - arrival
                self.res.coll_wait[s, ranks] += end - arrival - ar_ns
                gpu[:] = end
                cpu = op_s + c + 2.5e3
                continue
            c = self._cpu(CPU_US[key], ranks, s)
            rt_s = cpu + 0.45 * c
            rt_e = rt_s + 0.35 * c
            k_s = np.maximum(rt_s + 2e3, gpu)
            kd = kernel_dur(key)
            k_e = k_s + kd
            self._launch(
                rl,
                self._op_name(key),
                self._dims(key, kt),
                cpu,
                cpu + c,
                rt_s,
                rt_e,
                self._kernel_name(key, kt, prefill),
                k_s,
                k_e,
                COMPUTE_STREAM,
            )
            gpu[:] = k_e
            self.res.busy[s, ranks] += kd
            cpu = cpu + c + 1.5e3
        return cpu

    def _emit_ar(
        self,
        rl: list[int],
        op_s: np.ndarray,
        op_e: np.ndarray,
        rt_s: np.ndarray,
        rt_e: np.ndarray,
        k_s: np.ndarray,
        k_e: np.ndarray,
        kt: int,
        args: list[str],
    ) -> None:
        """framework all-reduce op > record_param_comms (torch's collective args) > launch > NCCL kernel."""
        op_js = self.names["all_reduce_op"]
        os_, od = _us_pair(op_s, op_e)
        ps, pd_ = _us_pair(op_s + 500, op_e - 300)
        rs, rd = _us_pair(rt_s, rt_e)
        ks, kd = _us_pair(k_s, k_e)
        kn = self.nccl_allreduce
        dims = f'"Input Dims":[[{kt},{self.sh.hidden}]],"Input type":["c10::BFloat16"]'
        flows = self.flows
        for j, r in enumerate(rl):
            rk = self.rk[r]
            out = rk.out
            if out is None:  # simulated for the collectives, emitted by another writer
                continue
            rk.ext += 2
            rk.corr += 1
            ext, cc, pid, dev = rk.ext, rk.corr, rk.pid, rk.dev
            a = args[j]
            text = (
                f'{{"ph":"X","cat":"cpu_op","name":{op_js},"pid":{pid},"tid":{pid},"ts":{os_[j]:.3f},"dur":{od[j]:.3f},'
                f'"args":{{"External id":{ext - 1},{dims}}}}},'
                f'{{"ph":"X","cat":"cpu_op","name":"record_param_comms","pid":{pid},"tid":{pid},"ts":{ps[j]:.3f},"dur":{pd_[j]:.3f},'
                f'"args":{{"External id":{ext},{a},{dims}}}}},'
                f'{{"ph":"X","cat":"cuda_runtime","name":"cudaLaunchKernel","pid":{pid},"tid":{pid},"ts":{rs[j]:.3f},"dur":{rd[j]:.3f},'
                f'"args":{{"External id":{ext},"cbid":211,"correlation":{cc}}}}},'
                f'{{"ph":"X","cat":"kernel","name":{kn},"pid":{dev},"tid":{NCCL_STREAM},"ts":{ks[j]:.3f},"dur":{kd[j]:.3f},'
                f'"args":{{"External id":{ext},"device":{dev},"context":1,"stream":{NCCL_STREAM},"correlation":{cc},{a}}}}}'
            )
            if flows:
                text += (
                    f',{{"ph":"s","id":{cc},"pid":{pid},"tid":{pid},"ts":{rs[j]:.3f},"cat":"ac2g","name":"ac2g"}},'
                    f'{{"ph":"f","id":{cc},"pid":{dev},"tid":{NCCL_STREAM},"ts":{ks[j]:.3f},"cat":"ac2g","name":"ac2g","bp":"e"}}'
                )
                out.add(text, 6)
            else:
                out.add(text, 4)

    def _graph_ops(
        self,
        s: int,
        ranks: np.ndarray,
        keys: list[str],
        cpu: np.ndarray,
        gpu: np.ndarray,
        kernel_dur: KernelTimer,
        ar_ns: float,
        nelems: int,
        kt: int,
        prefill: int,
    ) -> np.ndarray:
        """One cudaGraphLaunch replays the stage's layers: every kernel shares its correlation."""
        rl = ranks.tolist()
        tp = len(rl)
        fr = self.names
        c = self._cpu(28.0, ranks, s)
        rt_s = cpu + 0.3 * c
        rt_e = rt_s + 0.55 * c
        t = np.maximum(rt_s + 3e3, gpu)
        per_rank: list[list[str]] = [[] for _ in rl]
        ext_corr = [(0, 0)] * len(rl)
        for j, r in enumerate(rl):
            rk = self.rk[r]
            out = rk.out
            if out is None:  # simulated for the collectives, emitted by another writer
                continue
            rk.ext += 1
            rk.corr += 1
            ext_corr[j] = (rk.ext, rk.corr)
        for key in keys:
            if key == "|":
                continue
            if key == "AR":
                arrival = t
                end = arrival.max() + ar_ns * self.rng.lognormal(0.0, 0.02)
                ai, ad = _us_pair(arrival, np.full(tp, end))
                kn = self.nccl_allreduce
                for j, r in enumerate(rl):
                    rk = self.rk[r]
                    out = rk.out
                    if out is None:  # simulated for the collectives, emitted by another writer
                        continue
                    ext, cc = ext_corr[j]
                    a = self._coll_args(r, "allreduce", nelems, "tp")
                    per_rank[j].append(
                        f'{{"ph":"X","cat":"kernel","name":{kn},"pid":{rk.dev},"tid":{COMPUTE_STREAM},"ts":{ai[j]:.3f},"dur":{ad[j]:.3f},'
                        f'"args":{{"External id":{ext},"device":{rk.dev},"context":1,"stream":{COMPUTE_STREAM},"correlation":{cc},{a}}}}}'
                    )
                self.res.busy[s, ranks] += end - arrival
                self.res.coll_wait[s, ranks] += end - arrival - ar_ns
                t = np.full(tp, end) + 800.0
                continue
            kd = kernel_dur(key)
            ks, kdur = _us_pair(t, t + kd)
            kn = self._kernel_name(key, kt, prefill)
            for j, r in enumerate(rl):
                if not self.emit[r]:
                    continue
                dev = self.rk[r].dev
                ext, cc = ext_corr[j]
                per_rank[j].append(
                    f'{{"ph":"X","cat":"kernel","name":{kn},"pid":{dev},"tid":{COMPUTE_STREAM},"ts":{ks[j]:.3f},"dur":{kdur[j]:.3f},'
                    f'"args":{{"External id":{ext},"device":{dev},"context":1,"stream":{COMPUTE_STREAM},"correlation":{cc}}}}}'
                )
            self.res.busy[s, ranks] += kd
            t = t + kd + 800.0
        gpu[:] = t
        self._py(rl, fr["graph_replay"], cpu - 1e3, cpu + c + 1e3)
        rs, re_ = self._i(rt_s), self._i(rt_e)
        cs = self._i(cpu)
        for j, r in enumerate(rl):
            rk = self.rk[r]
            out = rk.out
            if out is None:  # simulated for the collectives, emitted by another writer
                continue
            ext, cc = ext_corr[j]
            # The captured batch size is the shape a detector should bucket graph steps by.
            out.add(
                _x(
                    "cpu_op",
                    '"aten::copy_"',
                    rk.pid,
                    rk.pid,
                    cs[j],
                    cs[j] + max(1000, (rs[j] - cs[j]) // 2),
                    f'{{"External id":{ext},"Input Dims":[[{kt}],[{kt}]],"Input type":["long int","long int"]}}',
                )
            )
            out.add(
                _x(
                    "cuda_runtime",
                    '"cudaGraphLaunch"',
                    rk.pid,
                    rk.pid,
                    rs[j],
                    re_[j],
                    f'{{"External id":{ext},"cbid":311,"correlation":{cc}}}',
                )
            )
            if per_rank[j]:
                out.add(",".join(per_rank[j]), len(per_rank[j]))
        return cpu + c + 2e3
