"""Prometheus as the metric source: a real Prometheus holding a generated bundle's metrics gives the
same tool results and the same diagnosis as the bundle's metrics file; down, erroring or slow
Prometheus ends up in the diagnosis's missing-data notes, never a crash."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kat.agent.cli import app
from kat.agent.diagnosis import Diagnosis
from kat.agent.session import Session
from kat.tools import metric_catalog, metric_lookup
from kat.tools.context import IncidentContext
from kat.tools.outpost.attribution import pin_link
from kat.tools.telemetry.metric_source import metric_source_of
from kat.tools.telemetry.prometheus import PrometheusSettings, fit_step, selector
from tests.live_servers import free_port


@pytest.fixture(scope="module")
def live(live_prometheus: dict) -> dict:
    return live_prometheus


@pytest.fixture(scope="module")
def file_diagnosis(live: dict) -> Diagnosis:
    """The thermal incident diagnosed from its metrics file (the reference)."""
    return Session(live["cases"]["gpu_thermal_throttling"]["full"], "rules").diagnose("file")


def _core(d: Diagnosis) -> dict:
    return {
        "category": d.root_cause.category,
        "ranks": sorted(d.root_cause.ranks),
        "hosts": sorted(d.root_cause.hosts),
        "status": d.status,
        "evidence_tools": sorted(e.tool for e in d.evidence),
        "chain": [len(link.evidence) for link in d.causal_chain],
        "ruled_out": sorted(a.category for a in d.alternatives_ruled_out),
        "confidence": d.confidence,
        "metrics_quality": d.data_quality.metrics.status if d.data_quality else None,
    }


def test_diagnosis_through_prometheus_equals_the_file(live: dict, file_diagnosis: Diagnosis) -> None:
    """`kat diagnose BARE --prometheus URL --json` gives the diagnosis of the full bundle."""
    case = live["cases"]["gpu_thermal_throttling"]
    a = file_diagnosis
    assert a.root_cause.category == case["gt"].category
    r = CliRunner().invoke(app, ["diagnose", str(case["bare"]), "--prometheus", live["url"], "--json"])
    assert r.exit_code == 0, r.output[-2000:]
    b = Diagnosis.model_validate_json(r.stdout)
    assert _core(b) == _core(a)
    assert b.missing_data == []
    # every metric tool's evidence echoes the PromQL that fetched its series (the rules read families via metric_compare)
    prom_queries = [json.loads(e.query) for e in b.evidence if e.tool in ("metric_lookup", "metric_compare", "metric_catalog")]
    assert prom_queries and all(q["promql"] and q["source"] == live["url"] and " step " in q["range"] for q in prom_queries)


def test_link_pinning_through_prometheus_equals_the_file(live: dict) -> None:
    """Outpost narrows a slow inter-node link to the host whose NIC counters moved: same from either source."""
    case = live["cases"]["network_congestion"]
    file_ctx = IncidentContext(case["full"])
    prom_ctx = IncidentContext(case["bare"], prometheus=live["url"])
    members = file_ctx.bundle.ranks
    w = file_ctx.bundle.manifest.window
    assert w is not None
    got = [pin_link(ctx.bundle, members, "network", w.start_ns(), w.end_ns()) for ctx in (file_ctx, prom_ctx)]
    assert got[1] == got[0]
    assert sorted(got[0][0]) != members and "rose on host" in got[0][1]  # the counters did single out a host
    assert prom_ctx.source_problems() == []


def test_every_sweep_lookup_matches_the_file(live: dict) -> None:
    """The tool's whole payload (series, summaries, change points, outliers) is the same from either source."""
    case = live["cases"]["gpu_thermal_throttling"]
    file_ctx = IncidentContext(case["full"])
    prom_ctx = IncidentContext(case["bare"], prometheus=live["url"])
    compared = 0
    for name in sorted(str(n) for n in file_ctx.bundle.metrics["name"].cat.categories):
        args = metric_lookup.MetricLookupArgs(name=f"^{re.escape(name)}$")
        f, p = metric_lookup.run(file_ctx, args), metric_lookup.run(prom_ctx, args)
        assert p.status == f.status, (name, f.message, p.message)
        if f.status == "ok":
            assert p.data == f.data, name
            assert p.summary == f.summary
            assert p.query["promql"] == selector(sorted({s["name"] for s in f.data["series"]}))
            assert p.range.startswith("PromQL ")
            compared += 1
    assert compared >= 5
    # the catalogue: the same names from /api/v1/label/__name__/values (+ metadata where scraped)
    file_cat = metric_source_of(file_ctx.bundle).catalog()
    prom_cat = metric_source_of(prom_ctx.bundle).catalog()
    assert sorted(prom_cat) == sorted(file_cat) and len(prom_cat) > 20

    # the Analyzer's catalogue: the same families and metric names through either source
    def families(ctx: IncidentContext) -> dict[str, list[str]]:
        res = metric_catalog.run(ctx, metric_catalog.MetricCatalogArgs(token_budget=8000))
        assert res.status == "ok", res.message
        return {fam: sorted(m["name"] for m in v["metrics"]) for fam, v in res.data["families"].items()}

    assert families(prom_ctx) == families(file_ctx)
    # filters and windows work the same
    args = metric_lookup.MetricLookupArgs(name="DCGM_FI_DEV_GPU_TEMP", rank=0)
    assert metric_lookup.run(prom_ctx, args).data == metric_lookup.run(file_ctx, args).data


def test_prometheus_url_from_incident_json(live: dict, tmp_path: Path) -> None:
    case = live["cases"]["gpu_thermal_throttling"]
    bundle = tmp_path / "inc"
    shutil.copytree(case["bare"], bundle)
    manifest = json.loads((bundle / "incident.json").read_text())
    manifest["prometheus"] = {"url": live["url"]}
    (bundle / "incident.json").write_text(json.dumps(manifest))
    res = metric_lookup.run(IncidentContext(bundle), metric_lookup.MetricLookupArgs(name="DCGM_FI_DEV_GPU_TEMP"))
    assert res.status == "ok" and res.query["source"] == live["url"]


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "503"
    seen: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
        if self.mode == "slow":
            time.sleep(2.0)
        body = b'{"status":"error","errorType":"unavailable","error":"TSDB is overloaded"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def broken_prometheus() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"seen": [], "mode": "503"})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()


def test_prometheus_answering_503_is_a_missing_data_note(
    live: dict, broken_prometheus: tuple[str, type[_Handler]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = broken_prometheus
    monkeypatch.setenv("KAT_PROMETHEUS_TOKEN", "s3cret")
    case = live["cases"]["gpu_thermal_throttling"]
    d = Session(case["bare"], "rules", prometheus=url).diagnose("503")
    assert d.missing_data and d.missing_data[0].startswith(f"Prometheus at {url} answered 503 for ")
    assert "TSDB is overloaded" in d.missing_data[0]
    assert handler.seen and all(s["auth"] == "Bearer s3cret" for s in handler.seen)
    # metrics were missing: nothing is ruled out for lack of them, and the trace evidence still stands
    assert any(e.tool == "outpost_detect" for e in d.evidence)


def test_prometheus_down_or_slow(live: dict, broken_prometheus: tuple[str, type[_Handler]], monkeypatch: pytest.MonkeyPatch) -> None:
    case = live["cases"]["gpu_thermal_throttling"]
    down = f"http://127.0.0.1:{free_port()}"
    ctx = IncidentContext(case["bare"], prometheus=down)
    res = metric_lookup.run(ctx, metric_lookup.MetricLookupArgs(name="DCGM_FI_DEV_GPU_TEMP"))
    assert res.status == "error" and res.message.startswith(f"Prometheus at {down} is unreachable")
    url, handler = broken_prometheus
    handler.mode = "slow"
    monkeypatch.setenv("KAT_PROMETHEUS_TIMEOUT", "0.5")
    ctx = IncidentContext(case["bare"], prometheus=url)
    t0 = time.time()
    res = metric_lookup.run(ctx, metric_lookup.MetricLookupArgs(name="DCGM_FI_DEV_GPU_TEMP"))
    assert time.time() - t0 < 2.0
    assert res.status == "error" and "did not answer within 0.5 s" in res.message
    assert ctx.source_problems() == [res.message]


def test_cli_exit_code_when_prometheus_is_down(live: dict, tmp_path: Path) -> None:
    """Traces alone still pin the fault (exit 0, the note printed); a trace-less question would not."""
    case = live["cases"]["gpu_thermal_throttling"]
    down = f"http://127.0.0.1:{free_port()}"
    r = CliRunner().invoke(app, ["diagnose", str(case["bare"]), "--prometheus", down, "--json"])
    d = json.loads(r.stdout)
    assert any("unreachable" in m for m in d["missing_data"])
    # degraded (a source missing, confidence lowered) still answers; partial or undetermined does not
    assert d["data_quality"]["metrics"]["status"] == "missing" and d["status"] != "complete"
    sufficed = d["status"] != "partial" and d["root_cause"]["category"] != "undetermined"
    assert r.exit_code == (0 if sufficed else 1), r.output[-1000:]


def test_settings_from_env_and_step(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"KAT_PROMETHEUS_USER": "u", "KAT_PROMETHEUS_PASSWORD": "hunter2-secret", "KAT_PROMETHEUS_TIMEOUT": "3"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("KAT_PROMETHEUS_URL", raising=False)
    s = PrometheusSettings.from_env("https://prom.example:9090/")
    assert s.url == "https://prom.example:9090" and s.verify_tls is True and s.timeout_s == 3.0
    assert s.password is not None and "hunter2" not in repr(s)
    with pytest.raises(ValueError, match="KAT_PROMETHEUS_URL"):
        PrometheusSettings.from_env(None)
    monkeypatch.setenv("KAT_PROMETHEUS_VERIFY_TLS", "0")
    assert PrometheusSettings.from_env("https://p").verify_tls is False
    assert fit_step(600, 40, 1.0) == 15.0  # a 15 s scrape over 10 min
    assert fit_step(29, 29, 1.0) == 1.0
    assert fit_step(86400 * 30, 10**7, 1.0) >= 86400 * 30 / 11000  # never over Prometheus's point limit
    assert selector(["vllm:num_requests_running"]) == "vllm:num_requests_running"
    assert selector(["a_total", "b_total"]) == '{__name__=~"a_total|b_total"}'


def test_report_page_draws_metrics_from_prometheus(live: dict, file_diagnosis: Diagnosis) -> None:
    """The report's evidence-metric panels are the same drawn from Prometheus as from the file."""
    from kat.agent.report import build_report

    case = live["cases"]["gpu_thermal_throttling"]
    d = file_diagnosis
    _, from_file = build_report(case["full"], d)
    _, from_prom = build_report(case["bare"], d, prometheus=live["url"])
    assert from_file.metrics, "the diagnosis cites metric evidence"
    assert [p.model_dump() for p in from_prom.metrics] == [p.model_dump() for p in from_file.metrics]
    assert any(p.suspect is not None for p in from_prom.metrics)
