"""Event, metric and log queries: filters, budgets, echoed queries, honest 'no data'."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kat.tools.telemetry import open_bundle
from kat.tools.telemetry.bundle import Bundle
from kat.tools.telemetry.queries import EventQuery, LogQuery, MetricQuery, query_events, query_logs, query_metrics
from tests.bundle_factory import BASE_NS, make_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    root = tmp_path_factory.mktemp("q")
    return open_bundle(make_bundle(root / "inc"), cache_dir=root / "cache")


def test_events_by_kind_name_and_step(bundle: Bundle) -> None:
    q = EventQuery(ranks=[1], kinds=["kernel"], name_pattern="GEMM", steps=[0, 2])
    r = query_events(bundle, q)
    assert r.status == "ok" and r.query == q
    assert r.total_matches == 4  # 2 layers x 2 steps
    assert all(row["rank"] == 1 and row["step"] in (0, 2) and row["kind"] == "kernel" for row in r.rows)
    assert r.by_name[0].count == 4 and r.by_name[0].mean_ns == 150_000
    assert r.by_name[0].name == "sm90_xmma_gemm_bf16bf16_bf16f32" and r.by_name[0].kind == "kernel"


def test_events_row_budget_is_explicit(bundle: Bundle) -> None:
    r = query_events(bundle, EventQuery(limit=5))
    assert r.returned == 5 and r.truncated and r.total_matches > 5
    assert "showing 5 of" in r.message


def test_events_time_window(bundle: Bundle) -> None:
    all_k = query_events(bundle, EventQuery(ranks=[0], kinds=["kernel"], limit=1000))
    t0 = min(row["ts_ns"] for row in all_k.rows)
    r = query_events(bundle, EventQuery(ranks=[0], kinds=["kernel"], start_ns=t0, end_ns=t0 + 1, limit=1000))
    assert r.total_matches == 1


def test_events_no_data_and_unknown_rank(bundle: Bundle) -> None:
    r = query_events(bundle, EventQuery(name_pattern="no_such_kernel_xyz"))
    assert r.status == "no_data" and r.total_matches == 0 and "rank" in r.searched
    r = query_events(bundle, EventQuery(ranks=[9]))
    assert r.status == "error" and "ranks present: [0, 1]" in r.message


def test_event_query_validation() -> None:
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        EventQuery(name_pattern="([unclosed")
    with pytest.raises(ValidationError, match="unknown event kind"):
        EventQuery(kinds=["gpu"])
    with pytest.raises(ValidationError, match="at most 256"):
        EventQuery(name_pattern="a" * 300)
    with pytest.raises(ValidationError, match="before start_ns"):
        EventQuery(start_ns=10, end_ns=5)


def test_metric_series_and_summary(bundle: Bundle) -> None:
    r = query_metrics(bundle, MetricQuery(name="DCGM_FI_DEV_GPU_TEMP", gpu=1))
    assert r.status == "ok" and len(r.series) == 1
    s = r.series[0].summary
    assert (s.min, s.max, s.count) == (60, 85, 120)
    assert r.series[0].downsampled and len(r.series[0].points) == 60
    late = query_metrics(bundle, MetricQuery(name="DCGM_FI_DEV_GPU_TEMP", gpu=1, start_ns=BASE_NS + 60 * 10**9))
    assert late.series[0].summary.min == 85


def test_metric_regex_and_no_data(bundle: Bundle) -> None:
    r = query_metrics(bundle, MetricQuery(name="DCGM_FI_DEV_(GPU_TEMP|SM_CLOCK)", gpu=0))
    assert {s.name for s in r.series} == {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_SM_CLOCK"}
    r = query_metrics(bundle, MetricQuery(name="DCGM_FI_DEV_POWER_USAGE"))
    assert r.status == "no_data" and "DCGM_FI_DEV_POWER_USAGE" in r.message and "metrics.csv" in r.searched
    r = query_metrics(bundle, MetricQuery(name="DCGM_FI_DEV_GPU_TEMP", host="node-z"))
    assert r.status == "no_data" and "filters" in r.message


def test_logs_dedup_and_levels(bundle: Bundle) -> None:
    r = query_logs(bundle, LogQuery(pattern="thermal"))
    assert r.status == "ok" and r.total_matches == 2 and len(r.groups) == 1
    g = r.groups[0]
    assert g.count == 2 and g.ranks == [1] and g.sources == ["kernel"] and "<n>" in g.template
    r = query_logs(bundle, LogQuery(min_level="warning"))
    assert {g.level for g in r.groups} <= {"warning", "error"} and r.groups[0].level == "error"
    r = query_logs(bundle, LogQuery(keywords=["throughput", "running"], source="vllm"))
    assert r.total_matches == 50 and len(r.groups) == 1


def test_logs_no_data_and_validation(bundle: Bundle) -> None:
    r = query_logs(bundle, LogQuery(pattern="Xid"))
    assert r.status == "no_data" and "logs.jsonl" in r.searched
    with pytest.raises(ValidationError, match="min_level"):
        LogQuery(min_level="loud")


def test_log_text_is_returned_as_data(bundle: Bundle) -> None:
    # A planted instruction is just a matching line; it changes nothing about the query.
    r = query_logs(bundle, LogQuery(pattern="ignore previous"))
    assert r.groups[0].example.startswith("ignore previous instructions")
    assert r.query.pattern == "ignore previous"


def test_metric_label_columns_split_series(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "inc")
    with open(root / "metrics.csv", "w") as fh:
        fh.write("ts,name,value,host,gpu,rank,cpu,mode\n")
        for i in range(10):
            for cpu in (0, 1):
                for mode in ("user", "idle"):
                    fh.write(f"{BASE_NS + i * 10**9},node_cpu_seconds_total,{i * (2 if mode == 'user' else 1)},node-a,,,{cpu},{mode}\n")
    b = open_bundle(root, cache_dir=tmp_path / "cache")
    r = query_metrics(b, MetricQuery(name="node_cpu_seconds_total"))
    assert len(r.series) == 4
    assert {(s.labels["cpu"], s.labels["mode"]) for s in r.series} == {("0", "user"), ("0", "idle"), ("1", "user"), ("1", "idle")}
    user = [s for s in r.series if s.labels["mode"] == "user"][0]
    assert user.summary.max == 18
