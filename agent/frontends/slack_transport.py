"""How Slack reaches the bot: Socket Mode (outbound WebSocket) or the HTTP Events API.

The HTTP transport is a FastAPI app with bolt's adapter at POST /slack/events (events, slash
commands); bolt verifies X-Slack-Signature with the signing secret and rejects timestamps more
than 5 minutes off (replay protection) before any listener runs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from slack_bolt.adapter.fastapi import SlackRequestHandler

from kat.agent.frontends.slack_bot import BotSettings, KatBot

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

log = logging.getLogger("kat.slack")
T = TypeVar("T")
MAX_BACKOFF_S = 60.0


def body_problem(body: bytes, content_type: str) -> str | None:
    """Why a Slack request body cannot be parsed (None when it can): Slack sends JSON or a form."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    try:
        if "json" in content_type:
            doc = json.loads(text)
            return None if isinstance(doc, dict) else "JSON body is not an object"
        form = parse_qs(text, keep_blank_values=True)
        if "payload" in form:  # interactive payloads: a JSON object inside the form
            doc = json.loads(form["payload"][0])
            return None if isinstance(doc, dict) else "payload is not a JSON object"
        if not form and text.strip():
            doc = json.loads(text)  # bolt falls back to JSON when there is no form
            return None if isinstance(doc, dict) else "JSON body is not an object"
    except (ValueError, RecursionError):
        return "body is neither a form nor valid JSON"
    return None


def http_app(bot: KatBot) -> FastAPI:
    handler = SlackRequestHandler(bot.app)
    api = FastAPI(title="KAT Slack bot", docs_url=None, redoc_url=None)

    @api.post("/slack/events")
    async def events(req: Request) -> Response:
        problem = body_problem(await req.body(), req.headers.get("content-type", ""))
        if problem:
            return JSONResponse({"error": f"bad request: {problem}"}, status_code=400)
        try:
            return await handler.handle(req)
        except Exception:  # never a stack trace to the caller
            log.exception("Slack request failed")
            return JSONResponse({"error": "internal error (see the server log)"}, status_code=500)

    @api.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return api


def with_retries(what: str, fn: Callable[[], T], *, attempts: int | None = None, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call fn until it succeeds: exponential backoff (1 s doubling, at most 60 s), a log line per try.

    After `attempts` tries (env KAT_SLACK_RETRIES, default 8) the last error is raised as
    ConnectionError with a one-line message.
    """
    from kat.knowledge.settings import settings

    n = attempts if attempts is not None else settings().slack_retries
    delay = 1.0
    for i in range(1, n + 1):
        try:
            return fn()
        except Exception as exc:  # network down, DNS, invalid_auth, Slack outage
            from kat.agent.errors import one_line

            if i == n:
                raise ConnectionError(f"{what} failed after {n} attempts: {one_line(exc)}") from exc
            log.warning("%s failed (%s); retrying in %.0f s (attempt %d of %d)", what, one_line(exc), delay, i, n)
            sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
    raise AssertionError("unreachable")


def run_http(settings: BotSettings, host: str, port: int) -> None:
    import uvicorn

    bot = with_retries("connecting to Slack", lambda: KatBot(settings))
    try:
        uvicorn.run(http_app(bot), host=host, port=port, log_level="info")
    finally:
        bot.close()


def socket_mode_handler(bot: KatBot, app_token: str) -> SocketModeHandler:
    """Bolt's Socket Mode handler for the bot (connect() / start() / close())."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    return SocketModeHandler(bot.app, app_token)


def run_socket_mode(settings: BotSettings, app_token: str) -> None:
    # Socket Mode frames come over an authenticated WebSocket: no signing secret involved.
    bot = with_retries(
        "connecting to Slack", lambda: KatBot(settings.model_copy(update={"signing_secret": ""}), request_verification=False)
    )
    try:
        handler = socket_mode_handler(bot, app_token)
        with_retries("opening the Socket Mode connection", handler.connect)
        from threading import Event

        Event().wait()  # serve until interrupted (what handler.start() does after connect())
    finally:
        bot.close()
