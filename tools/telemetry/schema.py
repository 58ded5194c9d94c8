"""Canonical trace-event schema shared by importers, the simulator, queries and Outpost.

One row per event. Times are integer nanoseconds on one clock per incident. Integer columns
use -1 for "not applicable"; string columns use "" for the same. ``parent`` and ``id`` are row
positions within one rank's table, so a rank's table is self-contained.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

SCHEMA_VERSION = 5  # bump when the importer's output changes: it keys the Parquet cache


class EventKind(str, Enum):
    PYTHON = "python"
    CPU_OP = "cpu_op"
    CUDA_RUNTIME = "cuda_runtime"
    KERNEL = "kernel"
    MEMCPY = "memcpy"
    MEMSET = "memset"
    COLLECTIVE = "collective"
    ANNOTATION = "annotation"
    STEP = "step"


KINDS: tuple[str, ...] = tuple(k.value for k in EventKind)
GPU_KINDS: frozenset[str] = frozenset({"kernel", "memcpy", "memset", "collective"})

# name -> numpy dtype; order is the on-disk column order.
INT_COLUMNS: dict[str, type] = {
    "id": np.int64,
    "rank": np.int32,
    "pid": np.int64,
    "tid": np.int64,
    "ts_ns": np.int64,
    "dur_ns": np.int64,
    "step": np.int64,
    "device": np.int32,
    "stream": np.int64,
    "correlation": np.int64,
    "external_id": np.int64,
    "parent": np.int64,
    "msg_bytes": np.int64,
}
STR_COLUMNS: tuple[str, ...] = ("kind", "name", "coll_name", "group_ranks", "shape")
COLUMNS: tuple[str, ...] = (
    "id",
    "rank",
    "pid",
    "tid",
    "kind",
    "name",
    "ts_ns",
    "dur_ns",
    "step",
    "device",
    "stream",
    "correlation",
    "external_id",
    "parent",
    "coll_name",
    "msg_bytes",
    "group_ranks",
    "shape",
)


def arrow_schema() -> pa.Schema:
    """Arrow schema of the canonical Parquet trace files (strings dictionary-encoded)."""
    import pyarrow as pa  # not at module level: import workers avoid loading it

    fields = []
    for col in COLUMNS:
        if col in INT_COLUMNS:
            fields.append(pa.field(col, pa.from_numpy_dtype(np.dtype(INT_COLUMNS[col]))))
        else:
            fields.append(pa.field(col, pa.dictionary(pa.int32(), pa.string())))
    return pa.schema(fields)


# Collective kernel / op names -> canonical collective names.
COLLECTIVE_ALIASES: dict[str, str] = {
    "allreduce": "all_reduce",
    "all_reduce": "all_reduce",
    "allgather": "all_gather",
    "all_gather": "all_gather",
    "_all_gather_base": "all_gather",
    "all_gather_into_tensor": "all_gather",
    "allgather_into_tensor_coalesced": "all_gather",
    "reducescatter": "reduce_scatter",
    "reduce_scatter": "reduce_scatter",
    "_reduce_scatter_base": "reduce_scatter",
    "reduce_scatter_tensor": "reduce_scatter",
    "alltoall": "all_to_all",
    "all_to_all": "all_to_all",
    "alltoall_base": "all_to_all",
    "allgather_base": "all_gather",
    "all_gather_base": "all_gather",
    "reduce_scatter_base": "reduce_scatter",
    "all_to_allv": "all_to_all",
    "sendrecv": "send_recv",
    "send": "send",
    "recv": "recv",
    "broadcast": "broadcast",
    "reduce": "reduce",
    "barrier": "barrier",
    "gather": "gather",
    "scatter": "scatter",
}

DTYPE_BYTES: dict[str, int] = {
    "float": 4,
    "float32": 4,
    "double": 8,
    "float64": 8,
    "half": 2,
    "float16": 2,
    "c10::half": 2,
    "bfloat16": 2,
    "c10::bfloat16": 2,
    "long": 8,
    "int64": 8,
    "int": 4,
    "int32": 4,
    "short": 2,
    "int16": 2,
    "signed char": 1,
    "unsigned char": 1,
    "char": 1,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
    "c10::float8_e4m3fn": 1,
    "float8_e4m3fn": 1,
}
