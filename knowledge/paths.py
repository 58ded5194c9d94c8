"""Where the index lives: an explicit path, else $KAT_KB_DIR, else $KAT_CACHE_DIR/kb, else the
user cache dir (~/.cache/kat/kb). The corpus ships with the package; the index is derived data."""

from __future__ import annotations

from pathlib import Path

from kat.knowledge.settings import settings


def default_index_dir() -> Path:
    return settings().kb_index_dir()
