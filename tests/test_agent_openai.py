"""The `openai` backend against a real OpenAI-compatible HTTP server (scripted replies) on 127.0.0.1."""

from __future__ import annotations

import json

from kat.agent.demo import DEMO_INCIDENT
from kat.agent.session import Session
from tests.agent_fakes import ScriptedOpenAIServer, diagnosis_args, openai_tool_call

DEMO = DEMO_INCIDENT


def test_openai_backend_drives_the_graph_over_http() -> None:
    replies = [
        openai_tool_call("outpost_detect", {"max_anomalies": 5}, 1),
        openai_tool_call("metric_lookup", '{"name": "DCGM_FI_DEV_GPU_TEMP", ', 2),  # malformed JSON
        openai_tool_call("metric_lookup", {"name": "DCGM_FI_DEV_GPU_TEMP"}, 3),  # corrected retry
        openai_tool_call("submit_diagnosis", diagnosis_args(["ev-1", "ev-2"]), 4),
    ]
    with ScriptedOpenAIServer(replies) as srv:
        s = Session(DEMO, "openai", base_url=srv.base_url, model="kat-analyzer-test")
        d = s.diagnose("o1")
        s.close()
    assert d.status == "complete" and d.root_cause.ranks == [4]
    assert {e.id for e in d.evidence} == {"ev-1", "ev-2"}
    first = srv.requests[0]
    assert first["model"] == "kat-analyzer-test"
    names = {t["function"]["name"] for t in first["tools"]}
    assert {"outpost_detect", "trace_slice", "metric_lookup", "log_search", "knowledge_search", "submit_diagnosis"} <= names
    # The malformed call was answered with an error tool message the model could read.
    third = srv.requests[2]["messages"]
    tool_msgs = [m for m in third if m["role"] == "tool"]
    assert any("could not be parsed" in m["content"] for m in tool_msgs)
    # Tool results reach the model as quoted data with their evidence ids.
    second = srv.requests[1]["messages"]
    assert any(m["role"] == "tool" and "<untrusted_data>" in m["content"] and "ev-1" in m["content"] for m in second)


def test_openai_backend_server_down_is_an_error_naming_the_url() -> None:
    """Issue 22: an unreachable server is an error with the URL and the reason, not a partial answer."""
    import pytest

    from kat.agent.backends.llm import BackendUnreachable

    s = Session(
        DEMO,
        "openai",
        base_url="http://127.0.0.1:9/v1",
        model="x",
        config=__import__("kat.agent.graph", fromlist=["AgentConfig"]).AgentConfig(max_failures=2),
    )
    with pytest.raises(BackendUnreachable, match=r"http://127\.0\.0\.1:9/v1.*Connection refused"):
        s.diagnose("o2")
    s.close()


def test_diagnosis_schema_is_sent_as_the_submit_tool() -> None:
    replies = [openai_tool_call("submit_diagnosis", diagnosis_args([], category="none", ranks=[]), 1)]
    with ScriptedOpenAIServer(replies) as srv:
        s = Session(DEMO, "openai", base_url=srv.base_url, model="m")
        d = s.diagnose("o3")
        s.close()
    assert d.root_cause.category == "none"
    submit = next(t for t in srv.requests[0]["tools"] if t["function"]["name"] == "submit_diagnosis")
    props = submit["function"]["parameters"]["properties"]
    assert {"root_cause", "causal_chain", "evidence", "confidence", "alternatives_ruled_out", "remediation"} <= set(props)
    json.dumps(submit)
