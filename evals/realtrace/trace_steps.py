"""Read step spans straight from a Kineto trace, on the trace's own absolute clock."""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import orjson

_STEP = re.compile(r"^ProfilerStep#(\d+)$")


def _us_to_ns(us: float) -> int:
    # Whole and fractional microseconds apart, as the Kineto importer does, so both agree to the ns.
    whole = math.floor(us)
    return int(whole) * 1000 + round((us - whole) * 1000)


def load_trace(path: Path) -> dict:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return orjson.loads(raw)


def step_spans(path: Path) -> dict[int, tuple[int, int]]:
    """ProfilerStep#N -> (start_ns, end_ns), absolute: baseTimeNanoseconds + ts * 1000."""
    doc = load_trace(path)
    base = int(doc.get("baseTimeNanoseconds") or 0)
    out: dict[int, tuple[int, int]] = {}
    for e in doc.get("traceEvents", []):
        if e.get("ph") != "X":
            continue
        m = _STEP.match(str(e.get("name", "")))
        if m:
            start = base + _us_to_ns(float(e["ts"]))
            out[int(m.group(1))] = (start, start + _us_to_ns(float(e.get("dur", 0))))
    return out


def event_count(path: Path) -> int:
    return len(load_trace(path).get("traceEvents", []))
