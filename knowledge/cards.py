"""Signature cards: one YAML file per category in knowledge/signature_cards/ (our own words, each fact with
its source). A card names the metric families (knowledge/metric_families.py) and log families
(knowledge/log_signatures.py) that support or refute the category, and its scope."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, model_validator

from kat.knowledge.log_signatures import LOG_FAMILIES
from kat.knowledge.metric_families import FAMILIES
from kat.knowledge.taxonomy import TAXONOMY

CARD_DIR = Path(__file__).parent / "signature_cards"


class Fact(BaseModel):
    fact: str
    source: str


class Action(BaseModel):
    action: str
    why: str = Field(description="why this comes at its place in the ranking")


class Check(BaseModel):
    family: str = Field(description="metric or log family to re-check after the fix")
    expect: str = Field(description="what it should show once fixed")


class Card(BaseModel):
    category: str
    scope: str = Field(description="one GPU | one host | one process | one replica | all replicas")
    supports: list[str] = Field(default_factory=list, description="metric families that support it when they change at the suspect")
    refutes: list[str] = Field(default_factory=list, description="metric families whose change points elsewhere")
    logs: list[str] = Field(default_factory=list, description="log families that support it")
    lookalikes: list[str] = Field(default_factory=list, description="categories with a similar symptom, to rule out")
    kb_query: str = ""
    facts: list[Fact] = Field(default_factory=list)
    remediation: list[Action] = Field(default_factory=list, description="ranked: the first action first")
    confirm: list[Check] = Field(default_factory=list, description="how to confirm the fix")

    @model_validator(mode="after")
    def _known(self) -> Card:
        if self.category not in TAXONOMY:
            raise ValueError(f"card category {self.category!r} is not in the taxonomy")
        if any(c not in TAXONOMY for c in self.lookalikes):
            raise ValueError(f"card {self.category}: unknown look-alikes {self.lookalikes}")
        bad = [f for f in (*self.supports, *self.refutes) if f not in FAMILIES] + [f for f in self.logs if f not in LOG_FAMILIES]
        bad += [c.family for c in self.confirm if c.family not in FAMILIES and c.family not in LOG_FAMILIES]
        if bad:
            raise ValueError(f"card {self.category}: unknown families {bad}")
        return self


def load_cards(directory: Path = CARD_DIR) -> dict[str, Card]:
    cards = {}
    for p in sorted(directory.glob("*.yaml")):
        try:
            card = Card.model_validate(yaml.safe_load(p.read_text()))
        except Exception as exc:  # a broken card names its file
            raise ValueError(f"{p}: {exc}") from exc
        cards[card.category] = card
    return cards


CARDS: dict[str, Card] = load_cards()
