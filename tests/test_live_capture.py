"""`kat capture`: traces from a vLLM-style profiler server (a small loopback server implementing
/start_profile and /stop_profile the way vLLM does: the traces land in its profiler directory) or a
directory, metrics from a real Prometheus, logs from files and journalctl; nothing partial on failure."""

from __future__ import annotations

import gzip
import http.server
import json
import shutil
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from kat.agent.cli import app
from kat.tools.telemetry import open_bundle
from kat.tools.telemetry.capture import CaptureError, CaptureSpec, capture
from kat.tools.telemetry.journald import journal_rows
from kat.tools.telemetry.prometheus import PrometheusSettings
from kat.tools.telemetry.tables import load_logs, load_metrics
from tests.kineto_factory import step_trace, write_trace
from tests.live_servers import free_port


class FakeVllm:
    """vLLM's two profiler endpoints: traces appear in the profiler dir when profiling stops."""

    def __init__(self, trace_dir: Path, world: int = 2, status: int = 200, log: Path | None = None):
        self.calls: list[tuple[str, float]] = []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                srv.calls.append((self.path, time.time()))
                if status == 200 and self.path == "/stop_profile" and log is not None:
                    # what the server logged while it was being profiled
                    during = (datetime.now() - timedelta(seconds=0.3)).astimezone()
                    log.write_text(
                        f"{during.isoformat()} WARNING scheduler: Sequence group 7 is preempted\n"
                        "a line without a timestamp\n"
                        "2001-01-01T00:00:00Z INFO outside the window\n"
                        + json.dumps({"ts": during.isoformat(), "message": "KV cache usage 97%", "level": "warning", "source": "vllm"})
                        + "\n"
                    )
                if status == 200 and self.path == "/stop_profile":
                    base = time.time_ns() - 2_000_000_000
                    for r in range(world):
                        doc = step_trace(rank=r, world=world, kernel_us=50.0 if r else 160.0)
                        doc["baseTimeNanoseconds"] = base
                        write_trace(doc, trace_dir / f"node-a_{4000 + r}.{int(time.time() * 1000)}.pt.trace.json.gz")
                self.send_response(status if self.path in ("/start_profile", "/stop_profile") else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir()] if parent.exists() else []


def test_vllm_profile_capture_with_logs_and_journal(tmp_path: Path) -> None:
    prof = tmp_path / "vllm-profiles"
    prof.mkdir()
    old = prof / "old.pt.trace.json.gz"  # an earlier profile must not be picked up
    write_trace(step_trace(rank=0, world=1), old)
    import os

    os.utime(old, (time.time() - 3600, time.time() - 3600))
    log = tmp_path / "vllm.log"
    log.write_text("")
    vllm = FakeVllm(prof, log=log)
    try:
        out = capture(
            CaptureSpec(
                out=tmp_path / "bundles" / "cap-1",
                symptom="TPOT doubled on replica A",
                trace_dir=prof,
                vllm_url=vllm.url,
                duration_s=1.0,
                host="node-a",
                log_files=[log],
                journal=True,
                settle_s=10,
            )
        )
    finally:
        vllm.close()
    assert [c for c, _ in vllm.calls] == ["/start_profile", "/stop_profile"]
    assert vllm.calls[1][1] - vllm.calls[0][1] >= 1.0
    assert _leftovers(tmp_path / "bundles") == ["cap-1"]
    m = json.loads((out / "incident.json").read_text())
    assert m["symptom"] == "TPOT doubled on replica A" and m["framework"] == "vllm"
    assert [w["rank"] for w in m["topology"]["workers"]] == [0, 1] and m["topology"]["groups"]["tp"] == [[0, 1]]
    assert all(w["host"] == "node-a" for w in m["topology"]["workers"])
    b = open_bundle(out)
    assert b.ranks == [0, 1] and not (out / "traces" / old.name).exists()
    w = b.manifest.window
    assert w is not None and 0.9 <= (w.end - w.start).total_seconds() <= 10
    logs = load_logs(out / "logs.jsonl")
    msgs = set(logs["message"])
    assert "scheduler: Sequence group 7 is preempted" in " ".join(msgs) and "KV cache usage 97%" in msgs
    assert not any("outside the window" in x for x in msgs)
    assert "1 lines without a timestamp skipped" in m["capture"]["logs"]


def test_vllm_without_profiler_fails_and_leaves_nothing(tmp_path: Path) -> None:
    prof = tmp_path / "p"
    prof.mkdir()
    vllm = FakeVllm(prof, status=404)
    try:
        with pytest.raises(CaptureError, match="answered 404 for /start_profile.*VLLM_TORCH_PROFILER_DIR"):
            capture(CaptureSpec(out=tmp_path / "b" / "x", symptom="s", trace_dir=prof, vllm_url=vllm.url, duration_s=0.2))
    finally:
        vllm.close()
    assert _leftovers(tmp_path / "b") == []


@pytest.fixture(scope="module")
def generated(live_prometheus: dict) -> dict:
    case = live_prometheus["cases"]["kv_cache_pressure"]
    return {"full": case["full"], "metrics": case["metrics"], "url": live_prometheus["url"]}


def test_directory_capture_with_prometheus_metrics(generated: dict, tmp_path: Path) -> None:
    full = generated["full"]
    manifest = json.loads((full / "incident.json").read_text())
    w = manifest["window"]
    r = CliRunner().invoke(
        app,
        [
            "capture",
            str(tmp_path / "cap"),
            "--symptom",
            "latency spikes on every worker",
            "--trace-dir",
            str(full / "traces"),
            "--prometheus",
            generated["url"],
            "--metric",
            "vllm:.*",
            "--metric",
            "DCGM_FI_DEV_FB_USED",
            "--start",
            w["start"],
            "--end",
            w["end"],
            "--host",
            "h",
        ],
    )
    assert r.exit_code == 0, r.output
    cap = tmp_path / "cap"
    b = open_bundle(cap)
    assert b.ranks == open_bundle(full).ranks
    got = load_metrics(cap / "metrics.parquet")
    want = load_metrics(generated["metrics"])
    want = want[want["name"].astype(str).str.startswith("vllm:") | (want["name"] == "DCGM_FI_DEV_FB_USED")]
    key = ["name", "host", "gpu", "rank", "ts_ns"]

    def norm(df: pd.DataFrame) -> pd.DataFrame:
        df = df[[*key, "value"]].astype({"name": str, "host": str})
        return df.sort_values(key).reset_index(drop=True)

    pd.testing.assert_frame_equal(norm(got), norm(want))
    assert "samples from" in json.loads((cap / "incident.json").read_text())["capture"]["metrics"]


def test_prometheus_down_fails_the_capture_cleanly(generated: dict, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    r = CliRunner().invoke(
        app,
        ["capture", str(tmp_path / "out" / "c"), "--symptom", "s", "--trace-dir", str(generated["full"] / "traces"), "--prometheus", down],
    )
    assert r.exit_code == 2
    assert f"capture failed, nothing written: Prometheus at {down} is unreachable" in " ".join(r.output.split())
    assert _leftovers(tmp_path / "out") == []
    with pytest.raises(CaptureError, match="already exists"):
        (tmp_path / "exists").mkdir()
        capture(
            CaptureSpec(
                out=tmp_path / "exists", symptom="s", trace_dir=generated["full"] / "traces", prometheus=PrometheusSettings(url=down)
            )
        )


def test_journal_records_to_log_rows() -> None:
    """journalctl --output=json record shapes: text, byte-array messages, kernel transport, priorities."""
    recs = [
        {
            "__REALTIME_TIMESTAMP": "1795247095123456",
            "_HOSTNAME": "gpu-node-00",
            "PRIORITY": "4",
            "SYSLOG_IDENTIFIER": "vllm",
            "MESSAGE": "slow step",
        },
        {
            "__REALTIME_TIMESTAMP": "1795247096000000",
            "_HOSTNAME": "gpu-node-00",
            "PRIORITY": "3",
            "_TRANSPORT": "kernel",
            "MESSAGE": [78, 86, 82, 77, 0xFF],
        },
        {"__REALTIME_TIMESTAMP": "x", "MESSAGE": "no time"},
        {"__REALTIME_TIMESTAMP": "1795247097000000", "_SYSTEMD_UNIT": "nvidia-fabricmanager.service", "MESSAGE": "ok"},
    ]
    rows = journal_rows(recs)
    assert [r["level"] for r in rows] == ["warning", "error", "info"]
    assert rows[0]["ts"] == 1795247095123456000 and rows[1]["source"] == "kernel" and rows[1]["message"].startswith("NVRM")
    assert rows[2]["source"] == "nvidia-fabricmanager"


def test_gzip_trace_copied_intact(tmp_path: Path) -> None:
    d = tmp_path / "t"
    d.mkdir()
    write_trace(step_trace(rank=0, world=1), d / "r0.json.gz")
    out = capture(CaptureSpec(out=tmp_path / "o", symptom="s", trace_dir=d, host="h"))
    assert gzip.decompress((out / "traces" / "r0.json.gz").read_bytes()) == gzip.decompress((d / "r0.json.gz").read_bytes())
    shutil.rmtree(out)


@pytest.mark.vllm
def test_capture_from_the_real_vllm_cpu_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt-in (KAT_RUN_VLLM=1, `make vllm-venv`, a model folder): profile a real vLLM CPU server."""
    from test_vllm_serve import _model, _port, _skip_reason

    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    import httpx

    from kat.evals.finetune.serve import ServeSpec, VLLMServer

    prof = tmp_path / "vllm-prof"
    prof.mkdir()
    monkeypatch.setenv("VLLM_TORCH_PROFILER_DIR", str(prof))  # the server's environment is KAT's, plus its own knobs
    spec = ServeSpec(model=_model(), port=_port(), max_tokens=16)
    with VLLMServer(spec, tmp_path / "vllm.log", ready_timeout=900) as srv:
        root = srv.base_url.removesuffix("/v1")
        load = threading.Thread(
            target=lambda: httpx.post(
                f"{srv.base_url}/completions", json={"model": spec.served_name, "prompt": "hello", "max_tokens": 8}, timeout=600
            ),
            daemon=True,
        )
        load.start()
        out = capture(CaptureSpec(out=tmp_path / "cap", symptom="profiled", trace_dir=prof, vllm_url=root, duration_s=5, settle_s=600))
        load.join(timeout=600)
    b = open_bundle(out)
    assert b.ranks and b.total_events > 0
    assert json.loads((out / "incident.json").read_text())["framework"] == "vllm"
