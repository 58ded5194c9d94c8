"""Real Prometheus and Alertmanager processes on loopback for the live-source tests.

Prometheus gets a bundle's metrics backfilled with `promtool tsdb create-blocks-from openmetrics`
(the Debian `prometheus` package ships both); Alertmanager runs with its own storage and no
cluster listener. A missing binary skips the test with the package to install.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    import pandas as pd

_BASE = ("ts_ns", "name", "value", "host", "gpu", "rank")


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/bin/{binary}" if Path(f"/usr/bin/{binary}").exists() else None)
    if not path:
        pytest.skip(f"{binary} not found: install the Debian package '{package}' (make sysdeps)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics_text(metrics: pd.DataFrame) -> str:
    """A metrics frame (the file loader's) as OpenMetrics text: one family at a time, samples in time order."""
    extra = [c for c in metrics.columns if c not in _BASE]
    lines: list[str] = []
    df = metrics.sort_values(["name", "ts_ns"], kind="stable")
    for name, fam in df.groupby("name", observed=True, sort=True):
        keys = ["host", "gpu", "rank", *extra]
        series: dict[str, list[str]] = {}
        for row in fam.itertuples(index=False):
            d = row._asdict()
            labels = []
            for k in keys:
                v = d[k]
                if k in ("gpu", "rank"):
                    if int(v) < 0:
                        continue
                    v = int(v)
                if str(v) == "":
                    continue
                labels.append(f'{k}="{_esc(str(v))}"')
            lab = "{" + ",".join(labels) + "}" if labels else ""
            val = float(d["value"])
            vtxt = "NaN" if math.isnan(val) else repr(val)
            series.setdefault(lab, []).append(f"{name}{lab} {vtxt} {d['ts_ns'] / 1e9:.3f}")
        for rows in series.values():
            lines.extend(rows)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(metrics_file: Path, data_dir: Path) -> None:
    """Write the bundle's metrics as TSDB blocks Prometheus reads at start."""
    from kat.tools.telemetry.tables import load_metrics

    promtool = need("promtool", "prometheus")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    om = data_dir.parent / "metrics.om"
    om.write_text(openmetrics_text(load_metrics(metrics_file)))
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data_dir)], check=True, capture_output=True, timeout=60
    )


def _wait_ready(url: str, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready at {url} after {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def prometheus_server(data_dir: Path, log: Path) -> Iterator[str]:
    """A real Prometheus on a free loopback port serving data_dir; yields its base URL."""
    binary = need("prometheus", "prometheus")
    port = free_port()
    cfg = data_dir.parent / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address=127.0.0.1:{port}",
                # Backfilled samples are weeks or years old: keep them, whatever the clock says.
                "--storage.tsdb.retention.time=100y",
                "--query.lookback-delta=5m",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(f"{url}/-/ready", proc, "prometheus")
            yield url
        finally:
            _stop(proc)


@contextmanager
def alertmanager_server(workdir: Path, webhook_url: str, token: str) -> Iterator[str]:
    """A real Alertmanager routing every alert to webhook_url with bearer auth; yields its base URL."""
    binary = need("prometheus-alertmanager", "prometheus-alertmanager")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "alertmanager.yml"
    cfg.write_text(
        "route:\n  receiver: kat\n  group_by: ['alertname', 'instance']\n  group_wait: 0s\n  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n  - name: kat\n    webhook_configs:\n"
        f"      - url: '{webhook_url}'\n        send_resolved: true\n"
        f"        http_config:\n          authorization:\n            type: Bearer\n            credentials: '{token}'\n"
    )
    log = workdir / "alertmanager.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(f"{url}/-/ready", proc, "alertmanager")
            yield url
        finally:
            _stop(proc)


# Incidents the live tests share: (category, task, seed), known to diagnose right with `rules`.
LIVE_CASES = {
    "gpu_thermal_throttling": ("vllm-l70b-tp8-h100-decode-eager", 4242),
    "network_congestion": ("sglang-l70b-tp8pp2-a100-prefill-eager", 4104),
    "kv_cache_pressure": ("vllm-l8b-tp4dp2-a100-prefill-graph", 4103),
}


@pytest.fixture(scope="session")
def live_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One real Prometheus holding the metrics of every LIVE_CASES incident; each incident also
    copied without its metrics file. Yields {"url", "cases": {category: {full, bare, gt, metrics}}}."""
    import shutil

    from kat.evals.simulate import generate_incident

    need("prometheus", "prometheus")
    root = tmp_path_factory.mktemp("live-prom")
    data = root / "tsdb"
    data.mkdir()
    cases = {}
    for cat, (task, seed) in LIVE_CASES.items():
        full = root / cat / "full"
        gt = generate_incident(cat, task, seed, full, size="tiny")
        metrics = next(full.glob("metrics.*"))
        bare = root / cat / "no-metrics"
        shutil.copytree(full, bare)
        (bare / metrics.name).unlink()
        (bare / "ground_truth.json").unlink(missing_ok=True)
        blocks = root / cat / "blocks"
        backfill(metrics, blocks)
        for block in blocks.iterdir():  # the incidents share no series and no times: one TSDB holds all
            if block.is_dir():
                shutil.move(str(block), data / block.name)
        cases[cat] = {"full": full, "bare": bare, "gt": gt, "metrics": metrics}
    with prometheus_server(data, root / "prometheus.log") as url:
        yield {"url": url, "cases": cases}
