"""KAT agent: the LangGraph troubleshooting graph, Analyzer backends, the Diagnosis contract, front ends.

from kat.agent import diagnose
d = diagnose("path/to/incident", analyzer="rules")   # -> agent.diagnosis.Diagnosis
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kat.agent.diagnosis import Diagnosis


def diagnose(path: Any, analyzer: str = "rules", **options: Any) -> Diagnosis:
    """Diagnose one incident bundle (lazy import: the CLI's help stays light)."""
    from kat.agent.session import diagnose as _diagnose

    return _diagnose(path, analyzer, **options)


__all__ = ["diagnose"]
