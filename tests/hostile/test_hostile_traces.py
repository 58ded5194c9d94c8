"""Hostile traces and bundles through `kat import` and `kat detect` (in-process, real files).

Every case asserts: no traceback (no exception escapes the command), the documented exit code,
and a message naming the file / field / value. Cases that should import say what they keep.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hostile_corpus import (
    DAY_NS,
    big_non_trace,
    deep,
    deep_args,
    event_with,
    fifo,
    gzip_bomb,
    one,
    ranks_dir,
    small_bundle,
    trace_with,
    truncated,
)
from typer.testing import CliRunner, Result

from kat.agent.cli import app
from tests.kineto_factory import step_trace, write_trace

RUNNER = CliRunner()


def kat(*args: Any, env: dict[str, str] | None = None) -> Result:
    r = RUNNER.invoke(app, [str(a) for a in args], env=env)
    crashed = r.exception is not None and not isinstance(r.exception, SystemExit)
    assert not crashed, f"kat {args[0]} crashed: {r.exception!r}"
    assert "Traceback" not in r.output and "Traceback" not in r.stderr
    return r


def imported(path: Path, env: dict[str, str] | None = None) -> dict:
    r = kat("import", path, "--json", env=env)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


# -- cases that must fail with a clear one-line error (exit 2) -----------------------------------
def _empty_dir(p: Path) -> Path:
    p.mkdir()
    return p


def _bad(builder: Callable[[Path], Path], needle: str, env: dict[str, str] | None = None) -> tuple:
    return builder, needle, env


ERRORS = {
    "empty-file": _bad(lambda t: one(t, b""), "file is empty"),
    "whitespace-only": _bad(lambda t: one(t, b"  \n\t "), "file is empty"),
    "not-json": _bad(lambda t: one(t, b"hello, world"), "not valid JSON"),
    "json-string": _bad(lambda t: one(t, b'"traceEvents"'), "not a Chrome/Kineto trace"),
    "array-of-numbers": _bad(lambda t: one(t, b"[1, 2, 3]"), "rank-0.json"),
    "trace-events-object": _bad(lambda t: one(t, trace_with(traceEvents={"a": 1})), "'traceEvents' must be a list"),
    "deep-json-100k": _bad(lambda t: one(t, deep(100_000)), "rank-0.json"),
    "deep-object-100k": _bad(lambda t: one(t, b'{"a":' * 100_000 + b"1" + b"}" * 100_000), "rank-0.json"),
    "deep-args-100k": _bad(deep_args, "rank-0.json"),
    "truncated-json": _bad(lambda t: one(t, truncated(step_trace())), "truncated"),
    "truncated-gzip": _bad(lambda t: one(t, truncated(step_trace(), gz=True), "rank-0.json.gz"), "truncated"),
    "corrupt-gzip": _bad(lambda t: one(t, b"\x1f\x8b\x08\x00" + os.urandom(2000), "rank-0.json.gz"), "rank-0.json.gz"),
    "rank-10e15": _bad(lambda t: one(t, trace_with(distributedInfo={"rank": 10**15, "world_size": 2})), "distributedInfo.rank"),
    "rank-negative": _bad(lambda t: one(t, trace_with(distributedInfo={"rank": -3})), "distributedInfo.rank"),
    "rank-string": _bad(lambda t: one(t, trace_with(distributedInfo={"rank": "zero"})), "distributedInfo.rank"),
    "rank-20-digits": _bad(lambda t: one(t, json.dumps(trace_with(distributedInfo={"rank": 99999999999999999999})).encode()), "rank"),
    "base-time-negative": _bad(lambda t: one(t, trace_with(baseTimeNanoseconds=-5)), "baseTimeNanoseconds"),
    "base-time-huge": _bad(lambda t: one(t, json.dumps(trace_with(baseTimeNanoseconds=10**30)).encode()), "baseTimeNanoseconds"),
    "ts-string": _bad(lambda t: one(t, event_with(ts="soon")), "ts"),
    "ts-1e300": _bad(lambda t: one(t, event_with(ts=1e300)), "out of range"),
    "dur-negative": _bad(lambda t: one(t, event_with(dur=-5.0)), "dur"),
    "name-number": _bad(lambda t: one(t, event_with(name=12345)), "name"),
    "fifo-as-path": _bad(lambda t: fifo(t), "not a regular file or directory"),
    "no-trace-files": _bad(lambda t: _empty_dir(t / "empty"), "no trace files"),
    "missing-path": _bad(lambda t: t / "nope", "no such file or directory"),
    "plain-over-cap": _bad(lambda t: one(t, step_trace()), "over the limit", {"KAT_MAX_TRACE_BYTES": "1K"}),
    "gzip-bomb-isize": _bad(lambda t: gzip_bomb(t, 64 * 2**20), "gzip trailer", {"KAT_MAX_TRACE_BYTES": "8M"}),
    "bad-cap-setting": _bad(lambda t: one(t, step_trace()), "KAT_MAX_TRACE_BYTES", {"KAT_MAX_TRACE_BYTES": "lots"}),
    "two-runs-two-ranks": _bad(lambda t: _two_runs(t, 2), "clocks do not overlap"),
    "duplicate-rank": _bad(lambda t: _dup_rank(t), "duplicate rank"),
}


def _two_runs(t: Path, n: int) -> Path:
    d = ranks_dir(t, n)
    doc = step_trace(rank=n - 1, world=n)
    doc["baseTimeNanoseconds"] += 60 * DAY_NS
    write_trace(doc, d / f"rank-{n - 1}.json")
    return d


def _dup_rank(t: Path) -> Path:
    d = ranks_dir(t, 2)
    write_trace(step_trace(rank=1), d / "rank-1-again.json")
    return d


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_refused_with_a_clear_error(case: str, tmp_path: Path) -> None:
    builder, needle, env = ERRORS[case]
    path = builder(tmp_path)
    t0 = time.perf_counter()
    r = kat("import", path, "--json", env=env)
    assert r.exit_code == 2, (r.exit_code, r.stdout[:300], r.stderr)
    msg = " ".join(r.stderr.split())
    assert msg.startswith("error:") and needle in msg, msg
    assert "np.float64" not in msg and "np.int64" not in msg
    assert time.perf_counter() - t0 < 20, "a hostile file must fail fast"


def test_error_names_both_files_for_other_run(tmp_path: Path) -> None:
    msg = " ".join(kat("import", _two_runs(tmp_path, 2)).stderr.split())
    assert "rank-0.json" in msg and "rank-1.json" in msg and "same run" in msg


# -- cases that import, keeping what is good ----------------------------------------------------
def test_bom_is_skipped(tmp_path: Path) -> None:
    s = imported(one(tmp_path, b"\xef\xbb\xbf" + json.dumps(step_trace()).encode()))
    assert s["ranks"]["0"]["events"] > 0


def test_bare_event_array_is_a_trace(tmp_path: Path) -> None:
    s = imported(one(tmp_path, json.dumps(step_trace()["traceEvents"]).encode()))
    assert s["ranks"]["0"]["events"] > 0


def test_gzip_named_plain_and_plain_named_gzip(tmp_path: Path) -> None:
    s = imported(one(tmp_path, json.dumps(step_trace()).encode(), "rank-0.json.gz"))
    assert s["ranks"]["0"]["events"] > 0


def test_non_utf8_in_event_name_is_an_error_or_kept(tmp_path: Path) -> None:
    data = json.dumps(step_trace()).encode().replace(b"aten::mm", b"aten::\xff\xfemm", 1)
    r = kat("import", one(tmp_path, data), "--json")
    assert r.exit_code in (0, 2)
    if r.exit_code == 2:
        assert "rank-0.json" in r.stderr


def test_empty_trace_events_imports_zero_events_and_says_insufficient(tmp_path: Path) -> None:
    s = imported(one(tmp_path, trace_with(traceEvents=[])))
    assert s["ranks"]["0"]["events"] == 0
    assert s["data_quality"]["traces"]["status"] == "missing"
    assert any("insufficient data" in r for r in s["data_quality"]["traces"]["reasons"])


def test_truncated_rank_is_left_out_others_kept(tmp_path: Path) -> None:
    d = ranks_dir(tmp_path, 3)
    (d / "rank-2.json").write_bytes(truncated(step_trace(rank=2, world=3)))
    s = imported(d)
    assert sorted(s["ranks"]) == ["0", "1"]
    t = s["data_quality"]["traces"]
    assert t["status"] == "degraded" and t["dropped"] == 1 and "rank-2.json" in t["examples"][0]


def test_rank_from_another_run_is_left_out_naming_both_files(tmp_path: Path) -> None:
    s = imported(_two_runs(tmp_path, 3))
    assert sorted(s["ranks"]) == ["0", "1"]
    ex = s["data_quality"]["traces"]["examples"][0]
    assert "rank-2.json" in ex and "rank-0.json" in ex and "another run" in ex


def test_fifo_and_damaged_parquet_inside_trace_dir_are_left_out(tmp_path: Path) -> None:
    d = ranks_dir(tmp_path, 2)
    fifo(d, "rank-5.json")
    (d / "rank-6.parquet").write_bytes(b"PAR1" + os.urandom(100))
    s = imported(d)
    assert sorted(s["ranks"]) == ["0", "1"]
    ex = " ".join(s["data_quality"]["traces"]["examples"])
    assert "rank-5.json" in ex and "FIFO" in ex and "rank-6.parquet" in ex


def test_non_trace_json_beside_traces_is_ignored_not_a_damaged_rank(tmp_path: Path) -> None:
    d = ranks_dir(tmp_path, 2)
    (d / "truth.json").write_text('{"faulty_rank": 1}')
    s = imported(d)
    assert sorted(s["ranks"]) == ["0", "1"] and s["data_quality"]["traces"]["status"] == "ok"
    assert any("truth.json" in n for n in s["data_quality"]["notes"])


def test_big_non_trace_fails_fast_and_linear(tmp_path: Path) -> None:
    """Issue 22: a big file without "traceEvents" hung (the search rescanned the buffer on every read)."""
    p = big_non_trace(tmp_path, 80 * 2**20)
    t0 = time.perf_counter()
    r = kat("import", p)
    assert r.exit_code == 2 and "no 'traceEvents' list in the first 64 MB" in " ".join(r.stderr.split())
    assert time.perf_counter() - t0 < 15


def test_gzip_bomb_under_the_trailer_check_stops_at_the_cap(tmp_path: Path) -> None:
    """A bomb whose trailer lies (multi-member: only the last member's size is there) is stopped while inflating."""
    p = tmp_path / "rank-0.json.gz"
    block = b"\0" * 2**20
    with open(p, "wb") as fh:
        fh.write(gzip.compress(b'{"traceEvents": [' + block * 0 + b" " * (40 * 2**20)))
        fh.write(gzip.compress(b"]}"))
    t0 = time.perf_counter()
    r = kat("import", p, env={"KAT_MAX_TRACE_BYTES": "16M"})
    assert r.exit_code == 2 and "limit" in r.stderr and "KAT_MAX_TRACE_BYTES" in " ".join(r.stderr.split())
    assert time.perf_counter() - t0 < 15


def test_2gb_gzip_bomb_fails_fast_with_the_default_cap(tmp_path: Path) -> None:
    """Issue 22: a 2 GB gzip bomb took 107 s and 2.3 GB of RAM. Multi-member, so the trailer
    names only its last member: the inflate ratio stops it after 64 MB."""
    member = gzip.compress(b" " * 2**20, compresslevel=9)
    p = tmp_path / "rank-0.json.gz"
    with open(p, "wb") as fh:
        fh.write(gzip.compress(b'{"traceEvents": ['))
        for _ in range(2048):  # 2 GiB inflated, ~2 MB on disk
            fh.write(member)
        fh.write(gzip.compress(b"]}"))
    t0 = time.perf_counter()
    r = kat("import", p)
    assert r.exit_code == 2 and "gzip bomb" in r.stderr
    assert time.perf_counter() - t0 < 15


def test_symlinked_trace_out_of_bundle_is_refused_and_not_read(tmp_path: Path) -> None:
    root = small_bundle(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_trace(step_trace(rank=7, world=8), outside / "secret.json")
    (root / "traces" / "rank-7.json").symlink_to(outside / "secret.json")
    s = imported(root)
    assert "7" not in s["ranks"]  # its events were never read
    ex = " ".join(s["data_quality"]["traces"]["examples"])
    assert "rank-7.json" in ex and "outside the bundle" in ex


def test_symlinked_metrics_out_of_bundle_is_refused_and_not_read(tmp_path: Path) -> None:
    root = small_bundle(tmp_path)
    outside = tmp_path / "m.csv"
    outside.write_text("ts,name,value\n1700000000000000000,SECRET_METRIC,1\n")
    (root / "metrics.csv").unlink()
    (root / "metrics.csv").symlink_to(outside)
    s = imported(root)
    assert s["metrics"] == 0 and s["data_quality"]["metrics"]["status"] == "missing"
    assert any("outside the bundle" in r for r in s["data_quality"]["metrics"]["reasons"])


def test_symlinked_manifest_or_traces_dir_out_of_bundle_is_an_error(tmp_path: Path) -> None:
    root = small_bundle(tmp_path)
    (tmp_path / "other.json").write_bytes((root / "incident.json").read_bytes())
    (root / "incident.json").unlink()
    (root / "incident.json").symlink_to(tmp_path / "other.json")
    r = kat("import", root)
    assert r.exit_code == 2 and "outside the bundle" in " ".join(r.stderr.split())
    root2 = small_bundle(tmp_path, "inc2")
    (root2 / "traces").rename(tmp_path / "t2")
    (root2 / "traces").symlink_to(tmp_path / "t2")
    r = kat("import", root2)
    assert r.exit_code == 2 and "outside the bundle" in " ".join(r.stderr.split())


# -- detect on the same hostile inputs -------------------------------------------------------------
@pytest.mark.parametrize("case", ["deep-json-100k", "truncated-gzip", "rank-10e15", "fifo-as-path", "two-runs-two-ranks"])
def test_detect_refuses_like_import(case: str, tmp_path: Path) -> None:
    builder, needle, env = ERRORS[case]
    r = kat("detect", builder(tmp_path), "--json", env=env)
    assert r.exit_code == 2 and needle in " ".join(r.stderr.split())


def test_detect_on_a_degraded_directory_analyses_the_rest(tmp_path: Path) -> None:
    d = ranks_dir(tmp_path, 3)
    (d / "rank-2.json").write_bytes(truncated(step_trace(rank=2, world=3)))
    r = kat("detect", d, "--json")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["stats"]["ranks"] == 2
