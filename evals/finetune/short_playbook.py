"""The short playbook a small model is fine-tuned on: detect + one metric sweep + one log sweep -> submit.

A full `rules` trajectory is ~27 tool calls (27k-35k tokens as the graph renders it, 6k compacted),
too long for a 135M model on 2 CPU cores to train on or to generate. The short trajectory keeps
what decides the case in two Analyzer replies, both run for real through the agent graph:

1. three calls at once: `outpost_detect {"max_anomalies": 12}`, `metric_lookup` with one regex
   covering the rules playbook's sweep metrics, and `log_search` with one regex covering its log
   signatures (the exact strings are in prompts/system_small.md, the small model's system prompt);
2. `submit_diagnosis` (optionally after a findings line quoting the three results, `findings`;
   off by default, DataConfig.findings): the Diagnosis
   the real `rules` Analyzer wrote for the same incident (its full trajectory is run first),
   trimmed to what a small model can write (root cause, causal chain, cited ids, confidence) and
   with every cited id mapped to the short trajectory's evidence of the same kind (outpost/trace
   -> the outpost_detect id, metrics -> the sweep's metric_lookup id, logs -> the log_search id;
   knowledge-base ids are dropped). The graph's own validator checks the remapped Diagnosis
   against the short trajectory's evidence ledger.

Run the tuned model with the same prompt and tools: the agent's `SMALL` serving contract
(agent/backends/contract.py); `SHORT_ENV` states it as KAT_SYSTEM_PROMPT and KAT_ANALYZER_TOOLS,
recorded in the data manifest's `serve_env`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kat.agent.backends.contract import SMALL

SYSTEM_PROMPT = SMALL.system_prompt
TOOLS = SMALL.tools
# Exactly as written in prompts/system_small.md (tests check it).
METRICS_RE = (
    "TEMP|THROTTLE|SM_CLOCK|POWER_MGMT|XID|ECC_DBE|NVLINK_CRC|PCIE_REPLAY|LINK_GEN|Retrans|transmit_wait|"
    "load1|schedstat|numa_miss|disk_io|cache_usage|token_usage|preempt|retracted|running"
)
LOGS_RE = (
    "thermal|power limit|clocks locked|xid|double bit|nvlink|aer:|pcie bus|net/ib|rt throttling|affinity|"
    "gc pause|gil|detokenizer|nvme|lora adapter|offload|not enough kv|preempted|request batch|avg prompt [0-9]+ tokens"
)
SHORT_ENV = SMALL.model_copy(update={"tool_result_chars": None}).env()  # compaction comes from the data config
# Which short-trajectory step's evidence stands in for a full-trajectory tool (None: dropped).
_KIND = {"outpost_detect": 0, "trace_slice": 0, "metric_lookup": 1, "log_search": 2, "knowledge_search": None}


def script() -> list[list[tuple[str, dict]]]:
    """The tool calls of the first reply (the second is the submission). All three in one reply: the
    model then tells its two replies apart by whether results are in the context, not by counting
    turns; and no call has empty arguments (`{}` was a token the model kept writing as `{"`)."""
    return [[("outpost_detect", {"max_anomalies": 12}), ("metric_lookup", {"name": METRICS_RE}), ("log_search", {"pattern": LOGS_RE})]]


class ScriptedAnalyzer:
    """Emits the short playbook's calls, then the given submission, through the real graph."""

    name = "rules-short"

    def __init__(self, submit: Any, note: Any = None):
        self.submit = submit  # callable(ledger) -> submit_diagnosis arguments
        self.note = note  # callable(ledger) -> the submission reply's text ("" when None)

    def step(self, state: dict, config: Any) -> Any:
        from langchain_core.messages import AIMessage

        from kat.agent.graph import SUBMIT, AnalyzerStep
        from kat.agent.rules.playbook import call
        from kat.agent.state import ledger_entries

        i = int(state.get("turn_steps") or 0)
        steps = script()
        if i < len(steps):
            return AnalyzerStep(message=AIMessage(content="", tool_calls=[call(n, dict(a)) for n, a in steps[i]]))
        ledger = ledger_entries(state)
        text = self.note(ledger) if self.note else ""
        return AnalyzerStep(message=AIMessage(content=text, tool_calls=[call(SUBMIT, self.submit(ledger))]))


def _visible(entry: Any, payload_chars: int) -> str:
    """The part of a result's payload the model sees (as agent/backends/llm.compact_tool_result cuts it)."""
    return json.dumps(entry.data or {}, default=str, sort_keys=True)[:payload_chars]


def findings(ledger: list[Any], payload_chars: int, line_chars: int = 100) -> str:
    """One line the submission starts with, quoting what the three results show: the detector's
    components, the metrics that stand out, the first log message. Each item is copied from text the
    model has in its context (only what the clipped payload shows), so writing it is copying; the
    category that follows is then read off a few nearby words instead of results ~1k tokens back."""
    first = {e.tool: e for e in reversed(ledger)}
    parts = []
    det = first.get("outpost_detect")
    m = re.search(r"\(([^()]*)\)\s*$", det.summary) if det else None
    parts.append(f"detector {m.group(1) if m else 'no anomaly'}")
    met = first.get("metric_lookup")
    seen = _visible(met, payload_chars) if met else ""
    names = list(dict.fromkeys(o.get("name", "") for o in (met.data or {}).get("outliers") or [] if o.get("name")))[:2] if met else []
    names = [n for n in names if n in seen]
    parts.append(f"metrics {', '.join(names)} stand out" if names else "no metric stands out")
    logs = first.get("log_search")
    groups = (logs.data or {}).get("groups") or [] if logs else []
    example = str(groups[0].get("example") or "") if groups else ""
    if example and example[: line_chars // 2] in (_visible(logs, payload_chars) if logs else ""):
        parts.append("log: " + (example if len(example) <= line_chars else example[:line_chars].rsplit(" ", 1)[0]))
    else:
        parts.append("no log line matched")
    return "Findings: " + "; ".join(parts) + "."


def _first_clause(text: str, limit: int = 120) -> str:
    """The text up to its first ': ', '; ' or ', so ' (rules writes "<finding>: <numbers>; <more>"), at
    most `limit` characters: the words that name the finding, not the figures a small model would misquote."""
    head = re.split(r":\s|; |, so ", text, maxsplit=1)[0].strip()
    return head if len(head) <= limit else head[: limit - 3].rstrip() + "..."


def _title(summary: str, category: str) -> str:
    """The summary's title ("GPU thermal throttling on rank(s) [3]"), without the host list or the detail."""
    head = re.split(r":\s", summary, maxsplit=1)[0]
    return re.sub(r"\s*\([^()]*\)\s*$", "", head).strip() or category


def remap_diagnosis(diag: dict, full_ledger: list[Any], short_ids: list[str | None]) -> dict:
    """The rules Diagnosis trimmed for a small model, its citations mapped onto the short trajectory.

    `short_ids`: evidence id of the short trajectory's outpost_detect, metric_lookup, log_search
    (None where that call produced no evidence). Every free-text field is cut to the words that name
    the finding (no figures, no host list): the fewer tokens a 135M model writes after the category,
    the fewer chances to loop or misquote before the JSON closes.
    """
    tool_of = {e.id: e.tool for e in full_ledger}

    def ids(cited: list[str]) -> list[str]:
        out: list[str] = []
        for i in cited:
            k = _KIND.get(tool_of.get(i, ""))
            new = short_ids[k] if k is not None and k < len(short_ids) else None
            if new and new not in out:
                out.append(new)
        return out

    rc = diag["root_cause"]
    chain = []
    for link in diag.get("causal_chain") or []:
        ev = ids(list(link.get("evidence") or [])) or [i for i in short_ids[:1] if i]
        chain.append({"cause": _first_clause(str(link["cause"])), "effect": _first_clause(str(link["effect"])), "evidence": ev})
    # No `component` (filled from the category), no `evidence` list (filled from the chain's ids): the graph's
    # validator writes both. No `hosts`: the ranks name the culprits, the incident maps them to hosts.
    # Key order summary, category, ranks: the title is written first, the category id follows from it,
    # and root_cause closes after a list, `]}`, as every causal link does. Ending on the summary string,
    # the model often went on into "causal_chain" without the `}`.
    return {
        "root_cause": {
            "summary": _title(str(rc.get("summary") or ""), str(rc["category"])),
            "category": rc["category"],
            "ranks": list(rc.get("ranks") or []),
        },
        "causal_chain": chain,
        "confidence": diag.get("confidence", 0.5),
    }
