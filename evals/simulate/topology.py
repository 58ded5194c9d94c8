"""Rank layout of a task: hosts, GPUs, workers and the tp/pp/dp process groups.

Ranks follow vLLM's order: rank = (dp_index * pp + pp_stage) * tp + tp_rank, filling hosts
in order, so TP groups stay inside a host whenever they fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kat.evals.simulate.tasks import TaskConfig


@dataclass(frozen=True)
class Worker:
    rank: int
    dp: int
    stage: int
    tp_rank: int
    host: str
    host_index: int
    gpu: int
    pid: int
    numa_node: int
    pci_bus: str


@dataclass
class Layout:
    task: TaskConfig
    workers: list[Worker]
    hosts: list[str]
    tp_groups: list[list[int]] = field(default_factory=list)
    pp_groups: list[list[int]] = field(default_factory=list)
    dp_groups: list[list[int]] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return len(self.workers)

    def rank_of(self, dp: int, stage: int, tp_rank: int) -> int:
        t = self.task
        return (dp * t.pp + stage) * t.tp + tp_rank

    def ranks_on_host(self, host: str) -> list[int]:
        return [w.rank for w in self.workers if w.host == host]

    def replica_ranks(self, dp: int) -> list[int]:
        return [w.rank for w in self.workers if w.dp == dp]

    def tp_group_of(self, rank: int) -> list[int]:
        return next(g for g in self.tp_groups if rank in g)

    def hosts_of(self, ranks: list[int]) -> list[str]:
        return sorted({self.workers[r].host for r in ranks}, key=self.hosts.index)

    def group_crosses_hosts(self, group: list[int]) -> bool:
        return len({self.workers[r].host for r in group}) > 1


# PCI bus ids of the 8 GPU slots on a typical HGX board (16-GPU hosts reuse them per board).
_BUS_IDS = ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")


def build_layout(task: TaskConfig, host_prefix: str = "gpu-node") -> Layout:
    n = task.world_size
    gph = min(task.gpus_per_host, n)
    hosts = [f"{host_prefix}-{i:02d}" for i in range((n + gph - 1) // gph)]
    workers = []
    for rank in range(n):
        tp_rank = rank % task.tp
        stage = (rank // task.tp) % task.pp
        dp = rank // (task.tp * task.pp)
        hi, gpu = divmod(rank, gph)
        board = gpu // 8
        workers.append(
            Worker(
                rank=rank,
                dp=dp,
                stage=stage,
                tp_rank=tp_rank,
                host=hosts[hi],
                host_index=hi,
                gpu=gpu,
                pid=3100 + 37 * gpu + 1000 * hi,
                numa_node=(gpu % 8) // 4 + 2 * board,
                pci_bus=f"0000:{int(_BUS_IDS[gpu % 8], 16) + 0x40 * board:02x}:00.0",
            )
        )
    lay = Layout(task, workers, hosts)
    for d in range(task.dp):
        for s in range(task.pp):
            lay.tp_groups.append([lay.rank_of(d, s, t) for t in range(task.tp)])
        for t in range(task.tp):
            if task.pp > 1:
                lay.pp_groups.append([lay.rank_of(d, s, t) for s in range(task.pp)])
    if task.dp > 1:
        for s in range(task.pp):
            for t in range(task.tp):
                lay.dp_groups.append([lay.rank_of(d, s, t) for d in range(task.dp)])
    return lay


def manifest_topology(lay: Layout) -> dict:
    """The `topology` block of incident.json."""
    gpu_model = lay.task.gpu
    hosts = []
    for h in lay.hosts:
        gpus = [{"index": w.gpu, "model": gpu_model, "numa_node": w.numa_node, "pci_bus_id": w.pci_bus} for w in lay.workers if w.host == h]
        hosts.append({"name": h, "gpus": gpus})
    workers = [{"rank": w.rank, "host": w.host, "gpu": w.gpu, "pid": w.pid} for w in lay.workers]
    return {
        "hosts": hosts,
        "workers": workers,
        "groups": {"tp": lay.tp_groups if lay.task.tp > 1 else [], "pp": lay.pp_groups, "dp": lay.dp_groups},
    }
