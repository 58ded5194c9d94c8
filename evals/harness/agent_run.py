"""Run the agent once on one bundle and record its trajectory next to the Diagnosis."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kat.evals.harness.models import Trajectory
from kat.evals.harness.toolcalls import tool_call_stats
from kat.evals.harness.variants import Variant

if TYPE_CHECKING:
    from kat.agent.session import Session


def _disable(session: Session, names: list[str]) -> None:
    """Take tools away from a built Session (see variants.py for why this lives here)."""
    from kat.agent.backends.llm import LLMAnalyzer
    from kat.tools.evidence import ToolResult
    from kat.tools.registry import AgentTool

    is_llm = isinstance(session.analyzer, LLMAnalyzer)
    tools = dict(session.tools)
    for name in names:
        tool = tools.get(name)
        if tool is None:
            continue
        if is_llm:
            del tools[name]
        else:

            def _off(ctx: Any, args: Any, _name: str = name) -> ToolResult:
                return ToolResult(
                    tool=_name,
                    status="no_data",
                    query=args.model_dump(exclude_none=True),
                    message="disabled for this evaluation (ablation)",
                )

            tools[name] = AgentTool(tool.name, tool.description, tool.args_model, _off, tool.ctx)
    analyzer = session.analyzer
    if isinstance(analyzer, LLMAnalyzer):  # rebind the model to the reduced tool list
        analyzer = LLMAnalyzer(analyzer.model, tools, name=analyzer.name, contract=analyzer.contract)
    session.rebind(analyzer=analyzer, tools=tools)


def _tokens(messages: list[Any]) -> tuple[int | None, int | None]:
    tin = tout = 0
    seen = False
    for m in messages:
        u = getattr(m, "usage_metadata", None)
        if u:
            seen = True
            tin += int(u.get("input_tokens") or 0)
            tout += int(u.get("output_tokens") or 0)
    return (tin, tout) if seen else (None, None)


def run_agent(case_dir: Path, variant: Variant) -> tuple[dict[str, Any], Trajectory]:
    """(Diagnosis as a dict, trajectory). Exceptions propagate: the runner records them."""
    from kat.agent.graph import AgentConfig
    from kat.agent.session import Session

    t0 = time.perf_counter()
    cfg = AgentConfig(max_steps=variant.max_steps, time_budget_s=variant.time_budget_s)
    s = Session(case_dir, variant.analyzer, config=cfg, **variant.backend_options())
    calls: Counter[str] = Counter()
    rejected = 0
    try:
        if variant.disabled_tools:
            _disable(s, variant.disabled_tools)

        def on_event(ev: Any) -> None:
            nonlocal rejected
            if ev.kind == "tool_call" and ev.data.get("name") != "submit_diagnosis":
                calls[ev.data.get("name", "?")] += 1
            elif ev.kind == "rejected":
                rejected += 1

        thread_id, d = s.run_diagnosis(on_event=on_event)
        state = s.state(thread_id)
    finally:
        s.close()
    tin, tout = _tokens(state.get("messages") or [])
    tc = tool_call_stats(state.get("messages") or [], {n: t.args_model for n, t in s.tools.items()})
    traj = Trajectory(
        tool_calls=sum(calls.values()),
        tool_calls_by_name=dict(calls),
        steps=int(state.get("turn_steps") or 0),
        tokens_in=tin,
        tokens_out=tout,
        wall_s=round(time.perf_counter() - t0, 3),
        rejected=rejected,
        status=d.status,
        calls_attempted=tc.attempted,
        calls_valid=tc.valid,
        valid_call_rate=tc.rate,
        tool_call_detail=tc.model_dump(exclude={"attempted", "valid"}),
    )
    return d.model_dump(mode="json"), traj
