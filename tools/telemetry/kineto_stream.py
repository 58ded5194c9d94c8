"""Stream the `traceEvents` array of a Chrome trace in decoded chunks, without holding the file.

A Kineto file can be several GB once inflated. We inflate it block by block, cut the event
array at object boundaries into chunks of a few MB and decode each chunk on its own, so memory
stays bounded by the chunk size plus the compact columns the importer keeps. A cut is proven
right by the chunk decoding as JSON: a cut inside a string or a nested object cannot.

A chunk is decoded by the native scanner (tools/telemetry/_kineto_fast.c) when it is built and
the caller asks for it; the scanner answers None for anything it does not handle exactly, and
the chunk then goes through msgspec as before.
"""
from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from tools.telemetry.errors import TraceImportError

try:  # ISA-L inflates gzip 2-3x faster than zlib; same API, same results
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - isal is a dependency, but keep working without it
    _zlib = zlib  # type: ignore[assignment]

MAX_TRACE_BYTES = 16 * 1024**3  # refuse to inflate more than this: a hostile .gz can expand 1000x
CHUNK_BYTES = 4 * 2**20
READ_BYTES = 4 * 2**20
_MAX_CUT_TRIES = 32

_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*\[')
_BOUNDARY = re.compile(rb"\}\s*,\s*(?=\{)")
_ARRAY_END = re.compile(rb"\}\s*\]")
_WS = b" \t\r\n"


class _ByteSource:
    """Inflated bytes of a plain or gzip file, read in blocks, with a total-size guard."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        try:
            self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise TraceImportError(f"cannot read file ({exc.strerror})", path=path) from exc
        head = self._fh.read(2)
        self._fh.seek(0)
        self._gz = _zlib.decompressobj(wbits=31) if head == b"\x1f\x8b" else None
        self.total = 0
        self.eof = False
        self.compressed_bytes = 0

    def read(self) -> bytes:
        """Up to about READ_BYTES of inflated data; b"" at the end."""
        if self.eof:
            return b""
        while True:
            if self._gz is None:
                out = self._fh.read(READ_BYTES)
                self.eof = not out
            else:
                # Inflate at most READ_BYTES per call: keeps memory flat whatever the ratio.
                src = self._gz.unconsumed_tail or self._fh.read(READ_BYTES)
                try:
                    if src:
                        out = self._gz.decompress(src, READ_BYTES)
                    else:
                        out = self._gz.flush()
                        self.eof = True
                except (zlib.error, _zlib.error) as exc:
                    raise TraceImportError(f"corrupt gzip data ({exc})", path=self.path) from exc
                if self._gz.eof and not self._gz.unconsumed_tail:
                    rest = self._gz.unused_data + self._fh.read()
                    if rest.strip(b"\x00"):
                        # Concatenated gzip members are legal; decode the rest with a fresh stream.
                        self._fh.close()
                        self._fh = io.BytesIO(rest)  # type: ignore[assignment]
                        self._gz = _zlib.decompressobj(wbits=31)
                    else:
                        self.eof = True
                elif self.eof and not self._gz.eof:
                    raise TraceImportError("gzip stream is truncated (file cut short?)", path=self.path)
            self.total += len(out)
            if self.total > self.max_bytes:
                raise TraceImportError(f"decompresses to more than {self.max_bytes} bytes; refusing", path=self.path)
            if out or self.eof:
                return out

    def close(self) -> None:
        self._fh.close()


def _json_path(message: str) -> str | None:
    m = re.search(r"at `\$\.?([^`]*)`", message)
    return (m.group(1) or None) if m else None


class NativeChunk:
    """A chunk decoded by the native scanner: column buffers (see _kineto_fast.c) plus the bytes
    they point into. `raw(off, n)` is valid only until the stream moves on to the next chunk."""

    __slots__ = ("cols", "_buf", "_start")

    def __init__(self, cols: dict[str, Any], buf: bytearray, start: int) -> None:
        self.cols = cols
        self._buf = buf
        self._start = start

    def __len__(self) -> int:
        return self.cols["events"]

    def raw(self, off: int, n: int) -> bytes:
        return bytes(self._buf[self._start + off : self._start + off + n])


class EventStream:
    """Iterate decoded event chunks; afterwards `header` holds the document minus its events.

    Chunks are lists of `event_type` structs, or NativeChunk when `native` (the scanner module)
    is given and handles the chunk.
    """

    def __init__(self, path: Path, event_type: type, header_type: type, max_bytes: int = MAX_TRACE_BYTES,
                 native: Any = None) -> None:
        self.path = path
        self._native = native
        self._events_decoder = msgspec.json.Decoder(list[event_type])  # type: ignore[valid-type]
        self._header_decoder = msgspec.json.Decoder(header_type)
        self._src = _ByteSource(path, max_bytes)
        self.header: Any = None
        self.events_seen = 0
        self._offset = 0  # absolute offset of buf[0] in the inflated stream

    def __iter__(self) -> Iterator[list[Any] | NativeChunk]:
        try:
            yield from self._run()
        finally:
            self._src.close()

    # -- helpers -------------------------------------------------------------------------
    def _fill(self, buf: bytearray) -> bool:
        data = self._src.read()
        buf += data
        return bool(data)

    def _decode_chunk(self, buf: bytearray, start: int, end: int) -> list[Any] | NativeChunk | None:
        """Events of one candidate chunk buf[start:end], None if the cut was in the wrong place."""
        if self._native is not None:
            cols = self._native.scan(buf, start, end)
            if cols is not None:
                return NativeChunk(cols, buf, start)
        wrapped = b"[" + bytes(memoryview(buf)[start:end]) + b"]"
        try:
            return self._events_decoder.decode(wrapped)
        except msgspec.ValidationError as exc:
            try:
                msgspec.json.decode(wrapped)
            except msgspec.DecodeError:
                return None  # not even JSON: a wrong cut
            msg = str(exc)
            m = re.search(r"\$\[(\d+)\]", msg)
            if m:  # report the index within the whole file
                idx = int(m.group(1)) + self.events_seen
                msg = msg.replace(f"$[{m.group(1)}]", f"$.traceEvents[{idx}]")
                raise TraceImportError(f"not a Kineto trace: {msg}", path=self.path,
                                       field=_json_path(msg) or f"traceEvents[{idx}]") from exc
            raise TraceImportError(f"not a Kineto trace: {msg}", path=self.path, field="traceEvents") from exc
        except msgspec.DecodeError:
            return None

    def _bad_json(self, buf: bytearray, pos: int) -> TraceImportError:
        try:
            msgspec.json.decode(b"[" + bytes(buf[pos:]) + b"]")
            detail = "event array is not closed"
        except msgspec.DecodeError as exc:
            detail = str(exc)
        hint = " (file looks truncated)" if self._src.eof and ("truncated" in detail or "not closed" in detail) else ""
        return TraceImportError(f"not valid JSON in traceEvents after byte {self._offset + pos}: {detail}{hint}", path=self.path)

    def _run(self) -> Iterator[list[Any] | NativeChunk]:
        buf = bytearray()
        # 1. Find the event array (or a bare top-level array).
        while True:
            more = self._fill(buf)
            stripped = bytes(buf[:64]).lstrip(_WS)
            if stripped[:1] == b"[":
                head = b""
                pos = buf.index(b"[") + 1
                bare = True
                break
            m = _EVENTS_KEY.search(buf)
            if m:
                head = bytes(buf[: m.start()])
                pos = m.end()
                bare = False
                break
            if not more:
                if not buf.strip(_WS):
                    raise TraceImportError("file is empty", path=self.path)
                try:
                    doc = msgspec.json.decode(bytes(buf))
                except msgspec.DecodeError as exc:
                    raise TraceImportError(f"not valid JSON: {exc}", path=self.path) from exc
                if isinstance(doc, dict) and "traceEvents" in doc:
                    raise TraceImportError(f"'traceEvents' must be a list, got {type(doc['traceEvents']).__name__}",
                                           path=self.path, field="traceEvents")
                raise TraceImportError("no 'traceEvents' list: not a Chrome/Kineto trace", path=self.path, field="traceEvents")
        # 2. Cut the array into chunks at object boundaries.
        while True:
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            if pos >= len(buf):
                if not self._fill(buf):
                    raise self._bad_json(buf, pos)
                continue
            if buf[pos] == ord("]"):
                tail_start = pos + 1
                break
            events, end = self._next_chunk(buf, pos)
            if events is None:
                # No cut worked: either we need more bytes, or the data is broken.
                if self._fill(buf):
                    continue
                events, tail_start = self._final_chunk(buf, pos)
                self.events_seen += len(events)
                yield events
                break
            self.events_seen += len(events)
            yield events
            pos = end
            # Drop what is decoded so memory stays bounded.
            if pos > CHUNK_BYTES:
                self._offset += pos
                del buf[:pos]
                pos = 0
        # 3. The rest of the document: metadata may also follow the events.
        while self._fill(buf):
            pass
        tail = bytes(buf[tail_start:])
        doc_bytes = b"[]" if bare else head + b'"traceEvents": []' + tail
        try:
            self.header = self._header_decoder.decode(doc_bytes if not bare else b"{}")
        except msgspec.ValidationError as exc:
            raise TraceImportError(f"not a Kineto trace: {exc}", path=self.path, field=_json_path(str(exc))) from exc
        except msgspec.DecodeError as exc:
            hint = " (file looks truncated)" if "truncated" in str(exc).lower() else ""
            raise TraceImportError(f"not valid JSON around the event array: {exc}{hint}", path=self.path) from exc
        if bare and tail.strip(_WS):
            raise TraceImportError("unexpected data after the event array", path=self.path)

    def _next_chunk(self, buf: bytearray, pos: int) -> tuple[list[Any] | NativeChunk | None, int]:
        """Decode events from pos up to a boundary about CHUNK_BYTES on; (None, pos) if none fits yet."""
        tries = 0
        for m in _BOUNDARY.finditer(buf, min(pos + CHUNK_BYTES, len(buf))):
            events = self._decode_chunk(buf, pos, m.start() + 1)
            if events is not None:
                return events, m.end()
            tries += 1
            if tries >= _MAX_CUT_TRIES:
                raise self._bad_json(buf, pos)
        return None, pos

    def _final_chunk(self, buf: bytearray, pos: int) -> tuple[list[Any] | NativeChunk, int]:
        """The last events, up to the `]` that closes the array."""
        tries = 0
        for m in _ARRAY_END.finditer(buf, pos):
            events = self._decode_chunk(buf, pos, m.start() + 1)
            if events is not None:
                return events, m.end()
            tries += 1
            if tries >= _MAX_CUT_TRIES:
                break
        # Small files never hit CHUNK_BYTES: their events may still cut cleanly at a boundary.
        raise self._bad_json(buf, pos)
