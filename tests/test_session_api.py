"""Session owns or borrows its checkpointer, returns its thread id; the Analyzer's serving contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from kat.agent.backends.contract import SMALL, AnalyzerContract
from kat.agent.backends.llm import LLMAnalyzer
from kat.agent.demo import DEMO_INCIDENT
from kat.agent.session import Session, open_checkpointer
from tests.agent_fakes import ScriptedChatModel, diagnosis_args, tc


def _script() -> ScriptedChatModel:
    return ScriptedChatModel(
        script=[
            AIMessage(content="", tool_calls=[tc("outpost_detect", {})]),
            AIMessage(content="", tool_calls=[tc("submit_diagnosis", diagnosis_args(["ev-1"]))]),
        ]
    )


def test_run_diagnosis_returns_the_thread_id_and_a_given_checkpointer_stays_open(tmp_path: Path) -> None:
    saver = open_checkpointer(tmp_path / "shared.sqlite")
    s = Session(DEMO_INCIDENT, "scripted", chat_model=_script(), checkpointer=saver)
    thread_id, d = s.run_diagnosis()
    assert d.status == "complete" and s.state(thread_id)["diagnosis"]["status"] == "complete"
    s.close()
    # A second session on the same saver sees the thread: the checkpointer was shared, not reopened or closed.
    s2 = Session(DEMO_INCIDENT, "scripted", chat_model=_script(), checkpointer=saver)
    assert s2.state(thread_id)["diagnosis"] == s.state(thread_id)["diagnosis"]
    saver.conn.execute("select 1")  # still open
    with pytest.raises(ValueError, match="not both"):
        Session(DEMO_INCIDENT, "rules", db=tmp_path / "x.sqlite", checkpointer=saver)


def test_an_owned_checkpointer_is_closed(tmp_path: Path) -> None:
    s = Session(DEMO_INCIDENT, "scripted", chat_model=_script(), db=tmp_path / "own.sqlite")
    tid, _ = s.run_diagnosis("mine")
    assert tid == "mine"
    s.close()
    with pytest.raises(Exception, match="closed"):
        s.checkpointer.conn.execute("select 1")


class _Binder:
    """A chat model stand-in that records the tools bound to it."""

    def __init__(self) -> None:
        self.bound: list = []

    def bind_tools(self, tools: list) -> _Binder:
        self.bound = tools
        return self


def test_the_contract_binds_its_tools_and_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Session(DEMO_INCIDENT, "rules")
    model = _Binder()
    a = LLMAnalyzer(model, s.tools, contract=SMALL)
    assert a.system_prompt == "system_small" and a.tool_result_chars == SMALL.tool_result_chars == 160
    assert [t.name for t in model.bound] == [*(n for n in s.tools if n in SMALL.tools), "submit_diagnosis"]  # registry order
    monkeypatch.setenv("KAT_ANALYZER_TOOLS", "log_search")
    monkeypatch.setenv("KAT_TOOL_RESULT_CHARS", "40")
    env = AnalyzerContract.from_settings()
    assert env.tools == ("log_search",) and env.tool_result_chars == 40
    assert SMALL.model_copy(update={"tool_result_chars": None}).env() == {
        "KAT_SYSTEM_PROMPT": "system_small",
        "KAT_ANALYZER_TOOLS": "metric_catalog,outpost_detect,metric_compare,log_search,knowledge_search",
    }
    with pytest.raises(ValueError, match="unknown tool"):
        LLMAnalyzer(model, s.tools, contract=AnalyzerContract(tools=("nope",)))
    s.close()


def test_the_openai_backend_caps_replies_by_the_contract() -> None:
    from kat.agent.backends import make_analyzer

    s = Session(DEMO_INCIDENT, "rules")
    a = make_analyzer("openai", s.ctx, s.tools, contract=SMALL, base_url="http://127.0.0.1:9/v1")
    assert a.model.max_tokens == 512 and a.system_prompt == "system_small"
    s.close()
