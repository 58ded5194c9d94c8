"""Incident bundle: schema, loading and validation, importers, queries."""
from tools.telemetry.bundle import Bundle, open_bundle
from tools.telemetry.errors import BundleError, TraceImportError
from tools.telemetry.manifest import IncidentManifest

__all__ = ["Bundle", "open_bundle", "BundleError", "TraceImportError", "IncidentManifest"]
