"""The native chunk scanner (tools/telemetry/_kineto_fast.c) against the reference msgspec path.

Both paths must give identical EventColumns (arrays, dtypes, string tables in the same order)
and identical metadata on every real trace, and the same result or the same error on hostile
inputs; the native path must actually be the one that ran where it can.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from kat.tools.telemetry import kineto
from kat.tools.telemetry.kineto import EventColumns, import_kineto_columns
from tests.conftest import REAL_TRACES
from tests.kineto_factory import step_trace

native = pytest.mark.skipif(kineto._native is None, reason="native scanner not built")
REAL_FILES = sorted(p for p in REAL_TRACES.rglob("*") if p.name.endswith((".json", ".json.gz")))


def test_native_scanner_is_built_where_a_compiler_exists() -> None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None or not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip(f"no C compiler ({cc}) or no Python headers: the pure-Python path is used")
    assert kineto._native is not None, "tools/telemetry/_kineto_fast is not built (or is stale): run `pip install -e .` again to build it"


def _run(path: Path, use_native: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any, Any, dict[str, int]]:
    """('ok', cols, meta) or ('error', type, message), plus how many chunks each path decoded."""
    monkeypatch.setenv("KAT_KINETO_NATIVE", "1" if use_native else "0")
    counts = {"native": 0, "reference": 0}
    add_native, add_structs = kineto._Builder._add_native, kineto._Builder._add_structs

    def spy_native(self: Any, chunk: Any) -> None:
        counts["native"] += 1
        add_native(self, chunk)

    def spy_structs(self: Any, events: Any) -> None:
        counts["reference"] += 1
        add_structs(self, events)

    monkeypatch.setattr(kineto._Builder, "_add_native", spy_native)
    monkeypatch.setattr(kineto._Builder, "_add_structs", spy_structs)
    try:
        cols, meta = import_kineto_columns(path, default_rank=0)
        out: tuple[str, Any, Any] = ("ok", cols, meta)
    except Exception as exc:  # noqa: BLE001 - the two paths must fail alike, whatever the type
        out = ("error", type(exc).__name__, str(exc))
    finally:
        monkeypatch.setattr(kineto._Builder, "_add_native", add_native)
        monkeypatch.setattr(kineto._Builder, "_add_structs", add_structs)
    return (*out, counts)


def _assert_same_columns(a: EventColumns, b: EventColumns) -> None:
    assert a.ints.keys() == b.ints.keys() and a.codes.keys() == b.codes.keys()
    for k in a.ints:
        assert a.ints[k].dtype == b.ints[k].dtype, k
        np.testing.assert_array_equal(a.ints[k], b.ints[k], err_msg=k)
    for k in a.codes:
        assert a.codes[k].dtype == b.codes[k].dtype, k
        np.testing.assert_array_equal(a.codes[k], b.codes[k], err_msg=k)
    assert a.tables == b.tables


def _compare(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, int]]:
    ref = _run(path, False, monkeypatch)
    nat = _run(path, True, monkeypatch)
    assert ref[3]["native"] == 0
    assert ref[0] == nat[0], (ref[:3], nat[:3])
    if ref[0] == "ok":
        _assert_same_columns(ref[1], nat[1])
        assert ref[2].__dict__ == nat[2].__dict__
    else:
        assert ref[1:3] == nat[1:3]
    return nat, nat[3]


@native
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_real_traces_identical_and_native(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nat, counts = _compare(path, monkeypatch)
    assert nat[0] == "ok" and len(nat[1]) > 1000
    assert counts["native"] >= 1 and counts["reference"] == 0, counts


def _hostile_events() -> list[dict[str, Any]]:
    doc = step_trace(steps=4)
    ev = doc["traceEvents"]
    x = [e for e in ev if e.get("ph") == "X"]
    x[0]["name"] = 'aten::mm odd}, {"ph": "X"} "quoted" \\ back\nslash \t tab'
    x[1]["name"] = "caf\u00e9 \u65e5\u672c \U0001f680 \u0000 nul"
    x[2]["args"]["Input Dims"] = [[1.5, 2], [], [[3, 4]], ["x"], None]
    x[3]["args"]["Input Dims"] = []
    x[4]["args"]["Input Dims"] = [[-3, 0], [123456789012345678901234567890]]
    x[5]["args"] = None
    x[6].pop("dur")
    x[7]["dur"] = 0.0005
    x[8]["ts"] = 1669783687464181.125
    x[9]["args"]["correlation"] = None
    x[10]["args"]["Input Dims"] = "not a list"
    x[11]["tid"] = 2**52
    x[12]["args"]["Process Group Ranks"] = [0, 1]
    x[13]["args"]["In msg nelems"] = 2**70
    ev.append(
        {
            "ph": "X",
            "cat": "cpu_op",
            "name": "nccl:all_reduce",
            "pid": 1,
            "tid": 1,
            "ts": 5,
            "dur": 1,
            "args": {"Input Dims": [[4, 4]], "Input type": ["float"]},
        }
    )
    ev.append(
        {"ph": "X", "cat": "user_annotation", "name": "execute_context_0(1)_generation_0(0)", "pid": 1, "tid": 1, "ts": 1, "dur": 100}
    )
    ev.append({"ph": "X", "cat": "gpu_user_annotation", "name": "ignored", "pid": [1], "tid": {"a": 1}, "ts": "x"})
    ev.append({"ph": "i", "cat": "cpu_instant_event", "name": "instant", "pid": 1, "tid": 1, "ts": 1e400 if False else 7})
    ev.append({"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "python"}})
    return doc


MUTATIONS: list[tuple[str, Any]] = [
    ("ts", "soon"),
    ("ts", "12.5"),
    ("ts", None),
    ("ts", True),
    ("ts", [1]),
    ("ts", 2**60),
    ("ts", -3.25),
    ("dur", -5),
    ("dur", "3"),
    ("dur", None),
    ("dur", 1e-9),
    ("dur", {"a": 1}),
    ("pid", "host"),
    ("pid", 1.5),
    ("pid", None),
    ("pid", True),
    ("pid", 2**60),
    ("tid", "stream 7"),
    ("name", 42),
    ("name", None),
    ("name", ""),
    ("name", "ProfilerStep#12"),
    ("name", "gloo:all_reduce"),
    ("name", "ncclDevKernel_AllGather_RING"),
    ("name", "vllm::all_reduce"),
    ("cat", ["kernel"]),
    ("cat", 7),
    ("cat", "Kernel"),
    ("cat", None),
    ("ph", "B"),
    ("ph", 1),
    ("args", []),
    ("args", "x"),
    ("args", {}),
    ("args", {"correlation": 1.0}),
    ("args", {"correlation": "5"}),
    ("args", {"correlation": True}),
    ("args", {"correlation": -4}),
    ("args", {"device": "cuda:0"}),
    ("args", {"stream": 2**62}),
    ("args", {"External id": [1]}),
    ("args", {"Collective name": None}),
    ("args", {"Collective name": "allreduce", "In msg nelems": "8", "dtype": 5, "Process Group Ranks": "[0, 3]"}),
    ("args", {"Collective name": "_allgather_base", "In msg nelems": 8, "dtype": "Float", "Process Group Ranks": [0, 1]}),
    ("args", {"Input Dims": [[2, 3]], "Input type": ["c10::BFloat16"]}),
    ("args", {"Input Dims": [[-0.0]]}),
    ("args", {"Input Dims": [[1, 2], [3]], "extra": {"deep": [[[[1]]]]}}),
]


def _docs() -> list[tuple[str, Any]]:
    """(name, document or raw bytes) for the hostile cases."""
    out: list[tuple[str, Any]] = [("hostile", _hostile_events())]
    rng = random.Random(7)
    for i, (field, value) in enumerate(MUTATIONS):
        doc = step_trace(steps=2)
        xs = [e for e in doc["traceEvents"] if e.get("ph") in ("X", "s", "f")]
        e = rng.choice(xs)
        e[field] = value
        out.append((f"mut{i}-{field}", doc))
    # Flows carrying unusual ids / keys, with launches that lack correlation ids.
    doc = step_trace(strip_correlation=True)
    flows = [e for e in doc["traceEvents"] if e.get("cat") == "ac2g"]
    flows[0]["id"] = "str-id"
    flows[1]["id"] = 1.0
    flows[2]["ts"] = float(flows[2]["ts"])
    flows[3]["id"] = True
    out.append(("flows", doc))
    doc = step_trace(strip_correlation=True)
    [e for e in doc["traceEvents"] if e.get("cat") == "ac2g"][0]["pid"] = [1]
    out.append(("flow-list-pid", doc))
    return out


def _write(doc: Any, path: Path, style: int) -> Path:
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    elif style == 0:
        path.write_text(json.dumps(doc, separators=(",", ":"), ensure_ascii=False), encoding="utf-8")
    elif style == 1:
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=True))
    else:
        path.write_text(json.dumps(doc, indent=None, separators=(" , ", " :  "), ensure_ascii=False), encoding="utf-8")
    return path


@native
@pytest.mark.parametrize("case", range(len(_docs())), ids=[n for n, _ in _docs()])
def test_hostile_inputs_same_result_or_error(case: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kat.tools.telemetry.kineto_stream as ks

    name, doc = _docs()[case]
    for style in (0, 1, 2):
        p = _write(doc, tmp_path / f"rank-0.{style}.json", style)
        _compare(p, monkeypatch)
    # Tiny chunks: many cuts, some through strings holding "}, {".
    monkeypatch.setattr(ks, "CHUNK_BYTES", 700)
    monkeypatch.setattr(ks, "READ_BYTES", 500)
    _compare(_write(doc, tmp_path / "rank-0.small.json", 1), monkeypatch)


RAW_CASES: dict[str, bytes] = {
    "invalid-utf8-in-name": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a\xffb", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]}',
    "invalid-utf8-skipped": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "ab", "x": "\xff", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]}',  # noqa: E501 - one raw JSON document per case
    "lone-surrogate": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a\\ud800b", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]}',
    "surrogate-pair": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a\\ud83d\\ude80b", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]}',
    "escaped-key": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "n\\u0061me": "ab", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]}',
    "escaped-cat": b'{"traceEvents": [{"ph": "X", "cat": "cpu\\u005fop", "name": "ab", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]}',
    "duplicate-key": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "name": "b", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]}',
    "duplicate-arg": b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "pid": 1, "tid": 1, "ts": 1, "dur": 1, "args": {"device": 1, "device": 2}}]}',  # noqa: E501 - one raw JSON document per case
    "control-char": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a\x01b", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]}',
    "huge-float-skipped": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "x": 1e400, "pid": 1, "tid": 1, "ts": 1, "dur": 1}]}',  # noqa: E501 - one raw JSON document per case
    "huge-float-ts": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": 1e400, "dur": 1}]}',
    "tiny-float": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": 1e-400, "dur": 1.5E+2}]}',
    "long-float": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": 1669783687464181.12345678901234567890123, "dur": 0.1000000000000000055511151231257827}]}',  # noqa: E501 - one raw JSON document per case
    "leading-zero": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": 01, "dur": 1}]}',
    "trailing-comma": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": 1, "dur": 1,}]}',
    "not-object": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": 1, "dur": 1}, 42]}',
    "truncated": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": 1, "dur": 1}, {"ph": "X", "ca',
    "deep-nesting": b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": 1, "dur": 1, "x": '
    + b"[" * 200
    + b"]" * 200
    + b"}]}",
    "bare-array": b'[{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]',
}


@native
@pytest.mark.parametrize("name", sorted(RAW_CASES))
def test_raw_edge_cases_same_result_or_error(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _compare(_write(RAW_CASES[name], tmp_path / "rank-0.json", 0), monkeypatch)


@native
def test_truncated_gzip_chunk_same_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kat.tools.telemetry.kineto_stream as ks

    monkeypatch.setattr(ks, "CHUNK_BYTES", 2000)
    monkeypatch.setattr(ks, "READ_BYTES", 1500)
    data = orjson.dumps(step_trace(steps=12))
    for cut in (len(data) // 3, len(data) // 2, len(data) - 10):
        p = tmp_path / f"rank-0.{cut}.json"
        p.write_bytes(data[:cut])
        nat, _ = _compare(p, monkeypatch)
        assert nat[0] == "error" and str(p) in nat[2]
        gz = tmp_path / f"rank-0.{cut}.json.gz"
        gz.write_bytes(gzip.compress(data)[: cut // 4])
        _compare(gz, monkeypatch)


@native
def test_random_documents_same_result_or_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeded random events with every field drawn from plain and odd JSON values."""
    rng = random.Random(2024)
    pools: dict[str, list[Any]] = {
        "ph": ["X"] * 8 + ["s", "f", "i", "M", None, 3],
        "cat": [
            "cpu_op",
            "kernel",
            "cuda_runtime",
            "gpu_memcpy",
            "user_annotation",
            "python_function",
            "ac2g",
            "gpu_memset",
            "cuda_driver",
            "Trace",
            None,
        ],
        "name": [
            "aten::mm",
            "ncclDevKernel_AllReduce_Sum",
            "cudaLaunchKernel",
            "ProfilerStep#3",
            "gloo:all_reduce",
            "c10d::allreduce_",
            'x"y',
            "é",
            "multimem_all_reduce",
            "record_param_comms",
        ],
        "pid": [1, 2, 0, None, "p"],
        "tid": [1, 7, 2**40, None],
        "ts": [1.5, 10, 1669783687464181, 1669783687464181.375, 0.001, -2, "1", None],
        "dur": [1, 0.25, 0, None, -1, 3.0],
        "id": [1, 2, 3, "a", None, 1.0],
    }
    arg_pools: dict[str, list[Any]] = {
        "correlation": [1, 2, 3, None, -1, 7.0],
        "External id": [1, 2, None],
        "device": [0, 1, None, "0"],
        "stream": [7, None],
        "Collective name": ["allreduce", "broadcast", None, 3],
        "In msg nelems": [16, None, "x"],
        "dtype": ["Float", "BFloat16", None],
        "Process Group Ranks": ["[0, 1]", [0, 1], None],
        "Input Dims": [[[1, 2]], [], [[]], [[1.5]], None, [["a"]], [[-1, 2], [3]]],
        "Input type": [["float"], ["c10::Half"], None],
    }
    for doc_i in range(40):
        events = []
        for _ in range(rng.randint(1, 60)):
            e = {k: rng.choice(v) for k, v in pools.items() if rng.random() < 0.93}
            if rng.random() < 0.8:
                e["args"] = {k: rng.choice(v) for k, v in arg_pools.items() if rng.random() < 0.4}
            events.append(e)
        p = _write({"traceEvents": events, "distributedInfo": {"rank": 0}}, tmp_path / f"rank-0.{doc_i}.json", doc_i % 3)
        _compare(p, monkeypatch)


def test_thread_time_order_equals_lexsort() -> None:
    """The two-pass order used for containment parents is exactly the four-key lexsort, ties
    (equal starts, equal spans) and thread ids too far apart to combine included."""
    rng = np.random.default_rng(11)
    for trial in range(200):
        n = int(rng.integers(1, 2000))
        pid = rng.choice(np.array([1, 5, 2**40, -3]), n) if trial % 3 == 0 else rng.integers(0, 3, n)
        tid = rng.choice(np.array([7, 2**50, 9, 0]), n) if trial % 4 == 0 else rng.integers(0, 5, n)
        ts = np.sort(rng.integers(0, n // 2 + 1, n)) + rng.integers(0, 3, n)
        end = ts + rng.integers(0, 5, n)
        np.testing.assert_array_equal(kineto._thread_time_order(pid, tid, ts, end), np.lexsort((-end, ts, tid, pid)))


@native
def test_containment_parents_native_equals_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    for n in (1, 2, 17, 500, 5000):
        pid = rng.integers(0, 2, n)
        tid = rng.integers(0, 3, n)
        ts = rng.integers(0, n * 4, n)
        end = ts + rng.integers(0, 60, n)
        rows = np.sort(rng.choice(n, size=max(1, n * 3 // 4), replace=False))
        fast = kineto._containment_parents(pid, tid, ts, end, rows)
        with monkeypatch.context() as m:
            m.setattr(kineto, "_native", None)
            slow = kineto._containment_parents(pid, tid, ts, end, rows)
        np.testing.assert_array_equal(fast, slow)


@native
def test_number_digit_runs_same_as_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scanner reads eight digits at a time; every split of a digit run must give the
    same value as the reference decoder (integer parts of 1-15 digits, fractions of 0-20)."""
    rng = random.Random(8)
    events = []
    for i in range(400):
        whole = str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 14)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 20)))
        ts = whole + ("." + frac if frac else "")
        dur = str(rng.randint(0, 10 ** rng.randint(1, 14))) + rng.choice(["", ".5", ".12345678", ".123456789012"])
        events.append(f'{{"ph": "X", "cat": "cpu_op", "name": "op{i}", "pid": 1, "tid": 1, "ts": {ts}, "dur": {dur}}}')
    doc = ('{"traceEvents": [' + ",".join(events) + "]}").encode()
    import kat.tools.telemetry.kineto_stream as ks

    # small chunks: a chunk with a value the scanner leaves to the reference (an integer beyond
    # 2**53) does not take the others with it
    monkeypatch.setattr(ks, "CHUNK_BYTES", 400)
    monkeypatch.setattr(ks, "READ_BYTES", 500)
    nat, counts = _compare(_write(doc, tmp_path / "rank-0.json", 0), monkeypatch)
    assert counts["native"] > 50  # the fast path really ran on most chunks
    assert nat[0] == "ok"


@pytest.mark.parametrize("field,value", [("ts", "123456789012345678901234"), ("dur", "3e16"), ("ts", "2.6e15")])
def test_times_beyond_the_ns_range_are_refused(field: str, value: str, tmp_path: Path) -> None:
    from kat.tools.telemetry.errors import TraceImportError
    from kat.tools.telemetry.kineto import import_kineto_columns

    ev = {"ts": "1", "dur": "1"}
    ev[field] = value
    doc = (
        f'{{"traceEvents": [{{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": {ev["ts"]}, "dur": {ev["dur"]}}}]}}'
    ).encode()
    p = tmp_path / "rank-0.json"
    p.write_bytes(doc)
    with pytest.raises(TraceImportError, match=f"{field} value .* out of range") as err:
        import_kineto_columns(p)
    assert err.value.field == f"traceEvents[].{field}" and "rank-0.json" in str(err.value)


def test_base_time_beyond_range_is_refused(tmp_path: Path) -> None:
    from kat.tools.telemetry.errors import TraceImportError
    from kat.tools.telemetry.kineto import import_kineto_columns

    p = tmp_path / "rank-0.json"
    p.write_bytes(b'{"baseTimeNanoseconds": 9000000000000000000, "traceEvents": []}')
    with pytest.raises(TraceImportError, match="integer from 0 to") as err:
        import_kineto_columns(p)
    assert err.value.field == "baseTimeNanoseconds"
