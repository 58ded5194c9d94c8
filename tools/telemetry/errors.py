"""Errors that name the file, field or value at fault."""

from __future__ import annotations

from pathlib import Path


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
