"""Suites: many generated incidents from a definition in evals/suites/<name>.yaml.

A definition lists categories, how many cases each, the bundle size, and which tasks to draw
from (by rank limits). Task, severity and seed of each case follow deterministically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field

from kat.evals.simulate.categories import ALL_CATEGORIES, SEVERITIES, Category, parse_category
from kat.evals.simulate.dialects import choose_dialect
from kat.evals.simulate.faults import supported
from kat.evals.simulate.generate import generate_incident
from kat.evals.simulate.tasks import load_tasks
from kat.evals.simulate.topology import build_layout

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    size: str = "small"
    categories: list[str] = Field(default_factory=lambda: [c.value for c in ALL_CATEGORIES])
    cases_per_category: int = 1
    max_ranks: int = 64
    tasks: list[str] = Field(default_factory=list, description="restrict to these tasks (default: all within max_ranks)")
    severities: list[str] = Field(default_factory=lambda: [s.value for s in SEVERITIES])
    base_seed: int = 0
    purpose: Literal["scoring", "development"] = Field(
        "development", description="scoring suites report figures: their seeds lie in SCORING_SEEDS, never used while developing"
    )
    dialects: bool = Field(False, description="render each case in an exporter/log dialect chosen from its seed")


class SuiteCase(BaseModel):
    id: str
    category: str
    task: str
    seed: int
    severity: str | None
    size: str
    path: str
    events: int = 0
    seconds: float = 0.0
    dialect: str = ""


def load_suite(name: str) -> SuiteSpec:
    p = SUITES_DIR / f"{name}.yaml"
    if not p.exists():
        known = ", ".join(sorted(x.stem for x in SUITES_DIR.glob("*.yaml")))
        raise ValueError(f"unknown suite {name!r}; known: {known}")
    return SuiteSpec.model_validate(yaml.safe_load(p.read_text()))


def plan_suite(spec: SuiteSpec) -> list[SuiteCase]:
    """The cases of a suite, without generating them."""
    tasks = load_tasks()
    pool = [t for n, t in tasks.items() if (not spec.tasks or n in spec.tasks) and t.world_size <= spec.max_ranks]
    if not pool:
        raise ValueError(f"suite {spec.name}: no task within {spec.max_ranks} ranks")
    cases = []
    for ci, cname in enumerate(spec.categories):
        cat = parse_category(cname)
        usable = [t for t in pool if supported(cat, build_layout(t)) is None]
        if not usable:
            raise ValueError(f"suite {spec.name}: no task supports {cat.value}")
        for k in range(spec.cases_per_category):
            seed = spec.base_seed + 1000 * ci + k
            task = usable[(ci * 7 + k * 5) % len(usable)]
            sev = None if cat == Category.NONE else spec.severities[(ci + k) % len(spec.severities)]
            cid = f"{k:02d}-{cat.value}" if spec.cases_per_category > 1 else cat.value
            cases.append(SuiteCase(id=cid, category=cat.value, task=task.name, seed=seed, severity=sev, size=spec.size, path=cid))
    return cases


def generate_suite(name: str, out: Path | str, *, progress: Callable[[SuiteCase], None] | None = None) -> list[SuiteCase]:
    """Generate every case of suite `name` under `out/<case id>/` and write `out/suite.json`."""
    spec = load_suite(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cases = plan_suite(spec)
    for c in cases:
        t = time.perf_counter()
        dialect = choose_dialect(c.seed) if spec.dialects else None
        gt = generate_incident(
            c.category,
            c.task,
            c.seed,
            out / c.path,
            severity=c.severity,
            size=c.size,
            incident_id=f"{spec.name}-{c.id}",
            dialect=dialect,
        )
        c.dialect = dialect.name if dialect else ""
        c.events, c.seconds = gt.events_total, round(time.perf_counter() - t, 3)
        if progress:
            progress(c)
    index = {
        "suite": spec.name,
        "description": spec.description,
        "size": spec.size,
        "cases": [c.model_dump(exclude={"seconds"}) for c in cases],
    }
    (out / "suite.json").write_bytes(orjson.dumps(index, option=orjson.OPT_INDENT_2) + b"\n")
    return cases
