"""How Slack reaches the bot: Socket Mode (outbound WebSocket) or the HTTP Events API.

The HTTP transport is a FastAPI app with bolt's adapter at POST /slack/events (events, slash
commands); bolt verifies X-Slack-Signature with the signing secret and rejects timestamps more
than 5 minutes off (replay protection) before any listener runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from slack_bolt.adapter.fastapi import SlackRequestHandler

from kat.agent.frontends.slack_bot import BotSettings, KatBot

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode import SocketModeHandler


def http_app(bot: KatBot) -> FastAPI:
    handler = SlackRequestHandler(bot.app)
    api = FastAPI(title="KAT Slack bot", docs_url=None, redoc_url=None)

    @api.post("/slack/events")
    async def events(req: Request) -> Response:
        return await handler.handle(req)

    @api.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return api


def run_http(settings: BotSettings, host: str, port: int) -> None:
    import uvicorn

    bot = KatBot(settings)
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
    bot = KatBot(settings.model_copy(update={"signing_secret": ""}), request_verification=False)
    try:
        socket_mode_handler(bot, app_token).start()
    finally:
        bot.close()
