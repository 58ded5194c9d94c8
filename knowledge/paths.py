"""Where the index lives: an explicit path, else $KAT_KB_DIR, else $KAT_CACHE_DIR/kb, else the
user cache dir (~/.cache/kat/kb). The corpus ships with the package; the index is derived data."""

from __future__ import annotations

import os
from pathlib import Path


def default_index_dir() -> Path:
    if os.environ.get("KAT_KB_DIR"):
        return Path(os.environ["KAT_KB_DIR"]).expanduser()
    if os.environ.get("KAT_CACHE_DIR"):
        return Path(os.environ["KAT_CACHE_DIR"]).expanduser() / "kb"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "kat" / "kb"
