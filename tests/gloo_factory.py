"""Hand-built CPU-only (gloo) tensor-parallel decode traces, shaped like torch.profiler's output.

Per rank and step: a ProfilerStep span on the main thread; scheduler work; per layer an
attention block and an MLP block (annotations wrapping aten ops), each followed by a
`tp_all_reduce` annotation that issues `c10d::allreduce_` while gloo runs the collective on one
of two background threads (which thread takes which collective differs by rank, as it does in
real traces). Every member's collective ends when the last member has entered, plus a transfer
time; then every member moves on. Timings jitter a little (seeded) so robust spreads are not 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

BASE_NS = 1_700_000_000_000_000_000

# (block annotation, [(op, microseconds)]): one decode layer's work, split by its two all-reduces.
_BLOCKS = [
    ("self_attn.qkv_proj", [("aten::mm", 900.0)]),
    ("self_attn.attn", [("aten::bmm", 400.0), ("aten::softmax", 150.0)]),
    ("self_attn.o_proj", [("aten::mm", 500.0)]),
    None,
    ("mlp.gate_up_proj", [("aten::mm", 1500.0)]),
    ("mlp.act", [("aten::silu", 200.0), ("aten::mul", 120.0)]),
    ("mlp.down_proj", [("aten::mm", 800.0)]),
    None,
]


@dataclass
class GlooFaults:
    """What goes wrong, on which rank, in which steps (all times in microseconds)."""

    rank: int = -1
    steps: range = range(0)
    stall_us: float = 0.0  # untraced pause at the start of the step
    comm_delay_us: float = 0.0  # untraced delay inside tp_all_reduce before the transport starts
    cpu_factor: float = 1.0  # every op slower (a starved CPU)
    gemm_factor: float = 1.0  # one GEMM slower (layer 1's gate_up_proj)

    def hits(self, rank: int, step: int) -> bool:
        return rank == self.rank and step in self.steps


def gloo_trace(world: int = 4, steps: int = 16, layers: int = 3, faults: GlooFaults | None = None, seed: int = 0) -> dict[int, dict]:
    """One Kineto document per rank."""
    f = faults or GlooFaults()
    rng = random.Random(seed)
    ev: dict[int, list[dict]] = {r: [] for r in range(world)}
    now = {r: 1000.0 for r in range(world)}

    def x(r: int, name: str, cat: str, ts: float, dur: float, tid: int | None = None, **args: object) -> None:
        ev[r].append({"ph": "X", "cat": cat, "name": name, "pid": 100 + r, "tid": tid or 100 + r, "ts": ts, "dur": dur, "args": dict(args)})

    for s in range(1, steps + 1):
        start = dict(now)
        for r in range(world):
            if f.hits(r, s):
                now[r] += f.stall_us
            now[r] = _span(x, r, "scheduler.schedule", [("aten::tensor", 60.0)], now[r], rng, 1.0)
        coll = 0
        for layer in range(layers):
            for block in _BLOCKS:
                if block is not None:
                    name, ops = block
                    for r in range(world):
                        cpu = f.cpu_factor if f.hits(r, s) else 1.0
                        slow_op = f.gemm_factor if f.hits(r, s) and layer == 1 and name == "mlp.gate_up_proj" else 1.0
                        now[r] = _span(x, r, f"layers.{layer}.{name}", ops, now[r], rng, cpu * slow_op)
                    continue
                entry = {}
                for r in range(world):
                    delay = f.comm_delay_us if f.hits(r, s) else 0.0
                    entry[r] = now[r] + 10.0 + delay + rng.uniform(0, 30)
                done = max(entry.values()) + 250.0 + rng.uniform(0, 20)
                for r in range(world):
                    wrap_start = now[r]
                    x(r, "c10d::allreduce_", "cpu_op", entry[r] - 5.0, 25.0)
                    # Even collectives on one thread, odd on the other; odd ranks swap the two.
                    thread = 200 + r + 100 * ((coll + r) % 2)
                    x(r, "gloo:all_reduce", "user_annotation", entry[r], done - entry[r], tid=thread, **{"Input Dims": [[14, 1024]]})
                    now[r] = done + 8.0
                    x(r, "tp_all_reduce", "user_annotation", wrap_start, now[r] - wrap_start)
                coll += 1
        for r in range(world):
            now[r] = _span(x, r, "sampler", [("aten::mm", 700.0), ("aten::argmax", 40.0)], now[r], rng, 1.0)
            x(r, f"ProfilerStep#{s}", "user_annotation", start[r], now[r] - start[r] + 5.0)
            now[r] += 20.0
    # torch.profiler writes a rank's events thread by thread.
    return {
        r: {
            "distributedInfo": {"backend": "gloo", "rank": r, "world_size": world},
            "baseTimeNanoseconds": BASE_NS,
            "traceEvents": sorted(e, key=lambda d: (d["tid"], d["ts"])),
        }
        for r, e in ev.items()
    }


def _span(x, r: int, name: str, ops: list[tuple[str, float]], t: float, rng: random.Random, factor: float) -> float:  # noqa: ANN001
    """An annotation wrapping `ops` back to back from `t`; returns its end."""
    cur = t + 5.0
    for op, us in ops:
        dur = us * factor * rng.uniform(0.97, 1.03)
        x(r, op, "cpu_op", cur, dur)
        cur += dur + 3.0
    x(r, name, "user_annotation", t, cur - t + 2.0)
    return cur + 4.0
