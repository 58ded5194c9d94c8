"""replica_rank.py on per-(rank, step) tables built here: the replica test's null and its
batch alignment, and the component a rank-level finding names (calibrate._component)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kat.tools.outpost.calibrate import _component
from kat.tools.outpost.models import DetectorConfig
from kat.tools.outpost.replica_rank import BATCH_KEY, VALUE_COLUMNS, replica_tests
from kat.tools.outpost.significance import fdr_pass

RANKS, STEPS = 8, 10
GPU = "class[gpu_compute]"


def _values(seed: int, slow: dict[int, float], heavy: dict[int, float]) -> pd.DataFrame:
    """Eight tp1 replicas: GPU time = 10 us per token of a batch drawn per (rank, step) plus 1 ms,
    with 5% multiplicative jitter; `slow` multiplies a rank's GPU time (a throttled GPU), `heavy`
    its batch (a replica given more tokens: more time, not slower)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(RANKS):
        for s in range(STEPS):
            batch = rng.integers(100, 300) * heavy.get(r, 1.0)
            gpu = (1e6 + 1e4 * batch) * rng.lognormal(0.0, 0.05) * slow.get(r, 1.0)
            cpu = 6e5 * rng.lognormal(0.0, 0.05)
            rows += [(r, s, GPU, gpu), (r, s, "class[cpu]", cpu), (r, s, "step_time", gpu + cpu + 2e5), (r, s, BATCH_KEY, batch)]
    return pd.DataFrame(rows, columns=VALUE_COLUMNS)


def _suspects(values: pd.DataFrame) -> set[int]:
    cfg = DetectorConfig()
    res = fdr_pass(replica_tests(values, [list(range(RANKS))], cfg, few=False), cfg)
    return set(res.loc[res["significant"] & res["material"], "rank"].astype(int))


def test_healthy_replicas_are_silent_over_seeds() -> None:
    assert all(_suspects(_values(seed, {}, {})) == set() for seed in range(4))


def test_a_replica_given_more_tokens_is_not_slow() -> None:
    assert all(_suspects(_values(seed, {}, {5: 1.8})) == set() for seed in range(4))


def test_a_throttled_replica_is_found_whatever_its_batches() -> None:
    for seed in range(3):
        assert _suspects(_values(seed, {3: 1.5}, {})) == {3}
        assert _suspects(_values(seed, {3: 1.5}, {3: 0.6})) == {3}  # slower per token, fewer tokens


def test_too_few_steps_or_no_replica_group_runs_nothing() -> None:
    v = _values(0, {3: 1.5}, {})
    cfg = DetectorConfig()
    assert replica_tests(v, [list(range(RANKS))], cfg, few=True).empty
    assert replica_tests(v, [[0, 1]], cfg, few=False).empty  # two replicas: no majority to judge by


def test_component_follows_what_the_test_measured() -> None:
    def row(kind: str, label: str, device: bool = False) -> pd.Series:
        return pd.Series({"kind": kind, "label": label, "device": device})

    assert _component(row("replica", GPU)) == "gpu"
    assert _component(row("spread_work", "class[cpu]")) == "host_cpu"
    assert _component(row("work", "class[copy]", True)) == "pcie"
    assert _component(row("untraced", "untraced[0]")) == "software"
    assert _component(row("work", "op[gemm_kernel]", True)) == "gpu"
    assert _component(row("work", "op[aten::mm]")) == "host_cpu"
