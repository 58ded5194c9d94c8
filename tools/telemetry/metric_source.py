"""Where an incident's metrics come from: the bundle's file, or a Prometheus-compatible API.

Both sources answer the same question — the samples of some metrics over a window, as the
canonical long frame (ts_ns, name, value, host, gpu, rank, extra labels) — so the query layer
and the agent's metric tool call one API whatever the source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from kat.tools.telemetry.bundle import Bundle
    from kat.tools.telemetry.quality import SourceQuality

Status = Literal["ok", "no_data", "error"]
MAX_PATTERN_LEN = 500
_SOURCE_ATTR = "_kat_metric_source"


@dataclass
class MetricSelection:
    """Samples of the chosen metrics, or why there are none; `echo` is the exact query run."""

    status: Status
    searched: str
    frame: pd.DataFrame | None = None
    chosen: list[str] = field(default_factory=list)
    message: str = ""
    echo: dict[str, str] = field(default_factory=dict)  # e.g. {"promql": ..., "range": ...}


class MetricSource(Protocol):
    kind: str  # "file" | "prometheus"
    problems: list[str]  # what went wrong so far (for the diagnosis's missing-data notes)

    def describe(self) -> str: ...

    def names(self) -> list[str]: ...

    def catalog(self) -> dict[str, dict[str, str]]: ...

    def select(
        self, name: str, start_ns: int | None = None, end_ns: int | None = None, exact: list[str] | None = None
    ) -> MetricSelection: ...


def resolve_names(available: list[str], name: str) -> tuple[list[str], str]:
    """Exact name, else a case-insensitive regex over the catalogue; ([], why) when nothing fits."""
    if name in available:
        return [name], ""
    if len(name) > MAX_PATTERN_LEN:
        return [], f"name is {len(name)} characters; at most {MAX_PATTERN_LEN} allowed"
    try:
        pat = re.compile(name, re.IGNORECASE)
    except re.error as exc:
        return [], f"name {name!r} is not a valid regular expression: {exc}"
    chosen = sorted(n for n in available if pat.search(n))
    if chosen:
        return chosen, ""
    toks = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if len(t) > 3]
    close = [n for n in available if any(t in n.lower() for t in toks)][:10]
    return [], f"no metric named or matching {name!r}; similar names: {close or sorted(available)[:10]}"


class FileMetricSource:
    """The bundle's metrics.csv|parquet."""

    kind = "file"

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.problems: list[str] = []

    def describe(self) -> str:
        b = self.bundle
        return str(b.metrics_path) if b.metrics_path else f"{b.root} (no metrics file)"

    def names(self) -> list[str]:
        m = self.bundle.metrics
        return [str(c) for c in m["name"].cat.categories] if not m.empty else []

    def catalog(self) -> dict[str, dict[str, str]]:
        """name -> metadata; a file carries names only."""
        return {n: {} for n in self.names()}

    def select(self, name: str, start_ns: int | None = None, end_ns: int | None = None, exact: list[str] | None = None) -> MetricSelection:
        searched = f"metric {name!r} in {self.describe()}"
        m = self.bundle.metrics
        if m.empty:
            return MetricSelection("no_data", searched, message="the bundle has no metrics")
        if exact is not None:
            chosen, why = [n for n in exact if n in set(self.names())], "none of the names is in the bundle"
        else:
            chosen, why = resolve_names(self.names(), name)
        if not chosen:
            status: Status = "error" if "regular expression" in why or "characters" in why else "no_data"
            return MetricSelection(status, searched, message=why)
        mask = m["name"].isin(chosen).to_numpy().copy()  # pandas hands out read-only views
        if start_ns is not None:
            mask &= (m["ts_ns"] >= start_ns).to_numpy()
        if end_ns is not None:
            mask &= (m["ts_ns"] < end_ns).to_numpy()
        return MetricSelection("ok", searched, frame=m.loc[mask], chosen=chosen)


def attach_metric_source(bundle: Bundle, source: MetricSource) -> None:
    """Make `source` the bundle's metric source for every tool that reads this bundle."""
    setattr(bundle, _SOURCE_ATTR, source)


def metric_source_of(bundle: Bundle) -> MetricSource:
    """The source attached to the bundle, else its metrics file."""
    src = getattr(bundle, _SOURCE_ATTR, None)
    if src is None:
        src = FileMetricSource(bundle)
        setattr(bundle, _SOURCE_ATTR, src)
    return src


def live_quality(bundle: Bundle) -> SourceQuality | None:
    """The metrics' data quality when a live source (not the file) serves them; None otherwise."""
    src = getattr(bundle, _SOURCE_ATTR, None)
    if src is None or src.kind == "file":
        return None
    return src.quality()
