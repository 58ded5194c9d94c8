"""Hostile requests to the HTTP API and the Slack bot (real servers on loopback, real signed
Slack requests), and a few real `kat` subprocesses for exit codes and stderr."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from hostile_corpus import append_lines, demo_copy, fifo
from slack_sdk import WebClient
from test_frontends_slack import SECRET, SlackRecorder, event_body, signed
from test_frontends_util import DEMO_ID, LoopbackServer, incidents_root

from kat.agent.demo import DEMO_INCIDENT
from kat.agent.frontends.http_api import ServerSettings, create_app
from kat.agent.frontends.slack_bot import BotSettings, KatBot
from kat.agent.frontends.slack_transport import http_app, with_retries

# (recorder, bot, post(body, headers, content type)) of the `slack` fixture
SlackRig = tuple[SlackRecorder, KatBot, Callable[..., httpx.Response]]


def hostile_root(tmp: Path) -> Path:
    """The demo bundle, one with a wrong-typed manifest, a duplicate id and damaged metrics."""
    root = incidents_root(tmp)
    broken = root / "team-b" / "broken"
    (broken / "traces").mkdir(parents=True)
    (broken / "incident.json").write_text('{"id": ["not", "a", "string"], "symptom": "x"}')
    dup = demo_copy(root / "team-c", "copy-of-demo")
    damaged = demo_copy(root / "team-d", "damaged")
    m = orjson.loads((damaged / "incident.json").read_bytes())
    (damaged / "incident.json").write_bytes(orjson.dumps({**m, "id": "damaged-demo"}))
    append_lines(damaged / "logs.jsonl", b"{not json", b"\xff\xfe")
    assert dup.exists()
    return root


def wait_done(c: httpx.Client, job_id: str, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = c.get(f"/v1/diagnoses/{job_id}").json()
        if body["status"] in ("done", "error"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{job_id} not finished")


def test_http_api_under_hostile_input(tmp_path: Path) -> None:
    root = hostile_root(tmp_path)
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    # The database path lies under a regular file: the server falls back to a temp dir, it does not crash.
    s = ServerSettings(incidents_root=root, db=not_a_dir / "db" / "kat.sqlite", backend_options={"base_url": "http://127.0.0.1:9/v1"})
    with LoopbackServer(create_app(s)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        # 1. One broken manifest and a duplicate id never 500 the listing: both are reported.
        r = c.get("/v1/incidents")
        assert r.status_code == 200, r.text
        body = r.json()
        assert {i["path"] for i in body["incidents"]} >= {"team-a/demo-incident", "team-d/damaged"}
        skipped = {p["path"]: p["error"] for p in body["skipped"]}
        assert "field 'id' must be a string" in skipped["team-b/broken"]
        assert any("duplicate incident id" in e and "team-a/demo-incident" in e for e in skipped.values())
        # 2. A duplicate id is an error naming both directories.
        r = c.post("/v1/diagnoses", json={"incident": DEMO_ID})
        assert r.status_code == 409 and "team-a/demo-incident" in r.text and "team-c/copy-of-demo" in r.text
        # 3. Non-JSON and wrong-typed bodies are 4xx with the field named.
        r = c.post("/v1/diagnoses", content=b"\xff\x00not json", headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and "Traceback" not in r.text
        r = c.post("/v1/diagnoses", json={"incident": 12})
        assert r.status_code == 422 and "incident" in r.text
        # 4. Damaged logs: the diagnosis is done, degraded, and says what was dropped.
        job = c.post("/v1/diagnoses", json={"incident": "damaged-demo"}).json()["id"]
        done = wait_done(c, job)
        assert done["status"] == "done", done
        res = done["result"]
        assert res["status"] == "degraded" and res["data_quality"]["logs"]["dropped"] == 2
        assert res["root_cause"]["category"] == "gpu_thermal_throttling"
        # 5. A follow-up naming an absurd rank is answered, not a 500.
        r = c.post(f"/v1/threads/{job}/messages", json={"text": "show rank 99999999999999999999 around step 2"})
        assert r.status_code == 200, r.text
        assert "out of range" in r.json()["answer"]
        # 6. An unreachable Analyzer server: the job errors naming the URL, with an error event in the stream.
        job = c.post("/v1/diagnoses", json={"incident": "team-a/demo-incident", "analyzer": "openai"}).json()["id"]
        done = wait_done(c, job)
        assert done["status"] == "error" and "http://127.0.0.1:9/v1" in done["error"] and "Connection refused" in done["error"]
        names = []
        with c.stream("GET", f"/v1/diagnoses/{job}/events") as st:
            for line in st.iter_lines():
                if line.startswith("event: "):
                    names.append(line[7:])
        assert "error" in names and names[-1] == "end"


@pytest.fixture
def slack(tmp_path: Path) -> Iterator[SlackRig]:
    rec = SlackRecorder()
    settings = BotSettings(incidents_root=hostile_root(tmp_path), db=tmp_path / "kat.sqlite", bot_token="xoxb-test", signing_secret=SECRET)
    bot = KatBot(settings, WebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{rec.port}/api/"))
    with LoopbackServer(http_app(bot)) as srv:

        def post(body: bytes, headers: dict[str, str], ctype: str = "application/json") -> httpx.Response:
            return httpx.post(srv.url + "/slack/events", content=body, headers={**headers, "content-type": ctype}, timeout=10)

        yield rec, bot, post
    bot.close(wait=True)
    rec.close()


def test_slack_hostile_bodies_get_400_not_500(slack: SlackRig) -> None:
    rec, bot, post = slack
    for body, ctype in (
        (b"not json at all {", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"[" * 100_000, "application/json"),
        (urlencode({"payload": "{broken"}).encode(), "application/x-www-form-urlencoded"),
    ):
        r = post(body, signed(body), ctype)
        assert r.status_code == 400, (body[:20], r.status_code, r.text)
        assert "Traceback" not in r.text


def test_slack_list_reports_broken_manifests(slack: SlackRig) -> None:
    rec, bot, post = slack
    body = urlencode({"command": "/kat", "text": "list", "channel_id": "C1", "user_id": "U1", "team_id": "T1", "trigger_id": "x"}).encode()
    r = post(body, signed(body), "application/x-www-form-urlencoded")
    assert r.status_code == 200
    text = r.json()["text"] if r.headers.get("content-type", "").startswith("application/json") else r.text
    assert "demo-incident" in text and "skipped `team-b/broken`" in text and "duplicate incident id" in text


def test_slack_final_answer_posted_when_progress_edits_fail(slack: SlackRig) -> None:
    rec, bot, post = slack
    rec.fail["chat.update"] = "ratelimited"
    body = event_body(
        {"type": "app_mention", "channel": "C9", "user": "U1", "ts": "1700000001.000100", "text": "<@UBOT> diagnose damaged-demo"},
        "Ev-hostile-1",
    )
    assert post(body, signed(body)).status_code == 200
    rec.wait(lambda: any(a.get("blocks") for a in rec.of("chat.postMessage")), timeout=120)
    posted = next(a for a in rec.of("chat.postMessage") if a.get("blocks"))
    blocks = json.dumps(posted["blocks"])
    assert "Data quality" in blocks and "logs.jsonl" in blocks


def test_slack_follow_up_error_and_unreachable_backend(tmp_path: Path) -> None:
    rec = SlackRecorder()
    settings = BotSettings(
        incidents_root=hostile_root(tmp_path),
        db=tmp_path / "kat.sqlite",
        bot_token="xoxb-test",
        signing_secret=SECRET,
        analyzer="openai",
        backend_options={"base_url": "http://127.0.0.1:9/v1"},
    )
    bot = KatBot(settings, WebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{rec.port}/api/"))
    try:
        with LoopbackServer(http_app(bot)) as srv:
            body = event_body(
                {"type": "app_mention", "channel": "C9", "user": "U1", "ts": "1700000002.000100", "text": "<@UBOT> diagnose damaged-demo"},
                "Ev-hostile-2",
            )
            r = httpx.post(
                srv.url + "/slack/events", content=body, headers={**signed(body), "content-type": "application/json"}, timeout=10
            )
            assert r.status_code == 200
            rec.wait(lambda: any("failed" in str(a.get("text")) for a in rec.of("chat.update")), timeout=60)
            err = next(a["text"] for a in rec.of("chat.update") if "failed" in str(a.get("text")))
            assert "http://127.0.0.1:9/v1" in err and "Connection refused" in err
    finally:
        bot.close(wait=True)
        rec.close()


def test_slack_connection_is_retried_with_backoff_and_a_clear_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = SlackRecorder()
    rec.fail["auth.test"] = "service_unavailable"
    settings = BotSettings(incidents_root=hostile_root(tmp_path), db=tmp_path / "kat.sqlite", bot_token="xoxb-test", signing_secret=SECRET)
    client = WebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{rec.port}/api/")
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        if len(sleeps) == 3:
            rec.fail.pop("auth.test")  # Slack comes back

    caplog.set_level(logging.WARNING, logger="kat.slack")
    bot = with_retries("connecting to Slack", lambda: KatBot(settings, client), attempts=6, sleep=sleep)
    bot.close()
    assert sleeps == [1.0, 2.0, 4.0]
    assert "connecting to Slack failed" in caplog.text and "retrying in 2 s (attempt 2 of 6)" in caplog.text
    rec.fail["auth.test"] = "invalid_auth"
    with pytest.raises(ConnectionError, match="after 2 attempts.*invalid_auth"):
        with_retries("connecting to Slack", lambda: KatBot(settings, client), attempts=2, sleep=lambda s: None)
    rec.close()


# -- real subprocesses: exit codes and stderr as a user sees them ---------------------------------
def run_kat(*args: str, env: dict[str, str] | None = None, stdin: str = "", timeout: float = 240) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-c", "from kat.agent.cli import main; main()", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=e, timeout=timeout)


def test_cli_subprocess_errors_are_one_line(tmp_path: Path) -> None:
    p = fifo(tmp_path)
    r = run_kat("import", str(p))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not a regular file or directory" in r.stderr
    r = run_kat("diagnose", str(DEMO_INCIDENT), "--analyzer", "openai", "--base-url", "http://127.0.0.1:9/v1", "-q")
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "cannot reach the Analyzer server at http://127.0.0.1:9/v1" in " ".join(r.stderr.split()) and "Connection refused" in r.stderr


def test_cli_chat_with_unwritable_cache_and_absurd_rank(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bundle = tmp_path / "demo"
    shutil.copytree(DEMO_INCIDENT, bundle)
    r = run_kat(
        "chat", str(bundle), env={"KAT_CACHE_DIR": str(blocker / "cache")}, stdin="logs of rank 99999999999999999999\nwhy not nvlink?\n"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "is not writable; using" in r.stderr
    assert "out of range" in r.stdout and "NVLink" in r.stdout
