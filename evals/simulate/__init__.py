"""LMDIA-style simulated incidents: `kat simulate`.

Public API:
    generate_incident(scenario, task, seed, out, *, severity=None, size="small") -> GroundTruth
    generate_suite(name, out) -> list[SuiteCase]
    load_ground_truth(path) -> GroundTruth
    load_tasks() -> dict[str, TaskConfig]
"""

from kat.evals.simulate.categories import ALL_CATEGORIES, COMPONENT, Category, Severity
from kat.evals.simulate.generate import generate_incident
from kat.evals.simulate.ground_truth import ChainLink, Confounder, ExpectedDetection, GroundTruth, Window, load_ground_truth
from kat.evals.simulate.suites import generate_suite, load_suite
from kat.evals.simulate.tasks import TaskConfig, get_task, load_tasks

__all__ = [
    "ALL_CATEGORIES",
    "COMPONENT",
    "Category",
    "Severity",
    "generate_incident",
    "generate_suite",
    "load_suite",
    "ChainLink",
    "Confounder",
    "ExpectedDetection",
    "GroundTruth",
    "Window",
    "load_ground_truth",
    "TaskConfig",
    "get_task",
    "load_tasks",
]
