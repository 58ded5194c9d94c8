"""Builders for the hostile-input corpus: every file is generated at test time (large ones too).

Each builder takes a scratch directory and returns the path to hand to a command. Traces come
from tests/kineto_factory (the shape torch.profiler writes); bundles from tests/bundle_factory
and the demo bundle shipped in agent/demo_data.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any

import orjson

from kat.agent.demo import DEMO_INCIDENT
from tests.bundle_factory import make_bundle
from tests.kineto_factory import step_trace, write_trace

DAY_NS = 86_400 * 10**9


def one(tmp: Path, doc: Any, name: str = "rank-0.json") -> Path:
    """A single trace file holding `doc` (bytes are written as they are)."""
    p = tmp / name
    if isinstance(doc, bytes):
        p.write_bytes(doc)
    else:
        write_trace(doc, p)
    return p


def ranks_dir(tmp: Path, n: int = 3, **kw: Any) -> Path:
    d = tmp / "traces"
    d.mkdir(parents=True, exist_ok=True)
    for r in range(n):
        write_trace(step_trace(rank=r, world=n, **kw), d / f"rank-{r}.json")
    return d


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def trace_with(**changes: Any) -> dict:
    doc = step_trace()
    doc.update(changes)
    return doc


def event_with(**changes: Any) -> dict:
    doc = step_trace()
    doc["traceEvents"][0].update(changes)
    return doc


def deep_args(tmp: Path) -> Path:
    doc = step_trace()
    text = orjson.dumps(doc)
    nest = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    text = text.replace(b'"args":{"External id"', b'"args":{"deep":' + nest + b',"External id"', 1)
    return one(tmp, text)


def gzip_bomb(tmp: Path, inflated: int) -> Path:
    """`inflated` bytes of zeros, gzip-compressed (~1000x): a small file that inflates hugely."""
    p = tmp / "rank-0.json.gz"
    block = b"\0" * 2**20
    with gzip.open(p, "wb", compresslevel=9) as fh:
        for _ in range(inflated // len(block)):
            fh.write(block)
    return p


def big_non_trace(tmp: Path, size: int) -> Path:
    p = tmp / "rank-0.json"
    with open(p, "wb") as fh:
        fh.write(b'{"schemaVersion": 1, "junk": "')
        chunk = b"a" * 2**20
        for _ in range(size // len(chunk)):
            fh.write(chunk)
        fh.write(b'"}')
    return p


def fifo(tmp: Path, name: str = "pipe") -> Path:
    p = tmp / name
    os.mkfifo(p)
    return p


def truncated(doc: dict, frac: float = 0.6, gz: bool = False) -> bytes:
    data = orjson.dumps(doc)
    if gz:
        data = gzip.compress(data)
    return data[: int(len(data) * frac)]


def demo_copy(tmp: Path, name: str = "demo") -> Path:
    dst = tmp / name
    shutil.copytree(DEMO_INCIDENT, dst)
    return dst


def small_bundle(tmp: Path, name: str = "inc", ranks: int = 2) -> Path:
    return make_bundle(tmp / name, ranks=ranks)


def edit_manifest(root: Path, **changes: Any) -> Path:
    m = orjson.loads((root / "incident.json").read_bytes())
    m.update(changes)
    (root / "incident.json").write_bytes(orjson.dumps(m))
    return root


def append_lines(p: Path, *lines: bytes) -> None:
    with open(p, "ab") as fh:
        for line in lines:
            fh.write(line + b"\n")


def damage_rows(p: Path, every: int, bad: bytes) -> int:
    """Replace every `every`-th data line of a text table with `bad`; the number replaced."""
    lines = p.read_bytes().split(b"\n")
    n = 0
    for i in range(1, len(lines)):
        if lines[i].strip() and i % every == 0:
            lines[i] = bad
            n += 1
    p.write_bytes(b"\n".join(lines))
    return n


def cut_file(p: Path, frac: float) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * frac)])


def flip_bytes(p: Path, at: float = 0.5, n: int = 64) -> None:
    data = bytearray(p.read_bytes())
    i = int(len(data) * at)
    for k in range(i, min(i + n, len(data))):
        data[k] ^= 0xFF
    p.write_bytes(bytes(data))
