"""Real-trace generator: genuine torch.profiler traces of a multi-process gloo TP decode run.

`generate_case(RealTraceConfig(...), out)` writes one incident bundle; `generate_suite(name, out)`
writes a set. torch is imported only in the rank processes, not by importing this package; the
case and suite writers (numpy) load on first use, so the CLI can list the fault kinds lightly.
"""

from typing import TYPE_CHECKING, Any

from kat.evals.realtrace.models import FaultKind, RealTraceConfig, WorkloadShape

if TYPE_CHECKING:
    from kat.evals.realtrace.case import CaseResult, generate_case
    from kat.evals.realtrace.suite import SUITES, generate_suite, suite_configs

__all__ = ["CaseResult", "FaultKind", "RealTraceConfig", "SUITES", "WorkloadShape", "generate_case", "generate_suite", "suite_configs"]

_LAZY = {"CaseResult": "case", "generate_case": "case", "SUITES": "suite", "generate_suite": "suite", "suite_configs": "suite"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"kat.evals.realtrace.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
