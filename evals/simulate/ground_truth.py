"""`ground_truth.json`: what was injected, where, when, and what a detector should find.

The eval harness and Outpost scoring import these models; tools and the agent never read the
file (it only exists in generated cases).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field

GROUND_TRUTH_FILE = "ground_truth.json"
GROUND_TRUTH_VERSION = 1


def rfc3339(ns: int) -> str:
    """Epoch ns -> RFC 3339 UTC with microseconds ('2026-11-21T12:00:00.123456Z')."""
    dt = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ns % 1_000_000_000) // 1000:06d}Z"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Window(_Model):
    """A closed time span on the incident clock (epoch ns) with its RFC 3339 rendering."""

    start_ns: int
    end_ns: int
    start: str
    end: str

    @classmethod
    def of(cls, start_ns: int, end_ns: int) -> Window:
        return cls(start_ns=int(start_ns), end_ns=int(end_ns), start=rfc3339(start_ns), end=rfc3339(end_ns))

    def overlaps(self, start_ns: int, end_ns: int) -> bool:
        return start_ns <= self.end_ns and end_ns >= self.start_ns


class ChainLink(_Model):
    """One cause -> effect link, ordered from root cause to the user-visible symptom."""

    cause: str
    effect: str
    category: str | None = None
    component: str | None = None


class ExpectedDetection(_Model):
    """An anomaly a correct detector reports: this rank, component, window, kind and name."""

    rank: int
    component: str
    window: Window
    kind: str = Field(description="canonical event kind (kernel, collective, memcpy, cpu_op, python, step, ...)")
    name_pattern: str = Field(description="regular expression the anomalous event name matches")
    method: str | None = Field(default=None, description="inter | intra | arrival, where one is expected")
    steps: list[int] = Field(default_factory=list)
    primary: bool = True


class Confounder(_Model):
    """Something injected to mislead: benign by construction, never a detection target."""

    kind: str
    description: str
    ranks: list[int] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list)
    window: Window | None = None


class GroundTruth(_Model):
    """The known answer for one generated incident."""

    version: int = GROUND_TRUTH_VERSION
    incident_id: str
    category: str
    component: str
    is_fault: bool
    severity: str | None = None
    task: str
    seed: int
    size: str
    affected_ranks: list[int] = Field(default_factory=list)
    affected_hosts: list[str] = Field(default_factory=list)
    affected_steps: list[int] = Field(default_factory=list)
    window: Window | None = None
    trace_window: Window
    symptom: str
    summary: str
    causal_chain: list[ChainLink] = Field(default_factory=list)
    expected_detections: list[ExpectedDetection] = Field(default_factory=list)
    confounders: list[Confounder] = Field(default_factory=list)
    parameters: dict[str, float | int | str] = Field(default_factory=dict)
    events_total: int = 0

    def matches(self, rank: int, component: str, start_ns: int, end_ns: int) -> bool:
        """ARCHITECTURE.md detection unit: affected rank, injected component, overlapping window."""
        return (
            self.is_fault
            and self.window is not None
            and rank in self.affected_ranks
            and component == self.component
            and self.window.overlaps(start_ns, end_ns)
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"


def load_ground_truth(path: Path | str) -> GroundTruth:
    """Read `ground_truth.json` from a bundle directory or the file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / GROUND_TRUTH_FILE
    return GroundTruth.model_validate(orjson.loads(p.read_bytes()))


def write_ground_truth(gt: GroundTruth, bundle_dir: Path) -> Path:
    p = Path(bundle_dir) / GROUND_TRUTH_FILE
    p.write_bytes(gt.to_json())
    return p
