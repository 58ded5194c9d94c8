"""Where the index lives: an explicit path, else $KAT_KB_DIR, else $KAT_CACHE_DIR/kb, else the
user cache dir (~/.cache/kat/kb). The corpus ships with the package; the index is derived data."""

from __future__ import annotations

import os
from pathlib import Path


def default_index_dir() -> Path:
    if os.environ.get("KAT_KB_DIR"):
        return Path(os.environ["KAT_KB_DIR"]).expanduser()
    if os.environ.get("KAT_CACHE_DIR"):
        return _writable_or_temp(Path(os.environ["KAT_CACHE_DIR"]).expanduser() / "kb")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return _writable_or_temp(Path(base).expanduser() / "kat" / "kb")


def _writable_or_temp(d: Path) -> Path:
    """A read-only cache dir must not stop a command: fall back to a private temp dir, saying so."""
    try:
        d.mkdir(parents=True, exist_ok=True)
        if os.access(d, os.W_OK | os.X_OK):
            return d
    except OSError:
        pass
    import sys
    import tempfile

    alt = Path(tempfile.gettempdir()) / f"kat-{os.getuid() if hasattr(os, 'getuid') else 0}" / "kb"
    alt.mkdir(parents=True, exist_ok=True, mode=0o700)
    sys.stderr.write(f"warning: {d} is not writable; using {alt} for the knowledge index\n")
    return alt
