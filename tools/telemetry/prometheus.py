"""Metrics from a Prometheus-compatible HTTP API, as the same long frame the bundle's file gives.

The catalogue comes from `/api/v1/label/__name__/values`; a lookup is one PromQL range query over
the incident window, with a step that fits the samples (probed with `count_over_time`) and
Prometheus's 11,000-points-per-series limit. Every answer echoes the exact PromQL and range.
Failures (down, slow, HTTP errors) become a clear message and a note for the diagnosis, never an
exception out of a tool.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, SecretStr

from kat.tools.telemetry.metric_source import MetricSelection, Status, resolve_names

if TYPE_CHECKING:
    import pandas as pd

    from kat.tools.telemetry.bundle import Bundle
    from kat.tools.telemetry.quality import SourceQuality

# Prometheus refuses range queries of more than 11,000 points per series (promql engine limit).
MAX_POINTS = 11_000
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
# Scrape intervals operators use; a probed interval within 10 % of one is snapped to it.
_COMMON_INTERVALS_S = (0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300)


class PrometheusSettings(BaseModel):
    """How to reach Prometheus and read its labels. `from_env` reads the KAT_PROMETHEUS_* variables."""

    url: str = Field(description="base URL, e.g. http://prometheus:9090 (no /api/v1)")
    token: SecretStr | None = Field(None, description="bearer token (KAT_PROMETHEUS_TOKEN)")
    user: str | None = Field(None, description="basic-auth user (KAT_PROMETHEUS_USER)")
    password: SecretStr | None = Field(None, description="basic-auth password (KAT_PROMETHEUS_PASSWORD)")
    verify_tls: bool | str = Field(True, description="TLS verification: on, off, or a CA bundle path (KAT_PROMETHEUS_CA)")
    timeout_s: float = Field(10.0, gt=0, description="per request (KAT_PROMETHEUS_TIMEOUT)")
    # Label mapping, first present wins. Defaults cover the DCGM exporter (Hostname, gpu), node
    # exporter (instance), vLLM (instance, pod) and hand-labelled series (host, rank).
    host_labels: list[str] = Field(default_factory=lambda: ["host", "Hostname", "hostname", "node", "instance"])
    gpu_labels: list[str] = Field(default_factory=lambda: ["gpu", "gpu_index"])
    rank_labels: list[str] = Field(default_factory=lambda: ["rank"])
    # Identity labels that say nothing the host/gpu labels do not (dropped from the frame).
    drop_labels: list[str] = Field(
        default_factory=lambda: [
            "job",
            "UUID",
            "modelName",
            "pci_bus_id",
            "DCGM_FI_DRIVER_VERSION",
            "namespace",
            "container",
            "endpoint",
            "service",
        ]
    )
    strip_port: bool = Field(True, description="instance 'node-a:9400' -> host 'node-a'")
    min_step_s: float = Field(1.0, gt=0, description="smallest step of a range query")

    @classmethod
    def from_env(cls, url: str | None = None) -> PrometheusSettings:
        """URL from the caller or KAT_PROMETHEUS_URL; auth, TLS and timeout from KAT_PROMETHEUS_*."""
        from kat.knowledge.settings import settings

        env = settings()
        u = url or env.prometheus_url
        if not u:
            raise ValueError("no Prometheus URL: pass --prometheus URL or set KAT_PROMETHEUS_URL")
        verify: bool | str = str(env.prometheus_ca) if env.prometheus_ca else True
        if not env.prometheus_verify_tls:
            verify = False
        return cls(
            url=u.rstrip("/"),
            token=env.prometheus_token or None,
            user=env.prometheus_user or None,
            password=env.prometheus_password or None,
            verify_tls=verify,
            timeout_s=env.prometheus_timeout,
        )


class PrometheusError(RuntimeError):
    """Prometheus could not answer a query; the message names the URL, the status and the query."""


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fmt_s(s: float) -> str:
    return f"{s:g}s"


def selector(names: list[str]) -> str:
    """PromQL selector for these metric names."""
    if len(names) == 1 and _METRIC_NAME.match(names[0]):
        return names[0]
    if len(names) == 1:
        return '{__name__="' + names[0].replace("\\", "\\\\").replace('"', '\\"') + '"}'
    return '{__name__=~"' + "|".join(re.escape(n) for n in names) + '"}'


class PrometheusClient:
    """The few Prometheus HTTP API calls KAT makes; errors raise PrometheusError with a clear message."""

    def __init__(self, settings: PrometheusSettings):
        import httpx

        self.settings = settings
        headers = {"Accept": "application/json"}
        auth = None
        if settings.token is not None:
            headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        elif settings.user:
            auth = httpx.BasicAuth(settings.user, settings.password.get_secret_value() if settings.password else "")
        self._http = httpx.Client(base_url=settings.url, headers=headers, auth=auth, verify=settings.verify_tls, timeout=settings.timeout_s)

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any], what: str) -> Any:
        import httpx

        url = self.settings.url
        try:
            r = self._http.get(path, params=params)
        except httpx.TimeoutException:
            raise PrometheusError(f"Prometheus at {url} did not answer within {self.settings.timeout_s:g} s for {what}") from None
        except httpx.HTTPError as exc:
            raise PrometheusError(f"Prometheus at {url} is unreachable ({type(exc).__name__}: {exc}) for {what}") from None
        body: Any = None
        try:
            body = r.json()
        except ValueError:
            pass
        if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error", "") if isinstance(body, dict) else r.text[:200].strip()
            raise PrometheusError(f"Prometheus at {url} answered {r.status_code} for {what}" + (f": {detail}" if detail else ""))
        return body.get("data")

    def metric_names(self, start_ns: int | None = None, end_ns: int | None = None) -> list[str]:
        params: dict[str, Any] = {}
        if start_ns is not None and end_ns is not None:
            params = {"start": f"{start_ns / 1e9:.3f}", "end": f"{end_ns / 1e9:.3f}"}
        data = self.get("/api/v1/label/__name__/values", params, "the metric catalogue (/api/v1/label/__name__/values)")
        return [str(n) for n in data or []]

    def metadata(self) -> dict[str, list[dict]]:
        return self.get("/api/v1/metadata", {}, "series metadata (/api/v1/metadata)") or {}

    def instant(self, promql: str, at_s: float) -> list[dict]:
        data = self.get("/api/v1/query", {"query": promql, "time": f"{at_s:.3f}"}, f"query {promql}")
        return list((data or {}).get("result") or [])

    def range(self, promql: str, start_s: float, end_s: float, step_s: float) -> list[dict]:
        params = {"query": promql, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}", "step": f"{step_s:g}"}
        data = self.get("/api/v1/query_range", params, f"query {promql}")
        return list((data or {}).get("result") or [])


def fit_step(window_s: float, max_samples: int, min_step_s: float) -> float:
    """A step that fits the window: the series' own sample interval (snapped to a usual scrape
    interval), never under min_step_s nor over Prometheus's points-per-series limit."""
    interval = window_s / max_samples if max_samples > 0 else min_step_s
    for common in _COMMON_INTERVALS_S:
        if abs(interval - common) <= 0.1 * common:
            interval = float(common)
            break
    else:
        interval = round(interval, 3)
    return max(interval, min_step_s, math.ceil(window_s / MAX_POINTS * 1000) / 1000)


class PrometheusSource:
    """A MetricSource over Prometheus for one incident (its window and topology)."""

    kind = "prometheus"

    def __init__(self, settings: PrometheusSettings, bundle: Bundle | None = None, client: PrometheusClient | None = None):
        self.settings = settings
        self.bundle = bundle
        self.client = client or PrometheusClient(settings)
        self.problems: list[str] = []
        self._names: list[str] | None = None
        self._answered = 0  # queries Prometheus answered
        self._samples = 0

    def describe(self) -> str:
        return f"Prometheus at {self.settings.url}"

    def _note(self, msg: str) -> None:
        if msg not in self.problems:
            self.problems.append(msg)

    def window(self) -> tuple[int, int] | None:
        m = self.bundle.manifest if self.bundle is not None else None
        w = getattr(m, "window", None) if m is not None else None
        return (w.start_ns(), w.end_ns()) if w is not None else None

    def names(self) -> list[str]:
        if self._names is None:
            w = self.window()
            try:
                self._names = self.client.metric_names(*(w or (None, None)))
            except PrometheusError as exc:
                self._note(str(exc))
                return []
        return self._names

    def catalog(self) -> dict[str, dict[str, str]]:
        """name -> {type, help, unit} from the series metadata (/api/v1/metadata) where Prometheus has it."""
        names = self.names()
        try:
            meta = self.client.metadata()
        except PrometheusError as exc:
            self._note(str(exc))
            meta = {}
        out: dict[str, dict[str, str]] = {}
        for n in names:
            first = (meta.get(n) or [{}])[0]
            out[n] = {k: str(first[k]) for k in ("type", "help", "unit") if first.get(k)}
        return out

    def select(self, name: str, start_ns: int | None = None, end_ns: int | None = None, exact: list[str] | None = None) -> MetricSelection:
        w = self.window()
        start_ns = start_ns if start_ns is not None else (w[0] if w else None)
        end_ns = end_ns if end_ns is not None else (w[1] if w else None)
        searched = f"metric {name!r} in {self.describe()}"
        if start_ns is None or end_ns is None or end_ns <= start_ns:
            msg = "the incident has no time window (incident.json 'window'): Prometheus needs one to query"
            self._note(msg)
            return MetricSelection("error", searched, message=msg)
        if self._names is None:
            w2 = (start_ns, end_ns)
            try:
                self._names = self.client.metric_names(*w2)
            except PrometheusError as exc:
                self._note(str(exc))
                return MetricSelection("error", searched, message=str(exc))
        available = self._names
        if exact is not None:
            chosen, why = [n for n in exact if n in set(available)], "none of the names is in Prometheus"
        else:
            chosen, why = resolve_names(available, name)
        if not chosen:
            status: Status = "error" if "regular expression" in why or "characters" in why else "no_data"
            return MetricSelection(status, searched, message=why)
        promql = selector(chosen)
        start_s, end_s = start_ns / 1e9, end_ns / 1e9 - 0.001  # the window's end is exclusive, as in the file
        window_s = max(end_ns - start_ns, 1) / 1e9
        try:
            counts = []
            for n in chosen:  # one name at a time: count_over_time drops names, and series would clash
                probe = self.client.instant(f"count_over_time({selector([n])}[{max(int(window_s * 1000), 1)}ms])", end_s)
                counts += [int(float(r["value"][1])) for r in probe if r.get("value")]
            step = fit_step(window_s, max(counts, default=0), self.settings.min_step_s)
            result = self.client.range(promql, start_s, end_s, step)
        except PrometheusError as exc:
            self._note(str(exc))
            return MetricSelection("error", searched, chosen=chosen, message=str(exc), echo={"promql": promql})
        rng = f"{_rfc3339(start_ns)}..{_rfc3339(end_ns)} step {_fmt_s(step)}"
        echo = {"promql": promql, "range": rng, "source": self.settings.url}
        searched = f"PromQL {promql} over {rng} at {self.settings.url}"
        frame = self.to_frame(result)
        self._answered += 1
        self._samples += len(frame)
        if frame.empty:
            return MetricSelection("no_data", searched, chosen=chosen, message="Prometheus returned no samples in the window", echo=echo)
        return MetricSelection("ok", searched, frame=frame, chosen=chosen, echo=echo)

    def _map(self, labels: dict[str, str]) -> tuple[str, int, int, dict[str, str]]:
        s = self.settings
        rest = {k: v for k, v in labels.items() if k != "__name__" and k not in s.drop_labels}
        host_key = next((k for k in s.host_labels if rest.get(k)), None)
        host = rest.pop(host_key) if host_key else ""
        if host_key == "instance" and s.strip_port:
            host = re.sub(r":\d+$", "", host)
        elif host_key is not None:
            rest.pop("instance", None)  # the scrape target adds nothing once the host is known
        gpu_key = next((k for k in s.gpu_labels if rest.get(k, "").lstrip("-").isdigit()), None)
        gpu = int(rest.pop(gpu_key)) if gpu_key else -1
        rank_key = next((k for k in s.rank_labels if rest.get(k, "").lstrip("-").isdigit()), None)
        rank = int(rest.pop(rank_key)) if rank_key else -1
        if rank < 0 and gpu >= 0 and self.bundle is not None:
            # Exporters know hosts and GPUs, not ranks: the manifest's topology maps them.
            for wk in self.bundle.manifest.topology.workers:
                if wk.host == host and wk.gpu == gpu:
                    rank = wk.rank
                    break
        return host, gpu, rank, rest

    def to_frame(self, result: list[dict]) -> pd.DataFrame:
        """A range-query matrix as the canonical long frame (same dtypes as the file loader's)."""
        import numpy as np
        import pandas as pd

        from kat.tools.telemetry.tables import empty_metrics

        cols: dict[str, list] = {"ts_ns": [], "name": [], "value": [], "host": [], "gpu": [], "rank": []}
        extras: dict[str, list] = {}
        n = 0
        for series in result:
            labels = {str(k): str(v) for k, v in (series.get("metric") or {}).items()}
            values = series.get("values") or []
            if not values:
                continue
            host, gpu, rank, rest = self._map(labels)
            k = len(values)
            cols["ts_ns"].extend(int(round(float(t) * 1000)) * 1_000_000 for t, _ in values)
            cols["value"].extend(float(v) for _, v in values)
            cols["name"].extend([labels.get("__name__", "")] * k)
            cols["host"].extend([host] * k)
            cols["gpu"].extend([gpu] * k)
            cols["rank"].extend([rank] * k)
            for key in rest:
                extras.setdefault(key, [""] * n)
            for key, col in extras.items():
                col.extend([rest.get(key, "")] * k)
            n += k
        if n == 0:
            return empty_metrics()
        out = pd.DataFrame(
            {
                "ts_ns": np.asarray(cols["ts_ns"], dtype=np.int64),
                "name": pd.Categorical(cols["name"]),
                "value": np.asarray(cols["value"], dtype=float),
                "host": pd.Categorical(cols["host"]),
                "gpu": np.asarray(cols["gpu"], dtype=np.int64),
                "rank": np.asarray(cols["rank"], dtype=np.int64),
            }
        )
        for key in sorted(extras):
            out[key] = pd.Categorical(extras[key])
        return out.sort_values("ts_ns", kind="stable").reset_index(drop=True)

    def quality(self) -> SourceQuality:
        """ok when every query was answered; missing when none was; degraded in between."""
        from kat.tools.telemetry.quality import SourceQuality

        q = SourceQuality(files=[self.settings.url], kept=self._samples)
        for p in self.problems:
            q.reasons[p] = q.reasons.get(p, 0) + 1
        if self.problems:
            q.status = "degraded" if self._answered else "missing"
        return q

    def close(self) -> None:
        self.client.close()


def manifest_prometheus_url(bundle: Bundle) -> str | None:
    """`"prometheus": "URL"` or `"prometheus": {"url": "URL"}` in incident.json, if any."""
    raw = getattr(bundle.manifest, "prometheus", None) if bundle.given_manifest is not None else None
    if isinstance(raw, str):
        return raw or None
    if isinstance(raw, dict) and isinstance(raw.get("url"), str):
        return raw["url"] or None
    return None


def use_prometheus(bundle: Bundle, url: str | None = None) -> PrometheusSource | None:
    """Make Prometheus the bundle's metric source when a URL is given (flag, then incident.json)."""
    from kat.tools.telemetry.metric_source import attach_metric_source

    url = url or manifest_prometheus_url(bundle)
    if not url:
        return None
    src = PrometheusSource(PrometheusSettings.from_env(url), bundle)
    attach_metric_source(bundle, src)
    return src
