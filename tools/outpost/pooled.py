"""Peer-spread test pooled over groups: a rank against the run's own peer-to-peer spread.

The stratified permutation (significance.py) only asks where a rank stands among its own
group's members in each step, so it can say at best "one of two" per step: a pair (TP=2), or
half a group, can never reach the FDR level over a short capture. This test asks how far:

- Each rank's value in a step is aligned on its group's median in that step and divided by it
  (a relative deviation: timing jitter is multiplicative, and groups doing more work spread
  more in absolute terms). This is per-group work; the pooling below is a merge of the groups'
  aligned deviations, keyed by what they measure (untraced time, a class of work, blame).
- Null: the rank's aligned deviations are draws from the same distribution as the other ranks'
  (every group, every step). Its upper tail is modelled by peaks over a threshold: above the
  pool's 98th percentile (at least TAIL_MIN exceedances), an exponential fitted to the excesses;
  below it, the pool's empirical tail. Each step of the rank gets a p-value from that tail.
- A sustained or recurring excess shows as k small step p-values: P(Bin(S, p_(k)) >= k) is the
  chance that S uniform draws put k below the k-th smallest, taken over every k with a
  Bonferroni factor S. One hiccup is k = 1 (no stronger than the one-off peak test); a fault on
  3 of 10 steps far beyond the pool's tail is k = 3.
- Several culprits mask each other (each one's excesses fill the pool's tail the other is
  judged against). Generalised ESD (Rosner, 1983): take the most extreme rank out of the pool,
  judge the next against the rest, and so on up to fewer than half the ranks; stage i's p-value
  is Bonferroni-corrected for picking the most extreme of the remaining ranks, and the rank
  removed at stage j is rejected when any stage i >= j is (its p-value is the smallest of
  theirs). The null is thus estimated from the non-suspect ranks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kat.tools.outpost.significance import TAIL_MIN, TAIL_Q, Samples

MIN_POOL_RANKS = 3  # below it no majority of other ranks can carry the null
# Smallest tail scale, relative to the step's median: a pool of identical values (a simulated
# constant, timer-quantised gaps) would otherwise make any deviation infinitely unlikely.
# A tenth of a percent is below any slowdown worth a finding (min_effect is 10%).
BETA_MIN = 1e-3


def _key(label: str) -> str | None:
    """What a test measures, without its group: pooled over groups. Only broad tests."""
    if label.startswith("class["):
        return label
    if label.startswith(("untraced[", "blame[")):
        return label.split("[", 1)[0]
    return None


def aligned(s: Samples, sizes: np.ndarray) -> pd.DataFrame:
    """Per (rank, step) of every broad test: its relative deviation from its group's median in
    that step (strata every member ran). Columns: key, test, rank, step, e (relative), d (ns)."""
    keys = [_key(lbl) for lbl in s.labels]
    broad = np.array([k is not None for k in keys])
    sel = broad[s.test]
    if not sel.any():
        return pd.DataFrame()
    df = pd.DataFrame({"test": s.test[sel], "stratum": s.stratum[sel], "rank": s.rank[sel], "step": s.step[sel], "v": s.value[sel]})
    g = df.groupby("stratum", sort=False)["v"]
    df = df[g.transform("size").to_numpy() == sizes[df["test"].to_numpy()]]
    if df.empty:
        return df
    med = df.groupby("stratum", sort=False)["v"].transform("median").to_numpy()
    df["d"] = df["v"].to_numpy() - med
    df["e"] = df["d"].to_numpy() / np.maximum(med, 1.0)
    df["key"] = np.asarray(keys, dtype=object)[df["test"].to_numpy()]
    return df.drop(columns=["stratum", "v"])


def _binom_sf(k: np.ndarray, n: int, p: np.ndarray) -> np.ndarray:
    """P(Bin(n, p_i) >= k_i), exactly (n is a capture's step count: small)."""
    j = np.arange(n + 1)
    logc = np.array([math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) for x in j])
    pp = np.clip(p, 1e-300, 1.0)[:, None]
    with np.errstate(divide="ignore"):
        logq = np.log1p(-np.minimum(pp, 1.0 - 1e-16))
    pmf = np.exp(logc[None, :] + j[None, :] * np.log(pp) + (n - j)[None, :] * logq)
    pmf[j[None, :] < k[:, None]] = 0.0
    return np.minimum(pmf.sum(axis=1), 1.0)


def step_pvalues(mine: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Each of the rank's deviations against the pool's upper tail (peaks over threshold)."""
    srt = np.sort(pool)
    n = len(srt)
    u = min(float(np.quantile(srt, TAIL_Q)), float(srt[-TAIL_MIN - 1]) if n > TAIL_MIN else float(srt[0]))
    over = srt[srt > u] - u
    rate = (len(over) + 1) / (n + 1)
    beta = max(float(over.mean()) if len(over) else 0.0, BETA_MIN)
    emp = (n - np.searchsorted(srt, mine, side="left") + 1) / (n + 1)
    tail = rate * np.exp(-np.maximum(mine - u, 0.0) / beta)
    return np.where(mine > u, np.minimum(tail, emp), emp)


def order_pvalue(p: np.ndarray) -> float:
    """Smallest P(Bin(S, p_(k)) >= k) over k, times S (Bonferroni over k)."""
    s = np.sort(p)
    n = len(s)
    if not n:
        return 1.0
    return float(min(1.0, n * _binom_sf(np.arange(1, n + 1), n, s).min()))


def _esd(e: np.ndarray, rank: np.ndarray) -> dict[int, float]:
    """Generalised ESD over ranks: each rank's p-value (1 for ranks never removed)."""
    ranks = np.unique(rank)
    out = {int(r): 1.0 for r in ranks}
    kmax = (len(ranks) - 1) // 2
    if len(ranks) < MIN_POOL_RANKS or kmax < 1:
        return out
    own = {int(r): rank == r for r in ranks}
    # Removal order from the first stage (every other rank as the pool): re-ranking at every
    # stage would cost ranks^2 tail fits for an order that removal rarely changes.
    first = {r: order_pvalue(step_pvalues(e[m], e[~m])) for r, m in own.items()}
    order = sorted(first, key=lambda r: first[r])[:kmax]
    removed = np.zeros(len(e), dtype=bool)
    stage = []
    for i, r in enumerate(order):
        m = own[r]
        pool = e[~m & ~removed]
        stage.append(min(1.0, (len(ranks) - i) * order_pvalue(step_pvalues(e[m], pool))))
        removed |= m
    best = 1.0
    for i in range(len(order) - 1, -1, -1):  # step-up: a later stage's rejection carries the earlier ones
        best = min(best, stage[i])
        out[order[i]] = best
    return out


def pooled_tests(s: Samples, sizes: np.ndarray, kind: str) -> pd.DataFrame:
    """Rows like stratified_z's (test, rank, T, strata, z, p, floor_ns) for each broad test of
    `s` pooled over groups; `test` is the rank's own group's test id (for its episode)."""
    df = aligned(s, sizes)
    if df.empty:
        return pd.DataFrame()
    rows = []
    for key, g in df.groupby("key", sort=False):
        e, rank = g["e"].to_numpy(), g["rank"].to_numpy()
        p = _esd(e, rank)
        agg = g.groupby("rank", sort=False).agg(test=("test", "first"), T=("d", "sum"), strata=("d", "size"))
        floor = float(1.4826 * np.median(np.abs(g["d"].to_numpy())))
        for r, row in agg.iterrows():
            pr = p.get(int(r), 1.0)
            rows.append(
                {
                    "test": int(row["test"]),
                    "rank": int(r),
                    "T": float(row["T"]),
                    "strata": int(row["strata"]),
                    "z": _z(pr),
                    "p": pr,
                    "floor_ns": floor,
                    "key": key,
                }
            )
    out = pd.DataFrame(rows)
    out["kind"] = kind
    return out


def _z(p: float) -> float:
    """Normal quantile of p (upper tail), to rank evidence beside the other tests' z."""
    p = min(max(p, 1e-300), 1.0)
    if p >= 0.5:
        return 0.0
    # Inverse of the upper tail by bisection on erfc: exact enough to order evidence.
    lo, hi = 0.0, 40.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(mid / math.sqrt(2)) > p:
            lo = mid
        else:
            hi = mid
    return lo
