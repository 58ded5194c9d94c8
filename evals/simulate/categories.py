"""The root-cause taxonomy (ARCHITECTURE.md) and the severity scale the simulator uses."""

from __future__ import annotations

from enum import Enum

from kat.knowledge.taxonomy import COMPONENT_OF, TAXONOMY, normalize_label

# The members come from the domain contract (knowledge/taxonomy.py): Category.GPU_THERMAL_THROTTLING, ...
Category = Enum("Category", {name.upper(): name for name in TAXONOMY}, type=str)  # type: ignore[misc]

# Taxonomy column "component"; controls have none.
COMPONENT: dict[Category, str] = {c: COMPONENT_OF[c.value] for c in Category}

FAULT_CATEGORIES: tuple[Category, ...] = tuple(c for c in Category if COMPONENT[c] != "-")
CONTROL_CATEGORIES: tuple[Category, ...] = (Category.NONE, Category.WORKLOAD_SHIFT)
ALL_CATEGORIES: tuple[Category, ...] = tuple(Category)


class Severity(str, Enum):
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


SEVERITIES: tuple[Severity, ...] = tuple(Severity)
# Index into the per-category (mild, moderate, severe) parameter triples.
SEVERITY_INDEX: dict[Severity, int] = {s: i for i, s in enumerate(SEVERITIES)}


def parse_category(value: str) -> Category:
    """A category from its name; a helpful error lists the valid ones."""
    try:
        return Category(normalize_label(value) or "")
    except ValueError:
        valid = ", ".join(c.value for c in Category)
        raise ValueError(f"unknown scenario {value!r}; valid: {valid}") from None
