"""The one settings object: every `KAT_*` environment variable, its type and its default.

It lives in knowledge/, the lowest layer (it imports nothing of kat), so that tools/, knowledge/,
agent/ and evals/ all read the same object without breaking the layering. The README's settings
table lists each variable and the CLI option that overrides it.

`settings()` looks at the environment on every call: a process, or a test that monkeypatches a
variable, always sees the current value. Building the object costs ~5 ms (pydantic-settings'
sources), so it is memoised on the raw values of the variables it reads (a ~2 us look-up).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kat.knowledge.settings_paths import PREFIX, SettingsError, cache_root_for

if TYPE_CHECKING:
    from kat.knowledge.settings_model import Settings

__all__ = ["PREFIX", "Settings", "SettingsError", "TraceImportSettings", "settings", "trace_import_settings"]


def settings() -> Settings:
    """The settings as the environment states them now; a wrong value raises SettingsError naming it."""
    from kat.knowledge import settings_model

    return settings_model.build(tuple((v, os.environ.get(v)) for v in settings_model.VARIABLES))


def __getattr__(name: str) -> Any:
    # The model and its variable list load pydantic: only on demand.
    if name in ("Settings", "_VARIABLES"):
        from kat.knowledge import settings_model

        return settings_model.Settings if name == "Settings" else settings_model.VARIABLES
    raise AttributeError(name)


class TraceImportSettings(NamedTuple):
    """What the trace importer reads, parsed without pydantic (it keeps importing traces light)."""

    cache_root: Path
    import_workers: int | None
    kineto_native: bool
    max_trace_bytes: str | None

    @property
    def trace_cache(self) -> Path:
        """Where imported traces are kept: one Parquet file per rank and source."""
        return self.cache_root / "traces"


_TRUE = ("1", "on", "t", "true", "y", "yes")
_FALSE = ("0", "off", "f", "false", "n", "no")


def _env(name: str) -> str | None:
    v = os.environ.get(name)
    return v if v else None  # an empty variable counts as unset, as in the model


def trace_import_settings() -> TraceImportSettings:
    """The importer's four settings with the model's rules (same names, defaults and checks)."""
    workers = _env(PREFIX + "IMPORT_WORKERS")
    if workers is not None and (not workers.strip().isdigit() or int(workers) < 1):
        raise SettingsError(f"{PREFIX}IMPORT_WORKERS={workers!r}: must be an integer >= 1")
    native = (_env(PREFIX + "KINETO_NATIVE") or "1").strip().lower()
    if native not in _TRUE + _FALSE:
        raise SettingsError(f"{PREFIX}KINETO_NATIVE={native!r}: must be a boolean (1/0, true/false, yes/no, on/off)")
    cache_dir = _env(PREFIX + "CACHE_DIR")
    return TraceImportSettings(
        cache_root=cache_root_for(Path(cache_dir) if cache_dir else None, _env("XDG_CACHE_HOME")),
        import_workers=int(workers) if workers is not None else None,
        kineto_native=native in _TRUE,
        max_trace_bytes=_env(PREFIX + "MAX_TRACE_BYTES"),
    )
