"""The rank-level p-value is the exact tail of the stratified permutation null (within lattice
rounding, never below it) and never above Hoeffding's bound of the same null."""

from __future__ import annotations

import numpy as np

from kat.tools.outpost.significance import Samples, stratified_z


def _samples(values: np.ndarray) -> Samples:
    strata, members = values.shape
    return Samples(
        test=np.zeros(strata * members, dtype=int),
        stratum=np.repeat(np.arange(strata), members),
        rank=np.tile(np.arange(members), strata),
        value=values.ravel().astype(float),
        step=np.repeat(np.arange(strata), members),
        labels=["class[cpu]"],
    )


def test_one_member_top_of_every_stratum_has_the_exact_permutation_p() -> None:
    s = 8
    values = np.zeros((s, 4))
    values[:, 0] = 1000.0  # rank 0 is the slowest of four in each of 8 strata
    z = stratified_z(_samples(values), np.array([4])).set_index("rank")
    exact = 0.25**s  # the only assignment as extreme: rank 0 draws the top value every time
    hoeffding = np.exp(-2.0 * (0.75 * 1000.0 * s) ** 2 / (s * 1000.0**2))
    assert exact <= z.at[0, "p"] <= 1.01 * exact
    assert z.at[0, "p"] < hoeffding
    assert z.at[1, "p"] == 1.0  # below the stratum mean: no evidence


def test_two_slow_members_of_eight_each_reach_a_small_p() -> None:
    rng = np.random.default_rng(7)
    values = 1000.0 + rng.normal(0.0, 10.0, (10, 8))
    values[:, [2, 5]] += 150.0  # a sustained 15% slowdown on two of eight members
    z = stratified_z(_samples(values), np.array([8])).set_index("rank")
    assert z.at[2, "p"] < 1e-6 and z.at[5, "p"] < 1e-6
    assert min(z.at[r, "p"] for r in (0, 1, 3, 4, 6, 7)) > 0.05
