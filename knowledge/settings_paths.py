"""Pieces of the settings that need neither pydantic nor the environment: the error type and cache paths.

Shared by knowledge/settings.py (the one reader of the environment) and knowledge/settings_model.py
(the pydantic model), so neither imports the other at module level.
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "KAT_"


class SettingsError(ValueError):
    """A `KAT_*` variable holds a value of the wrong kind; the message names it and the value."""


def cache_root_for(cache_dir: Path | None, xdg_cache_home: str | None) -> Path:
    """Where caches go: KAT_CACHE_DIR, else $XDG_CACHE_HOME/kat, else ~/.cache/kat.

    One that cannot be created or written (read-only, under a file) falls back to a private
    temp dir with one warning on stderr: a cache must never stop a command.
    """
    if cache_dir:
        wanted = Path(cache_dir).expanduser()
    else:
        wanted = (Path(xdg_cache_home).expanduser() if xdg_cache_home else Path.home() / ".cache") / "kat"
    return _writable_or_temp(wanted)


_WARNED: set[Path] = set()


def _writable_or_temp(d: Path) -> Path:
    try:
        d.mkdir(parents=True, exist_ok=True)
        if os.access(d, os.W_OK | os.X_OK):
            return d
    except OSError:
        pass
    import sys
    import tempfile

    alt = Path(tempfile.gettempdir()) / f"kat-{os.getuid() if hasattr(os, 'getuid') else 0}"
    alt.mkdir(parents=True, exist_ok=True, mode=0o700)
    if d not in _WARNED:
        _WARNED.add(d)
        sys.stderr.write(f"warning: {d} is not writable; using {alt} instead (set KAT_CACHE_DIR to a writable directory)\n")
    return alt
