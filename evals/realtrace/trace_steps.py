"""Read step spans straight from a Kineto trace, on the trace's own absolute clock."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import orjson

_STEP = re.compile(r"^ProfilerStep#(\d+)$")


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
            start = base + round(float(e["ts"]) * 1000)
            out[int(m.group(1))] = (start, start + round(float(e.get("dur", 0)) * 1000))
    return out


def event_count(path: Path) -> int:
    return len(load_trace(path).get("traceEvents", []))
