"""Continuous-batching workload: the batch each replica runs at each engine step.

Batch size drifts step to step as requests arrive and finish; some steps carry a chunk of
prefill. Healthy kernel durations therefore vary with the step, as they do in production.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kat.evals.simulate.tasks import TaskConfig

# vLLM's default max_num_batched_tokens for chunked prefill (per step).
PREFILL_CHUNK = {"decode_heavy": 2048, "mixed": 2048, "prefill_heavy": 8192}
PREFILL_PROB = {"decode_heavy": 0.15, "mixed": 0.5, "prefill_heavy": 0.9}


@dataclass
class Workload:
    """Per (step, replica): decode sequences, prefill tokens, total context tokens."""

    seqs: np.ndarray  # int64 [steps, dp]
    prefill: np.ndarray  # int64 [steps, dp]
    context: np.ndarray  # int64 [steps, dp]

    @property
    def tokens(self) -> np.ndarray:
        return self.seqs + self.prefill

    @property
    def n_steps(self) -> int:
        return int(self.seqs.shape[0])


def make_workload(task: TaskConfig, n_steps: int, rng: np.random.Generator) -> Workload:
    dp = task.dp
    mean_b = max(1.0, 0.55 * task.max_num_seqs)
    seqs = np.empty((n_steps, dp), dtype=np.int64)
    b = rng.uniform(0.7, 1.3, size=dp) * mean_b
    for s in range(n_steps):
        # Mean-reverting walk: arrivals and completions move the batch a few requests a step.
        b = b + 0.15 * (mean_b - b) + rng.normal(0.0, 0.06 * mean_b, size=dp)
        b = np.clip(b, 1, task.max_num_seqs)
        seqs[s] = np.rint(b).astype(np.int64)
    chunk = PREFILL_CHUNK[task.workload]
    has_prefill = rng.random((n_steps, dp)) < PREFILL_PROB[task.workload]
    plen = np.minimum(chunk, rng.gamma(2.0, task.prompt_tokens / 2.0, size=(n_steps, dp))).astype(np.int64)
    prefill = np.where(has_prefill, np.maximum(plen, 16), 0)
    context = (seqs * task.context_tokens * rng.uniform(0.85, 1.15, size=(n_steps, dp))).astype(np.int64)
    return Workload(seqs=seqs, prefill=prefill, context=context)
