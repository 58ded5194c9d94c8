"""The peer-spread test pooled over groups (tools/outpost/pooled.py): pairs and half groups,
short episodes, several culprits, and its false-positive rate under a null with hiccups."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kat.tools.outpost.pooled import aligned, candidates, pool_of, pooled_rows, pooled_tests, rank_pvalue
from kat.tools.outpost.significance import Samples, bh_reject


def _pairs(rng: np.random.Generator, pairs: int, steps: int, hiccup: float) -> Samples:
    """`pairs` groups of two ranks, one class total per group, every rank alike: log-normal
    jitter around a per-group level (groups do different work) plus rare big hiccups on any rank."""
    g, s, m = np.meshgrid(np.arange(pairs), np.arange(steps), np.arange(2), indexing="ij")
    level = 1e6 * (1.0 + 0.3 * g)
    v = level * rng.lognormal(0.0, 0.01, g.shape) + (rng.random(g.shape) < hiccup) * rng.exponential(2e5, g.shape)
    rank = (2 * g + m).ravel()
    return Samples(g.ravel(), (g * steps + s).ravel(), rank, v.ravel(), s.ravel(), ["class[cpu_op]"] * pairs)


def _p(s: Samples) -> dict[int, float]:
    res = pooled_tests(s, np.full(len(s.labels), 2), "spread_work")
    return dict(zip(res["rank"], res["p"]))


def test_one_member_of_a_pair_is_found_though_its_group_has_two_members() -> None:
    s = _pairs(np.random.default_rng(3), 4, 10, 0.02)
    s.value = s.value + ((s.rank == 5) & (s.step >= 4)) * 3e5  # 30% slower in 6 of 10 steps
    p = _p(s)
    assert p[5] < 1e-4, p  # below the BH line of a capture's few hundred tests
    assert all(p[r] > 0.01 for r in p if r != 5), p


def test_an_episode_of_a_quarter_of_the_steps_is_found() -> None:
    s = _pairs(np.random.default_rng(4), 8, 24, 0.02)
    s.value = s.value + ((s.rank == 2) & (s.step >= 10) & (s.step < 16)) * 5e5  # 6 of 24 steps
    p = _p(s)
    assert p[2] < 1e-4, p
    assert all(p[r] > 0.01 for r in p if r != 2), p


def test_two_culprits_do_not_mask_each_other() -> None:
    s = _pairs(np.random.default_rng(5), 4, 10, 0.0)
    s.value = s.value + (np.isin(s.rank, [1, 6]) & (s.step >= 3)) * 4e5
    p = _p(s)
    assert p[1] < 1e-3 and p[6] < 1e-3, p
    assert all(p[r] > 0.01 for r in p if r not in (1, 6)), p


def test_one_hiccup_is_not_a_finding() -> None:
    s = _pairs(np.random.default_rng(6), 4, 10, 0.0)
    s.value = s.value + ((s.rank == 3) & (s.step == 7)) * 5e6  # one step 5x its value
    assert _p(s)[3] > 0.001


def test_false_positive_rate_under_a_null_with_hiccups_stays_at_the_level() -> None:
    # Every rank alike (hiccups on all): P(any rejection at BH level q) must stay near q or below.
    q, seeds = 0.05, 300
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(seeds):
        p = np.array(list(_p(_pairs(rng, 4, 12, 0.05)).values()))
        hits += bool(bh_reject(p, q).any())
    assert hits / seeds <= q + 3 * np.sqrt(q * (1 - q) / seeds), hits


def test_rank_pvalue_is_valid_deep_in_the_tail() -> None:
    # Exchangeable null with heavy tails: P(p <= a) <= a, checked where BH over a capture works.
    rng = np.random.default_rng(8)
    draws = rng.pareto(1.5, size=(20000, 80))
    ps = np.array([rank_pvalue(d[:10], d[10:]) for d in draws])
    for a in (0.05, 0.005, 0.0005):
        assert (ps <= a).mean() <= a + 3 * np.sqrt(a / len(ps)), (a, (ps <= a).mean())


def test_units_pooled_in_the_merge_give_the_whole_capture_s_p_values() -> None:
    # What the Dask path does (phases.merge_parts): each unit hands over its aligned rows and its
    # candidates; pooled over all of them, in any unit order, the p-values are those of one table.
    s = _pairs(np.random.default_rng(9), 6, 10, 0.02)
    s.value = s.value + ((s.rank == 7) & (s.step >= 4)) * 3e5
    sizes = np.full(len(s.labels), 2)
    whole = pooled_tests(s, sizes, "spread_work").sort_values("rank").reset_index(drop=True)
    units = []
    for groups in ([0, 1, 2], [3, 4, 5]):
        m = np.isin(s.test, groups)
        part = Samples(s.test[m], s.stratum[m], s.rank[m], s.value[m], s.step[m], s.labels)
        al = aligned(part, sizes)
        units.append((pool_of(al, "spread_work"), candidates(al, "spread_work")))
    units.reverse()
    split = pooled_rows(pd.concat([u[0] for u in units]), pd.concat([u[1] for u in units]))
    split = split.sort_values("rank").reset_index(drop=True)
    assert whole["p"].min() < 1e-4  # the culprit is found, so equal p-values are not all 1
    assert split[whole.columns].equals(whole)
    # One unit alone pools fewer ranks: its p-values differ (the merge is what makes them equal).
    alone = pooled_rows(*units[1]).set_index("rank")["p"]
    assert not np.array_equal(alone.to_numpy(), whole.set_index("rank").loc[alone.index, "p"].to_numpy())
