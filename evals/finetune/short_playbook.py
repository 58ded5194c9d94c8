"""The short playbook a small model is fine-tuned on: the rules Analyzer's steps, in four short replies.

A full `rules` trajectory is ~30 tool calls (~25k characters compacted), too long for a 135M model
on 2 CPU cores to train on or to generate. The short trajectory keeps the rules Analyzer's order of
work (agent/rules/playbook.py) and runs every reply for real through the agent graph:

1. `metric_catalog {}` first (what metric families this incident has), with `outpost_detect`
   (suspect ranks and the components of their anomalies);
2. open hypotheses from Outpost's components (the categories of each component, and each one's
   first look-alike from its signature card; no anomaly: healthy, workload shift, KV-cache
   pressure), stated as a line `Hypotheses: a, b, c.`, then `metric_compare` on every family their
   cards name (supports and refutes) that the catalogue has, plus `latency`, and one `log_search`
   over generic vendor-format keywords (LOG_PATTERN);
3. `Leading: <category>.` and `knowledge_search` on the leader's card (the category the real rules
   Analyzer chose after its full run);
4. `submit_diagnosis`: the Diagnosis the real `rules` Analyzer wrote for the same incident (its full
   trajectory runs first), trimmed to what a small model can write (root cause, causal chain,
   cited ids, confidence), every cited id mapped to the short trajectory's evidence from the same
   tool and family (a metric_compare of family F -> the short compare of F; outpost/trace -> the
   detector; the catalogue, logs, knowledge -> their short calls). The graph's own validator
   checks it against the short trajectory's evidence ledger.

Run the tuned model with the same prompt and tools: the agent's `SMALL` serving contract
(agent/backends/contract.py); `SHORT_ENV` states it as KAT_SYSTEM_PROMPT and KAT_ANALYZER_TOOLS,
recorded in the data manifest's `serve_env`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from kat.agent.backends.contract import SMALL
from kat.knowledge.cards import CARDS
from kat.knowledge.taxonomy import CATEGORIES_OF_COMPONENT, Category

SYSTEM_PROMPT = SMALL.system_prompt
TOOLS = SMALL.tools
# Generic vendor-format keywords of the log families (knowledge/log_signatures.py): NVRM Xid, thermal
# and power-cap messages, ECC, kernel AER, NVLink, NCCL WARN, vLLM preemption, NVMe / blocked-task,
# NUMA, CPython gc / GIL, process starts. Short enough for a small model to copy (prompts/system_small.md
# spells it; tests check it), not the full signatures the rules Analyzer searches.
LOG_PATTERN = (
    "xid|thermal|temperature|power (limit|cap)|clocks? locked|double.bit|ecc|aer:|pcie bus error|nvlink|nccl warn|"
    "preempt|kv cache|nvme|i/o error|blocked for|numa|gc|gil|detokeniz|cron|container|affinity"
)
FIRST_CALLS: list[tuple[str, dict]] = [("metric_catalog", {}), ("outpost_detect", {"max_anomalies": 12})]
# No anomaly in the traces: the hypotheses a symptom without a culprit rank leaves open.
QUIET_HYPOTHESES = (Category.NONE.value, Category.WORKLOAD_SHIFT.value, Category.KV_CACHE_PRESSURE.value)
MAX_HYPOTHESES = 6
SHORT_ENV = SMALL.model_copy(update={"tool_result_chars": None}).env()  # compaction comes from the data config
_COMPONENTS_RE = re.compile(r"\b([a-z_]+) x\d+\b")


def outpost_components(summary: str) -> list[str]:
    """Components of Outpost's anomalies as its summary names them (`... 3 anomalies (gpu x2, pcie x1)`),
    most frequent first: the model reads the same line."""
    return list(dict.fromkeys(_COMPONENTS_RE.findall(summary)))


def hypotheses(components: list[str]) -> list[str]:
    """Categories to separate: each component's categories, then each one's first look-alike."""
    primary = [c for comp in components for c in CATEGORIES_OF_COMPONENT.get(comp, ())] or list(QUIET_HYPOTHESES)
    looks = [CARDS[c].lookalikes[0] for c in primary if c in CARDS and CARDS[c].lookalikes]
    return list(dict.fromkeys([*primary, *looks]))[:MAX_HYPOTHESES]


def families_for(hyps: list[str], present: list[str]) -> list[str]:
    """The families the hypotheses' cards name (supports, then refutes) that the catalogue has, plus latency."""
    named = [f for h in hyps if h in CARDS for f in (*CARDS[h].supports, *CARDS[h].refutes)]
    have = set(present)
    return [f for f in dict.fromkeys([*named, "latency"]) if f in have]


def kb_call(category: str) -> tuple[str, dict]:
    card = CARDS.get(category)
    return ("knowledge_search", {"query": card.kb_query if card and card.kb_query else category.replace("_", " "), "k": 1})


def next_reply(ledger: list[Any], leader: str) -> tuple[str, list[tuple[str, dict]]] | None:
    """The next reply's (text, calls) given the evidence so far, or None when it is time to submit."""
    tools = {e.tool for e in ledger}
    if "metric_catalog" not in tools:
        return "", [(n, dict(a)) for n, a in FIRST_CALLS]
    if "metric_compare" not in tools and "log_search" not in tools:
        det = next((e for e in ledger if e.tool == "outpost_detect"), None)
        cat = next((e for e in ledger if e.tool == "metric_catalog"), None)
        hyps = hypotheses(outpost_components(det.summary) if det and det.status == "ok" else [])
        present = sorted((cat.data or {}).get("families", {})) if cat and cat.status == "ok" else []
        calls: list[tuple[str, dict]] = [("metric_compare", {"family": f}) for f in families_for(hyps, present)]
        calls.append(("log_search", {"pattern": LOG_PATTERN}))
        return f"Hypotheses: {', '.join(hyps)}.", calls
    if "knowledge_search" not in tools:
        return f"Leading: {leader}.", [kb_call(leader)]
    return None


class ScriptedAnalyzer:
    """Emits the short playbook's replies, then the given submission, through the real graph."""

    name = "rules-short"

    def __init__(self, leader: str, submit: Callable[[list[Any]], dict]):
        self.leader = leader  # the category the full rules run chose: reply 3 reads its card
        self.submit = submit  # ledger -> submit_diagnosis arguments

    def step(self, state: dict, config: Any) -> Any:
        from langchain_core.messages import AIMessage

        from kat.agent.graph import SUBMIT, AnalyzerStep
        from kat.agent.rules.playbook import call
        from kat.agent.state import ledger_entries

        ledger = ledger_entries(state)
        nxt = next_reply(ledger, self.leader)
        if nxt is not None:
            text, calls = nxt
            return AnalyzerStep(message=AIMessage(content=text, tool_calls=[call(n, a) for n, a in calls]))
        return AnalyzerStep(message=AIMessage(content="", tool_calls=[call(SUBMIT, self.submit(ledger))]))


def _first_clause(text: str, limit: int = 120) -> str:
    """The text up to its first ': ', '; ' or ', so ' (rules writes "<finding>: <numbers>; <more>"), at
    most `limit` characters: the words that name the finding, not the figures a small model would misquote."""
    head = re.split(r":\s|; |, so ", text, maxsplit=1)[0].strip()
    return head if len(head) <= limit else head[: limit - 3].rstrip() + "..."


def _title(summary: str, category: str) -> str:
    """The summary's title ("GPU thermal throttling on rank(s) [3]"), without the host list or the detail."""
    head = re.split(r":\s", summary, maxsplit=1)[0]
    return re.sub(r"\s*\([^()]*\)\s*$", "", head).strip() or category


def _key(entry: Any) -> tuple[str, str]:
    """What an evidence item is, across trajectories: its tool, and for metric_compare its family."""
    if entry.tool == "trace_slice":
        return ("outpost_detect", "")
    if entry.tool == "metric_compare":
        try:
            fam = json.loads(entry.query).get("family", "") if isinstance(entry.query, str) else dict(entry.query).get("family", "")
        except (ValueError, TypeError, AttributeError):
            fam = ""
        return ("metric_compare", str(fam))
    return (entry.tool, "")


def remap_diagnosis(diag: dict, full_ledger: list[Any], short_ledger: list[Any]) -> dict:
    """The rules Diagnosis trimmed for a small model, its citations mapped onto the short trajectory.

    A cited id maps to the short trajectory's first evidence with the same tool (and family, for
    metric_compare); ids with no counterpart (metric_lookup, a family the short run did not compare)
    are dropped, and a link left with none cites the detector (the catalogue when Outpost found
    nothing). Every free-text field is cut to the words that name the finding (no figures, no host
    list): the fewer tokens a 135M model writes after the category, the fewer chances to loop or
    misquote before the JSON closes.
    """
    key_of = {e.id: _key(e) for e in full_ledger}
    short: dict[tuple[str, str], str] = {}
    for e in short_ledger:
        if e.status == "ok":
            short.setdefault(_key(e), e.id)
    # A link left with no counterpart cites the detector, or (Outpost found nothing) the catalogue, or any result.
    fallback = next(([i] for i in (short.get(("outpost_detect", "")), short.get(("metric_catalog", "")), *short.values()) if i), [])

    def ids(cited: list[str]) -> list[str]:
        out: list[str] = []
        for i in cited:
            new = short.get(key_of.get(i, ("", "")))
            if new and new not in out:
                out.append(new)
        return out

    rc = diag["root_cause"]
    chain = []
    for link in diag.get("causal_chain") or []:
        ev = ids(list(link.get("evidence") or [])) or fallback
        out = {"cause": _first_clause(str(link["cause"])), "effect": _first_clause(str(link["effect"])), "evidence": ev}
        if link.get("category"):  # the tag the scorer and the front ends read (its component is filled from it)
            out["category"] = link["category"]
        chain.append(out)
    # No `component` (filled from the category), no `evidence` list (filled from the chain's ids): the graph's
    # validator writes both. No `hosts`: the ranks name the culprits, the incident maps them to hosts.
    # Key order summary, category, ranks: the title is written first, the category id follows from it,
    # and root_cause closes after a list, `]}`, as every causal link does.
    return {
        "root_cause": {
            "summary": _title(str(rc.get("summary") or ""), str(rc["category"])),
            "category": rc["category"],
            "ranks": list(rc.get("ranks") or []),
        },
        "causal_chain": chain,
        "confidence": diag.get("confidence", 0.5),
    }
