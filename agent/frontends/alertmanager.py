"""Alertmanager webhook: `POST /v1/alertmanager` starts one investigation per firing alert.

Alertmanager sends its version-4 webhook payload (bearer auth from the receiver's http_config).
Each firing alert is mapped to an incident: the bundle its `kat_incident` label/annotation names,
or else the bundle under the incidents root whose topology holds the alert's host. A new bundle
is written under `<root>/alerts/` with the alert's window (startsAt minus/plus a margin), its
labels and annotations (as data), the base bundle's traces and logs, and metrics from Prometheus
when one is configured. One alert (fingerprint + startsAt) starts one investigation: repeats and
resolved notifications start none. The result lands in the HTTP store and, when configured, in
a Slack channel.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, SecretStr

from kat.agent.diagnosis import Diagnosis
from kat.agent.frontends.incidents import IncidentError, IncidentRoot
from kat.agent.frontends.jobs import Busy, JobRunner
from kat.agent.frontends.store import connect

log = logging.getLogger("kat.frontends.alertmanager")

ALERTS_DIR = "alerts"
_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)  # Alertmanager's "no end yet"
_HOST_LABELS = ("host", "Hostname", "hostname", "node", "instance")


class AlertSettings(BaseModel):
    """The webhook's settings; `from_env` reads KAT_ALERTMANAGER_* and the Slack bot token."""

    token: SecretStr | None = Field(None, description="bearer token Alertmanager sends (KAT_ALERTMANAGER_TOKEN)")
    incident_label: str = Field("kat_incident", description="label or annotation naming a bundle under the incidents root")
    before_s: float = Field(600.0, ge=0, description="window starts this long before startsAt")
    after_s: float = Field(300.0, gt=0, description="window ends this long after startsAt (or at endsAt if earlier)")
    analyzer: str = "rules"
    prometheus: str | None = Field(None, description="Prometheus for the alert's metrics (written into incident.json)")
    slack_channel: str | None = Field(None, description="channel for results (KAT_ALERTMANAGER_SLACK_CHANNEL)")
    slack_token: SecretStr | None = Field(None, description="bot token (SLACK_BOT_TOKEN)")
    slack_api_url: str | None = Field(None, description="Slack Web API base URL (KAT_SLACK_API_URL; default slack.com)")
    # An alert no bundle matches can be captured live: profile this vLLM server now (kat capture).
    capture_vllm_url: str | None = Field(None, description="vLLM server to profile when no bundle matches an alert")
    capture_trace_dir: Path | None = Field(None, description="that server's VLLM_TORCH_PROFILER_DIR")
    capture_duration_s: float = Field(10.0, gt=0, le=600)

    @classmethod
    def from_env(cls, **overrides: Any) -> AlertSettings:
        from kat.knowledge.settings import settings

        env = settings()
        vals: dict[str, Any] = {
            "token": env.alertmanager_token,
            "slack_channel": env.alertmanager_slack_channel,
            "slack_token": env.slack_bot_token or None,
            "slack_api_url": env.slack_api_url,
            "prometheus": env.prometheus_url,
            "before_s": env.alertmanager_window_before,
            "after_s": env.alertmanager_window_after,
        }
        vals.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{k: v for k, v in vals.items() if v is not None})


class Alert(BaseModel):
    status: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime  # noqa: N815 - Alertmanager's field names
    endsAt: datetime | None = None  # noqa: N815
    generatorURL: str = ""  # noqa: N815
    fingerprint: str = Field(pattern=r"^[0-9a-fA-F]{1,64}$")


class WebhookPayload(BaseModel):
    """Alertmanager's webhook body (version 4)."""

    version: str
    groupKey: str = ""  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    status: str = ""
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonAnnotations: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    externalURL: str = ""  # noqa: N815
    alerts: list[Alert] = Field(default_factory=list)


class AlertLedger:
    """Which alerts started which investigation (own table in the front ends' database)."""

    def __init__(self, db: Path | str):
        self._conn = connect(db)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS kat_alerts (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, "
                "alertname TEXT, job_id TEXT, incident TEXT, status TEXT NOT NULL, note TEXT, created REAL NOT NULL)"
            )
            self._conn.commit()

    def claim(self, key: str, alert: Alert) -> bool:
        """True for the first notification of this alert; False for every repeat (atomic)."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO kat_alerts (key, fingerprint, starts_at, alertname, status, created) VALUES (?,?,?,?,?,?)",
                (key, alert.fingerprint, alert.startsAt.isoformat(), alert.labels.get("alertname", ""), "claimed", time.time()),
            )
            self._conn.commit()
            return cur.rowcount == 1

    def update(self, key: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._conn.execute(f"UPDATE kat_alerts SET {cols} WHERE key = ?", (*fields.values(), key))
            self._conn.commit()

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute("SELECT key, fingerprint, starts_at, alertname, job_id, incident, status, note FROM kat_alerts")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def close(self) -> None:
        self._conn.close()


def alert_key(alert: Alert) -> str:
    # startsAt is part of the key: a repeat keeps it, a new firing after resolution gets a new one.
    return f"{alert.fingerprint}@{alert.startsAt.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"


def _host_of(labels: dict[str, str]) -> str | None:
    for k in _HOST_LABELS:
        v = labels.get(k)
        if v:
            return re.sub(r":\d+$", "", v) if k == "instance" else v
    return None


def _manifest(path: Path) -> dict[str, Any]:
    try:
        m = json.loads((path / "incident.json").read_text(encoding="utf-8"))
        return m if isinstance(m, dict) else {}
    except (OSError, ValueError):
        return {}


def base_bundle(alert: Alert, root: IncidentRoot, settings: AlertSettings) -> Path:
    """The bundle an alert points at: its incident label/annotation, else the one holding its host."""
    name = alert.labels.get(settings.incident_label) or alert.annotations.get(settings.incident_label)
    if name:
        return root.resolve(name)
    host = _host_of(alert.labels)
    if host:
        found: list[tuple[str, Path]] = []
        for info in root.list():
            if info.path.split("/", 1)[0] == ALERTS_DIR:
                continue
            p = root.root / info.path
            m = _manifest(p)
            topo = m.get("topology") or {}
            hosts = {h.get("name") for h in topo.get("hosts") or [] if isinstance(h, dict)}
            hosts |= {w.get("host") for w in topo.get("workers") or [] if isinstance(w, dict)}
            if host in hosts:
                start = str((m.get("window") or {}).get("start") or "")
                found.append((start, p))
        if found:
            return sorted(found)[-1][1]  # the latest capture of that host
    raise IncidentError(
        f"alert {alert.labels.get('alertname', '?')} ({alert.fingerprint}) names no incident: add a "
        f"'{settings.incident_label}' label or annotation, or a host label matching a bundle's topology",
        404,
    )


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_alert_bundle(alert: Alert, base: Path, root: IncidentRoot, settings: AlertSettings) -> Path:
    """A new bundle under <root>/alerts/ for this alert; written to a temp dir, renamed at the end."""
    key = alert_key(alert)
    final = root.root / ALERTS_DIR / re.sub(r"[^0-9A-Za-z._-]", "_", key)
    if final.exists():
        return final
    tmp = final.parent / f".{final.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    try:
        m = _manifest(base)
        start = alert.startsAt.astimezone(UTC)
        end = start + timedelta(seconds=settings.after_s)
        if alert.endsAt is not None and alert.endsAt > _ZERO_TIME and start < alert.endsAt < end:
            end = alert.endsAt.astimezone(UTC)
        summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
        name = alert.labels.get("alertname", "alert")
        manifest: dict[str, Any] = {
            "id": f"alert-{alert.fingerprint[:16]}-{start.strftime('%Y%m%dT%H%M%SZ')}",
            "title": f"Alertmanager: {name}",
            "symptom": f"alert {name} firing since {start.isoformat()}" + (f": {summary}" if summary else ""),
            "window": {"start": (start - timedelta(seconds=settings.before_s)).isoformat(), "end": end.isoformat()},
            "topology": m.get("topology") or {},
            "alert": {"labels": alert.labels, "annotations": alert.annotations, "fingerprint": alert.fingerprint},
            "base_incident": root.relative(base),
        }
        for k in ("model", "framework"):
            if m.get(k):
                manifest[k] = m[k]
        if settings.prometheus:
            manifest["prometheus"] = {"url": settings.prometheus}
        (tmp / "incident.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        traces = tmp / "traces"
        traces.mkdir()
        src_traces = base / "traces" if (base / "traces").is_dir() else base
        for f in sorted(src_traces.iterdir()):
            if f.is_file() and f.name.endswith((".json", ".json.gz", ".parquet")) and f.name != "incident.json":
                _link_or_copy(f, traces / f.name)
        keep = ["logs"] if settings.prometheus else ["logs", "metrics"]  # Prometheus serves the metrics
        for f in base.iterdir():
            if f.is_file() and f.name.split(".", 1)[0] in keep:
                _link_or_copy(f, tmp / f.name)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class AlertPoster:
    """Posts a finished investigation to the configured Slack channel."""

    def __init__(self, settings: AlertSettings):
        self.settings = settings

    def enabled(self) -> bool:
        return bool(self.settings.slack_channel and self.settings.slack_token)

    def post(self, alert: Alert, incident: str, d: Diagnosis | None, error: str | None) -> str | None:
        from slack_sdk import WebClient

        from kat.agent.frontends.slack_blocks import diagnosis_blocks, diagnosis_fallback

        assert self.settings.slack_token is not None and self.settings.slack_channel
        kw: dict[str, Any] = {"token": self.settings.slack_token.get_secret_value()}
        if self.settings.slack_api_url:
            kw["base_url"] = self.settings.slack_api_url.rstrip("/") + "/"
        client = WebClient(**kw)
        name = alert.labels.get("alertname", "alert")
        if d is None:
            r = client.chat_postMessage(channel=self.settings.slack_channel, text=f"KAT could not investigate alert {name}: {error}")
        else:
            head = {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Alertmanager alert *{name}* ({alert.fingerprint})"}]}
            r = client.chat_postMessage(
                channel=self.settings.slack_channel,
                text=f"{name}: {diagnosis_fallback(d)}",
                blocks=[head, *diagnosis_blocks(d, incident)],
            )
        return str(r.get("ts") or "")


def register(app: FastAPI, settings: AlertSettings, api_token: str | None = None) -> None:
    """Add `POST /v1/alertmanager` to the HTTP API (the runner and store come from app.state)."""
    token = settings.token.get_secret_value() if settings.token else api_token
    poster = AlertPoster(settings)
    ledgers: dict[str, AlertLedger] = {}

    def ledger(request: Request) -> AlertLedger:
        db = str(request.app.state.store.db)
        if db not in ledgers:
            ledgers[db] = AlertLedger(db)
        return ledgers[db]

    # response_model=None: the routes answer JSON errors as JSONResponse beside their plain dicts.
    @app.post("/v1/alertmanager", status_code=202, tags=["alerts"], response_model=None)
    def alertmanager(
        payload: WebhookPayload, request: Request, authorization: str | None = Header(None, include_in_schema=False)
    ) -> dict[str, Any] | JSONResponse:
        """Alertmanager webhook (version 4): one investigation per firing alert."""
        if token:
            scheme, _, given = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
                return JSONResponse(
                    {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"}, 401, {"WWW-Authenticate": "Bearer"}
                )
        if payload.version != "4":
            return JSONResponse({"error": f"unsupported Alertmanager webhook version {payload.version!r}; expected '4'"}, 422)
        runner: JobRunner = request.app.state.runner
        led = ledger(request)
        started: list[dict[str, Any]] = []
        ignored: list[dict[str, str]] = []
        for alert in payload.alerts:
            key = alert_key(alert)
            if alert.status != "firing":
                led.update(key, status="resolved")
                ignored.append({"fingerprint": alert.fingerprint, "why": f"status {alert.status}: no new investigation"})
                continue
            if not led.claim(key, alert):
                ignored.append({"fingerprint": alert.fingerprint, "why": "already investigated (repeat notification)"})
                continue
            try:
                try:
                    base = base_bundle(alert, runner.root, settings)
                except IncidentError:
                    if not (settings.capture_vllm_url and settings.capture_trace_dir):
                        raise
                    # No bundle holds this alert: capture one from the live server, then investigate.
                    led.update(key, status="capturing")
                    threading.Thread(
                        target=_capture_then_submit, args=(runner, led, key, alert, settings, poster), name="kat-alert-capture", daemon=True
                    ).start()
                    started.append({"fingerprint": alert.fingerprint, "capture": settings.capture_vllm_url})
                    continue
                path = write_alert_bundle(alert, base, runner.root, settings)
                incident = runner.root.relative(path)
                job_id = runner.submit(path, settings.analyzer, source="alertmanager", on_done=_on_done(led, key, alert, incident, poster))
            except (IncidentError, OSError, Busy) as exc:
                led.update(key, status="error", note=str(exc))
                ignored.append({"fingerprint": alert.fingerprint, "why": str(exc)})
                log.warning("alert %s not investigated: %s", key, exc)
                continue
            led.update(key, status="running", job_id=job_id, incident=incident)
            started.append(
                {"fingerprint": alert.fingerprint, "diagnosis": job_id, "incident": incident, "links": {"self": f"/v1/diagnoses/{job_id}"}}
            )
        return {"started": started, "ignored": ignored}

    @app.get("/v1/alertmanager/alerts", tags=["alerts"], response_model=None)
    def alerts(request: Request, authorization: str | None = Header(None, include_in_schema=False)) -> dict[str, Any] | JSONResponse:
        """The alerts seen and the investigation each started (the API's token, like every /v1 read)."""
        read_token = api_token or token
        if read_token:
            scheme, _, given = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), read_token.encode()):
                return JSONResponse({"error": "missing or wrong bearer token"}, 401, {"WWW-Authenticate": "Bearer"})
        return {"alerts": ledger(request).rows()}


def capture_alert_bundle(alert: Alert, root: IncidentRoot, settings: AlertSettings) -> Path:
    """Profile the configured vLLM server now and write the alert's bundle with `kat capture`."""
    from kat.tools.telemetry.capture import CaptureSpec, capture

    start = alert.startsAt.astimezone(UTC) - timedelta(seconds=settings.before_s)
    name = alert.labels.get("alertname", "alert")
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    out = root.root / ALERTS_DIR / re.sub(r"[^0-9A-Za-z._-]", "_", alert_key(alert))
    spec = CaptureSpec(
        out=out,
        symptom=f"alert {name} firing since {alert.startsAt.isoformat()}" + (f": {summary}" if summary else ""),
        incident_id=f"alert-{alert.fingerprint[:16]}-capture",
        title=f"Alertmanager: {name}",
        trace_dir=settings.capture_trace_dir,
        vllm_url=settings.capture_vllm_url,
        duration_s=settings.capture_duration_s,
        host=_host_of(alert.labels),
    )
    path = capture(spec)
    # Metrics come from Prometheus at diagnosis time, over a window that reaches back to the
    # alert's start; the traces cover the profile.
    m = json.loads((path / "incident.json").read_text(encoding="utf-8"))
    profiled = datetime.fromisoformat(m["window"]["start"].replace("Z", "+00:00"))
    m["window"]["start"] = min(profiled, start).isoformat().replace("+00:00", "Z")
    m["alert"] = {"labels": alert.labels, "annotations": alert.annotations, "fingerprint": alert.fingerprint}
    if settings.prometheus:
        m["prometheus"] = {"url": settings.prometheus}
    (path / "incident.json").write_text(json.dumps(m, indent=2), encoding="utf-8")
    return path


def _capture_then_submit(runner: JobRunner, led: AlertLedger, key: str, alert: Alert, settings: AlertSettings, poster: AlertPoster) -> None:
    try:
        path = capture_alert_bundle(alert, runner.root, settings)
        incident = runner.root.relative(path)
        job_id = runner.submit(path, settings.analyzer, source="alertmanager", on_done=_on_done(led, key, alert, incident, poster))
    except Exception as exc:  # the capture failed: say so where the result would have gone
        log.warning("alert %s: capture failed: %s", key, exc)
        led.update(key, status="error", note=f"capture failed: {exc}")
        if poster.enabled():
            try:
                poster.post(alert, "-", None, f"capture failed: {exc}")
            except Exception:
                log.warning("posting alert %s to Slack failed", key, exc_info=True)
        return
    led.update(key, status="running", job_id=job_id, incident=incident)


def _on_done(
    led: AlertLedger, key: str, alert: Alert, incident: str, poster: AlertPoster
) -> Callable[[str, Diagnosis | None, str | None], None]:
    def done(job_id: str, d: Diagnosis | None, error: str | None) -> None:
        led.update(key, status="done" if d is not None else "error", note=error)
        if poster.enabled():
            try:
                ts = poster.post(alert, incident, d, error)
                led.update(key, note=f"posted to Slack ({ts})" if d is not None else error)
            except Exception as exc:  # Slack down must not lose the stored result
                log.warning("posting alert %s to Slack failed: %s", key, exc)
                led.update(key, note=f"Slack post failed: {exc}")

    return done
