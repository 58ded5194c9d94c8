"""Errors that name the file, field or value at fault."""

from __future__ import annotations

from pathlib import Path

MAX_VALUE_CHARS = 60


def short(value: object) -> str:
    """A value for a message: plain Python types (never `np.float64(...)`), clipped."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


class BundleError(ValueError):
    """An incident bundle (or one of its files) is invalid."""

    def __init__(self, message: str, *, path: Path | str | None = None, field: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.field = field
        where = ""
        if self.path:
            where += f"{self.path}"
        if field:
            where += f" [field {field!r}]" if where else f"field {field!r}"
        super().__init__(f"{where}: {message}" if where else message)


class TraceImportError(BundleError):
    """A trace file could not be imported."""
