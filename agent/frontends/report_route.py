"""GET /v1/incidents/{id}/report: the incident report page of a finished diagnosis.

`id` is a diagnosis id (16 hex digits) or an incident name (then its latest finished diagnosis).
Pages are rendered once per diagnosis (Outpost runs again on the bundle) and kept in memory.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from kat.agent.frontends.incidents import IncidentError
from kat.agent.frontends.store import JobRecord, Store

CACHE_SIZE = 16
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
JOB_ID_LEN = 16


class ReportCache:
    """Rendered pages by diagnosis id (a few; a page is tens of KiB)."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size, self._pages, self._lock = size, OrderedDict[str, str](), threading.Lock()

    def get_or_render(self, job_id: str, render: Callable[[], str]) -> str:
        with self._lock:
            if job_id in self._pages:
                self._pages.move_to_end(job_id)
                return self._pages[job_id]
        html = render()
        with self._lock:
            self._pages[job_id] = html
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)
        return html


def report_path(job_id: str) -> str:
    return f"/v1/incidents/{job_id}/report"


def render_job(incident_path: Path, job: JobRecord, prometheus: str | None = None) -> str:
    """The report page of a finished job; metrics from `prometheus` when the server reads them there."""
    from kat.agent.diagnosis import Diagnosis
    from kat.agent.report import build_report

    html, _ = build_report(incident_path, Diagnosis.model_validate(job.result), prometheus=prometheus)
    return html


def _find_job(store: Store, root: Any, ident: str) -> JobRecord | None:
    if len(ident) == JOB_ID_LEN and all(c in "0123456789abcdef" for c in ident):
        job = store.job(ident)
        if job is not None:
            return job
    rel = root.relative(root.resolve(ident))  # IncidentError when unknown or refused
    return store.latest_done(rel)


def add_report_route(app: FastAPI, dependencies: list[Any], error: Callable[[int, str], Exception]) -> None:
    cache = ReportCache()

    @app.get(
        "/v1/incidents/{ident}/report",
        dependencies=dependencies,
        tags=["incidents"],
        response_class=HTMLResponse,
        responses={404: {"description": "no such incident or diagnosis"}, 409: {"description": "the diagnosis is not finished"}},
    )
    async def report(request: Request, ident: str) -> Response:
        """The incident report (self-contained HTML: heatmap, timeline, evidence metrics, causal chain)."""
        st = request.app.state
        try:
            job = await asyncio.to_thread(_find_job, st.store, st.root, ident)
        except IncidentError as exc:
            raise error(exc.status, str(exc)) from exc
        if job is None:
            raise error(404, f"no finished diagnosis for {ident!r}: POST /v1/diagnoses starts one")
        if job.status != "done" or not job.result:
            raise error(409, f"diagnosis {job.id} is {job.status}; the report needs a finished diagnosis")
        try:
            path = st.root.resolve(job.incident)
        except IncidentError as exc:
            raise error(410, f"the incident of diagnosis {job.id} is no longer available: {exc}") from exc
        html = await asyncio.to_thread(cache.get_or_render, job.id, lambda: render_job(path, job, getattr(st, "prometheus", None)))
        return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})
