"""Kernel and transfer durations: a small roofline model per GPU, in nanoseconds.

Absolute numbers only need to be plausible; what matters is that durations scale with the
batch (tokens, context) the way real kernels do, so like must be compared with like.
"""

from __future__ import annotations

from dataclasses import dataclass

from kat.evals.simulate.kernels import GPU_SPEC
from kat.evals.simulate.tasks import TaskConfig

LAUNCH_NS = 2500.0  # fixed per-kernel cost (launch, tail effects)
BF16 = 2

# vLLM's default CUDA-graph capture sizes: 1, 2, 4, then multiples of 8 up to 512.
CAPTURE_SIZES = [1, 2, 4] + list(range(8, 513, 8))


def graph_size(tokens: int) -> int | None:
    """Padded batch a captured graph runs for this many tokens, or None (eager fallback)."""
    for c in CAPTURE_SIZES:
        if c >= tokens:
            return c
    return None


@dataclass(frozen=True)
class Shapes:
    """Per-rank matrix shapes of one layer (after tensor-parallel sharding)."""

    hidden: int
    qkv_n: int
    attn_out_k: int
    gate_up_n: int
    down_k: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab_n: int

    @classmethod
    def of(cls, task: TaskConfig) -> Shapes:
        m, tp = task.model_spec, task.tp
        hd = m.head_dim
        kv = max(1, m.kv_heads // tp)
        q = max(1, m.heads // tp)
        return cls(m.hidden, (q + 2 * kv) * hd, q * hd, 2 * m.intermediate // tp, m.intermediate // tp, q, kv, hd, m.vocab // tp)


class CostModel:
    def __init__(self, task: TaskConfig):
        self.task = task
        self.sh = Shapes.of(task)
        g = GPU_SPEC[task.gpu]
        self.hbm, self.flops = g["hbm"], g["flops"]
        self.nvlink, self.net, self.pcie = g["nvlink"], g["net"], g["pcie"]

    def gemm(self, m: int, k: int, n: int) -> float:
        compute = 2.0 * m * k * n / self.flops
        memory = (k * n + m * k + m * n) * BF16 / self.hbm
        return max(compute, memory) * 1e9 + LAUNCH_NS

    def elementwise(self, nbytes: float) -> float:
        return nbytes / self.hbm * 1e9 + LAUNCH_NS * 0.8

    def kernel_ns(self, key: str, tokens: int, prefill: int, context: int, seqs: int) -> float:
        """Duration of one compute kernel for a step of `tokens` tokens."""
        sh, t = self.sh, max(1, tokens)
        if key == "qkv":
            return self.gemm(t, sh.hidden, sh.qkv_n)
        if key == "o_proj":
            return self.gemm(t, sh.attn_out_k, sh.hidden)
        if key == "gate_up":
            return self.gemm(t, sh.hidden, sh.gate_up_n)
        if key == "down":
            return self.gemm(t, sh.down_k, sh.hidden)
        if key == "lm_head":
            return self.gemm(max(1, seqs + (1 if prefill else 0)), sh.hidden, sh.vocab_n)
        if key in ("norm", "final_norm"):
            return self.elementwise(3.0 * t * sh.hidden * BF16)
        if key == "rotary":
            return self.elementwise(2.0 * t * (sh.q_heads + sh.kv_heads) * sh.head_dim * BF16)
        if key == "cache":
            return self.elementwise(4.0 * t * sh.kv_heads * sh.head_dim * BF16)
        if key == "act":
            return self.elementwise(1.5 * t * sh.gate_up_n * BF16)
        if key == "embed":
            return self.elementwise(t * sh.hidden * BF16 + t * 8)
        if key == "attn":
            kv_read = 2.0 * context * sh.kv_heads * sh.head_dim * BF16 / self.hbm
            pre = 4.0 * prefill * max(prefill, 1) / 2.0 * sh.q_heads * sh.head_dim / self.flops
            return (kv_read + pre) * 1e9 + 2.0 * LAUNCH_NS
        if key in ("argmax", "softmax"):
            return self.elementwise(4.0 * max(1, seqs) * sh.vocab_n)
        raise KeyError(key)

    def copy_ns(self, nbytes: float) -> float:
        return 1500.0 + nbytes / self.pcie * 1e9

    def allreduce_ns(self, tokens: int, n: int, cross_host: bool) -> float:
        """Ring all-reduce transfer once every member has arrived."""
        nbytes = max(1, tokens) * self.sh.hidden * BF16
        bw, lat = (self.net, 22000.0) if cross_host else (self.nvlink, 5000.0 + 600.0 * n)
        return lat + 2.0 * (n - 1) / n * nbytes / bw * 1e9

    def p2p_ns(self, tokens: int, cross_host: bool) -> float:
        nbytes = 2 * max(1, tokens) * self.sh.hidden * BF16  # hidden states + residual
        bw, lat = (self.net, 15000.0) if cross_host else (self.nvlink, 4000.0)
        return lat + nbytes / bw * 1e9
