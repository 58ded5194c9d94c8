"""One-line error text for users: what failed and the value at fault, never a traceback."""

from __future__ import annotations

MAX_CHARS = 500


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, clipped; a RecursionError says the input nests too deeply."""
    if isinstance(exc, RecursionError):
        return "input nested too deeply to process (RecursionError)"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    from kat.tools.telemetry import BundleError

    if isinstance(exc, BundleError):
        return first[:MAX_CHARS]
    return f"{type(exc).__name__}: {first[:MAX_CHARS]}" if first else type(exc).__name__
