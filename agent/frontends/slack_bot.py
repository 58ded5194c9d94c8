"""The Slack bot: @kat mentions, DMs and /kat, one Slack thread = one agent conversation.

    @kat diagnose demo-gpu_thermal_throttling      (or a path under the incidents root)
    @kat why not nvlink?                            (in the diagnosis's thread: a follow-up)
    /kat team-a/inc-0042        /kat list        /kat help

Listeners only parse and enqueue: diagnoses run in the JobRunner's bounded pool, so Slack gets
its acknowledgement at once. Each event_id is recorded in SQLite, so Slack's retries (or a
replayed delivery) never start a second diagnosis.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from slack_bolt import App, BoltResponse
from slack_sdk import WebClient

from kat.agent.diagnosis import Diagnosis
from kat.agent.frontends.incidents import IncidentError, IncidentRoot
from kat.agent.frontends.jobs import Busy, JobRunner
from kat.agent.frontends.sessions import SharedCheckpointer
from kat.agent.frontends.slack_blocks import diagnosis_blocks, diagnosis_fallback, progress_text
from kat.agent.frontends.store import Store
from kat.agent.session import ProgressEvent

log = logging.getLogger("kat.frontends.slack")

HELP = (
    "Ask me about an incident bundle: `@kat diagnose <incident>` (a bundle id or a path under the incidents root), "
    "`/kat <incident>`, or `/kat list`. Then ask follow-up questions in the same thread, e.g. "
    "`@kat why not nvlink?` or `@kat show rank 4 around step 12`."
)
MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")
UPDATE_EVERY_S = 1.0  # chat.update is rate limited (about 1 per second per channel)
SNIPPET_MAX = 3500


class BotSettings(BaseModel):
    incidents_root: Path
    db: Path
    bot_token: str = ""
    signing_secret: str = ""
    analyzer: str = "rules"
    max_concurrent: int = 2
    max_queue: int = 50
    time_budget_s: float = 300.0
    max_steps: int = 24
    backend_options: dict = {}
    # Where `kat serve` is reachable for people in Slack (e.g. https://kat.example.com): replies
    # then link to the report page; without it they carry a PNG of the heatmap and timeline.
    public_base_url: str | None = None


def clean_text(text: str) -> str:
    """Message text without bot mentions; Slack's <url|label> and <url> wrappers unwrapped."""
    text = MENTION.sub(" ", text or "")
    text = re.sub(r"<([^<>|]+)\|([^<>]+)>", r"\2", text)
    text = re.sub(r"<([^<>@#!]+)>", r"\1", text)
    return " ".join(text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").split())


class Request(BaseModel):
    """What a message asks for."""

    kind: str  # help | list | diagnose | question
    incident: str | None = None
    text: str = ""


def parse(text: str, root: IncidentRoot, in_diagnosed_thread: bool, command: bool = False) -> Request:
    """`command`: the text of /kat, where the first word names the incident."""
    t = clean_text(text)
    words = t.split()
    low = [w.lower() for w in words]
    if not words or low[0] in ("help", "?"):
        return Request(kind="help")
    if low[0] in ("list", "incidents", "ls"):
        return Request(kind="list")
    keyword = low[0] in ("diagnose", "diag", "investigate", "analyze", "analyse")
    explicit = keyword or command
    candidates = words[1:2] if keyword else words[0:1] if command else ([] if in_diagnosed_thread else words)
    for w in candidates:
        w = w.strip("`'\",.;:()")
        try:
            root.resolve(w)
            return Request(kind="diagnose", incident=w, text=t)
        except IncidentError as exc:
            if explicit or exc.status == 400:
                return Request(kind="diagnose", incident=w, text=t)  # report the refusal / unknown name
    if in_diagnosed_thread:
        return Request(kind="question", text=t)
    return Request(kind="help")


class Progress:
    """One Slack message that is edited as tool calls come in (throttled)."""

    def __init__(self, client: WebClient, channel: str, thread_ts: str, incident: str):
        self.client, self.channel, self.thread_ts, self.incident = client, channel, thread_ts, incident
        self.calls, self.last, self._sent = 0, "", 0.0
        self._lock = threading.Lock()
        self.ts: str | None = None
        try:
            r = client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=progress_text(incident, 0, ""))
            self.ts = r["ts"]
        except Exception as exc:  # progress is a courtesy: the diagnosis still runs and is posted
            log.warning("could not post the progress message (%s)", _slack_error(exc))

    def on_event(self, _job_id: str, ev: ProgressEvent) -> None:
        if ev.kind != "tool_call":
            return
        with self._lock:
            self.calls += 1
            self.last = ev.text
            if time.monotonic() - self._sent < UPDATE_EVERY_S:
                return
            self._sent = time.monotonic()
        if self.ts is None:
            return
        try:
            self.client.chat_update(channel=self.channel, ts=self.ts, text=progress_text(self.incident, self.calls, self.last))
        except Exception as exc:  # e.g. rate limited: skip this edit, the next one may work
            log.info("progress edit failed (%s)", _slack_error(exc))

    def finish(self, error: str | None = None) -> None:
        """Final state of the progress message; an error that cannot be shown by an edit is posted."""
        text = progress_text(self.incident, self.calls, self.last, done=error is None, error=error)
        try:
            if self.ts is None:
                raise RuntimeError("no progress message")
            self.client.chat_update(channel=self.channel, ts=self.ts, text=text)
        except Exception as exc:
            log.info("final progress edit failed (%s)", _slack_error(exc))
            if error is not None:
                try:
                    self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts, text=text)
                except Exception as exc2:
                    log.warning("could not post the error either (%s)", _slack_error(exc2))


class KatBot:
    """Slack listeners on top of the shared JobRunner."""

    def __init__(
        self,
        settings: BotSettings,
        client: WebClient | None = None,
        *,
        runner: JobRunner | None = None,
        request_verification: bool = True,
        token_verification: bool = True,
    ):
        self.settings = settings
        self.store = Store(settings.db)
        self.root = IncidentRoot(settings.incidents_root)
        self.runner = runner or JobRunner(
            self.store,
            self.root,
            SharedCheckpointer(settings.db),
            max_concurrent=settings.max_concurrent,
            max_queue=settings.max_queue,
            time_budget_s=settings.time_budget_s,
            max_steps=settings.max_steps,
            backend_options=settings.backend_options,
        )
        self.client = client or WebClient(token=settings.bot_token)
        self.app = App(
            client=self.client,
            signing_secret=settings.signing_secret or None,
            request_verification_enabled=request_verification,
            token_verification_enabled=token_verification,
        )
        self.app.middleware(self._dedupe)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.command("/kat")(self._on_command)

    # -- listeners ------------------------------------------------------------------------------
    def _dedupe(self, req: Any, resp: BoltResponse, next: Callable[[], None]) -> BoltResponse | None:
        body = req.body or {}
        event_id = body.get("event_id") if isinstance(body, dict) else None
        if event_id and not self.store.first_seen(f"event:{event_id}"):
            retry = (req.headers.get("x-slack-retry-num") or ["-"])[0]
            log.info("duplicate delivery of %s (retry %s) ignored", event_id, retry)
            return BoltResponse(status=200, body="")
        next()
        return None

    def _on_mention(self, event: dict, ack: Callable) -> None:
        ack()
        self.handle(event["channel"], event.get("thread_ts") or event["ts"], event.get("text", ""))

    def _on_message(self, event: dict, ack: Callable) -> None:
        ack()
        # DMs only; never answer bots (ourselves included) or edits/joins.
        if event.get("channel_type") != "im" or event.get("bot_id") or event.get("subtype"):
            return
        self.handle(event["channel"], event.get("thread_ts") or event["ts"], event.get("text", ""))

    def _on_command(self, command: dict, ack: Callable, respond: Callable) -> None:
        text = command.get("text", "")
        req = parse(text, self.root, in_diagnosed_thread=False, command=True)
        if req.kind in ("help", "list"):
            ack(text=HELP if req.kind == "help" else self._list_text())
            return
        try:
            self.root.resolve(req.incident or "")
        except IncidentError as exc:
            ack(text=f":warning: {exc}")
            return
        ack(text=f"Looking into `{req.incident}`; I'll post in this channel.")  # within Slack's 3 s
        try:
            r = self.client.chat_postMessage(
                channel=command["channel_id"], text=f"<@{command.get('user_id', '')}> asked: `/kat {clean_text(text)}`"
            )
        except Exception as exc:  # e.g. not_in_channel: tell the user privately
            respond(text=f"I can't post in this channel ({_slack_error(exc)}); invite me or DM me.", response_type="ephemeral")
            return
        self.handle(command["channel_id"], r["ts"], text, parsed=req)

    # -- the work -------------------------------------------------------------------------------
    def thread_key(self, channel: str, thread_ts: str) -> str:
        return f"slack-{channel}-{thread_ts}"

    def handle(self, channel: str, thread_ts: str, text: str, parsed: Request | None = None) -> None:
        key = self.thread_key(channel, thread_ts)
        known = self.store.slack_thread(key)
        req = parsed or parse(text, self.root, in_diagnosed_thread=known is not None)
        say = lambda msg, **kw: self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=msg, **kw)  # noqa: E731
        if req.kind == "help":
            say(HELP)
        elif req.kind == "list":
            say(self._list_text())
        elif req.kind == "question" and known is not None:
            self._follow_up(known[1], req.text, say)
        elif req.kind == "diagnose":
            self._diagnose(channel, thread_ts, key, req.incident or "", say)

    def _diagnose(self, channel: str, thread_ts: str, key: str, name: str, say: Callable) -> None:
        try:
            path = self.root.resolve(name)
        except IncidentError as exc:
            say(f":warning: {exc}")
            return
        incident = self.root.relative(path)
        progress = Progress(self.client, channel, thread_ts, incident)

        def done(job_id: str, d: Diagnosis | None, error: str | None) -> None:
            try:
                progress.finish(error)
            finally:  # the answer is posted even when the progress edit failed
                if d is not None:
                    self._post_diagnosis(channel, thread_ts, incident, d)
                    self._post_report(channel, thread_ts, incident, path, job_id, d)

        try:
            job_id = self.runner.submit(
                path, self.settings.analyzer, thread_id=key, source="slack", listener=progress.on_event, on_done=done
            )
        except Busy as exc:
            progress.finish(str(exc))
            return
        self.store.set_slack_thread(key, incident, job_id, channel, thread_ts)

    def _post_diagnosis(self, channel: str, thread_ts: str, incident: str, d: Diagnosis) -> None:
        self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=diagnosis_fallback(d), blocks=diagnosis_blocks(d, incident))
        body = d.model_dump_json(indent=2)
        try:
            self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                content=body,
                filename=f"kat-diagnosis-{Path(incident).name}.json",
                title="Full diagnosis (JSON)",
            )
        except Exception as exc:  # no files:write scope, or uploads disabled: inline snippet instead
            log.info("file upload failed (%s); posting the JSON inline", _slack_error(exc))
            snippet = body if len(body) <= SNIPPET_MAX else body[:SNIPPET_MAX] + "\n… (truncated; GET /v1/diagnoses/<id> has it all)"
            self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=f"```{snippet}```")

    def _post_report(self, channel: str, thread_ts: str, incident: str, path: Path, job_id: str, d: Diagnosis) -> None:
        """A link to the report page when the server is reachable, else a PNG snapshot."""
        from kat.agent.frontends.report_links import post_report

        try:
            post_report(self.client, channel, thread_ts, incident, path, job_id, d, self.settings.public_base_url)
        except Exception as exc:  # the diagnosis is already posted; a failed picture must not hide it
            log.warning("report for %s not posted: %s", incident, _slack_error(exc))

    def _follow_up(self, job_id: str, text: str, say: Callable) -> None:
        job = self.store.job(job_id)
        if job is None or job.status in ("queued", "running"):
            say(":hourglass_flowing_sand: Still working on the diagnosis; ask again once it is posted.")
            return
        if job.status == "error":
            say(f":x: The diagnosis in this thread failed ({job.error}); start a new one with `diagnose <incident>`.")
            return
        fut = self.runner.ask_future(job_id, text)

        def reply(f: Any) -> None:
            try:
                say(f.result() or "(no answer)")
            except Exception as exc:
                from kat.agent.errors import one_line

                try:
                    say(f":x: I could not answer that: {one_line(exc)[:300]}")
                except Exception:
                    log.warning("could not post a follow-up error", exc_info=True)

        fut.add_done_callback(reply)

    def _list_text(self) -> str:
        items, problems = self.root.scan()
        skipped = "".join(f"\n:warning: skipped `{p.path}`: {p.error}" for p in problems[:10])
        if not items:
            return "No incident bundles under the incidents root." + skipped
        lines = [f"• `{i.id}` ({i.path}) {(i.title or '')[:80]}" for i in items[:30]]
        return "Incidents:\n" + "\n".join(lines) + (f"\n…and {len(items) - 30} more" if len(items) > 30 else "") + skipped

    def close(self, wait: bool = False) -> None:
        self.runner.shutdown(wait=wait)


def _slack_error(exc: Exception) -> str:
    resp = getattr(exc, "response", None)
    try:
        return str(resp["error"]) if resp is not None else type(exc).__name__
    except Exception:
        return type(exc).__name__
