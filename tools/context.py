"""One incident the tools read from: the bundle, opened once."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kat.tools.telemetry import Bundle, BundleError, open_bundle


class PathOutsideBundle(ValueError):
    """A tool argument named a file outside the incident bundle."""


@dataclass
class IncidentContext:
    """The incident bundle behind every tool call of one session. Tools only read inside it."""

    path: Path
    kb_mode: Literal["hybrid", "lexical"] = "hybrid"
    prometheus: str | None = None  # metrics from this Prometheus URL instead of the bundle's file
    _bundle: Bundle | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path).resolve()

    @property
    def bundle(self) -> Bundle:
        with self._lock:
            if self._bundle is None:
                self._bundle = open_bundle(self.path)
                from kat.tools.telemetry.prometheus import use_prometheus

                use_prometheus(self._bundle, self.prometheus)  # --prometheus, else incident.json
            return self._bundle

    def inside(self, relative: str) -> Path:
        """Resolve a bundle-relative file name; refuse anything that escapes the bundle."""
        rel = str(relative).strip()
        if not rel or rel.startswith(("/", "~")) or "\x00" in rel:
            raise PathOutsideBundle(f"path {relative!r} must be relative to the incident bundle")
        try:
            p = self.bundle.resolve_inside(rel)
        except BundleError as exc:
            raise PathOutsideBundle(str(exc)) from exc
        if not p.exists():
            raise PathOutsideBundle(f"path {relative!r} does not exist in the incident bundle")
        return p

    def source_problems(self) -> list[str]:
        """What a live source failed to give (for the diagnosis's missing-data notes)."""
        from kat.tools.telemetry.metric_source import metric_source_of

        if self._bundle is None:
            return []
        return list(metric_source_of(self._bundle).problems)

    def workers(self) -> dict[int, dict[str, Any]]:
        """rank -> {host, gpu} from the manifest topology."""
        topo = self.bundle.manifest.topology
        return {w.rank: {"host": w.host, "gpu": w.gpu} for w in topo.workers}
