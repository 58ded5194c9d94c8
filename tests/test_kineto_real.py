"""The importer on every real trace shipped in tests/data/real-traces (recorded on real GPUs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kat.tools.telemetry import open_bundle
from kat.tools.telemetry.kineto import import_kineto
from tests.conftest import REAL_TRACES

GPU_KINDS = ["kernel", "memcpy", "memset", "collective"]


def _load(name: str) -> tuple[pd.DataFrame, object]:
    return import_kineto(REAL_TRACES / name, default_rank=0)


def _parents_contain(df: pd.DataFrame, kinds: list[str]) -> None:
    """Every CPU event with a parent lies inside it, on the same thread."""
    sub = df[df["kind"].isin(kinds) & (df["parent"] >= 0)]
    par = df.iloc[sub["parent"].to_numpy()]
    assert (par["ts_ns"].to_numpy() <= sub["ts_ns"].to_numpy()).all()
    assert ((par["ts_ns"] + par["dur_ns"]).to_numpy() >= (sub["ts_ns"] + sub["dur_ns"]).to_numpy()).all()
    assert (par["tid"].to_numpy() == sub["tid"].to_numpy()).all()


def _launches_match(df: pd.DataFrame) -> float:
    """Share of GPU events linked to a launch call with the same correlation id."""
    gpu = df[df["kind"].isin(GPU_KINDS) & (df["device"] >= 0)]
    linked = gpu[gpu["parent"] >= 0]
    launch = df.iloc[linked["parent"].to_numpy()]
    assert (launch["kind"] == "cuda_runtime").all()
    assert (launch["correlation"].to_numpy() == linked["correlation"].to_numpy()).all()
    # A kernel never starts before the call that launched it.
    assert (linked["ts_ns"].to_numpy() >= launch["ts_ns"].to_numpy()).all()
    return len(linked) / max(len(gpu), 1)


def test_vllm_tp8_b200_eager() -> None:
    df, meta = _load("vllm_tp8_b200_rank_eager.json.gz")
    assert (meta.rank, meta.world_size, meta.backend) == (0, 8, "nccl")
    assert meta.base_time_ns == 1767189312000000000
    # Absolute time = baseTimeNanoseconds + ts (us) * 1000, exact to the ns.
    first_ann = df[df["kind"] == "step"].iloc[0]
    assert first_ann["ts_ns"] == 1767189312000000000 + 1365627862757064
    assert first_ann["name"].startswith("execute_context_")
    assert _launches_match(df) == 1.0
    coll = df[df["kind"] == "collective"]
    assert (coll["coll_name"] == "all_reduce").sum() == 73
    assert coll["name"].str.contains("multimem_all_reduce").sum() == 73
    # Message size comes from the launching op's Input Dims: [888, 3072] bf16.
    assert coll["msg_bytes"].max() == 888 * 3072 * 2
    assert (coll["step"] == 0).all()
    ag = coll[coll["coll_name"] == "all_gather"]
    assert len(ag) == 1 and ag["group_ranks"].iloc[0] == "0,1,2,3,4,5,6,7"
    assert set(df["kind"].unique()) >= {"python", "cpu_op", "cuda_runtime", "kernel", "memcpy", "collective", "step"}
    _parents_contain(df, ["python", "cpu_op", "cuda_runtime"])
    # cuda_driver launches (cuLaunchKernelEx) are launch calls too.
    assert (df["name"] == "cuLaunchKernelEx").sum() > 0


def test_hta_ddp_nccl_collective_metadata() -> None:
    df, meta = _load("hta_ddp_a100_rank0_nccl_args.json.gz")
    assert (meta.rank, meta.world_size) == (0, 2)
    assert sorted(s for s in df["step"].unique() if s >= 0) == [4, 5, 6]
    coll = df[df["kind"] == "collective"]
    assert len(coll) == 21
    assert set(coll["coll_name"]) == {"all_reduce", "broadcast"}
    assert (coll["group_ranks"] == "0,1").all()
    # "In msg nelems" x dtype Float (4 bytes).
    assert (coll["msg_bytes"] % 4 == 0).all() and (coll["msg_bytes"] > 0).all()
    assert 6637568 * 4 in set(coll["msg_bytes"])
    # Collectives run on the autograd thread in DDP; their kernels sit on a side stream.
    assert set(coll["stream"]) == {40}
    assert _launches_match(df) == 1.0
    _parents_contain(df, ["cpu_op", "cuda_runtime", "annotation"])


def test_hta_v100_allreduce_repetitions() -> None:
    df, meta = _load("hta_v100_rank1_2020_allreduce.json.gz")
    assert (meta.rank, meta.world_size) == (1, 2)
    coll = df[df["kind"] == "collective"]
    assert len(coll) == 2020 and (coll["coll_name"] == "all_reduce").all()
    assert sorted(s for s in df["step"].unique() if s >= 0) == [2, 3, 4, 5, 6]
    # Each of the 5 profiler steps holds 404 of the kernels, found through their launch calls.
    counts = coll.groupby("step").size()
    assert counts.to_dict() == {2: 404, 3: 404, 4: 404, 5: 404, 6: 404}
    assert _launches_match(df) == 1.0


@pytest.mark.parametrize("rank", [0, 1])
def test_hta_sampled_pair(rank: int) -> None:
    df, meta = import_kineto(REAL_TRACES / "hta_sampled_pair" / f"rank-{rank}.json.gz")
    assert (meta.rank, meta.world_size) == (rank, 128)
    assert sorted(s for s in df["step"].unique() if s >= 0) == [551, 552]
    coll = df[df["kind"] == "collective"]
    assert len(coll) == 10 and (coll["coll_name"] == "send_recv").all()
    # nccl:all_to_all annotations carry the message size from Input Dims.
    a2a = df[(df["kind"] == "annotation") & (df["coll_name"] == "all_to_all")]
    assert len(a2a) == 4 and (a2a["msg_bytes"] > 0).all()
    assert _launches_match(df) == 1.0


def test_h100_single_rank_without_distributed_info() -> None:
    df, meta = _load("h100_qwen1.5_0.5b_chat.json.gz")
    assert meta.rank == 0 and meta.world_size is None and meta.rank_source == "default"
    assert sorted(s for s in df["step"].unique() if s >= 0) == [6]
    # Some kernels were launched before the profiling window opened: no launch to link to.
    share = _launches_match(df)
    assert 0.6 < share < 1.0
    _parents_contain(df, ["python", "cpu_op", "cuda_runtime"])


def test_mi300_cuda_graph_kernels_hang_under_graph_launch() -> None:
    df, meta = _load("vllm_qwen3_8b_prefilldecode_graph_execution.json.gz")
    assert _launches_match(df) == 1.0
    k = df[df["kind"] == "kernel"]
    launches = df.iloc[k["parent"].to_numpy()]
    per_launch = launches.groupby("name").size()
    # Graph replays launch many kernels from one hipGraphLaunch call.
    assert per_launch["hipGraphLaunch"] > 300
    assert k.groupby("parent").size().max() > 10


def test_directory_of_real_traces_opens_with_ranks_from_distributed_info() -> None:
    b = open_bundle(REAL_TRACES / "hta_sampled_pair")
    assert b.ranks == [0, 1]
    assert b.is_bare_trace_dir
    assert b.manifest.topology.groups.tp == [[0, 1]]
    assert len(b.events(1)) > 4000


def test_second_open_reads_the_parquet_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = REAL_TRACES / "hta_sampled_pair"
    first = open_bundle(src, cache_dir=tmp_path)
    ref = first.events(0)
    import kat.tools.telemetry.import_worker as worker_mod

    def boom(*a, **k):  # noqa: ANN001, ANN002, ANN003
        raise AssertionError("re-imported JSON although a cache entry exists")

    monkeypatch.setattr(worker_mod, "import_kineto_columns", boom)
    second = open_bundle(src, cache_dir=tmp_path)
    again = second.events(0)
    pd.testing.assert_frame_equal(ref, again)
    assert np.array_equal(ref["ts_ns"].to_numpy(), again["ts_ns"].to_numpy())
