"""Seeds that produce reported figures are never seeds used while developing.

Scoring suites (`purpose: scoring` in evals/suites/*.yaml, e.g. standard) report figures; the
development suites (smoke, demo), the incidents the tests generate and the fine-tuning
train/validation splits are what the Analyzer was tuned on. Sharing a seed would score the
Analyzer on a case it was developed against.
"""

from __future__ import annotations

import ast
from pathlib import Path

from kat.evals.finetune.data import _SPLIT_SEED_BASE
from kat.evals.simulate.suites import SUITES_DIR, load_suite, plan_suite

TESTS = Path(__file__).resolve().parent


def _suite_seeds(purpose: str) -> dict[str, set[int]]:
    out = {}
    for p in sorted(SUITES_DIR.glob("*.yaml")):
        spec = load_suite(p.stem)
        if spec.purpose == purpose:
            out[spec.name] = {c.seed for c in plan_suite(spec)}
    return out


def _int_of(node: ast.AST, names: dict[str, int]) -> set[int]:
    """Seeds an argument expression can take: a literal, a module constant, or `BASE + i` (BASE..BASE+99)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return {node.value}
    if isinstance(node, ast.Name) and node.id in names:
        return {names[node.id]}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        for side in (node.left, node.right):
            base = _int_of(side, names)
            if base:
                return {b + i for b in base for i in range(100)}
    return set()


def _test_seeds() -> set[int]:
    """Seeds of every generate_incident(...) call in tests/, and the live tests' shared cases."""
    seeds: set[int] = set()
    for path in TESTS.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {
            t.id: n.value.value
            for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, int)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "generate_incident":
                if len(node.args) >= 3:
                    seeds |= _int_of(node.args[2], names)
                for kw in node.keywords:
                    if kw.arg == "seed":
                        seeds |= _int_of(kw.value, names)
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "LIVE_CASES" for t in node.targets):
                seeds |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, int)}
    return seeds


def test_scoring_suites_exist_and_standard_is_one() -> None:
    scoring = _suite_seeds("scoring")
    assert "standard" in scoring and load_suite("standard").dialects
    assert "smoke" in _suite_seeds("development")


def test_scoring_seeds_are_disjoint_from_development_seeds() -> None:
    dev = set().union(*_suite_seeds("development").values())
    tests = _test_seeds()
    assert {3, 4100, 4242} <= tests  # the scan sees literals, `BASE + i` and the live cases
    # Fine-tuning train/validation cases: seeds base + 1000 * category + k (k < 100).
    tuned = {
        b + 1000 * ci + k for split in ("train", "validation") for b in [_SPLIT_SEED_BASE[split]] for ci in range(13) for k in range(100)
    }
    for name, seeds in _suite_seeds("scoring").items():
        for what, other in (("development suites", dev), ("tests", tests), ("fine-tuning train/validation", tuned)):
            shared = sorted(seeds & other)
            assert not shared, f"scoring suite {name} shares seeds {shared[:5]} with {what}"
