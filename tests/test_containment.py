"""The vectorised parent finder agrees with a plain stack walk on random span sets."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kat.tools.telemetry.kineto import _containment_parents


def _reference(pid: np.ndarray, tid: np.ndarray, ts: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Innermost earlier span (start-sorted, longest first) on the same thread that ends no sooner."""
    n = len(ts)
    order = sorted(range(n), key=lambda i: (pid[i], tid[i], ts[i], -end[i]))
    out = np.full(n, -1, dtype=np.int64)
    for a, i in enumerate(order):
        for b in range(a - 1, -1, -1):
            j = order[b]
            if (pid[j], tid[j]) != (pid[i], tid[i]):
                break
            if end[j] >= end[i]:
                out[i] = j
                break
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 50), st.integers(0, 20)), min_size=1, max_size=60))
def test_matches_reference(spans: list[tuple[int, int, int, int]]) -> None:
    pid = np.array([s[0] for s in spans], dtype=np.int64)
    tid = np.array([s[1] for s in spans], dtype=np.int64)
    ts = np.array([s[2] for s in spans], dtype=np.int64)
    end = ts + np.array([s[3] for s in spans], dtype=np.int64)
    got = _containment_parents(pid, tid, ts, end, np.arange(len(spans)))
    ref = _reference(pid, tid, ts, end)
    # Ties (identical spans) may pick either twin; the parent must still contain the child.
    for i in range(len(spans)):
        if got[i] != ref[i]:
            assert got[i] >= 0 and ref[i] >= 0
            g, r = got[i], ref[i]
            assert (ts[g], end[g]) == (ts[r], end[r])
        if got[i] >= 0:
            p = got[i]
            assert ts[p] <= ts[i] and end[p] >= end[i] and (pid[p], tid[p]) == (pid[i], tid[i])


def test_nested_example() -> None:
    ts = np.array([0, 1, 4, 5, 20])
    end = np.array([10, 3, 9, 6, 25])
    z = np.zeros(5, dtype=np.int64)
    assert _containment_parents(z, z, ts, end, np.arange(5)).tolist() == [-1, 0, 0, 2, -1]
