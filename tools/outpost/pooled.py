"""Peer-spread test pooled over groups: a rank against the run's own peer-to-peer spread.

The stratified permutation (significance.py) only asks where a rank stands among its own
group's members in each step, so it can say at best "one of two" per step: a pair (TP=2), or
half a group, can never reach the FDR level over a short capture. This test asks how far:

- Each rank's value in a step is aligned on its group's median in that step and divided by it
  (a relative deviation: timing jitter is multiplicative, and groups doing more work spread
  more in absolute terms). This is per-group work; the pooling below is a merge of the groups'
  aligned deviations, keyed by what they measure (untraced time, a class of work, blame).
- Null: the rank's aligned deviations are exchangeable with the other ranks' (every group,
  every step). A sustained or recurring excess puts k of its S values high among all of them;
  the count in the top M is hypergeometric, exact and distribution-free (rank_pvalue), so
  hiccups of any size and rate are as likely on any rank and no tail is extrapolated.
- Several culprits mask each other (each one's excesses fill the pool's tail the other is
  judged against). Generalised ESD (Rosner, 1983): take the most extreme rank out of the pool,
  judge the next against the rest, and so on up to fewer than half the ranks; stage i's p-value
  is Bonferroni-corrected for picking the most extreme of the remaining ranks, and the rank
  removed at stage j is rejected when any stage i >= j is (its p-value is the smallest of
  theirs). The null is thus estimated from the non-suspect ranks. A rank's p-value is the
  smaller of that and its own test against every other rank, doubled.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kat.tools.outpost.samples import Samples

MIN_POOL_RANKS = 3  # below it no majority of other ranks can carry the null


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


def rank_pvalue(mine: np.ndarray, pool: np.ndarray) -> float:
    """How unlikely it is that k of the rank's S values sit this high among the S + n values,
    for the best k. Under the null the rank's values and the pool are exchangeable, so the
    number of the rank's values among the top M of all N is hypergeometric (N, M, S): exact,
    distribution-free, whatever the hiccups' size or rate. For each k, M is the position of the
    rank's k-th largest value (ties counted against it); the smallest tail over k is taken with
    a Bonferroni factor S. A hiccup is k = 1 and never significant; a rank above every value of
    a pool of 70 in 6 of its 10 steps has p = 10 C(10,6)/C(80,6), about 7e-6."""
    if not len(mine) or not len(pool):
        return 1.0
    v = np.sort(mine)[::-1]
    return _tail_p(v, len(pool) - np.searchsorted(np.sort(pool), v, side="left"), len(pool))


def _tail_p(v: np.ndarray, ge: np.ndarray, n: int) -> float:
    """`rank_pvalue` from the rank's values in descending order (`v`), how many of the `n` pool
    values are >= each of them (`ge`)."""
    s = len(v)
    if not s or not n:
        return 1.0
    k = np.arange(1, s + 1)
    m = k + ge  # combined position of the k-th largest
    big_n = s + n
    # P(X >= k) for X ~ Hypergeometric(N, M_k, S): sum over j >= k of C(M,j) C(N-M,S-j) / C(N,S).
    logf = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, big_n + 1)))))

    def log_comb(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(logf[a] - logf[b] - logf[a - b])

    mm, jj = m[:, None], k[None, :]
    ok = (jj >= k[:, None]) & (jj <= mm) & (s - jj <= big_n - mm)
    jj_c, mm_c = np.where(ok, jj, s), np.where(ok, mm, big_n)
    logp = log_comb(mm_c, jj_c) + log_comb(big_n - mm_c, s - jj_c) - float(log_comb(np.array(big_n), np.array(s)))
    tail = np.where(ok, np.exp(logp), 0.0).sum(axis=1)
    return float(min(1.0, s * tail.min()))


def _esd(e: np.ndarray, rank: np.ndarray) -> dict[int, float]:
    """Generalised ESD over ranks, then each rank's p-value (see the module docstring)."""
    ranks = np.unique(rank)
    out = {int(r): 1.0 for r in ranks}
    kmax = (len(ranks) - 1) // 2
    if len(ranks) < MIN_POOL_RANKS or kmax < 1:
        return out
    # Each rank's rows as positions (masks of every rank over the pool would take ranks x rows).
    by_rank = np.argsort(rank, kind="stable")
    own = dict(zip((int(r) for r in ranks), np.split(by_rank, np.cumsum(np.unique(rank, return_counts=True)[1])[:-1])))
    # Removal order from the first stage (every other rank as the pool): re-ranking at every
    # stage would cost ranks^2 tail fits for an order that removal rarely changes. The pool's
    # count above each value is every value's count minus the rank's own: one sort in all.
    srt, n_all = np.sort(e), len(e)
    first = {}
    for r, idx in own.items():
        mine = np.sort(e[idx])
        v = mine[::-1]
        ge = (n_all - np.searchsorted(srt, v, side="left")) - (len(mine) - np.searchsorted(mine, v, side="left"))
        first[r] = _tail_p(v, ge, n_all - len(mine))
    order = sorted(first, key=lambda r: first[r])[:kmax]
    removed = np.zeros(len(e), dtype=bool)
    stage = []
    for i, r in enumerate(order):
        keep = ~removed
        keep[own[r]] = False
        stage.append(min(1.0, (len(ranks) - i) * rank_pvalue(e[own[r]], e[keep])))
        removed[own[r]] = True
    best = 1.0
    for i in range(len(order) - 1, -1, -1):  # step-up: a later stage's rejection carries the earlier ones
        best = min(best, stage[i])
        out[order[i]] = best
    # Each rank's own first-stage p-value (every other rank as the pool, no selection) is valid
    # on its own; the smaller of it and the ESD p-value, doubled (Bonferroni over the two).
    return {r: min(1.0, 2.0 * min(out[r], first.get(r, 1.0))) for r in out}


def candidates(al: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Per (key, rank) of one unit's `aligned` rows: the rank's own group's test id (for its
    episode), its excess T (ns) and the strata it has. Its p-value needs every group's rows
    (`pooled_rows`, in the merge); these sums need only the rank's own."""
    if al.empty:
        return pd.DataFrame(columns=["rank", "test", "T", "strata", "key", "kind"])
    g = al.groupby(["key", "rank"], sort=False)
    out = g.agg(test=("test", "first"), T=("d", "sum"), strata=("d", "size")).reset_index()
    out = out[["rank", "test", "T", "strata", "key"]]
    out["kind"] = kind
    return out


def pool_of(al: pd.DataFrame, kind: str) -> pd.DataFrame:
    """What the merge pools of one unit's `aligned` rows: kind, key, rank, e, d."""
    return pd.DataFrame(
        {"kind": kind, "key": al["key"].to_numpy(), "rank": al["rank"].to_numpy(), "e": al["e"].to_numpy(), "d": al["d"].to_numpy()}
    )


def pooled_rows(pool: pd.DataFrame, cands: pd.DataFrame) -> pd.DataFrame:
    """The candidates' p-value, z and the key's noise floor, each (kind, key) pooled over every
    row of `pool` (all units' `pool_of`). The p-values do not depend on the pool's row order, so
    the units may come in any order. Columns: the candidates' (but `key`), p, z, floor_ns."""
    if cands.empty or pool.empty:
        return pd.DataFrame()
    wanted = set(zip(cands["kind"], cands["key"]))
    stats = []
    for (kind, key), g in pool.groupby(["kind", "key"], sort=False):
        if (kind, key) not in wanted:
            continue
        p = _esd(g["e"].to_numpy(), g["rank"].to_numpy())
        floor = float(1.4826 * np.median(np.abs(g["d"].to_numpy())))
        stats.append(pd.DataFrame({"kind": kind, "key": key, "rank": list(p), "p": list(p.values()), "floor_ns": floor}))
    if not stats:
        return pd.DataFrame()
    st = pd.concat(stats, ignore_index=True)
    st["rank"] = st["rank"].astype(cands["rank"].dtype)
    st["z"] = [_z(x) for x in st["p"]]
    out = cands.merge(st, on=["kind", "key", "rank"], how="left", sort=False)
    out["p"] = out["p"].fillna(1.0)  # a candidate's rows are always in the pool; kept safe
    out["z"] = out["z"].fillna(0.0)
    lead = ["rank", "test", "T", "strata", "p", "z", "floor_ns", "kind"]
    return out[lead + [c for c in out.columns if c not in lead and c != "key"]]


def pooled_tests(s: Samples, sizes: np.ndarray, kind: str) -> pd.DataFrame:
    """Rows like stratified_z's (test, rank, T, strata, z, p, floor_ns, kind) for each broad
    test of `s` pooled over its groups: `candidates` and `pooled_rows` on one table."""
    al = aligned(s, sizes)
    if al.empty:
        return pd.DataFrame()
    return pooled_rows(pool_of(al, kind), candidates(al, kind))


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
