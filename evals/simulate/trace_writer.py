"""Streaming Kineto (Chrome-trace JSON) writer: one file per rank, events appended in chunks.

Events arrive as pre-rendered JSON strings, so writing costs one join and one compress per
chunk; nothing holds a whole rank in memory. gzip uses mtime=0 so output is byte-identical
for a seed.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import IO

import orjson

FLUSH_EVENTS = 20000


def us(ns: int) -> str:
    """Integer ns -> Kineto microsecond literal with exactly 3 decimals (exact round trip)."""
    return f"{ns // 1000}.{ns % 1000:03d}"


class RankTraceWriter:
    """Writes `{header..., "traceEvents": [ ... ], footer}` for one rank, incrementally."""

    def __init__(self, path: Path, header: dict, footer: dict, compress: bool = True):
        self.path = path
        raw: IO[bytes] = open(path, "wb")
        self._raw = raw
        self._fh: gzip.GzipFile | IO[bytes] = (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) if compress else raw
        )
        # The header is laid out as torch.profiler writes it (one field a line, '"rank": 0'):
        # tools that find the rank by scanning lines, such as HTA, rely on that layout.
        head = json.dumps(header, indent=2).encode() if header else b"{}"
        self._fh.write(head[:-1].rstrip() + (b',\n  "traceEvents": [' if header else b'"traceEvents": ['))
        self._footer = orjson.dumps(footer)[1:]  # '"key":...}' appended after the list
        self._buf: list[str] = []
        self._first = True
        self.count = 0
        self.pending = 0

    def add(self, text: str, n: int = 1) -> None:
        """Append `n` events pre-rendered as one comma-separated JSON fragment."""
        self._buf.append(text)
        self.pending += n
        if self.pending >= FLUSH_EVENTS:
            self.flush()

    def extend(self, events: list[str]) -> None:
        for e in events:
            self.add(e)

    def flush(self) -> None:
        if not self._buf:
            return
        text = ",".join(self._buf)
        self._fh.write((text if self._first else "," + text).encode())
        self._first = False
        self.count += self.pending
        self._buf = []
        self.pending = 0

    def close(self) -> None:
        self.flush()
        self._fh.write(b"]," + self._footer if self._footer != b"}" else b"]}")
        if self._fh is not self._raw:
            self._fh.close()
        self._raw.close()
