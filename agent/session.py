"""Run the agent on one incident: a diagnosis, then follow-up questions on the same thread."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from kat import prompts
from kat.agent.backends import make_analyzer
from kat.agent.diagnosis import Diagnosis
from kat.agent.graph import AgentConfig, Analyzer, build_graph
from kat.tools.context import IncidentContext
from kat.tools.evidence import UNTRUSTED_CLOSE, UNTRUSTED_NOTE, UNTRUSTED_OPEN, neutralise
from kat.tools.registry import AgentTool, make_tools
from kat.tools.telemetry.metric_source import metric_source_of


@dataclass
class ProgressEvent:
    """One streamed step, for live progress."""

    node: str
    kind: str  # tool_call | tool_result | rejected | accepted | answer | partial | note
    text: str
    data: dict[str, Any] = field(default_factory=dict)


def kb_mode_for(analyzer: str) -> Literal["hybrid", "lexical"]:
    """Knowledge retrieval per Analyzer: the offline playbook searches by keywords, models by meaning too."""
    return "lexical" if analyzer == "rules" else "hybrid"


def incident_info(ctx: IncidentContext) -> dict[str, Any]:
    """The manifest facts a reader needs first: ids, window, ranks, hosts, groups, data present."""
    b = ctx.bundle
    m = b.manifest
    topo = m.topology
    return {
        "id": m.id,
        "title": getattr(m, "title", None),
        "symptom": m.symptom,
        "window": {"start": m.window.start.isoformat(), "end": m.window.end.isoformat()} if m.window is not None else None,
        "model": getattr(m, "model", None),
        "framework": getattr(m, "framework", None),
        "ranks": b.ranks,
        "hosts": sorted({w.host for w in topo.workers if w.host}),
        "groups": {"tp": topo.groups.tp, "pp": topo.groups.pp, "dp": topo.groups.dp},
        "workers": [{"rank": w.rank, "host": w.host, "gpu": w.gpu} for w in topo.workers][:64],
        "has_metrics": b.metrics_path is not None or metric_source_of(b).kind != "file",
        "metrics_source": metric_source_of(b).describe(),
        "has_logs": b.logs_path is not None,
    }


def incident_brief(ctx: IncidentContext) -> str:
    """The manifest as the Analyzer sees it: quoted data, never instructions."""
    info = incident_info(ctx)
    return "\n".join([UNTRUSTED_NOTE, UNTRUSTED_OPEN, neutralise(json.dumps(info, default=str)), UNTRUSTED_CLOSE])


class DiagnosisRun(NamedTuple):
    """A finished diagnosis and the thread it lives on (follow-ups go to the same thread)."""

    thread_id: str
    diagnosis: Diagnosis


def new_thread_id() -> str:
    return uuid.uuid4().hex[:12]


def open_checkpointer(db: Path | str | None) -> BaseCheckpointSaver:
    """SQLite checkpointer on a file (threads survive restarts), or in-memory when db is None."""
    if db is None:
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver()
    from langgraph.checkpoint.sqlite import SqliteSaver

    from kat.tools.telemetry.cachedir import writable_file

    db = writable_file(Path(db), "db")
    conn = sqlite3.connect(str(db), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    return saver


class Session:
    """One incident, one Analyzer, one graph; threads live in the checkpointer.

    The checkpointer is either opened here (`db`: an SQLite file, or in memory when None) and
    closed by `close()`, or given (`checkpointer`: e.g. one saver a server shares between
    sessions), in which case the caller owns it and `close()` leaves it open.
    """

    def __init__(
        self,
        path: Path | str,
        analyzer: str = "rules",
        *,
        config: AgentConfig | None = None,
        db: Path | str | None = None,
        checkpointer: BaseCheckpointSaver | None = None,
        chat_model: Any = None,
        prometheus: str | None = None,
        **backend_options: Any,
    ):
        if db is not None and checkpointer is not None:
            raise ValueError("Session: give a db file or a checkpointer, not both")
        self.ctx = IncidentContext(Path(path), kb_mode=kb_mode_for(analyzer), prometheus=prometheus)
        _ = self.ctx.bundle  # fail early (BundleError) on a bad path
        self.tools = make_tools(self.ctx)
        self.config = config or AgentConfig()
        if chat_model is not None:  # tests and embedding apps pass their own chat model
            from kat.agent.backends.llm import LLMAnalyzer

            self.analyzer: Analyzer = LLMAnalyzer(chat_model, self.tools, name=analyzer)
        else:
            self.analyzer = make_analyzer(analyzer, self.ctx, self.tools, **backend_options)
        self._owns_checkpointer = checkpointer is None
        self.checkpointer = checkpointer if checkpointer is not None else open_checkpointer(db)
        self.graph = self._build()

    def _build(self) -> CompiledStateGraph:
        return build_graph(self.analyzer, self.tools, self.config, checkpointer=self.checkpointer, quality=self.ctx.bundle.quality)

    def rebind(self, analyzer: Analyzer | None = None, tools: dict[str, AgentTool] | None = None) -> None:
        """Run this session with another Analyzer and/or tool set (evaluations: ablations, scripted runs)."""
        self.analyzer = analyzer or self.analyzer
        self.tools = tools if tools is not None else self.tools
        self.graph = self._build()

    # -- turns --------------------------------------------------------------------------------
    def _turn_input(self, message: HumanMessage, mode: str, fresh: bool) -> dict:
        inp: dict = {"messages": [message], "mode": mode, "turn_steps": 0, "failures": 0, "turn_started": time.time(), "stop_reason": ""}
        if fresh:
            inp.update(bundle=str(self.ctx.path), ledger=[], hypotheses=[], diagnosis=None)
        return inp

    def state(self, thread_id: str) -> dict:
        snap = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        return dict(snap.values or {})

    def stream_diagnosis(self, thread_id: str) -> Iterator[ProgressEvent]:
        brief = prompts.render("incident", incident=incident_brief(self.ctx), max_steps=str(self.config.max_steps))
        inp = self._turn_input(HumanMessage(content=brief), "diagnose", fresh=True)
        yield from self._stream(inp, thread_id)

    def stream_question(self, question: str, thread_id: str) -> Iterator[ProgressEvent]:
        inp = self._turn_input(HumanMessage(content=question), "chat", fresh=False)
        yield from self._stream(inp, thread_id)

    def _stream(self, inp: dict, thread_id: str) -> Iterator[ProgressEvent]:
        cfg: RunnableConfig = {"configurable": {"thread_id": thread_id}, "recursion_limit": 4 * self.config.max_steps + 20}
        for chunk in self.graph.stream(inp, cfg, stream_mode="updates"):
            for node, update in chunk.items():
                yield from _events(node, update or {})

    def run_diagnosis(self, thread_id: str | None = None, on_event: Callable[[ProgressEvent], None] | None = None) -> DiagnosisRun:
        """Diagnose on `thread_id` (a new thread when None); returns the thread id and the Diagnosis."""
        thread_id = thread_id or new_thread_id()
        for ev in self.stream_diagnosis(thread_id):
            if on_event:
                on_event(ev)
        d = self.state(thread_id).get("diagnosis")
        if not d:  # the graph always ends with one; guard against a broken backend anyway
            raise RuntimeError("the agent ended without a diagnosis")
        diagnosis = Diagnosis.model_validate(d)
        # e.g. Prometheus down: said, not hidden (data_quality already marks the metrics source degraded)
        diagnosis.missing_data = self.ctx.source_problems()
        return DiagnosisRun(thread_id, diagnosis)

    def diagnose(self, thread_id: str | None = None, on_event: Callable[[ProgressEvent], None] | None = None) -> Diagnosis:
        return self.run_diagnosis(thread_id, on_event).diagnosis

    def ask(self, question: str, thread_id: str, on_event: Callable[[ProgressEvent], None] | None = None) -> str:
        for ev in self.stream_question(question, thread_id):
            if on_event:
                on_event(ev)
        msgs = self.state(thread_id).get("messages") or []
        last = next((m for m in reversed(msgs) if isinstance(m, AIMessage) and not m.tool_calls), None)
        return str(last.content) if last is not None else ""

    def close(self) -> None:
        """Close the checkpointer this session opened (a given one stays open)."""
        conn = getattr(self.checkpointer, "conn", None) if self._owns_checkpointer else None
        if conn is not None:
            conn.close()


def _events(node: str, update: dict) -> Iterator[ProgressEvent]:
    for m in update.get("messages") or []:
        if isinstance(m, AIMessage):
            for c in m.tool_calls or []:
                if c["name"] == "submit_diagnosis":
                    yield ProgressEvent(node, "tool_call", "submit_diagnosis", {"name": c["name"]})
                else:
                    yield ProgressEvent(
                        node,
                        "tool_call",
                        f"{c['name']}({json.dumps(c.get('args') or {}, default=str)[:160]})",
                        {"name": c["name"], "args": c.get("args") or {}},
                    )
            for c in getattr(m, "invalid_tool_calls", None) or []:
                yield ProgressEvent(node, "rejected", f"malformed call to {c.get('name')}", dict(c))
            if not m.tool_calls and m.content:
                yield ProgressEvent(node, "partial" if node == "finalize" else "answer", str(m.content))
        elif isinstance(m, ToolMessage):
            art = m.artifact if isinstance(m.artifact, dict) else {}
            if node == "validate":
                kind = "accepted" if str(m.content) == "accepted" else "rejected"
                yield ProgressEvent(node, kind, str(m.content)[:300])
            elif art:
                yield ProgressEvent(
                    node,
                    "tool_result",
                    f"{art.get('evidence_id')} {m.name} {art.get('status')}: {art.get('summary') or art.get('message')}"[:300],
                    {"evidence_id": art.get("evidence_id"), "status": art.get("status")},
                )
            else:
                yield ProgressEvent(node, "rejected", str(m.content)[:300])
        elif isinstance(m, HumanMessage) and node == "nudge":
            yield ProgressEvent(node, "note", "reminded the Analyzer to submit a diagnosis")


def diagnose(path: Path | str, analyzer: str = "rules", **options: Any) -> Diagnosis:
    """Diagnose one incident bundle: `agent.diagnose(path, analyzer="rules") -> Diagnosis`."""
    s = Session(path, analyzer, **options)
    try:
        return s.diagnose()
    finally:
        s.close()
