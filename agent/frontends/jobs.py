"""Diagnoses in the background: a bounded worker pool, a bounded queue, recovery at start.

Jobs outlive the request that started them (and its client). Their state and progress events
go to the Store, so results survive a restart. At start, jobs a previous process left
`running` become `error: interrupted by restart` (their partial work is not trustworthy), and
jobs still `queued` are queued again (they never started).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kat.agent.backends import BACKENDS
from kat.agent.diagnosis import Diagnosis
from kat.agent.frontends.incidents import IncidentRoot
from kat.agent.frontends.sessions import SharedCheckpointer
from kat.agent.frontends.store import Store
from kat.agent.graph import AgentConfig
from kat.agent.session import ProgressEvent, Session

log = logging.getLogger("kat.frontends")

INTERRUPTED = "interrupted by restart"
ANALYZERS = BACKENDS  # one list of Analyzer names (agent/backends)

Listener = Callable[[str, ProgressEvent], None]
DoneCallback = Callable[[str, "Diagnosis | None", "str | None"], None]


class Busy(RuntimeError):
    """Pool and queue are full: the caller should retry later (HTTP 429)."""


class JobRunner:
    def __init__(
        self,
        store: Store,
        root: IncidentRoot,
        checkpointer: SharedCheckpointer,
        *,
        max_concurrent: int = 2,
        max_queue: int = 100,
        time_budget_s: float = 300.0,
        max_steps: int = 24,
        backend_options: dict[str, Any] | None = None,
    ):
        self.store, self.root, self.cp = store, root, checkpointer
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.time_budget_s, self.max_steps = time_budget_s, max_steps
        self.backend_options = backend_options or {}
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="kat-diag")
        # Follow-ups get their own pool so a long diagnosis queue never starves a quick question.
        self._ask_pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="kat-ask")
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        running = self.store.job_ids("running")
        for jid in running:
            self.store.fail(jid, INTERRUPTED)
        queued = self.store.job_ids("queued")
        for jid in queued:
            self._schedule(jid, None, None, force=True)
        return {"interrupted": len(running), "requeued": len(queued)}

    def shutdown(self, wait: bool = False) -> None:
        self._closed = True
        # Queued jobs stay 'queued' in the store and run again after a restart.
        self._pool.shutdown(wait=wait, cancel_futures=True)
        self._ask_pool.shutdown(wait=wait, cancel_futures=True)

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def capacity(self) -> int:
        return self.max_concurrent + self.max_queue

    # -- diagnoses ------------------------------------------------------------------------------
    def budget(self, requested: float | None) -> float:
        return min(requested, self.time_budget_s) if requested else self.time_budget_s

    def submit(
        self,
        incident_path: Path,
        analyzer: str = "rules",
        *,
        time_budget_s: float | None = None,
        thread_id: str | None = None,
        source: str = "http",
        listener: Listener | None = None,
        on_done: DoneCallback | None = None,
    ) -> str:
        """Queue a diagnosis of a bundle under the root; returns the job id (also its thread id)."""
        with self._lock:
            if self._closed:
                raise Busy("the server is shutting down")
            if self._pending >= self.capacity:
                raise Busy(
                    f"too many diagnoses in flight ({self._pending}; {self.max_concurrent} running at most, "
                    f"{self.max_queue} queued at most); retry later"
                )
            self._pending += 1
        job_id = uuid.uuid4().hex[:16]
        try:
            self.store.add_job(job_id, self.root.relative(incident_path), analyzer, thread_id or job_id, self.budget(time_budget_s), source)
            self._schedule(job_id, listener, on_done)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        return job_id

    def _schedule(self, job_id: str, listener: Listener | None, on_done: DoneCallback | None, force: bool = False) -> Future:
        if force:
            with self._lock:
                self._pending += 1
        return self._pool.submit(self._run, job_id, listener, on_done)

    def _run(self, job_id: str, listener: Listener | None, on_done: DoneCallback | None) -> None:
        d: Diagnosis | None = None
        error: str | None = None
        try:
            job = self.store.job(job_id)
            if job is None:
                return
            self.store.mark_running(job_id)

            def emit(ev: ProgressEvent) -> None:
                self.store.add_event(job_id, ev.node, ev.kind, ev.text, ev.data)
                if listener:
                    try:
                        listener(job_id, ev)
                    except Exception:  # a broken listener (e.g. Slack down) must not fail the diagnosis
                        log.warning("progress listener failed for %s", job_id, exc_info=True)

            s = self._open(job.incident, job.analyzer, job.time_budget_s)
            try:
                d = s.diagnose(thread_id=job.thread_id, on_event=emit)
            finally:
                s.close()  # the shared checkpointer stays open
            self.store.finish(job_id, d.model_dump(mode="json"))
        except Exception as exc:  # the job fails, the server does not; no stack trace reaches a client
            log.warning("diagnosis %s failed", job_id, exc_info=True)
            error = _short_error(exc)
            self.store.fail(job_id, error)
            self.store.add_event(job_id, "server", "error", error)  # an error event in the stream, not only a status
        finally:
            with self._lock:
                self._pending -= 1
            self.store.add_event(job_id, "server", "end", "done" if d is not None else f"error: {error}")
            if on_done:
                try:
                    on_done(job_id, d, error)
                except Exception:
                    log.warning("completion callback failed for %s", job_id, exc_info=True)

    def _open(self, incident: str, analyzer: str, time_budget_s: float | None) -> Session:
        path = self.root.resolve(incident)
        config = AgentConfig(max_steps=self.max_steps, time_budget_s=time_budget_s or self.time_budget_s)
        return self.cp.open(path, analyzer, config, **self.backend_options)

    # -- follow-ups -----------------------------------------------------------------------------
    def ask_future(self, job_id: str, text: str, listener: Callable[[ProgressEvent], None] | None = None) -> Future:
        """A follow-up question on a finished diagnosis's thread (runs in the follow-up pool)."""
        job = self.store.job(job_id)
        if job is None:
            raise KeyError(job_id)

        def run() -> str:
            s = self._open(job.incident, job.analyzer, job.time_budget_s)
            try:
                return s.ask(text, job.thread_id, on_event=listener)
            finally:
                s.close()

        return self._ask_pool.submit(run)


def _short_error(exc: BaseException) -> str:
    from kat.tools.telemetry import BundleError

    msg = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, BundleError):
        return f"not a valid incident bundle: {msg}"
    return f"{type(exc).__name__}: {msg}"
