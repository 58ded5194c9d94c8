"""A small tensor-parallel decode step on CPU tensors, shaped like one vLLM worker's step.

Per step: Python-side scheduling, then per layer a column-parallel QKV GEMM, attention over a
fixed-length KV cache, a row-parallel output GEMM and a TP all-reduce, then a column-parallel
gate/up GEMM, SiLU-and-mul, a row-parallel down GEMM and a second all-reduce; then sampling.
Spans are named after vLLM's modules so the trace tree reads like a real worker's.
"""

from __future__ import annotations

import random
from typing import Protocol, TypedDict

import torch
import torch.distributed as dist
from torch.profiler import record_function

from kat.evals.realtrace.models import WorkloadShape


class _Request(TypedDict):
    """One running request of the toy scheduler."""

    id: int
    pos: int
    tokens: list[int]


class StepHooks(Protocol):
    """Where faults plug into a step; the healthy implementation does nothing."""

    def before_step(self, step: int) -> None: ...
    def gemm_repeats(self, step: int, layer: int) -> int: ...
    def in_all_reduce(self, step: int, layer: int) -> None: ...
    def after_step(self, step: int) -> None: ...


class TPDecodeModel:
    """Weight shards of one TP rank; `step()` runs one decode step and its collectives."""

    def __init__(self, shape: WorkloadShape, rank: int, world: int, seed: int) -> None:
        self.shape, self.rank, self.world = shape, rank, world
        g = torch.Generator().manual_seed(seed * 1000 + rank)
        h, i, tp = shape.hidden, shape.intermediate, world
        head = max(h // tp, 1)
        scale = h**-0.5

        def w(*dims: int) -> torch.Tensor:
            return torch.randn(*dims, generator=g) * scale

        self.layers = [
            {
                "qkv": w(h, 3 * head),
                "o": w(head, h),
                "gate_up": w(h, 2 * max(i // tp, 1)),
                "down": w(max(i // tp, 1), h),
                "k_cache": w(max(shape.batch_sizes), shape.kv_len, head),
                "v_cache": w(max(shape.batch_sizes), shape.kv_len, head),
            }
            for _ in range(shape.layers)
        ]
        self.lm_head = w(h, shape.vocab_shard)
        self.embed = w(shape.vocab_shard, h)
        # The schedule is replicated on every rank (vLLM broadcasts it), so batch sizes agree.
        self._sched_rng = random.Random(seed)
        self._requests: list[_Request] = [{"id": n, "pos": 0, "tokens": []} for n in range(max(shape.batch_sizes))]

    def _schedule(self) -> torch.Tensor:
        """Python-side scheduler work: pick the running batch, advance positions, build inputs."""
        with record_function("scheduler.schedule"):
            bs = self._sched_rng.choice(self.shape.batch_sizes)
            running = self._requests[:bs]
            ids = []
            for req in running:
                req["pos"] += 1
                last = req["tokens"][-1] if req["tokens"] else req["id"]
                ids.append(last % self.shape.vocab_shard)
            positions = sorted((r["pos"], r["id"]) for r in running)
            del positions
            return torch.tensor(ids, dtype=torch.long)

    def _all_reduce(self, t: torch.Tensor, step: int, layer: int, hooks: StepHooks) -> None:
        # The communicator wrapper, like vLLM's tensor_model_parallel_all_reduce.
        with record_function("tp_all_reduce"):
            hooks.in_all_reduce(step, layer)
            dist.all_reduce(t)

    def _layer(self, x: torch.Tensor, n: int, step: int, hooks: StepHooks) -> torch.Tensor:
        lw = self.layers[n]
        bs = x.shape[0]
        with record_function(f"layers.{n}.self_attn"):
            with record_function(f"layers.{n}.self_attn.qkv_proj"):
                qkv = torch.mm(x, lw["qkv"])
            q, k, v = qkv.chunk(3, dim=-1)
            with record_function(f"layers.{n}.self_attn.attn"):
                kc, vc = lw["k_cache"][:bs], lw["v_cache"][:bs]
                scores = torch.bmm(q.unsqueeze(1), kc.transpose(1, 2)) * (q.shape[-1] ** -0.5)
                probs = torch.softmax(scores, dim=-1)
                ctx = torch.bmm(probs, vc).squeeze(1) + 0.01 * (k + v)
            with record_function(f"layers.{n}.self_attn.o_proj"):
                out = torch.mm(ctx, lw["o"])
            self._all_reduce(out, step, n, hooks)
        x = torch.nn.functional.rms_norm(x + out, (x.shape[-1],))
        with record_function(f"layers.{n}.mlp"):
            with record_function(f"layers.{n}.mlp.gate_up_proj"):
                gu = torch.mm(x, lw["gate_up"])
                # Fault: the same GEMM done several times over, as if it ran several times slower.
                for _ in range(hooks.gemm_repeats(step, n) - 1):
                    gu = torch.mm(x, lw["gate_up"])
            gate, up = gu.chunk(2, dim=-1)
            act = torch.nn.functional.silu(gate) * up
            with record_function(f"layers.{n}.mlp.down_proj"):
                down = torch.mm(act, lw["down"])
            self._all_reduce(down, step, n, hooks)
        return torch.nn.functional.rms_norm(x + down, (x.shape[-1],))

    def step(self, step: int, hooks: StepHooks) -> None:
        hooks.before_step(step)
        ids = self._schedule()
        with record_function("model.forward"):
            x = self.embed[ids]
            for n in range(self.shape.layers):
                x = self._layer(x, n, step, hooks)
        with record_function("sampler"):
            logits = torch.mm(x, self.lm_head)
            next_ids = torch.argmax(logits, dim=-1).tolist()
        for req, tok in zip(self._requests, next_ids):
            req["tokens"].append(tok)
            del req["tokens"][:-4]  # keep Python-side state small
        hooks.after_step(step)
