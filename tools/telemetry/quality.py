"""Data quality of an opened bundle: per source, what was read, what was left out and why.

Loaders keep the good rows (or ranks) and record the bad ones here; the Diagnosis carries the
result, so a damaged input is reported instead of silently shrinking the evidence.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kat.tools.telemetry.errors import short

MAX_EXAMPLES = 5  # first few bad rows are quoted; the rest are counted


class SourceQuality(BaseModel):
    """One source (traces, metrics or logs): ok, degraded (some rows/ranks left out) or missing."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "degraded", "missing"] = "ok"
    unit: Literal["rows", "ranks"] = "rows"
    files: list[str] = Field(default_factory=list)
    kept: int = Field(0, description="rows (or ranks) used")
    dropped: int = Field(0, description="rows (or ranks) left out")
    repaired: int = Field(0, description="rows kept after a repair (e.g. non-UTF-8 bytes replaced)")
    reasons: dict[str, int] = Field(default_factory=dict, description="why rows were left out or repaired, with counts")
    examples: list[str] = Field(default_factory=list, description="the first few bad rows: file, line, reason, value")

    def drop(self, where: str, reason: str, value: object = None, count: int = 1) -> None:
        """Record `count` rows left out for `reason`; the first few are quoted with where/value."""
        self.dropped += count
        self.reasons[reason] = self.reasons.get(reason, 0) + count
        self._example(where, reason, value)
        if self.status == "ok":
            self.status = "degraded"

    def repair(self, where: str, reason: str) -> None:
        self.repaired += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self._example(where, reason, None)
        if self.status == "ok":
            self.status = "degraded"

    def missing(self, reason: str) -> None:
        """The whole source is unusable (or absent)."""
        self.status = "missing"
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def _example(self, where: str, reason: str, value: object) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {reason}" + (f" ({short(value)})" if value is not None else ""))

    def line(self, name: str) -> str:
        """One line for a terminal or chat message."""
        if self.files and self.unit == "rows":
            name = f"{name} ({', '.join(self.files)})"
        if self.status == "missing":
            why = "; ".join(self.reasons) or "not in the bundle"
            return f"{name}: missing ({why})"
        head = f"{name}: {self.status}, {self.kept:,} {self.unit} used"
        if self.dropped:
            head += f", {self.dropped:,} left out"
        if self.repaired:
            head += f", {self.repaired:,} repaired"
        if self.reasons and self.status != "ok":
            head += " (" + "; ".join(f"{r}: {n}" for r, n in list(self.reasons.items())[:4]) + ")"
        return head


class DataQuality(BaseModel):
    """Per-source quality of the data a result was computed from."""

    model_config = ConfigDict(extra="forbid")

    traces: SourceQuality = Field(default_factory=lambda: SourceQuality(unit="ranks"))
    metrics: SourceQuality = Field(default_factory=SourceQuality)
    logs: SourceQuality = Field(default_factory=SourceQuality)
    notes: list[str] = Field(default_factory=list, description="other caveats, e.g. claims dropped because their data was missing")

    def sources(self) -> dict[str, SourceQuality]:
        return {"traces": self.traces, "metrics": self.metrics, "logs": self.logs}

    @property
    def degraded(self) -> bool:
        return any(s.status != "ok" for s in self.sources().values())

    def lines(self) -> list[str]:
        return [s.line(n) for n, s in self.sources().items()] + list(self.notes)
