"""A writable place for caches and databases: the configured one, else a private temp dir.

A read-only KAT_CACHE_DIR (or home) must not stop a command: it warns once and falls back.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_WARNED: set[str] = set()


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return d.is_dir() and os.access(d, os.W_OK | os.X_OK)


def fallback_dir(name: str) -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    d = Path(tempfile.gettempdir()) / f"kat-{uid}" / name
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def writable_dir(preferred: Path, name: str) -> Path:
    """`preferred` if it can be created and written, else a temp dir (with one warning on stderr)."""
    if _writable(preferred):
        return preferred
    alt = fallback_dir(name)
    key = str(preferred)
    if key not in _WARNED:
        _WARNED.add(key)
        sys.stderr.write(f"warning: {preferred} is not writable; using {alt} instead (set KAT_CACHE_DIR to a writable directory)\n")
    return alt


def writable_file(preferred: Path, name: str) -> Path:
    """A file path whose directory is writable (and the file itself, if it exists)."""
    d = writable_dir(preferred.parent, name)
    p = d / preferred.name
    if p.exists() and not os.access(p, os.W_OK):
        return writable_dir(Path("/nonexistent-kat") / name, name) / preferred.name
    return p
