"""Real-trace generator: genuine torch.profiler traces of a multi-process gloo TP decode run.

`generate_case(RealTraceConfig(...), out)` writes one incident bundle; `generate_suite(name, out)`
writes a set. torch is imported only in the rank processes, not by importing this package.
"""

from kat.evals.realtrace.case import CaseResult, generate_case
from kat.evals.realtrace.models import FaultKind, RealTraceConfig, WorkloadShape
from kat.evals.realtrace.suite import SUITES, generate_suite, suite_configs

__all__ = ["CaseResult", "FaultKind", "RealTraceConfig", "SUITES", "WorkloadShape", "generate_case", "generate_suite", "suite_configs"]
