"""Quality gate for the `rules` Analyzer over a generated suite (slow: set KAT_RUN_SLOW=1).

Figures in the report were measured the same way on the `standard` and `detection` suites:
`kat simulate --suite standard --out DIR`, then this scoring over every case.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("KAT_RUN_SLOW") != "1", reason="slow: set KAT_RUN_SLOW=1")]


def score(root: Path) -> dict[str, tuple[int, float, float]]:
    """Per category: (cases, top-1 category accuracy, exact affected-rank accuracy)."""
    from kat.agent.session import diagnose

    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for gt_path in sorted(root.rglob("ground_truth.json")):
        gt = json.loads(gt_path.read_text())
        d = diagnose(gt_path.parent, "rules")
        ok_cat = d.root_cause.category == gt["category"]
        ok_rank = ok_cat and sorted(d.root_cause.ranks) == sorted(gt["affected_ranks"])
        p = per[gt["category"]]
        p[0] += 1
        p[1] += ok_cat
        p[2] += ok_rank
    return {c: (n, a / n, b / n) for c, (n, a, b) in per.items()}


def test_rules_quality_on_the_smoke_suite(tmp_path: Path) -> None:
    from kat.evals.simulate import generate_suite

    generate_suite("smoke", tmp_path / "smoke")
    res = score(tmp_path / "smoke")
    assert len(res) == 13
    n = sum(v[0] for v in res.values())
    cat = sum(v[0] * v[1] for v in res.values()) / n
    rank = sum(v[0] * v[2] for v in res.values()) / n
    assert cat >= 0.9 and rank >= 0.9, res
