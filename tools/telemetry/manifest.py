"""The incident manifest (`incident.json`) and topology models."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kat.knowledge.log_signatures import GpuSeat, RankJoin
from kat.tools.telemetry.errors import BundleError, short

MAX_RANK = 2**31 - 1  # ranks (and GPU indexes) are int32 in the canonical trace schema


class _Open(BaseModel):
    # Unknown fields are kept, never fatal: users add their own annotations.
    model_config = ConfigDict(extra="allow")


class TimeWindow(_Open):
    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.end < self.start:
            raise ValueError(f"window end {self.end.isoformat()} is before start {self.start.isoformat()}")
        return self

    def start_ns(self) -> int:
        return int(self.start.timestamp() * 1e9)

    def end_ns(self) -> int:
        return int(self.end.timestamp() * 1e9)


class GpuInfo(_Open):
    index: int = Field(ge=0, le=MAX_RANK)
    model: str | None = None
    numa_node: int | None = None


class HostInfo(_Open):
    name: str
    gpus: list[GpuInfo] = Field(default_factory=list)


class WorkerInfo(_Open):
    rank: int = Field(ge=0, le=MAX_RANK)
    host: str | None = None
    gpu: int | None = None
    pid: int | None = None


class Groups(_Open):
    tp: list[list[int]] = Field(default_factory=list)
    pp: list[list[int]] = Field(default_factory=list)
    dp: list[list[int]] = Field(default_factory=list)


class Topology(_Open):
    hosts: list[HostInfo] = Field(default_factory=list)
    workers: list[WorkerInfo] = Field(default_factory=list)
    groups: Groups = Field(default_factory=Groups)

    @model_validator(mode="after")
    def _unique_ranks(self) -> Topology:
        seen: set[int] = set()
        for w in self.workers:
            if w.rank in seen:
                raise ValueError(f"rank {w.rank} appears twice in topology.workers")
            seen.add(w.rank)
        return self

    def worker(self, rank: int) -> WorkerInfo | None:
        return next((w for w in self.workers if w.rank == rank), None)

    def host_of(self, rank: int) -> str | None:
        w = self.worker(rank)
        return w.host if w else None


class IncidentManifest(_Open):
    id: str = Field(min_length=1)
    symptom: str
    title: str | None = None
    window: TimeWindow | None = None
    model: str | None = None
    framework: str | None = None
    topology: Topology = Field(default_factory=Topology)


def load_manifest(path: Path) -> IncidentManifest:
    """Parse and validate `incident.json`; errors name the file and the field."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read the manifest ({exc.strerror})", path=path) from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark (Windows editors) is not part of the JSON
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"not valid JSON ({exc})", path=path) from exc
    if not isinstance(raw, dict):
        kind = {"list": "an array", "str": "a string", "int": "a number", "float": "a number", "bool": "a boolean"}.get(
            type(raw).__name__, "null"
        )
        raise BundleError(f"the manifest must be a JSON object ({{...}}), but it is {kind}", path=path)
    try:
        return IncidentManifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise BundleError(f"{err['msg']} (got {short(err.get('input'))})", path=path, field=field) from exc


def rank_join(m: IncidentManifest, ranks: list[int]) -> RankJoin:
    """The host-level-line -> rank join for this incident's workers (PCI bus ids from its hosts' GPUs)."""
    pci = {(h.name, g.index): str((g.model_extra or {}).get("pci_bus_id") or "") for h in m.topology.hosts for g in h.gpus}
    seats = [
        GpuSeat(rank=w.rank, host=w.host, gpu=w.gpu, pci_bus_id=pci.get((w.host, w.gpu), ""))
        for w in m.topology.workers
        if w.host and w.gpu is not None
    ]
    return RankJoin(seats, ranks)
