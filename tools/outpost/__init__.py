"""Outpost: training-free anomaly detection over kernel-level traces (TTAD).

Parallel workers run the same program, so each worker is compared with its peers at the same
point of the call tree (inter-worker), with its own repetitions (intra-worker), and by when it
arrives at collectives (arrival). Usable as a plain library and CLI: no LLM stack needed.
"""

from kat.tools.outpost.detector import detect
from kat.tools.outpost.models import Anomaly, DetectionResult, DetectorConfig

__all__ = ["detect", "Anomaly", "DetectionResult", "DetectorConfig"]
