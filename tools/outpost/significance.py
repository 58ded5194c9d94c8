"""Rank-level significance: is one worker an outlier among its peers over the whole capture?

Every per-node, per-step comparison of the other tests is folded into a few rank-level
hypotheses, each with a null distribution taken from the capture itself:

- `blame`: how long the peers waited on this rank alone at collectives (arrival order);
- `untraced`: time inside the rank's step with no traced op (a pause or spin before its work);
- `node:<name>`: the rank's time in one traced op (or one class of work) per step.

Null (stratified permutation): within one stratum (a step, or one collective instance when
the capture has too few steps) the members' values are exchangeable: under "no rank is
special" the rank's value is a uniform draw from the stratum's values. Summed over strata the
rank's excess T = sum(v - mean) has mean 0 and variance sum(popvar); z = T / sqrt(sum popvar)
ranks the evidence, and the p-value is Hoeffding's bound on T (each stratum's term lies within
that stratum's range), valid for any tail shape (strata independent). The statistic is self-normalising: a
few huge hiccups lift the variance as much as the sum, so they cannot make a rank significant,
while a moderate excess repeated over many strata (a sustained window, a recurring spike, a
drift) does. The Benjamini-Hochberg procedure then controls the false discovery rate over all
rank-level tests of the capture, and a significant test must also show a material effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kat.tools.outpost.inter import rank_group
from kat.tools.outpost.models import DetectorConfig
from kat.tools.outpost.pooled import aligned, candidates, pool_of
from kat.tools.outpost.samples import Samples
from kat.tools.outpost.tree import CLS_COPY, CLS_CPU, CLS_GPU, CLS_STEP, NodeTable, first_rows, group_ids

CAUSE_TESTS = (
    "blame",
    "untraced",
    "peak_blame",
    "peak_untraced",
    "spread_blame",
    "spread_untraced",
)  # evidence that a rank *made* others wait, not that it was slowed
_TESTED = (CLS_GPU, CLS_COPY, CLS_CPU)


def _blame_samples(inst: pd.DataFrame, per_instance: bool) -> Samples | None:
    if inst.empty:
        return None
    keys = ["gkey", "step", "name_code", "occ"] if per_instance else ["gkey", "step"]
    b = inst.groupby(keys + ["rank"], sort=False, observed=True)["blame_ns"].sum().reset_index()
    stratum = group_ids(*(pd.factorize(b[k])[0] for k in keys))
    gk = pd.factorize(b["gkey"])
    return Samples(
        gk[0], stratum, b["rank"].to_numpy(), b["blame_ns"].to_numpy(dtype=float), b["step"].to_numpy(), [f"blame[{g}]" for g in gk[1]]
    )


def _group_lookup(groups: list[list[int]], ranks: np.ndarray) -> np.ndarray:
    gmap = rank_group(groups)
    lut = np.full(max(max(gmap, default=0), int(ranks.max(initial=0))) + 1, -1, dtype=np.int32)  # one per node: keep it narrow
    for r, g in gmap.items():
        lut[r] = g
    return lut[ranks]


def _untraced_samples(table: NodeTable, groups: list[list[int]]) -> Samples | None:
    n = table.nodes
    sel = np.flatnonzero((n["cls"] == CLS_STEP).to_numpy() & (n["step"].to_numpy() >= 0))
    if not len(sel):
        return None
    rank = n["rank"].to_numpy()[sel]
    group = _group_lookup(groups, rank)
    keep = group >= 0
    sel, rank, group = sel[keep], rank[keep], group[keep]
    step = n["step"].to_numpy()[sel]
    ids = group_ids(group, step, rank)
    value = np.bincount(ids, weights=n["value"].to_numpy()[sel].astype(float))
    first = first_rows(ids)
    g = group[first].astype(np.int64)
    return Samples(g, group_ids(g, step[first]), rank[first], value, step[first], [f"untraced[{i}]" for i in range(len(groups))])


def _work_per_rank(table: NodeTable, groups: list[list[int]]) -> tuple[np.ndarray, ...] | None:
    """Per (group, op name, step, rank) of the tested nodes: group, name code, step, rank, class
    code and the rank's time in that op, rows in order of first appearance. One rank's block of
    nodes at a time (ranks are stored contiguously and the key holds the rank, so the order and
    the sums are those of one pass over all nodes): the per-node arrays of the whole capture,
    millions of rows on a big one, never exist at once."""
    n = table.nodes
    tested = n["cls"].isin(_TESTED).to_numpy() & (n["step"].to_numpy() >= 0)
    rank_col, step_col, name_col = n["rank"].to_numpy(), n["step"].to_numpy(), n["name_code"].to_numpy()
    cls_col, value_col = n["cls"].array.codes, n["value"].to_numpy()
    group_of_rank = _group_lookup(groups, np.arange(int(rank_col.max(initial=-1)) + 1))  # once, not per block
    bounds = sorted(table.offsets.values()) + [len(n)]
    parts: list[tuple[np.ndarray, ...]] = []
    for a, b in zip(bounds, bounds[1:]):
        sel = np.flatnonzero(tested[a:b]) + a
        if not len(sel):
            continue
        rank = rank_col[sel]
        group = group_of_rank[rank]
        keep = group >= 0
        sel, rank, group = sel[keep], rank[keep], group[keep]
        if not len(sel):
            continue
        step, name = step_col[sel], name_col[sel]
        ids = group_ids(name, step, rank)  # the group follows from the rank
        v = np.bincount(ids, weights=value_col[sel].astype(float))
        first = first_rows(ids)
        parts.append(
            (group[first].astype(np.int64), name[first].astype(np.int64), step[first], rank[first], cls_col[sel[first]].astype(np.int64), v)
        )
    if not parts:
        return None
    return tuple(np.concatenate([pt[i] for pt in parts]) for i in range(6))


def _work_samples(table: NodeTable, groups: list[list[int]]) -> Samples | None:
    """Per (group, op name, step, rank): the rank's time in that op; plus per class totals."""
    got = _work_per_rank(table, groups)
    if got is None:
        return None
    g, nm, st, rk, cl, v = got
    # Only ops every member ran in that step: work one rank alone does (a scheduler rank's
    # extra frames) is not comparable, for the op tests nor for the class totals below.
    sizes = np.array([len(x) for x in groups])
    node = group_ids(g, nm, st)
    full = np.bincount(node)[node] == sizes[g]
    g, nm, st, rk, cl, v = g[full], nm[full], st[full], rk[full], cl[full], v[full]
    # Class totals get test keys past the op names: one slowdown spread thin over many ops.
    ck = cl + len(table.names)
    cids = group_ids(g, ck, st, rk)
    cfirst = first_rows(cids)
    g, key, st, rk, v = (
        np.concatenate(x) for x in ((g, g[cfirst]), (nm, ck[cfirst]), (st, st[cfirst]), (rk, rk[cfirst]), (v, np.bincount(cids, weights=v)))
    )
    test = group_ids(g, key)
    first = first_rows(test)
    cats = list(table.nodes["cls"].cat.categories)
    labels = [f"op[{table.names[k]}]" if k < len(table.names) else f"class[{cats[k - len(table.names)]}]" for k in key[first]]
    # Each test's class: an op's own, or the class a total sums.
    cls_code = pd.Series(np.concatenate((cl, ck[cfirst] - len(table.names)))).to_numpy()[first]
    device = np.isin(np.asarray(cats, dtype=object)[cls_code], (CLS_GPU, CLS_COPY))
    return Samples(test, group_ids(test, st), rk, v, st, labels, device)


def stratified_z(s: Samples, sizes: np.ndarray) -> pd.DataFrame:
    """Per (test, rank): excess T over the stratum means, its null sd, z, strata used."""
    df = pd.DataFrame({"test": s.test, "stratum": s.stratum, "rank": s.rank, "v": s.value})
    g = df.groupby("stratum", sort=False)["v"]
    df["members"] = g.transform("size")
    df = df[df["members"].to_numpy() == sizes[df["test"].to_numpy()]]  # strata every member ran
    if df.empty:
        return pd.DataFrame()
    g = df.groupby("stratum", sort=False)["v"]
    df["d"] = df["v"] - g.transform("mean")
    df["var"] = _popvar(df)
    g = df.groupby("stratum", sort=False)["v"]
    df["range2"] = (g.transform("max") - g.transform("min")) ** 2
    agg = df.groupby(["test", "rank"], sort=False).agg(
        T=("d", "sum"), V=("var", "sum"), R=("range2", "sum"), strata=("d", "size"), total=("v", "sum")
    )
    agg = agg.reset_index()
    agg["z"] = agg["T"] / np.sqrt(agg["V"].clip(lower=1.0))
    # p-value: Hoeffding's bound for a sum of independent zero-mean terms each within its
    # stratum's range, P(T >= t) <= exp(-2 t^2 / sum range^2). Valid whatever the tails: the
    # normal approximation of z is too optimistic when a few hiccups dominate a sum.
    t = agg["T"].clip(lower=0.0).to_numpy()
    agg["p"] = np.minimum(1.0, np.exp(-2.0 * t * t / np.maximum(agg["R"].to_numpy(), 1.0)))
    agg["floor_ns"] = np.sqrt(agg["V"] / agg["strata"].clip(lower=1))
    _exact_p(df, agg)
    return agg


EXACT_SCREEN = 0.05  # Hoeffding p below which the exact null tail is computed (above it the bound is kept)
EXACT_GRID = 4096  # lattice points over the null's support


def _exact_p(df: pd.DataFrame, agg: pd.DataFrame) -> None:
    """Replace Hoeffding's bound by the exact tail of the same null where it matters.

    Under the null the rank's excess is a sum over strata of one uniform draw from each stratum's
    deviations; its distribution is the convolution of the strata's discrete uniforms, computed on
    a lattice. Null values are rounded up and the observed sum down, so the lattice p-value is
    never below the exact one (still valid). Hoeffding bounds this same tail from above, so it is
    only tightened: with few strata (a 10-step capture) the bound is far from the tail, which
    costs every sustained fault on one or a minority of members its significance."""
    todo = agg.index[(agg["p"].to_numpy() < EXACT_SCREEN) & (agg["T"].to_numpy() > 0)]
    if not len(todo):
        return
    by_test = df.groupby("test", sort=False)
    for test, rows in agg.loc[todo].groupby("test", sort=False):
        d = by_test.get_group(test)
        strata = [x.to_numpy() for _, x in d.groupby("stratum", sort=False)["d"]]
        lo = np.array([x.min() for x in strata])
        span = float(sum(x.max() - x.min() for x in strata))
        if span <= 0:
            continue
        h = span / EXACT_GRID
        pmf = np.ones(1)
        for x, m in zip(strata, lo):
            k = np.ceil((x - m) / h - 1e-9).astype(int)
            pmf = np.convolve(pmf, np.bincount(k) / len(k))
        tail = np.cumsum(pmf[::-1])[::-1]
        for i in rows.index:
            obs = int(np.floor((float(agg.at[i, "T"]) - lo.sum()) / h + 1e-9))
            p = 1.0 if obs <= 0 else (float(tail[obs]) if obs < len(tail) else 0.0)
            agg.at[i, "p"] = min(float(agg.at[i, "p"]), p)


# Peaks over threshold: the others' deviations above this quantile model the tail. It must be
# high: real hosts mix ordinary jitter with rare preemption hiccups, and only a threshold above
# the jitter makes the exceedances the hiccups' tail (an exponential fit to the jitter would make
# every hiccup look impossible). At least TAIL_MIN exceedances are used.
TAIL_Q = 0.98
TAIL_MIN = 5


def peak_tests(s: Samples, sizes: np.ndarray, tests: np.ndarray) -> pd.DataFrame:
    """One-off events: is a rank's largest deviation (value minus stratum mean) beyond what the
    *other* ranks' deviations in the same test reach? Null: the others' deviations, their upper
    tail modelled as exponential above their 98th percentile (peaks over threshold); the p-value
    of the largest of S strata is 1 - (1 - p1)^S. A hiccup every rank has is inside the others'
    tail; a stall far beyond anything the others show is not. Only `tests` (few, broad ones)."""
    df = pd.DataFrame({"test": s.test, "stratum": s.stratum, "rank": s.rank, "v": s.value})
    df = df[np.isin(df["test"].to_numpy(), tests)]
    if df.empty:
        return pd.DataFrame()
    g = df.groupby("stratum", sort=False)["v"]
    df = df[g.transform("size").to_numpy() == sizes[df["test"].to_numpy()]]
    if df.empty:
        return pd.DataFrame()
    df["d"] = df["v"] - df.groupby("stratum", sort=False)["v"].transform("mean")
    # Plain arrays per test, then one small loop per (rank, test): the tests are few and broad,
    # and pandas' per-call overhead dominated this step on large captures.
    test, rank, d = df["test"].to_numpy(), df["rank"].to_numpy(), df["d"].to_numpy(dtype=float)
    by_test = {int(t): np.flatnonzero(test == t) for t in np.unique(test)}
    rows: list[tuple[int, int, float, int, float, float, float]] = []
    for r in np.unique(rank):
        for t, idx in by_test.items():
            own = rank[idx] == r
            mine, o = d[idx[own]], d[idx[~own]]
            if not len(mine) or not len(o):
                continue
            srt = np.sort(o)
            u = float(np.quantile(srt, TAIL_Q))
            if int((srt > u).sum()) < TAIL_MIN:
                u = float(srt[-TAIL_MIN - 1]) if len(srt) > TAIL_MIN else float(srt[0])
            over = srt[srt > u]
            beta = max(float((over - u).sum()) / max(len(over), 1), 1.0)  # 1 ns: timer resolution
            top = float(mine.max())
            if top > u:
                p1 = (len(over) + 1) / (len(srt) + 1) * float(np.exp(-(top - u) / beta))
            else:
                p1 = float((srt >= top).mean())
            p = float(-np.expm1(len(mine) * np.log1p(-min(p1, 1.0 - 1e-16))))
            rows.append((t, int(r), top, len(mine), (top - u) / beta, p, beta))
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows, columns=["test", "rank", "T", "strata", "z", "p", "floor_ns"])


def _popvar(df: pd.DataFrame) -> np.ndarray:
    """Population variance of each row's stratum (vectorised: E[v^2] - E[v]^2)."""
    g = df.groupby("stratum", sort=False)["v"]
    m = g.transform("mean").to_numpy()
    m2 = df["v"].pow(2).groupby(df["stratum"], sort=False).transform("mean").to_numpy()
    return np.maximum(m2 - m * m, 0.0)


def bh_reject(p: np.ndarray, q: float) -> np.ndarray:
    """Benjamini-Hochberg: which hypotheses are rejected at false discovery rate q."""
    m = len(p)
    if not m:
        return np.zeros(0, dtype=bool)
    order = np.argsort(p)
    ok = p[order] <= q * np.arange(1, m + 1) / m
    out = np.zeros(m, dtype=bool)
    if ok.any():
        out[order[: np.flatnonzero(ok).max() + 1]] = True
    return out


def bh_adjusted(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values)."""
    m = len(p)
    if not m:
        return p
    order = np.argsort(p)
    adj = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def episode(d: np.ndarray) -> tuple[int, int, float]:
    """Maximum-sum run of consecutive strata (Kadane): where the excess concentrates."""
    best, cur, start, lo, hi = 0.0, 0.0, 0, 0, -1
    for i, x in enumerate(d):
        if cur <= 0:
            cur, start = x, i
        else:
            cur += x
        if cur > best:
            best, lo, hi = cur, start, i
    return lo, hi, best


def few_steps_note(steps: int, cfg: DetectorConfig, notes: list[str]) -> None:
    """The note saying per-step tests were skipped (`steps`: distinct profiler steps of the capture)."""
    if steps < cfg.min_steps_for_baseline:
        notes.append(
            f"{steps} profiler step(s): per-step tests (untraced time, slow ops) need {cfg.min_steps_for_baseline}; "
            "skipped. Arrival order is judged per collective instance."
        )


@dataclass
class GroupTests:
    """The rank-level tests of some groups before the FDR pass (`group_tests`)."""

    tests: pd.DataFrame = field(default_factory=pd.DataFrame)  # each test within its own group
    # The peer-spread test pools every group's aligned deviations (pooled.py), so the merge
    # computes its p-values: the groups' pool rows (pooled.pool_of) and the rows it will test
    # (pooled.candidates, with label, device and effect already measured; pooled.pooled_rows).
    pool: pd.DataFrame = field(default_factory=pd.DataFrame)
    pooled: pd.DataFrame = field(default_factory=pd.DataFrame)


def group_tests(table: NodeTable, groups: list[list[int]], inst: pd.DataFrame, cfg: DetectorConfig, few: bool) -> GroupTests:
    """The rank-level tests of the groups present in `table`, before the FDR pass: each test
    needs only its own group's rows, so groups can be tested apart (tools/outpost/phases.py).
    The episode and effect of every test that could survive the FDR pass (p <= fdr) is measured
    here; `fdr_pass` keeps it for the tests that do. The pooled peer-spread test's rows get
    theirs whatever their p-value, which only the merge knows. `few`: the capture has too few
    steps for per-step tests (a fact of the whole capture, not of one group)."""
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return GroupTests()
    step_time = _step_time(table)
    out, pools, cands = [], [], []
    gsize = np.array([len(g) for g in groups])
    # Arrival order is exchangeable only within a lock-step group: pipeline send/recv pairs always
    # see the earlier stage first.
    sync_keys = {",".join(map(str, sorted(g))) for g in groups}
    sync_inst = inst[inst["gkey"].isin(sync_keys)] if not inst.empty else inst
    kinds = [("blame", _blame_samples(sync_inst, per_instance=few))]
    if not few:
        kinds += [("untraced", _untraced_samples(table, groups)), ("work", _work_samples(table, groups))]
    for kind, s in kinds:
        if s is None or not len(s.test):
            continue
        if kind == "blame":
            sizes = np.array([len(lbl[6:-1].split(",")) for lbl in s.labels])
        else:
            sizes = _test_sizes(s, groups, gsize)
        z = stratified_z(s, sizes)
        if z.empty:
            continue
        z["kind"] = kind
        z["label"] = [s.labels[t] for t in z["test"]]
        z["device"] = s.device[z["test"].to_numpy()] if s.device is not None else False
        z["samples"] = [s] * len(z)
        out.append(z)
        if not few:
            # The same tests against the run's own peer spread, pooled over groups (pooled.py).
            al = aligned(s, sizes)
            if not al.empty:
                pools.append(pool_of(al, f"spread_{kind}"))
                c = candidates(al, f"spread_{kind}")
                c["label"] = [s.labels[t] for t in c["test"]]
                c["device"] = s.device[c["test"].to_numpy()] if s.device is not None else False
                c["samples"] = [s] * len(c)
                cands.append(c)
        broad = np.array([t for t, lbl in enumerate(s.labels) if kind != "work" or lbl.startswith("class[")])
        if not few and len(broad):
            pk = peak_tests(s, sizes, broad)
            if not pk.empty:
                pk["kind"] = f"peak_{kind}"
                pk["label"] = [s.labels[t] for t in pk["test"]]
                pk["device"] = s.device[pk["test"].to_numpy()] if s.device is not None else False
                pk["samples"] = [s] * len(pk)
                out.append(pk)
    res = GroupTests(pool=pd.concat(pools, ignore_index=True) if pools else pd.DataFrame())
    cache: dict[int, tuple[dict[str, np.ndarray], dict]] = {}
    if out:
        tests = pd.concat(out, ignore_index=True)
        tests = tests[tests["strata"] >= cfg.min_steps_for_baseline].reset_index(drop=True)
        if not tests.empty:
            # BH rejects no test with p above its level: only those can need an episode.
            _effects(tests, tests["p"].to_numpy() <= cfg.fdr, step_time, cfg, cache)
            res.tests = tests.drop(columns=["samples"])
    if cands:
        pooled = pd.concat(cands, ignore_index=True)
        pooled = pooled[pooled["strata"] >= cfg.min_steps_for_baseline].reset_index(drop=True)
        if not pooled.empty:
            _effects(pooled, np.ones(len(pooled), dtype=bool), step_time, cfg, cache)
            res.pooled = pooled.drop(columns=["samples"])
    return res


def fdr_pass(res: pd.DataFrame, cfg: DetectorConfig) -> pd.DataFrame:
    """Benjamini-Hochberg over all rank-level tests of the capture (the rows of `group_tests`
    of every group): q, significant, noise floor; the effect fields of tests that are not
    significant go back to their defaults (the excess over the whole capture, no episode)."""
    if res.empty:
        return res
    res = res.reset_index(drop=True)
    res["q"] = bh_adjusted(res["p"].to_numpy())
    res["significant"] = bh_reject(res["p"].to_numpy(), cfg.fdr)
    res["noise_floor_ms"] = res["floor_ns"] / 1e6
    quiet = ~res["significant"].to_numpy()
    res.loc[quiet, "effect_ms"] = res.loc[quiet, "T"] / 1e6
    res.loc[quiet, "effect_share"] = np.nan
    res.loc[quiet, "first_step"] = -1
    res.loc[quiet, "last_step"] = -1
    res.loc[quiet, "material"] = False
    return res


def effect_floor_ms(device: bool, cfg: DetectorConfig) -> float:
    """Absolute minimum effect: host-timed evidence carries scheduler granularity, work timed by
    the device's own clock (kernels, copies) only the trace's timer resolution."""
    return cfg.min_device_effect_ms if device else cfg.min_effect_ms


def _test_sizes(s: Samples, groups: list[list[int]], gsize: np.ndarray) -> np.ndarray:
    """Members each test needs per stratum: its group's size."""
    g = pd.Series(s.rank).groupby(s.test).first().map(rank_group(groups))
    sizes = np.zeros(max(len(s.labels), int(s.test.max()) + 1), dtype=int)
    sizes[g.index.to_numpy()] = gsize[g.to_numpy()]
    return sizes


def _step_time(table: NodeTable) -> pd.Series:
    """(rank, step) -> duration of the step span (ns)."""
    n = table.nodes
    st = n.loc[(n["cls"] == CLS_STEP).to_numpy() & (n["step"].to_numpy() >= 0), ["rank", "step", "dur_ns"]]
    return st.groupby(["rank", "step"])["dur_ns"].max().astype(float)


def _effects(
    res: pd.DataFrame, which: np.ndarray, step_time: pd.Series, cfg: DetectorConfig, cache: dict[int, tuple[dict[str, np.ndarray], dict]]
) -> None:
    """For the tests marked in `which`: the episode (consecutive strata where the excess
    concentrates), its excess in ms and as a share of the rank's step time over it; material or
    not. `cache`: each sample table's deviations, shared by calls on the same tables."""
    effect_ms = (res["T"] / 1e6).to_numpy(dtype=float, copy=True)
    share_of = np.full(len(res), np.nan)
    first_step = np.full(len(res), -1, dtype=np.int64)
    last_step = np.full(len(res), -1, dtype=np.int64)
    material = np.zeros(len(res), dtype=bool)
    # Plain arrays and dicts in the loop: it runs for every pooled candidate (pooled.py).
    st = dict(zip(step_time.index.tolist(), step_time.to_numpy(dtype=float).tolist()))
    samples, tests, ranks = res["samples"].to_numpy(), res["test"].to_numpy(), res["rank"].to_numpy()
    kinds, devices = res["kind"].to_numpy(), res["device"].to_numpy()
    for i in np.flatnonzero(which):
        s: Samples = samples[i]
        if id(s) not in cache:
            # Once per sample table: each row's excess over its stratum mean, rows by (test, rank).
            df = pd.DataFrame({"test": s.test, "stratum": s.stratum, "rank": s.rank, "v": s.value, "step": s.step})
            df["m"] = df.groupby("stratum", sort=False)["v"].transform("mean")
            df["d"] = df["v"] - df["m"]
            df = df.sort_values(["test", "rank", "stratum"], kind="stable")
            cols = {c: df[c].to_numpy() for c in ("d", "step", "m")}
            cache[id(s)] = (cols, df.groupby(["test", "rank"], sort=False).indices)
        cols, idx = cache[id(s)]
        pos = idx[(tests[i], ranks[i])]
        lo, hi, best = episode(cols["d"][pos])
        steps = sorted(set(cols["step"][pos][lo : hi + 1].tolist()))
        rank = int(ranks[i])
        span = np.array([st.get((rank, x), 0.0) for x in steps], dtype=float).sum() if steps else 0.0
        share = best / span if span > 0 else np.nan
        effect_ms[i] = best / 1e6
        share_of[i] = share
        first_step[i] = int(min(steps)) if steps else -1
        last_step[i] = int(max(steps)) if steps else -1
        # Material: enough absolute time, and a real share of the step; slow work may instead show
        # a real relative slowdown against the peers (`min_effect`, the inter-worker effect size):
        # a copy path at half speed is a fault even when copies are a sliver of the step.
        base = float(cols["m"][pos][lo : hi + 1].sum())
        big = bool(np.isnan(share) or share >= cfg.min_effect_share)
        if kinds[i] in ("work", "peak_work", "spread_work"):
            big = big or (base > 0 and best / base >= cfg.min_effect)
        material[i] = bool(best / 1e6 >= effect_floor_ms(bool(devices[i]), cfg) and big)
    res["effect_ms"] = effect_ms
    res["effect_share"] = share_of
    res["first_step"] = first_step
    res["last_step"] = last_step
    res["material"] = material
