"""A small BM25 (Okapi) index over chunks: no dependencies, deterministic, fast for a few
thousand chunks. It catches what embeddings miss: metric names, Xid numbers, flags."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

# Whole identifiers first (metric names, flags, dotted names), then their parts are added too:
# "DCGM_FI_DEV_SM_CLOCK" must match both the exact name and a query for "sm clock".
_TOKEN = re.compile(r"[a-z0-9]+(?:[_:.][a-z0-9]+)*")
_PARTS = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be been but by can do does for from has have how i if in into is it its "
    "my no not of on or our so than that the their them then there these they this to up was we "
    "were what when where which while who why will with you your".split()
)


def _stem(tok: str) -> str:
    """Crude suffix stripping so 'throttled', 'throttling' and 'throttle' meet."""
    if tok.isdigit() or len(tok) <= 3:
        return tok
    for suf, rep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", "e"), ("s", "")):
        if tok.endswith(suf) and len(tok) - len(suf) >= 3 and not tok.endswith("ss"):
            tok = tok[: -len(suf)] + rep
            break
    if tok.endswith("e") and len(tok) > 4:
        tok = tok[:-1]
    return tok


def tokenize(text: str) -> list[str]:
    out: list[str] = []
    for m in _TOKEN.finditer(text.lower()):
        whole = m.group(0)
        parts = _PARTS.findall(whole)
        if len(parts) > 1:
            out.append(whole)
        out.extend(_stem(p) for p in parts if p not in _STOP)
    return out


class BM25:
    """Okapi BM25 over pre-tokenised documents; scores for all documents at once."""

    def __init__(self, docs: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tfs = [Counter(tokenize(d)) for d in docs]
        self.lens = [sum(tf.values()) for tf in self.tfs]
        self.avgdl = (sum(self.lens) / len(self.lens)) if self.lens else 0.0
        df: Counter[str] = Counter()
        for tf in self.tfs:
            df.update(tf.keys())
        n = len(self.tfs)
        self.idf = {t: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: str) -> list[float]:
        # Unique query terms: repeating a word in the query should not multiply its weight.
        terms = [t for t in dict.fromkeys(tokenize(query)) if t in self.idf]
        out = [0.0] * len(self.tfs)
        if not terms or not self.avgdl:
            return out
        for i, tf in enumerate(self.tfs):
            norm = self.k1 * (1 - self.b + self.b * self.lens[i] / self.avgdl)
            s = 0.0
            for t in terms:
                f = tf.get(t)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + norm)
            out[i] = s
        return out
