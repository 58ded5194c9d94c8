"""The root-cause taxonomy (ARCHITECTURE.md) and the severity scale the simulator uses."""

from __future__ import annotations

from enum import Enum

# The members are the domain contract's (knowledge/taxonomy.py): Category.GPU_THERMAL_THROTTLING, ...
from kat.knowledge.taxonomy import COMPONENT_OF, Category, normalize_label

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
