"""Follow-up questions in a conversation, answered from the evidence already gathered.

Keyword routing, deterministic: "why not X" -> the alternatives ruled out (and X's evidence);
"rank N ... step S" -> a trace slice of that rank around that step; "logs ... rank N" -> a log
search; "evidence"/"why" -> the causal chain. New tool results are cited by their evidence ids.
"""

from __future__ import annotations

import re

from kat.agent.rules import knowledge as K
from kat.agent.rules.playbook import assess, call
from kat.agent.rules.topology import Topo
from kat.agent.state import LedgerEntry

# Words an engineer uses for each category.
ALIASES = {
    "nvlink_degradation": r"nvlink|nv-link",
    "network_congestion": r"network|nic|infiniband|\bib\b|inter-node|congestion",
    "gpu_thermal_throttling": r"thermal|temperature|\bhot\b|overheat",
    "gpu_power_or_clock_cap": r"power|clock cap|power cap",
    "pcie_link_degradation": r"pcie|pci-e",
    "numa_misbinding": r"numa",
    "host_cpu_contention": r"\bcpu\b|contention",
    "kv_cache_pressure": r"kv|cache|preempt",
    "gpu_hardware_error": r"xid|ecc|hardware",
    "runtime_stall": r"\bgc\b|garbage|gil|stall|detokeniz",
    "storage_io_stall": r"storage|disk|nvme|\bi/o\b|adapter",
    "workload_shift": r"workload|load change|traffic|more requests",
    "none": r"healthy|no fault",
}


def route(question: str) -> tuple[str, dict]:
    """(intent, details) for a follow-up question."""
    q = question.lower()
    rank = re.search(r"\brank\s*#?\s*(\d+)", q)
    step = re.search(r"\bstep\s*#?\s*(\d+)", q)
    if rank and re.search(r"\blogs?\b", q):
        return "logs", {"rank": int(rank.group(1))}
    if rank or step:
        return "trace", {"rank": int(rank.group(1)) if rank else None, "step": int(step.group(1)) if step else None}
    for cat, pat in ALIASES.items():
        if re.search(pat, q):
            return "category", {"category": cat}
    if re.search(r"evidence|why|how do you know|chain|explain", q):
        return "explain", {}
    return "summary", {}


def _diag_text(d: dict) -> str:
    rc = d["root_cause"]
    return f"{rc['category']} on ranks {rc['ranks']} (confidence {d['confidence']})"


def respond(
    question: str, diagnosis: dict, ledger: list[LedgerEntry], topo: Topo, answered_call: LedgerEntry | None
) -> tuple[str | None, list[dict]]:
    """(text answer, tool calls): either a tool call to make first, or the answer."""
    intent, det = route(question)
    if intent == "trace":
        if answered_call is None:
            args: dict = {"token_budget": 1200}
            if det["rank"] is not None:
                args["ranks"] = [det["rank"]]
            if det["step"] is not None:
                args["around_step"] = det["step"]
            return None, [call("trace_slice", args)]
        return (
            f"{answered_call.summary or 'trace slice'} [{answered_call.id}]. "
            f"Per name, the slowest relative to peers: {_top_vs_peers(answered_call)}. "
            f"Current diagnosis: {_diag_text(diagnosis)}."
        ), []
    if intent == "logs":
        if answered_call is None:
            return None, [call("log_search", {"rank": det["rank"], "min_level": "warning", "limit": 20})]
        groups = answered_call.data.get("groups", [])
        lines = "; ".join(f'{g["count"]}x "{str(g["example"])[:120]}"' for g in groups[:5]) or "no warning or error lines"
        return f"Logs of rank {det['rank']} (warning and above) [{answered_call.id}]: {lines}.", []
    if intent == "category":
        cat = det["category"]
        rc = diagnosis["root_cause"]["category"]
        if cat == rc:
            return f"Yes: the diagnosis is {K.TITLE.get(cat, cat)}. " + _chain_text(diagnosis), []
        why = next((a["why"] for a in diagnosis.get("alternatives_ruled_out", []) if a["category"] == cat), None)
        a = assess(ledger, topo)
        fs = a.of(cat)
        if why is None:
            if fs:
                why = f"weaker evidence (score {a.scores.get(cat, 0):g} vs {a.scores.get(rc, 0):g}): " + "; ".join(
                    f"{f.text} [{f.ev}]" for f in fs[:3]
                )
            else:
                checks = [e.id for e in ledger if e.tool == "metric_compare" and e.status == "ok"][:3]
                checks += [e.id for e in ledger if e.tool == "outpost_detect"][:1]
                why = K.NEGATIVE.get(cat, "no supporting signal was found") + (f" [{', '.join(checks)}]" if checks else "")
        return f"Not {K.TITLE.get(cat, cat)}: {why}. The evidence points to {_diag_text(diagnosis)}.", []
    if intent == "explain":
        return _chain_text(diagnosis), []
    return (
        f"Diagnosis: {_diag_text(diagnosis)}. {diagnosis['root_cause']['summary']} "
        "Ask e.g. 'why not NVLink?', 'show rank 5 around step 12', 'logs of rank 3', or 'what is the evidence?'."
    ), []


def _chain_text(d: dict) -> str:
    links = [f"{i + 1}. {k['cause']} -> {k['effect']} [{', '.join(k['evidence'])}]" for i, k in enumerate(d.get("causal_chain", []))]
    return "Causal chain: " + (" ".join(links) if links else "(none: no fault)")


def _top_vs_peers(e: LedgerEntry) -> str:
    vs = sorted(e.data.get("vs_peers", []), key=lambda x: -x.get("ratio", 0))[:3]
    if not vs:
        names = e.data.get("by_name", [])[:3]
        return ", ".join(f"{n['name']} mean {n['mean_us']} us" for n in names) or "nothing notable"
    return ", ".join(f"{v['name']} {v['ratio']}x ({v['mean_us']} vs {v['peer_mean_us']} us)" for v in vs)
