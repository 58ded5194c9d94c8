"""The Slack bot over the HTTP Events API: real signed requests to the bolt app on loopback,
the Slack Web API served by a local recorder."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from slack_sdk import WebClient
from test_frontends_util import DEMO_ID, LoopbackServer, free_port, incidents_root

from kat.agent.frontends.slack_bot import BotSettings, KatBot, clean_text, parse
from kat.agent.frontends.slack_transport import http_app

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


class SlackRecorder:
    """A stand-in for slack.com/api: records every call, answers like Slack would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploads: list[bytes] = []
        self.fail: dict[str, str] = {}  # method -> Slack error to return
        self._ts = 0
        self._lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.startswith("/upload/"):
                    rec.uploads.append(raw)
                    return self._send(200, b"OK", "text/plain")
                method = self.path.split("/api/", 1)[-1].split("?")[0]
                ctype = self.headers.get("content-type", "")
                args = json.loads(raw or b"{}") if "json" in ctype else dict(parse_qsl(raw.decode()))
                self._send(200, json.dumps(rec.answer(method, args)).encode(), "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls.append((method, args))
            self._ts += 1
            ts = f"1700000000.{self._ts:06d}"
        if method in self.fail:
            return {"ok": False, "error": self.fail[method]}
        if method == "auth.test":
            return {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1", "url": "https://t.slack.com/"}
        if method in ("chat.postMessage", "chat.update"):
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts") or ts}
        if method == "files.getUploadURLExternal":
            return {"ok": True, "upload_url": f"http://127.0.0.1:{self.port}/upload/F1", "file_id": "F1"}
        if method == "files.completeUploadExternal":
            return {"ok": True, "files": [{"id": "F1", "title": "x"}]}
        return {"ok": True}

    def of(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [a for m, a in self.calls if m == method]

    def wait(self, cond: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while not cond():
            if time.time() > deadline:
                raise AssertionError(f"timed out; calls so far: {[m for m, _ in self.calls]}")
            time.sleep(0.05)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def signed(body: bytes, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig}


def event_body(event: dict[str, Any], event_id: str) -> bytes:
    return json.dumps(
        {
            "token": "x",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": event,
        }
    ).encode()


# What the fixture hands a test: the fake Slack API, the bot, and a poster of signed events.
SlackFixture = tuple["SlackRecorder", KatBot, Callable[..., httpx.Response]]


@pytest.fixture
def slack(tmp_path: Path) -> Iterator[SlackFixture]:
    rec = SlackRecorder()
    settings = BotSettings(
        incidents_root=incidents_root(tmp_path), db=tmp_path / "kat.sqlite", bot_token="xoxb-test", signing_secret=SECRET
    )
    bot = KatBot(settings, WebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{rec.port}/api/"))
    with LoopbackServer(http_app(bot)) as srv:

        def post(body: bytes, headers: dict[str, str], ctype: str = "application/json") -> httpx.Response:
            return httpx.post(srv.url + "/slack/events", content=body, headers={**headers, "content-type": ctype}, timeout=10)

        yield rec, bot, post
    bot.close(wait=True)  # let a diagnosis in flight finish before the fake Slack goes away
    rec.close()


def test_mention_diagnoses_then_follow_up_in_thread_and_retries_are_deduplicated(slack: SlackFixture) -> None:
    rec, bot, post = slack
    ev = {"type": "app_mention", "user": "U1", "channel": "C1", "ts": "100.000001", "text": f"<@UBOT> diagnose {DEMO_ID}"}
    body = event_body(ev, "Ev001")
    t0 = time.time()
    r = post(body, signed(body))
    assert r.status_code == 200 and time.time() - t0 < 3  # acknowledged at once
    # Slack retries the same event (it thought we were slow): no second diagnosis.
    for n in (1, 2):
        r = post(body, {**signed(body), "X-Slack-Retry-Num": str(n), "X-Slack-Retry-Reason": "http_timeout"})
        assert r.status_code == 200

    rec.wait(lambda: len(rec.of("files.completeUploadExternal")) >= 1)  # then the report PNG
    posts = rec.of("chat.postMessage")
    assert all(p["channel"] == "C1" and p["thread_ts"] == "100.000001" for p in posts)
    assert posts[0]["text"].startswith(":hourglass")  # the progress message, edited afterwards
    rec.wait(lambda: any("Diagnosed" in u["text"] for u in rec.of("chat.update")))
    assert len({u["ts"] for u in rec.of("chat.update")}) == 1  # one progress message, edited in place
    assert sum(p["text"].startswith(":hourglass") for p in posts) == 1  # the retries started nothing
    blocks = next(p["blocks"] for p in posts if p.get("blocks"))
    text = json.dumps(blocks)
    assert blocks[0]["type"] == "header" and "gpu_thermal_throttling" in blocks[0]["text"]["text"]
    for part in ("Causal chain", "Key evidence", "Remediation", "Confidence", "Ranks"):
        assert part in text
    assert json.loads(rec.uploads[0])["root_cause"]["category"] == "gpu_thermal_throttling"
    assert bot.store.count("done") == 1 and bot.store.count("running") + bot.store.count("queued") == 0

    # A follow-up in the same thread continues that conversation (no new diagnosis).
    n_before = len(rec.of("chat.postMessage"))
    fu = event_body({**ev, "ts": "100.000500", "thread_ts": "100.000001", "text": "<@UBOT> why not nvlink?"}, "Ev002")
    assert post(fu, signed(fu)).status_code == 200
    rec.wait(lambda: len(rec.of("chat.postMessage")) > n_before)
    answer = rec.of("chat.postMessage")[n_before]
    assert answer["thread_ts"] == "100.000001" and "NVLink" in answer["text"]
    assert bot.store.count("done") == 1


def test_bad_signature_and_stale_timestamp_are_rejected(slack: SlackFixture) -> None:
    rec, bot, post = slack
    body = event_body({"type": "app_mention", "channel": "C1", "ts": "1.1", "text": f"<@UBOT> diagnose {DEMO_ID}"}, "Ev9")
    assert post(body, signed(body, secret="wrong")).status_code == 401
    assert post(body, {}).status_code == 401
    assert post(body, signed(body, ts=int(time.time()) - 6 * 60)).status_code == 401  # replayed / stale
    tampered = body.replace(b"Ev9", b"Ev8")
    assert post(tampered, signed(body)).status_code == 401
    time.sleep(0.3)
    assert [m for m, _ in rec.calls if m != "auth.test"] == [] and bot.store.count("queued") == 0
    # The rejected event_id was never recorded: a genuine delivery afterwards still works.
    assert post(body, signed(body)).status_code == 200
    rec.wait(lambda: len(rec.of("chat.postMessage")) >= 1)


def test_slash_command_acks_fast_and_posts_the_diagnosis(slack: SlackFixture) -> None:
    rec, bot, post = slack
    form = {
        "command": "/kat",
        "text": "team-a/demo-incident",
        "channel_id": "C2",
        "user_id": "U7",
        "team_id": "T1",
        "trigger_id": "1.2.3",
        "response_url": f"http://127.0.0.1:{rec.port}/respond",
    }
    body = urlencode(form).encode()
    t0 = time.time()
    r = post(body, signed(body), "application/x-www-form-urlencoded")
    assert r.status_code == 200 and time.time() - t0 < 3
    assert "Looking into" in r.text
    rec.wait(lambda: len(rec.of("files.completeUploadExternal")) >= 1)  # then the report PNG
    root = rec.of("chat.postMessage")[0]
    assert root["channel"] == "C2" and "thread_ts" not in root
    threaded = rec.of("chat.postMessage")[1:]
    assert threaded and all(p["thread_ts"] == "1700000000.000002" for p in threaded)  # auth.test took .000001

    for text, needle in (("list", DEMO_ID), ("help", "follow-up"), ("../../etc/passwd", "refused"), ("nope", "no incident")):
        body = urlencode({**form, "text": text}).encode()
        r = post(body, signed(body), "application/x-www-form-urlencoded")
        assert r.status_code == 200 and needle in r.text, (text, r.text)
    assert bot.store.count("done") == 1


def test_dm_and_refusals_and_bot_messages(slack: SlackFixture) -> None:
    rec, bot, post = slack
    mine = event_body({"type": "message", "channel_type": "im", "channel": "D1", "ts": "5.1", "bot_id": "BBOT", "text": DEMO_ID}, "Ev20")
    assert post(mine, signed(mine)).status_code == 200
    bad = event_body(
        {"type": "message", "channel_type": "im", "channel": "D1", "ts": "5.2", "user": "U1", "text": "diagnose ../../../etc"}, "Ev21"
    )
    assert post(bad, signed(bad)).status_code == 200
    rec.wait(lambda: len(rec.of("chat.postMessage")) == 1)
    assert "refused" in rec.of("chat.postMessage")[0]["text"]

    rec.fail["files.getUploadURLExternal"] = "missing_scope"  # no files:write: JSON goes inline
    dm = event_body({"type": "message", "channel_type": "im", "channel": "D1", "ts": "5.3", "user": "U1", "text": DEMO_ID}, "Ev22")
    assert post(dm, signed(dm)).status_code == 200
    rec.wait(lambda: any(p["text"].startswith("```") for p in rec.of("chat.postMessage")))
    assert bot.store.count("done") == 1


def test_parse_messages(tmp_path: Path) -> None:
    from kat.agent.frontends.incidents import IncidentRoot

    root = IncidentRoot(incidents_root(tmp_path))
    assert clean_text("<@U123|kat>  diagnose  <http://x|team-a/demo-incident>") == "diagnose team-a/demo-incident"
    assert parse(f"<@U1> diagnose {DEMO_ID}", root, False).incident == DEMO_ID
    assert parse("please look at team-a/demo-incident", root, False).incident == "team-a/demo-incident"
    assert parse("why not nvlink?", root, True).kind == "question"
    assert parse("hello", root, False).kind == "help"
    assert parse("list", root, False).kind == "list"


def test_socket_mode_transport(tmp_path: Path) -> None:
    """Socket Mode: envelopes over a local WebSocket are acknowledged; a retried envelope is deduplicated."""
    websockets = pytest.importorskip("websockets")
    import asyncio

    from websockets.asyncio.server import serve

    from kat.agent.frontends.slack_transport import socket_mode_handler

    acks: list[dict] = []
    body = json.loads(
        event_body({"type": "app_mention", "user": "U1", "channel": "C5", "ts": "7.000001", "text": f"<@UBOT> diagnose {DEMO_ID}"}, "EvS1")
    )
    ws_port = free_port()
    stop = threading.Event()

    async def link(ws: Any) -> None:
        await ws.send(json.dumps({"type": "hello", "num_connections": 1}))
        for n, env_id in enumerate(("env-1", "env-2")):  # env-2: Slack's retry of the same event
            await ws.send(
                json.dumps(
                    {
                        "envelope_id": env_id,
                        "type": "events_api",
                        "accepts_response_payload": False,
                        "retry_attempt": n,
                        "retry_reason": "timeout" if n else "",
                        "payload": body,
                    }
                )
            )
        while not stop.is_set():
            try:
                acks.append(json.loads(await asyncio.wait_for(ws.recv(), 0.2)))
            except asyncio.TimeoutError:
                continue
            except websockets.ConnectionClosed:
                return

    async def main() -> None:
        async with serve(link, "127.0.0.1", ws_port):
            while not stop.is_set():
                await asyncio.sleep(0.05)

    t = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    t.start()

    class SocketRecorder(SlackRecorder):
        """Hands out the local WebSocket link for apps.connections.open."""

        def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
            if method == "apps.connections.open":
                return {"ok": True, "url": f"ws://127.0.0.1:{ws_port}/link"}
            return super().answer(method, args)

    rec = SocketRecorder()
    settings = BotSettings(incidents_root=incidents_root(tmp_path), db=tmp_path / "kat.sqlite", bot_token="xoxb-test")
    bot = KatBot(settings, WebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{rec.port}/api/"), request_verification=False)
    handler = socket_mode_handler(bot, "xapp-test")
    try:
        handler.connect()
        rec.wait(lambda: len(rec.of("files.completeUploadExternal")) >= 1)  # then the report PNG
        deadline = time.time() + 10
        while len(acks) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert {a.get("envelope_id") for a in acks} >= {"env-1", "env-2"}
        blocks = next(p["blocks"] for p in rec.of("chat.postMessage") if p.get("blocks"))
        assert "gpu_thermal_throttling" in blocks[0]["text"]["text"]
        assert bot.store.count("done") == 1 and sum(p["text"].startswith(":hourglass") for p in rec.of("chat.postMessage")) == 1
    finally:
        handler.close()
        bot.close(wait=True)
        stop.set()
        rec.close()
