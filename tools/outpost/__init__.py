"""Outpost: training-free anomaly detection over kernel-level traces (TTAD).

Parallel workers run the same program, so each worker is compared with its peers at the same
point of the call tree (inter-worker), with its own repetitions (intra-worker), and by when it
arrives at collectives (arrival). Usable as a plain library and CLI: no LLM stack needed.
"""

from typing import TYPE_CHECKING, Any

from kat.tools.outpost.models import Anomaly, DetectionResult, DetectorConfig

if TYPE_CHECKING:
    from kat.tools.outpost.detector import detect

__all__ = ["detect", "Anomaly", "DetectionResult", "DetectorConfig"]


def __getattr__(name: str) -> Any:
    # The detector (pandas, numpy) loads on first use: a `--cluster` driver needs only the models.
    if name == "detect":
        from kat.tools.outpost.detector import detect

        return detect
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
