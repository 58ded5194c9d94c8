"""One domain contract: only knowledge/taxonomy.py enumerates categories and components.

Other modules import it. A tuple/list/set/Literal that spells three or more category or
component names is a second copy of the vocabulary and fails this test; dicts keyed by
category (per-category text) must use only contract keys.
"""

from __future__ import annotations

import ast
from pathlib import Path

from kat.knowledge.taxonomy import COMPONENT_OF, COMPONENTS, DIAGNOSIS_CATEGORIES, TAXONOMY

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("agent", "tools", "knowledge", "evals", "prompts")
CONTRACT = ROOT / "knowledge" / "taxonomy.py"
VOCAB = set(TAXONOMY) | set(COMPONENTS)


def _modules() -> list[Path]:
    return [p for d in SCANNED for p in (ROOT / d).rglob("*.py") if p != CONTRACT]


def test_no_module_but_the_contract_enumerates_the_vocabulary() -> None:
    offenders = []
    for p in _modules():
        tree = ast.parse(p.read_text(), filename=str(p))
        for node in ast.walk(tree):
            elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else []
            named = {e.value for e in elts if isinstance(e, ast.Constant) and e.value in VOCAB}
            if len(named) >= 3:
                offenders.append(f"{p.relative_to(ROOT)}:{node.lineno} spells {sorted(named)}")
            if isinstance(node, ast.Dict):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
                cats = [k for k in keys if k in TAXONOMY]
                if len(cats) >= 3:
                    bad = [k for k in keys if k not in DIAGNOSIS_CATEGORIES]
                    if bad:
                        offenders.append(f"{p.relative_to(ROOT)}:{node.lineno} per-category dict with unknown keys {bad}")
    assert not offenders, "\n".join(offenders)


def test_every_layer_reads_the_same_vocabulary() -> None:
    import typing

    from kat.agent.diagnosis import COMPONENT_OF as DIAG_COMPONENT_OF
    from kat.agent.diagnosis import RootCause
    from kat.evals.simulate.categories import COMPONENT, Category
    from kat.tools.outpost.models import Component

    assert [c.value for c in Category] == list(TAXONOMY)
    assert {c.value: v for c, v in COMPONENT.items()} == {k: COMPONENT_OF[k] for k in TAXONOMY}
    assert set(typing.get_args(Component)) == set(COMPONENTS)
    assert DIAG_COMPONENT_OF is COMPONENT_OF
    assert set(typing.get_args(RootCause.model_fields["category"].annotation)) == set(DIAGNOSIS_CATEGORIES)
    assert RootCause(category="GPU-Thermal throttling", summary="x").category == "gpu_thermal_throttling"


def test_every_category_has_a_card_naming_known_families() -> None:
    from kat.knowledge.cards import CARDS

    assert set(CARDS) == set(TAXONOMY)
    for card in CARDS.values():
        assert all(f.source for f in card.facts), card.category
    assert "throttle_reasons" in CARDS["gpu_thermal_throttling"].supports
    assert "power_limit" in CARDS["gpu_thermal_throttling"].refutes
