"""The HTTP API through a real uvicorn server on loopback, with the rules analyzer end to end."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_frontends_util import DEMO_ID, LoopbackServer, incidents_root

from kat.agent.frontends.http_api import ServerSettings, create_app
from kat.agent.frontends.store import Store


def settings(tmp_path: Path, **kw: Any) -> ServerSettings:
    root = tmp_path / "incidents"
    if not root.exists():
        root = incidents_root(tmp_path)
    return ServerSettings(incidents_root=root, db=tmp_path / "kat.sqlite", **kw)


def wait_done(c: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = c.get(f"/v1/diagnoses/{job_id}").json()
        if body["status"] in ("done", "error"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{job_id} not finished")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LoopbackServer]:
    with LoopbackServer(create_app(settings(tmp_path))) as srv:
        yield srv


def test_diagnosis_end_to_end_with_events_and_followup(server: LoopbackServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["status"] == "ready"
        inc = c.get("/v1/incidents").json()["incidents"]
        assert [(i["id"], i["path"]) for i in inc] == [(DEMO_ID, "team-a/demo-incident")]

        r = c.post("/v1/diagnoses", json={"incident": DEMO_ID, "analyzer": "rules"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        # SSE: replays from the start, ends with an `end` event.
        events, names = [], []
        with c.stream("GET", f"/v1/diagnoses/{job_id}/events") as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in s.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                    names.append(name)
                elif line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert names[-1] == "end" and names.count("end") == 1
        kinds = {e["kind"] for e in events}
        assert {"tool_call", "tool_result", "accepted", "end"} <= kinds

        body = wait_done(c, job_id)
        assert body["status"] == "done", body
        assert body["result"]["root_cause"]["category"] == "gpu_thermal_throttling"
        assert body["result"]["causal_chain"] and body["result"]["evidence"]

        # Resume the stream after the last event: only the end marker is left.
        with c.stream("GET", f"/v1/diagnoses/{job_id}/events", headers={"Last-Event-ID": str(events[-2]["seq"])}) as s:
            tail = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ")]
        assert [e["kind"] for e in tail] == ["end"]

        # A path under the root works as well as an id.
        r2 = c.post("/v1/diagnoses", json={"incident": "team-a/demo-incident"})
        assert r2.status_code == 202

        # Follow-up on the same thread keeps the diagnosis's context.
        a = c.post(f"/v1/threads/{job_id}/messages", json={"text": "why not nvlink?"})
        assert a.status_code == 200, a.text
        assert "nvlink" in a.json()["answer"].lower() and a.json()["thread_id"] == job_id
        assert wait_done(c, r2.json()["id"])["status"] == "done"


@pytest.mark.parametrize(
    "payload,status,needle",
    [
        ({"incident": "../../etc"}, 400, "refused"),
        ({"incident": "/etc/passwd"}, 400, "refused"),
        ({"incident": "~/x"}, 400, "refused"),
        ({"incident": "team-a/../../x"}, 400, "refused"),
        ({"incident": "no-such-incident"}, 404, "no incident"),
        ({"incident": ""}, 422, "incident"),
        ({"incident": DEMO_ID, "analyzer": "gpt-9"}, 422, "analyzer"),
        ({"incident": DEMO_ID, "bogus": 1}, 422, "bogus"),
        ({"incident": DEMO_ID, "time_budget_s": -1}, 422, "time_budget_s"),
        ({}, 422, "incident"),
    ],
)
def test_bad_payloads_get_clear_4xx(server: LoopbackServer, payload: dict, status: int, needle: str) -> None:
    r = httpx.post(server.url + "/v1/diagnoses", json=payload)
    assert r.status_code == status, r.text
    body = r.json()
    assert needle in body["error"] and "Traceback" not in r.text


def test_bad_ids_and_bodies(server: LoopbackServer, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/v1/diagnoses/0123456789abcdef").status_code == 404
        assert "no diagnosis" in c.get("/v1/diagnoses/0123456789abcdef").json()["error"]
        assert c.get("/v1/diagnoses/..%2F..%2Fetc").status_code in (404, 422)
        assert c.get("/v1/diagnoses/nothex").status_code == 422
        assert c.get("/v1/diagnoses/0123456789abcdef/events").status_code == 404
        r = c.post("/v1/diagnoses", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "error" in r.json()
        assert c.post("/v1/threads/0123456789abcdef/messages", json={"text": "hi"}).status_code == 404
        assert c.post("/v1/threads/0123456789abcdef/messages", json={"text": ""}).status_code == 422
        assert c.get("/v1/nothing").status_code == 404 and "error" in c.get("/v1/nothing").json()


def test_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "incident.json").write_text('{"id": "secret", "symptom": "x"}')
    os.symlink(outside, s.incidents_root / "escape")
    with LoopbackServer(create_app(s)) as srv:
        r = httpx.post(srv.url + "/v1/diagnoses", json={"incident": "escape"})
        assert r.status_code == 400 and "outside" in r.json()["error"]
        assert all(i["id"] != "secret" for i in httpx.get(srv.url + "/v1/incidents").json()["incidents"])


def test_bearer_token(tmp_path: Path) -> None:
    with LoopbackServer(create_app(settings(tmp_path, token="s3cret"))) as srv:
        assert httpx.get(srv.url + "/v1/incidents").status_code == 401
        assert httpx.get(srv.url + "/v1/incidents", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(srv.url + "/v1/incidents", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(srv.url + "/healthz").status_code == 200  # probes need no token
        assert httpx.get(srv.url + "/openapi.json").json()["paths"]["/v1/diagnoses"]


def test_restart_keeps_results_and_recovers_jobs(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with LoopbackServer(create_app(s)) as srv, httpx.Client(base_url=srv.url) as c:
        job_id = c.post("/v1/diagnoses", json={"incident": DEMO_ID}).json()["id"]
        first = wait_done(c, job_id)
    # Simulate a crash: one job left running, one never started.
    st = Store(s.db)
    st.add_job("aaaaaaaaaaaaaaaa", "team-a/demo-incident", "rules", "aaaaaaaaaaaaaaaa", 60)
    st.mark_running("aaaaaaaaaaaaaaaa")
    st.add_job("bbbbbbbbbbbbbbbb", "team-a/demo-incident", "rules", "bbbbbbbbbbbbbbbb", 60)
    st.close()
    with LoopbackServer(create_app(s)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        again = c.get(f"/v1/diagnoses/{job_id}").json()
        assert again["status"] == "done" and again["result"] == first["result"]
        lost = c.get("/v1/diagnoses/aaaaaaaaaaaaaaaa").json()
        assert lost["status"] == "error" and lost["error"] == "interrupted by restart"
        assert wait_done(c, "bbbbbbbbbbbbbbbb")["status"] == "done"
        # The conversation survived too: a follow-up on the old thread works.
        a = c.post(f"/v1/threads/{job_id}/messages", json={"text": "why not nvlink?"})
        assert a.status_code == 200 and "NVLink" in a.json()["answer"]
        # A stream of an interrupted job ends instead of hanging.
        with c.stream("GET", "/v1/diagnoses/aaaaaaaaaaaaaaaa/events") as ev:
            assert any(line == "event: end" for line in ev.iter_lines())


def test_queue_full_gets_429(tmp_path: Path) -> None:
    with LoopbackServer(create_app(settings(tmp_path, max_concurrent=1, max_queue=1))) as srv, httpx.Client(base_url=srv.url) as c:
        codes = [c.post("/v1/diagnoses", json={"incident": DEMO_ID}).status_code for _ in range(4)]
        assert codes[:2] == [202, 202] and 429 in codes[2:]
        r = c.post("/v1/diagnoses", json={"incident": DEMO_ID})
        if r.status_code == 429:
            assert "retry later" in r.json()["error"] and r.headers["retry-after"]


def test_load_50_concurrent_requests(tmp_path: Path) -> None:
    """50 requests at once (10 diagnoses + 40 reads) from 50 client threads: all answered, nothing lost."""
    n_diag, n_read = 10, 40
    with (
        LoopbackServer(create_app(settings(tmp_path, max_concurrent=2, max_queue=100))) as srv,
        httpx.Client(base_url=srv.url, timeout=60, limits=httpx.Limits(max_connections=50)) as c,
    ):
        seed = c.post("/v1/diagnoses", json={"incident": DEMO_ID}).json()["id"]
        reads = ["/v1/incidents", f"/v1/diagnoses/{seed}", "/readyz", "/healthz"]

        def one(i: int) -> httpx.Response:
            if i < n_diag:
                return c.post("/v1/diagnoses", json={"incident": DEMO_ID if i % 2 else "team-a/demo-incident"})
            return c.get(reads[i % len(reads)])

        t0 = time.time()
        with ThreadPoolExecutor(n_diag + n_read) as pool:
            answers = list(pool.map(one, range(n_diag + n_read)))
        answered = time.time() - t0
        assert [a.status_code for a in answers] == [202] * n_diag + [200] * n_read
        ids = [a.json()["id"] for a in answers[:n_diag]] + [seed]
        assert len(set(ids)) == n_diag + 1
        results = [wait_done(c, i, timeout=120) for i in ids]
        wall = time.time() - t0
        assert [r["status"] for r in results] == ["done"] * len(ids)
        assert {r["result"]["root_cause"]["category"] for r in results} == {"gpu_thermal_throttling"}
        assert c.get("/readyz").json()["in_flight"] == 0
        print(
            f"\nload: {n_diag + n_read} concurrent requests ({n_diag} diagnoses, {n_read} reads), max_concurrent 2: "
            f"all answered in {answered:.2f}s, {len(ids)} diagnoses done in {wall:.1f}s"
        )
        assert answered < 20 and wall < 120


def test_time_budget_per_request(tmp_path: Path) -> None:
    """A request's budget is capped by the server's; an exhausted budget gives an honest partial answer."""
    with LoopbackServer(create_app(settings(tmp_path, time_budget_s=120))) as srv, httpx.Client(base_url=srv.url) as c:
        capped = c.post("/v1/diagnoses", json={"incident": DEMO_ID, "time_budget_s": 9999}).json()["id"]
        tiny = c.post("/v1/diagnoses", json={"incident": DEMO_ID, "time_budget_s": 0.001}).json()["id"]
        assert wait_done(c, capped)["time_budget_s"] == 120
        body = wait_done(c, tiny)
        assert body["status"] == "done" and body["time_budget_s"] == 0.001
        assert body["result"]["status"] == "partial" and body["result"]["confidence"] <= 0.1
