"""Who runs where: ranks, hosts, GPUs, replicas, host-crossing groups (from the manifest)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kat.tools.telemetry.manifest import IncidentManifest

_RANK_RE = re.compile(r"\brank[ =#:]*(\d+)", re.IGNORECASE)
# NVRM writes 'PCI:0000:3b:00' (domain:bus:device), the kernel '0000:3b:00.0': compare bus:device.
_PCI_RE = re.compile(r"(?:PCI:)?(?:[0-9a-f]{4,8}:)?([0-9a-f]{2}:[0-9a-f]{2})(?:\.[0-9a-f])?\b", re.IGNORECASE)
_GPU_RE = re.compile(r"\bGPU\s*#?(\d+)\b")


@dataclass
class Topo:
    host_of: dict[int, str] = field(default_factory=dict)
    rank_of_gpu: dict[tuple[str, int], int] = field(default_factory=dict)
    groups: list[list[int]] = field(default_factory=list)  # tp + pp groups
    ranks: list[int] = field(default_factory=list)
    rank_of_pci: dict[tuple[str, str], int] = field(default_factory=dict)  # (host, 'bb:dd') -> rank

    @classmethod
    def from_manifest(cls, m: IncidentManifest, ranks: list[int]) -> Topo:
        t = cls(ranks=sorted(ranks))
        for w in m.topology.workers:
            if w.host:
                t.host_of[w.rank] = w.host
                if w.gpu is not None:
                    t.rank_of_gpu[(w.host, w.gpu)] = w.rank
        pci = {}
        for h in m.topology.hosts:
            for g in h.gpus:
                bus = str((g.model_extra or {}).get("pci_bus_id") or "").lower()
                if bus:
                    pci[(h.name, g.index)] = bus[-7:-2]  # bus:device
        t.rank_of_pci = {(k[0], pci[k]): r for k, r in t.rank_of_gpu.items() if k in pci}
        t.groups = [list(g) for g in m.topology.groups.tp + m.topology.groups.pp if g]
        return t

    def rank_for(self, host: str | None, gpu: int | None, rank: int | None) -> int | None:
        if rank is not None and rank >= 0:
            return rank
        if host is not None and gpu is not None:
            return self.rank_of_gpu.get((host, gpu))
        return None

    def on_host(self, host: str) -> list[int]:
        return sorted(r for r, h in self.host_of.items() if h == host)

    def replica(self, rank: int) -> list[int]:
        """Ranks joined to `rank` by tensor/pipeline groups: one model replica."""
        seen, todo = {rank}, [rank]
        while todo:
            r = todo.pop()
            for g in self.groups:
                if r in g:
                    for o in g:
                        if o not in seen:
                            seen.add(o)
                            todo.append(o)
        return sorted(seen)

    def cross_host_ranks(self, host: str) -> list[int]:
        """Ranks on `host` that belong to a group spanning several hosts (inter-node traffic)."""
        out = set()
        for g in self.groups:
            hosts = {self.host_of.get(r) for r in g}
            if len(hosts) > 1:
                out |= {r for r in g if self.host_of.get(r) == host}
        return sorted(out)

    def ranks_named_in(self, text: str, hosts: list[str]) -> list[int]:
        """Ranks a host-level line names: 'rank N', the PCI bus id of a worker's GPU, or 'GPU N' on its host."""
        out = {int(m.group(1)) for m in _RANK_RE.finditer(text) if int(m.group(1)) in self.ranks}
        for m in _PCI_RE.finditer(text):
            bus = m.group(1).lower()
            hits = {r for (h, b), r in self.rank_of_pci.items() if b == bus and (not hosts or h in hosts)}
            if len(hits) == 1:  # the same bus id on several hosts names nobody
                out |= hits
        if not out:
            for m in _GPU_RE.finditer(text):
                g = int(m.group(1))
                for (h, gg), r in self.rank_of_gpu.items():
                    if gg == g and (not hosts or h in hosts):
                        out.add(r)
        return sorted(out)
