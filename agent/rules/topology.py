"""Who runs where: ranks, hosts, GPUs, replicas, host-crossing groups (from the manifest)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kat.knowledge.log_signatures import RankJoin
from kat.tools.telemetry.manifest import IncidentManifest, rank_join


@dataclass
class Topo:
    host_of: dict[int, str] = field(default_factory=dict)
    rank_of_gpu: dict[tuple[str, int], int] = field(default_factory=dict)
    groups: list[list[int]] = field(default_factory=list)  # tp + pp groups
    ranks: list[int] = field(default_factory=list)
    join: RankJoin = field(default_factory=lambda: RankJoin([], []))  # host-level log lines -> ranks

    @classmethod
    def from_manifest(cls, m: IncidentManifest, ranks: list[int]) -> Topo:
        t = cls(ranks=sorted(ranks))
        for w in m.topology.workers:
            if w.host:
                t.host_of[w.rank] = w.host
                if w.gpu is not None:
                    t.rank_of_gpu[(w.host, w.gpu)] = w.rank
        t.join = rank_join(m, ranks)
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
        return self.join.ranks_named_in(text, hosts)
