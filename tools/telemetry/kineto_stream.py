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

import gzip
import os
import re
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from kat.tools.telemetry.errors import TraceImportError

_IsalGzipReader: Any  # isal's private reader class has no type stubs
_IsalError: type[Exception]
try:  # ISA-L inflates gzip 2-3x faster than zlib; its reader inflates straight into our buffer
    from isal import isal_zlib as _isal_zlib

    _IsalGzipReader = _isal_zlib._GzipReader
    _IsalError = _isal_zlib.error  # type: ignore[assignment]  # isal's stub declares the class as an instance
except ImportError:  # pragma: no cover - isal is a dependency, but keep working without it
    _IsalGzipReader = None
    _IsalError = zlib.error

# Refuse to inflate more than this: a hostile .gz can expand 1000x. Default: 4x a 1 GiB per-rank
# trace (a long torch.profiler capture; the largest real trace in the test data inflates to 54 MB),
# and never more than a quarter of RAM. KAT_MAX_TRACE_BYTES overrides it (bytes, or 512M, 8G).
MAX_TRACE_ENV = "KAT_MAX_TRACE_BYTES"
_DEFAULT_TRACE_BYTES = 4 * 1024**3
_RAM_FRACTION = 4
# The document before the event array (Kineto: schemaVersion, deviceProperties, distributedInfo)
# is a few KB; a file without `"traceEvents"` in its first 64 MB is not a trace.
MAX_HEADER_BYTES = 64 * 2**20


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def parse_size(text: str) -> int:
    """'1048576', '512M', '8G' -> bytes; ValueError naming the value otherwise."""
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(t[-1:], 1)
    num = t[:-1] if mult > 1 else t
    try:
        n = int(float(num) * mult)
    except ValueError:
        raise ValueError(f"{MAX_TRACE_ENV}={text!r} is not a size (bytes, or e.g. 512M, 8G)") from None
    if n <= 0:
        raise ValueError(f"{MAX_TRACE_ENV}={text!r} must be positive")
    return n


def max_trace_bytes() -> int:
    """The inflated-size cap for one trace file (env KAT_MAX_TRACE_BYTES, else the default)."""
    from kat.knowledge.settings import trace_import_settings  # without pydantic: importing traces stays light

    env = (trace_import_settings().max_trace_bytes or "").strip()
    if env:
        return parse_size(env)
    ram = _ram_bytes()
    return min(_DEFAULT_TRACE_BYTES, ram // _RAM_FRACTION) if ram else _DEFAULT_TRACE_BYTES


# A gzip trace that inflates more than this many times its size is a bomb: the real traces in
# tests/data compress 16-19x (JSON of repeated kernel names), deflate's ceiling is ~1032x.
MAX_GZIP_RATIO = 200
_DEFLATE_MAX_RATIO = 1032
_RATIO_AFTER_BYTES = 64 * 2**20  # judged once this much is inflated: small files are never refused by ratio

MAX_TRACE_BYTES = _DEFAULT_TRACE_BYTES  # kept for callers that pass an explicit cap
# A chunk is cut at the first event boundary CHUNK_BYTES on; the buffer is topped up READ_BYTES
# at a time, so what is left after a cut (moved to the front) stays under READ_BYTES + one event.
# The cuts depend on CHUNK_BYTES only (not on READ_BYTES): string tables are coded chunk by chunk,
# so a different chunk size may order a table differently (same values, other codes).
CHUNK_BYTES = 4 * 2**20
READ_BYTES = 2**20
GZIP_INPUT_BYTES = 2**18  # compressed bytes the gzip reader holds
_MAX_CUT_TRIES = 32

_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*\[')
_BOUNDARY = re.compile(rb"\}\s*,\s*(?=\{)")
_ARRAY_END = re.compile(rb"\}\s*\]")
_WS = b" \t\r\n"
_WS_RUN = re.compile(rb"[ \t\r\n]*")
# The buffer of a finished stream, for the next one: its pages are already mapped (a fresh
# multi-MB buffer per file costs page faults and regrowth copies). Larger ones are let go.
_SPARE: list[bytearray] = []
_SPARE_MAX_BYTES = 32 * 2**20


class _ByteSource:
    """Inflated bytes of a plain or gzip file, read into the caller's buffer, with a total-size guard."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = path
        try:
            self.max_bytes = max_bytes = max_bytes if max_bytes is not None else max_trace_bytes()
        except ValueError as exc:  # a bad setting is named, with the file it stopped
            raise TraceImportError(str(exc), path=path) from exc
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise TraceImportError(f"cannot read file ({exc.strerror})", path=path) from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise TraceImportError("not a regular file (a FIFO, device or socket?)", path=path)
        os.set_blocking(fd, True)
        self._fh = os.fdopen(fd, "rb")
        head = self._fh.read(2)
        self._reader: Any = self._fh
        limit = f"the limit of {max_bytes:,} bytes ({MAX_TRACE_ENV})"
        if head != b"\x1f\x8b" and st.st_size > max_bytes:
            self._fh.close()
            raise TraceImportError(f"file is {st.st_size:,} bytes, over {limit}; refusing", path=path)
        if head == b"\x1f\x8b" and st.st_size >= 18:
            # The gzip trailer holds the inflated size mod 2**32 of the last member: a lower
            # bound of the real size, so a bomb is refused before a byte is inflated.
            self._fh.seek(st.st_size - 4)
            isize = int.from_bytes(self._fh.read(4), "little")
            # A cut-off file ends inside the deflate data: its "trailer" is noise. Deflate cannot
            # inflate more than ~1032x, so a trailer claiming more is not one.
            if max_bytes < isize <= _DEFLATE_MAX_RATIO * st.st_size:
                self._fh.close()
                raise TraceImportError(f"decompresses to at least {isize:,} bytes (gzip trailer), over {limit}; refusing", path=path)
        self._fh.seek(0)
        if head == b"\x1f\x8b":
            # Both readers check the CRC, read concatenated members and skip zero padding.
            self._reader = (
                _IsalGzipReader(self._fh, GZIP_INPUT_BYTES) if _IsalGzipReader is not None else gzip.GzipFile(fileobj=self._fh, mode="rb")
            )
        self.total = 0
        self.eof = False

    def readinto(self, view: memoryview) -> int:
        """Fill up to len(view) bytes of view with inflated data; 0 at the end."""
        if self.eof or not len(view):
            return 0
        try:
            n = self._reader.readinto(view)
        except EOFError as exc:
            raise TraceImportError("gzip stream is truncated (file cut short?)", path=self.path) from exc
        except (zlib.error, _IsalError, gzip.BadGzipFile) as exc:
            raise TraceImportError(f"corrupt gzip data ({exc})", path=self.path) from exc
        self.eof = not n
        self.total += n
        if self._reader is not self._fh and self.total > _RATIO_AFTER_BYTES and self.total > MAX_GZIP_RATIO * max(self._fh.tell(), 1):
            raise TraceImportError(
                f"inflates over {MAX_GZIP_RATIO}x ({self._fh.tell():,} compressed bytes -> {self.total:,} so far): "
                "a gzip bomb, not a trace; refusing",
                path=self.path,
            )
        if self.total > self.max_bytes:
            raise TraceImportError(
                f"decompresses to more than {self.max_bytes:,} bytes, the limit ({MAX_TRACE_ENV}); refusing", path=self.path
            )
        return n

    def read(self) -> bytes:
        """Up to READ_BYTES of inflated data; b"" at the end."""
        buf = bytearray(READ_BYTES)
        n = self.readinto(memoryview(buf))
        del buf[n:]
        return bytes(buf)

    def close(self) -> None:
        if self._reader is not self._fh:
            self._reader.close()
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

    The inflated bytes go straight into one buffer that is reused for the whole file: its first
    `_n` bytes are valid, fills append after them, and after each chunk the undecoded rest moves
    to the front. No other copy of the data is made.
    """

    def __init__(self, path: Path, event_type: type, header_type: type, max_bytes: int | None = None, native: Any = None) -> None:
        self.path = path
        self._native = native
        # The event struct is chosen at run time (fast or full fields): mypy cannot type list[<a variable>].
        self._events_decoder = msgspec.json.Decoder(list[event_type])  # type: ignore[valid-type]
        self._header_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(header_type)
        self._src = _ByteSource(path, max_bytes)
        self.header: Any = None
        self.events_seen = 0
        self._buf = _SPARE.pop() if _SPARE else bytearray()
        self._n = 0  # valid bytes at the start of _buf
        self._offset = 0  # absolute offset of _buf[0] in the inflated stream

    def __iter__(self) -> Iterator[list[Any] | NativeChunk]:
        finished = False
        try:
            yield from self._run()
            finished = True
        finally:
            self._src.close()
            # Only a buffer of a stream that ended normally is kept: after an error, the
            # traceback's frames may still hold a memoryview of it, and a buffer with a live
            # view cannot grow (BufferError in the next file's _fill).
            if finished and len(self._buf) <= _SPARE_MAX_BYTES and not _SPARE:
                _SPARE.append(self._buf)

    # -- buffer ---------------------------------------------------------------------------
    def _fill(self) -> bool:
        """Inflate up to READ_BYTES more after the valid bytes; False at the end of the file."""
        need = self._n + READ_BYTES
        if need > len(self._buf):
            # Grow in place (the buffer object stays the same) to just what is needed: a file's
            # chunks are alike, and the buffer is reused, so it settles at CHUNK_BYTES plus a fill.
            self._buf += bytes(need - len(self._buf))
        got = self._src.readinto(memoryview(self._buf)[self._n : need])
        self._n += got
        return got > 0

    def _drop_front(self, pos: int) -> None:
        """Forget the bytes before pos: the rest (under READ_BYTES + an event) moves to the front."""
        k = self._n - pos
        if k <= pos:  # no overlap: one copy, no temporary
            with memoryview(self._buf) as mv:
                mv[:k] = mv[pos : self._n]
        else:
            self._buf[:k] = bytes(self._buf[pos : self._n])
        self._n = k
        self._offset += pos

    # -- helpers -------------------------------------------------------------------------
    def _decode_chunk(self, start: int, end: int) -> list[Any] | NativeChunk | None:
        """Events of one candidate chunk _buf[start:end], None if the cut was in the wrong place."""
        buf = self._buf
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
                raise TraceImportError(
                    f"not a Kineto trace: {msg}", path=self.path, field=_json_path(msg) or f"traceEvents[{idx}]"
                ) from exc
            raise TraceImportError(f"not a Kineto trace: {msg}", path=self.path, field="traceEvents") from exc
        except msgspec.DecodeError:
            return None

    def _bad_json(self, pos: int) -> TraceImportError:
        try:
            msgspec.json.decode(b"[" + bytes(self._buf[pos : self._n]) + b"]")
            detail = "event array is not closed"
        except msgspec.DecodeError as exc:
            detail = str(exc)
        hint = " (file looks truncated)" if self._src.eof and ("truncated" in detail or "not closed" in detail) else ""
        return TraceImportError(f"not valid JSON in traceEvents after byte {self._offset + pos}: {detail}{hint}", path=self.path)

    def _find_events(self) -> tuple[bytes, int, bool]:
        """(document text before the event array, position of its first event, a bare array?)."""
        self._fill()
        if bytes(self._buf[:3]) == b"\xef\xbb\xbf":  # a UTF-8 byte-order mark is not JSON: skip it
            self._drop_front(3)
        searched = 0  # bytes already searched: each byte is looked at about once (linear, not quadratic)
        while True:
            more = self._fill()
            buf, n = self._buf, self._n
            stripped = bytes(buf[: min(64, n)]).lstrip(_WS)
            if stripped[:1] == b"[":
                return b"", buf.index(b"[", 0, n) + 1, True
            m = _EVENTS_KEY.search(buf, max(0, searched - 64), n)  # 64: the key and its `:` may straddle fills
            searched = n
            if m:
                return bytes(buf[: m.start()]), m.end(), False
            if more and n > MAX_HEADER_BYTES:
                raise TraceImportError(
                    f"no 'traceEvents' list in the first {MAX_HEADER_BYTES // 2**20} MB: not a Chrome/Kineto trace",
                    path=self.path,
                    field="traceEvents",
                )
            if not more:
                if not bytes(buf[:n]).strip(_WS):
                    raise TraceImportError("file is empty", path=self.path)
                try:
                    doc = msgspec.json.decode(bytes(buf[:n]))
                except msgspec.DecodeError as exc:
                    raise TraceImportError(f"not valid JSON: {exc}", path=self.path) from exc
                if isinstance(doc, dict) and "traceEvents" in doc:
                    raise TraceImportError(
                        f"'traceEvents' must be a list, got {type(doc['traceEvents']).__name__}", path=self.path, field="traceEvents"
                    )
                raise TraceImportError("no 'traceEvents' list: not a Chrome/Kineto trace", path=self.path, field="traceEvents")

    def _run(self) -> Iterator[list[Any] | NativeChunk]:
        # 1. Find the event array (or a bare top-level array).
        head, pos, bare = self._find_events()
        # 2. Cut the array into chunks at object boundaries.
        buf = self._buf  # grows in place: always the same object
        while True:
            n = self._n
            ws = _WS_RUN.match(buf, pos, n)
            assert ws is not None  # the pattern matches the empty string too, so it always matches
            pos = ws.end()
            if pos >= n:
                # Only whitespace so far: forget it before reading on, so padding cannot grow the buffer.
                self._drop_front(pos)
                pos = 0
                if not self._fill():
                    raise self._bad_json(pos)
                continue
            if buf[pos] == ord("]"):
                tail_start = pos + 1
                break
            events, end = self._next_chunk(pos)
            if events is None:
                # No cut worked: either we need more bytes, or the data is broken.
                if self._fill():
                    continue
                events, tail_start = self._final_chunk(pos)
                self.events_seen += len(events)
                yield events
                break
            self.events_seen += len(events)
            yield events
            # The consumer is done with the chunk (and its raw bytes): drop them.
            self._drop_front(end)
            pos = 0
        # 3. The rest of the document: metadata may also follow the events.
        while self._fill():
            pass
        tail = bytes(buf[tail_start : self._n])
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

    def _next_chunk(self, pos: int) -> tuple[list[Any] | NativeChunk | None, int]:
        """Decode events from pos up to a boundary about CHUNK_BYTES on; (None, pos) if none fits yet."""
        tries = 0
        n = self._n
        for m in _BOUNDARY.finditer(self._buf, min(pos + CHUNK_BYTES, n), n):
            events = self._decode_chunk(pos, m.start() + 1)
            if events is not None:
                return events, m.end()
            tries += 1
            if tries >= _MAX_CUT_TRIES:
                raise self._bad_json(pos)
        return None, pos

    def _final_chunk(self, pos: int) -> tuple[list[Any] | NativeChunk, int]:
        """The last events, up to the `]` that closes the array."""
        tries = 0
        for m in _ARRAY_END.finditer(self._buf, pos, self._n):
            events = self._decode_chunk(pos, m.start() + 1)
            if events is not None:
                return events, m.end()
            tries += 1
            if tries >= _MAX_CUT_TRIES:
                break
        # Small files never hit CHUNK_BYTES: their events may still cut cleanly at a boundary.
        raise self._bad_json(pos)
