"""The report in Slack: a link to `kat serve`'s page when a public base URL is set, else a PNG.

The Slack Web API is the local recorder of test_frontends_slack (real HTTP, real slack_sdk client).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_sdk import WebClient
from test_frontends_slack import SlackRecorder
from test_frontends_util import incidents_root

from kat.agent.frontends.report_links import post_report
from kat.agent.frontends.slack_bot import BotSettings, KatBot
from kat.agent.report.verdict import load_diagnosis

DIAGNOSIS = Path(__file__).parent / "data" / "report" / "demo-diagnosis.json"
JOB = "0123456789abcdef"


@pytest.fixture
def rec() -> Iterator[SlackRecorder]:
    r = SlackRecorder()
    yield r
    r.close()


def test_reply_links_to_the_report_when_a_public_url_is_set(tmp_path: Path, rec: SlackRecorder) -> None:
    root = incidents_root(tmp_path)
    settings = BotSettings(
        incidents_root=root, db=tmp_path / "kat.sqlite", bot_token="xoxb-test", public_base_url="https://kat.example.com/"
    )
    bot = KatBot(settings, WebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{rec.port}/api/"))
    try:
        bot._post_report("C1", "100.000001", "team-a/demo-incident", root / "team-a" / "demo-incident", JOB, load_diagnosis(DIAGNOSIS))
    finally:
        bot.close()
    (msg,) = rec.of("chat.postMessage")
    button = msg["blocks"][0]["accessory"]
    assert button["url"] == f"https://kat.example.com/v1/incidents/{JOB}/report" and msg["thread_ts"] == "100.000001"
    assert not rec.uploads


def test_reply_attaches_a_png_without_one(tmp_path: Path, rec: SlackRecorder) -> None:
    root = incidents_root(tmp_path)
    client = WebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{rec.port}/api/")
    how = post_report(
        client, "C1", "100.000001", "team-a/demo-incident", root / "team-a" / "demo-incident", JOB, load_diagnosis(DIAGNOSIS), None
    )
    assert how == "png"
    assert len(rec.uploads) == 1 and rec.uploads[0][:8] == b"\x89PNG\r\n\x1a\n" and len(rec.uploads[0]) > 20_000
    (done,) = rec.of("files.completeUploadExternal")
    assert done["thread_ts"] == "100.000001" and not rec.of("chat.postMessage")
