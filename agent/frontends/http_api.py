"""The HTTP API (FastAPI): start diagnoses, poll or stream them, ask follow-ups, list incidents.

POST /v1/diagnoses              {incident, analyzer?, time_budget_s?} -> 202 {id}
GET  /v1/diagnoses/{id}         status (queued|running|done|error) and the Diagnosis
GET  /v1/diagnoses/{id}/events  server-sent events: past events replayed, then live, then `end`
POST /v1/threads/{id}/messages  {text} -> the answer on that diagnosis's conversation
GET  /v1/incidents              bundles under the incidents root
GET  /v1/incidents/{id}/report  the incident report page (HTML) of a finished diagnosis
GET  /healthz, /readyz, /docs
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from kat.agent.frontends.incidents import IncidentError, IncidentRoot
from kat.agent.frontends.jobs import Busy, JobRunner
from kat.agent.frontends.models import (
    DiagnosisCreated,
    DiagnosisRequest,
    DiagnosisStatus,
    ErrorBody,
    IncidentList,
    MessageReply,
    MessageRequest,
)
from kat.agent.frontends.report_route import add_report_route, report_path
from kat.agent.frontends.sessions import SharedCheckpointer
from kat.agent.frontends.store import JobRecord, Store

log = logging.getLogger("kat.frontends.http")

ID_PATTERN = r"^[0-9a-f]{16}$"
SSE_POLL_S = 0.2


class ServerSettings(BaseModel):
    incidents_root: Path
    db: Path
    token: str | None = None
    max_concurrent: int = 2
    max_queue: int = 100
    time_budget_s: float = 300.0
    max_steps: int = 24
    backend_options: dict = {}
    alertmanager: Any = None  # AlertSettings: POST /v1/alertmanager (agent/frontends/alertmanager.py)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        self.status, self.message, self.headers = status, message, headers


def _err(status: int, message: str, detail: object = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=message, detail=detail).model_dump(exclude_none=True), status_code=status, headers=headers)


def create_app(settings: ServerSettings) -> FastAPI:
    app = FastAPI(
        title="KAT",
        version="1",
        lifespan=_lifespan(settings),
        description="Root-cause diagnoses of large-model distributed inference incidents.",
    )
    _add_error_handlers(app)
    v1 = [Depends(_bearer_auth(settings.token))]
    _add_health_routes(app)
    _add_incident_routes(app, v1)
    _add_diagnosis_routes(app, v1)
    _add_thread_routes(app, v1, settings.time_budget_s)
    if settings.alertmanager is not None:
        from kat.agent.frontends.alertmanager import register as register_alertmanager

        register_alertmanager(app, settings.alertmanager, settings.token)
    return app


def _lifespan(settings: ServerSettings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The job runner, its store and the shared checkpointer live as long as the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.db)
        cp = SharedCheckpointer(settings.db)
        runner = JobRunner(
            store,
            IncidentRoot(settings.incidents_root),
            cp,
            max_concurrent=settings.max_concurrent,
            max_queue=settings.max_queue,
            time_budget_s=settings.time_budget_s,
            max_steps=settings.max_steps,
            backend_options=settings.backend_options,
        )
        app.state.store, app.state.runner, app.state.root = store, runner, runner.root
        app.state.prometheus = settings.backend_options.get("prometheus")  # the report reads metrics where diagnoses did
        app.state.recovered = runner.recover()
        log.info("recovered jobs: %s", app.state.recovered)
        try:
            yield
        finally:
            runner.shutdown(wait=False)

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Errors are always JSON with a clear message, never a stack trace."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _err(exc.status, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")} for e in exc.errors()]
        summary = "; ".join(f"{e['where']}: {e['problem']}" for e in errs[:5])
        return _err(422, f"invalid request: {summary}", errs)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _err(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _err(500, "internal error (see the server log)")


def _bearer_auth(token: str | None) -> Callable[..., None]:
    """The /v1 dependency: `Authorization: Bearer <token>` when a token is set, else open."""

    def auth(authorization: str | None = Header(None, include_in_schema=False)) -> None:
        if not token:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)", {"WWW-Authenticate": "Bearer"})

    return auth


def _runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.runner
    return runner


def _job_or_404(request: Request, job_id: str) -> JobRecord:
    store: Store = request.app.state.store
    job = store.job(job_id)
    if job is None:
        raise ApiError(404, f"no diagnosis with id {job_id!r}")
    return job


JobId = PathParam(..., pattern=ID_PATTERN, description="diagnosis id (16 hex digits)")


def _add_health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(request: Request) -> JSONResponse:
        st = request.app.state
        problems = []
        if not st.root.exists():
            problems.append(f"incidents root {st.root.root} is not a directory")
        try:
            st.store.ping()
        except Exception as exc:
            problems.append(f"database: {exc}")
        r: JobRunner = st.runner
        body = {
            "status": "ready" if not problems else "not ready",
            "problems": problems,
            "in_flight": r.pending,
            "capacity": r.capacity,
            "max_concurrent": r.max_concurrent,
        }
        return JSONResponse(body, status_code=200 if not problems else 503)


def _add_incident_routes(app: FastAPI, v1: list[Any]) -> None:
    @app.get("/v1/incidents", response_model=IncidentList, dependencies=v1, tags=["incidents"])
    def incidents(request: Request) -> IncidentList:
        root: IncidentRoot = request.app.state.root
        items, problems = root.scan()
        return IncidentList(root=str(root.root), incidents=items, skipped=problems)

    add_report_route(app, v1, ApiError)


def _add_diagnosis_routes(app: FastAPI, v1: list[Any]) -> None:
    @app.post(
        "/v1/diagnoses",
        status_code=202,
        response_model=DiagnosisCreated,
        dependencies=v1,
        tags=["diagnoses"],
        responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}, 429: {"model": ErrorBody}},
    )
    def start(body: DiagnosisRequest, request: Request) -> DiagnosisCreated:
        r = _runner(request)
        try:
            path = r.root.resolve(body.incident)
        except IncidentError as exc:
            raise ApiError(exc.status, str(exc)) from None
        try:
            job_id = r.submit(path, body.analyzer, time_budget_s=body.time_budget_s)
        except Busy as exc:
            raise ApiError(429, str(exc), {"Retry-After": "5"}) from None
        return DiagnosisCreated(
            id=job_id,
            status="queued",
            thread_id=job_id,
            links={
                "self": f"/v1/diagnoses/{job_id}",
                "events": f"/v1/diagnoses/{job_id}/events",
                "messages": f"/v1/threads/{job_id}/messages",
                "report": report_path(job_id),
            },
        )

    @app.get(
        "/v1/diagnoses/{job_id}", response_model=DiagnosisStatus, dependencies=v1, tags=["diagnoses"], responses={404: {"model": ErrorBody}}
    )
    def status(request: Request, job_id: str = JobId) -> DiagnosisStatus:
        return DiagnosisStatus(**_job_or_404(request, job_id).model_dump(exclude={"source"}))

    @app.get(
        "/v1/diagnoses/{job_id}/events",
        dependencies=v1,
        tags=["diagnoses"],
        responses={200: {"content": {"text/event-stream": {}}}, 404: {"model": ErrorBody}},
    )
    async def events(
        request: Request, job_id: str = JobId, last_event_id: str | None = Header(None, alias="Last-Event-ID")
    ) -> StreamingResponse:
        """Progress as server-sent events; reconnect with Last-Event-ID to resume. Ends with `event: end`."""
        _job_or_404(request, job_id)
        after = int(last_event_id) if last_event_id is not None and last_event_id.isdigit() else 0
        return StreamingResponse(
            _event_stream(request, job_id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


async def _event_stream(request: Request, job_id: str, after: int) -> AsyncIterator[str]:
    """Stored events after `after`, then new ones as they come, until the job's `end`."""
    store: Store = request.app.state.store
    seq = after
    while True:
        for ev in await asyncio.to_thread(store.events, job_id, seq):
            seq = ev.seq
            name = ev.kind if ev.kind in ("end", "error") else "progress"
            yield f"id: {ev.seq}\nevent: {name}\ndata: {ev.model_dump_json()}\n\n"
            if name == "end":
                return
        job = await asyncio.to_thread(store.job, job_id)
        if job is not None and job.status in ("done", "error") and not await asyncio.to_thread(store.events, job_id, seq):
            # finished without an end marker (e.g. interrupted by a restart)
            yield f"event: end\ndata: {json.dumps({'status': job.status, 'error': job.error})}\n\n"
            return
        if await request.is_disconnected():
            return  # the diagnosis goes on; only this stream stops
        await asyncio.sleep(SSE_POLL_S)


def _add_thread_routes(app: FastAPI, v1: list[Any], default_budget_s: float) -> None:
    @app.post(
        "/v1/threads/{job_id}/messages",
        response_model=MessageReply,
        dependencies=v1,
        tags=["threads"],
        responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 504: {"model": ErrorBody}},
    )
    async def message(body: MessageRequest, request: Request, job_id: str = JobId) -> MessageReply:
        """A follow-up question on a finished diagnosis (the thread id is the diagnosis id)."""
        job = _job_or_404(request, job_id)
        if job.status != "done":
            raise ApiError(409, f"diagnosis {job_id} is {job.status}; follow-ups need a finished diagnosis")
        evs: list[dict] = []
        fut = _runner(request).ask_future(job_id, body.text, lambda ev: evs.append({"kind": ev.kind, "text": ev.text}))
        budget = (job.time_budget_s or default_budget_s) + 30
        try:
            answer = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=budget)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the follow-up took longer than {budget:.0f} s") from None
        except IncidentError as exc:
            raise ApiError(410, f"the incident of this diagnosis is no longer available: {exc}") from None
        return MessageReply(thread_id=job.thread_id, question=body.text, answer=answer, events=[e for e in evs if e["kind"] != "answer"])
