"""Outpost on generated incidents: every fault category's signature is found at the detection
unit (affected rank, injected component, overlapping window) and the controls stay silent.

The bundles are the `smoke` suite (one tiny incident per category, its own seeds, up to 16
ranks, multi-host included); the detector's thresholds were tuned on other seeds.
"""

from __future__ import annotations

import pytest

from kat.evals.detection import CONTROLS, case_dirs
from kat.evals.simulate import generate_suite, load_ground_truth
from kat.evals.simulate.categories import Category
from kat.tools.outpost import DetectionResult, detect
from kat.tools.telemetry import open_bundle


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[DetectionResult, object]]:
    root = tmp_path_factory.mktemp("smoke")
    generate_suite("smoke", root)
    cache = root / ".cache"
    out = {}
    for case in case_dirs(root):
        gt = load_ground_truth(case / "ground_truth.json")
        out[gt.category] = (detect(open_bundle(case, cache_dir=cache)), gt)
    return out


FAULTS = [c.value for c in Category if c.value not in CONTROLS]


@pytest.mark.parametrize("category", FAULTS)
def test_fault_signature_is_found_on_the_culprit(results, category: str) -> None:
    res, gt = results[category]
    hits = [a for a in res.anomalies if gt.matches(a.rank, a.component, a.start_ns, a.end_ns)]
    assert hits, (gt.affected_ranks, gt.component, [(a.rank, a.component, a.method, a.name[:40]) for a in res.anomalies])
    assert res.suspect_ranks[0] in gt.affected_ranks


@pytest.mark.parametrize("category", list(CONTROLS))
def test_controls_report_nothing(results, category: str) -> None:
    res, _ = results[category]
    assert res.anomalies == [] and res.suspect_ranks == [], [(a.rank, a.component, a.detail) for a in res.anomalies]


def test_every_category_was_generated(results) -> None:
    assert set(results) == {c.value for c in Category}
