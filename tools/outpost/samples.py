"""The long table every rank-level test reads (significance.py, pooled.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Samples:
    """Long table of one kind of test: test id, stratum, rank, value (ns)."""

    test: np.ndarray
    stratum: np.ndarray
    rank: np.ndarray
    value: np.ndarray
    step: np.ndarray  # profiler step of each row (for the episode's window)
    labels: list[str]  # test id -> label
    device: np.ndarray | None = None  # test id -> timed on the device (GPU kernels, copies), not the host
