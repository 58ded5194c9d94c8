"""SQLite store for the front ends: diagnosis jobs, their progress events, Slack bookkeeping.

One connection guarded by a lock (jobs run in worker threads); WAL so readers never wait for
the writer. The LangGraph checkpointer lives in the same file (its own tables, own connection).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

SCHEMA = """
CREATE TABLE IF NOT EXISTS kat_jobs (
    id TEXT PRIMARY KEY, incident TEXT NOT NULL, analyzer TEXT NOT NULL, thread_id TEXT NOT NULL,
    status TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL,
    time_budget_s REAL, result TEXT, error TEXT, source TEXT NOT NULL DEFAULT 'http');
CREATE INDEX IF NOT EXISTS kat_jobs_status ON kat_jobs(status);
CREATE TABLE IF NOT EXISTS kat_events (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, node TEXT, kind TEXT, text TEXT, data TEXT,
    PRIMARY KEY (job_id, seq));
CREATE TABLE IF NOT EXISTS kat_slack_seen (key TEXT PRIMARY KEY, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS kat_slack_threads (
    thread_key TEXT PRIMARY KEY, incident TEXT NOT NULL, job_id TEXT, channel TEXT, thread_ts TEXT);
"""


class JobRecord(BaseModel):
    id: str
    incident: str
    analyzer: str
    thread_id: str
    status: str  # queued | running | done | error
    created: float
    started: float | None = None
    finished: float | None = None
    time_budget_s: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    source: str = "http"


class EventRecord(BaseModel):
    seq: int
    ts: float
    node: str
    kind: str
    text: str
    data: dict[str, Any] = {}


def connect(db: Path | str) -> sqlite3.Connection:
    from kat.tools.telemetry.cachedir import writable_file

    db = writable_file(Path(db), "db")  # a read-only cache dir falls back to a temp dir
    conn = sqlite3.connect(str(db), check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Store:
    def __init__(self, db: Path | str):
        self.db = Path(db)
        self._conn = connect(self.db)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(SCHEMA)
            self._conn.commit()

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            cur = self._conn.execute(sql, args)
            self._conn.commit()
            return cur

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def ping(self) -> bool:
        return self._query("SELECT 1") == [(1,)]

    # -- jobs -----------------------------------------------------------------------------------
    def add_job(self, job_id: str, incident: str, analyzer: str, thread_id: str, time_budget_s: float | None, source: str = "http") -> None:
        self._exec(
            "INSERT INTO kat_jobs (id, incident, analyzer, thread_id, status, created, time_budget_s, source) "
            "VALUES (?,?,?,?, 'queued', ?, ?, ?)",
            (job_id, incident, analyzer, thread_id, time.time(), time_budget_s, source),
        )

    def mark_running(self, job_id: str) -> None:
        self._exec("UPDATE kat_jobs SET status='running', started=? WHERE id=?", (time.time(), job_id))

    def finish(self, job_id: str, result: dict[str, Any]) -> None:
        self._exec("UPDATE kat_jobs SET status='done', finished=?, result=? WHERE id=?", (time.time(), json.dumps(result), job_id))

    def fail(self, job_id: str, error: str) -> None:
        self._exec("UPDATE kat_jobs SET status='error', finished=?, error=? WHERE id=?", (time.time(), error, job_id))

    def job(self, job_id: str) -> JobRecord | None:
        rows = self._query(
            "SELECT id, incident, analyzer, thread_id, status, created, started, finished, time_budget_s, "
            "result, error, source FROM kat_jobs WHERE id=?",
            (job_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return JobRecord(
            id=r[0],
            incident=r[1],
            analyzer=r[2],
            thread_id=r[3],
            status=r[4],
            created=r[5],
            started=r[6],
            finished=r[7],
            time_budget_s=r[8],
            result=json.loads(r[9]) if r[9] else None,
            error=r[10],
            source=r[11],
        )

    def latest_done(self, incident: str) -> JobRecord | None:
        """The most recent finished diagnosis of an incident (its path relative to the incidents root)."""
        rows = self._query("SELECT id FROM kat_jobs WHERE incident=? AND status='done' ORDER BY finished DESC LIMIT 1", (incident,))
        return self.job(rows[0][0]) if rows else None

    def job_ids(self, status: str) -> list[str]:
        return [r[0] for r in self._query("SELECT id FROM kat_jobs WHERE status=? ORDER BY created", (status,))]

    def count(self, status: str) -> int:
        return int(self._query("SELECT COUNT(*) FROM kat_jobs WHERE status=?", (status,))[0][0])

    # -- events ---------------------------------------------------------------------------------
    def add_event(self, job_id: str, node: str, kind: str, text: str, data: dict[str, Any] | None = None) -> int:
        with self._lock:
            (seq,) = self._conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM kat_events WHERE job_id=?", (job_id,)).fetchone()
            self._conn.execute(
                "INSERT INTO kat_events VALUES (?,?,?,?,?,?,?)",
                (job_id, seq, time.time(), node, kind, text, json.dumps(data or {}, default=str)),
            )
            self._conn.commit()
            return int(seq)

    def events(self, job_id: str, after: int = 0) -> list[EventRecord]:
        rows = self._query("SELECT seq, ts, node, kind, text, data FROM kat_events WHERE job_id=? AND seq>? ORDER BY seq", (job_id, after))
        return [
            EventRecord(seq=r[0], ts=r[1], node=r[2] or "", kind=r[3] or "", text=r[4] or "", data=json.loads(r[5]) if r[5] else {})
            for r in rows
        ]

    # -- Slack ------------------------------------------------------------------------------------
    def first_seen(self, key: str) -> bool:
        """True the first time `key` (a Slack event_id) is seen; False for every retry after."""
        with self._lock:
            # Slack stops retrying after about an hour; a day of ids is plenty.
            self._conn.execute("DELETE FROM kat_slack_seen WHERE ts < ?", (time.time() - 86400,))
            cur = self._conn.execute("INSERT OR IGNORE INTO kat_slack_seen VALUES (?, ?)", (key, time.time()))
            self._conn.commit()
            return cur.rowcount == 1

    def set_slack_thread(self, thread_key: str, incident: str, job_id: str, channel: str, thread_ts: str) -> None:
        self._exec("INSERT OR REPLACE INTO kat_slack_threads VALUES (?,?,?,?,?)", (thread_key, incident, job_id, channel, thread_ts))

    def slack_thread(self, thread_key: str) -> tuple[str, str] | None:
        """(incident, job_id) of a Slack thread that already has a diagnosis."""
        rows = self._query("SELECT incident, job_id FROM kat_slack_threads WHERE thread_key=?", (thread_key,))
        return (rows[0][0], rows[0][1]) if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
