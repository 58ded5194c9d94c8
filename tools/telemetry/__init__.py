"""Incident bundle: schema, loading and validation, importers, queries.

Attributes load lazily so that light users (import workers, the CLI's help) do not pay for
pandas and pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kat.tools.telemetry.errors import BundleError, TraceImportError

if TYPE_CHECKING:
    from kat.tools.telemetry.bundle import Bundle, open_bundle
    from kat.tools.telemetry.manifest import IncidentManifest

__all__ = ["Bundle", "open_bundle", "BundleError", "TraceImportError", "IncidentManifest"]


def __getattr__(name: str) -> Any:
    if name in ("Bundle", "open_bundle"):
        from kat.tools.telemetry import bundle

        return getattr(bundle, name)
    if name == "IncidentManifest":
        from kat.tools.telemetry.manifest import IncidentManifest

        return IncidentManifest
    raise AttributeError(name)
