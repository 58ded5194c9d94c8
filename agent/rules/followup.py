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
from kat.knowledge.cards import CARDS, Card

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
    if re.search(r"why not|rule[ds]? out|instead of|isn.t it|is it not", q):
        cat = next((c for c in ALIASES if c in q.replace(" ", "_")), None)
        cat = cat or next((c for c, pat in ALIASES.items() if re.search(pat, q)), None)
        if cat:
            return "why_not", {"category": cat}
    if re.search(r"\bconfirm|verify|check (that|the fix)|how do i know", q):
        return "confirm", {}
    if re.search(r"\b(do|start) first|first step|what should (i|we) do|priorit|next step", q):
        return "first", {}
    if re.search(r"\bhow (do|can|should) (i|we) fix|\bfix\b|remedia|mitigat", q):
        return "fix", {}
    if re.search(r"\bwhich (kernel|op|operator)s?\b|\bwhat (kernel|op)s?\b|\bkernels?\b", q):
        return "kernel", {}
    if re.search(r"where in the trace|\bwhen\b|which steps?|time window|where\b", q):
        return "where", {}
    if re.search(r"which ranks?|what ranks?|who is slow|slow ranks?|culprit", q):
        return "ranks", {}
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
            return None, [call("log_search", {"ranks": [det["rank"]], "min_level": "warning", "limit": 20})]
        groups = answered_call.data.get("groups", [])
        lines = "; ".join(_log_line(g) for g in groups[:5]) or "no warning or error lines"
        return f"Logs of rank {det['rank']} (warning and above) [{answered_call.id}]: {lines}.", []
    if intent in _ANSWERS:
        return _ANSWERS[intent](diagnosis, ledger, det), []
    if intent == "category" or intent == "why_not":
        cat = det["category"]
        rc = diagnosis["root_cause"]["category"]
        if cat == rc:
            return f"Yes: the diagnosis is {K.TITLE.get(cat, cat)}. " + _chain_text(diagnosis), []
        return _why_not(cat, diagnosis, ledger, topo), []
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


def _log_line(g: dict) -> str:
    joined = g.get("joined") or {}
    why = f" (no rank on the line; joined: {'; '.join(joined.values())})" if joined else ""
    return f'{g["count"]}x "{str(g["example"])[:120]}"{why}'


def _ids(ids: list[str]) -> str:
    return f"[{', '.join(dict.fromkeys(ids))}]" if ids else "[no evidence id]"


def _culprits(d: dict) -> list[int]:
    return list(d["root_cause"].get("ranks") or [])


def _outpost(ledger: list[LedgerEntry]) -> LedgerEntry | None:
    return next((e for e in reversed(ledger) if e.tool == "outpost_detect" and e.status == "ok"), None)


def _anomalies(d: dict, ledger: list[LedgerEntry]) -> tuple[LedgerEntry | None, list[dict]]:
    """Outpost's anomalies on the culprit ranks (all its anomalies when no rank is named)."""
    e = _outpost(ledger)
    if e is None:
        return None, []
    ranks = set(_culprits(d))
    an = [a for a in e.data.get("anomalies", []) if not ranks or a.get("rank") in ranks]
    return e, sorted(an, key=lambda a: -(a.get("effect_ms") or 0.0))


def _chain_ids(d: dict) -> list[str]:
    return [i for k in d.get("causal_chain", []) for i in k.get("evidence", [])]


def _kernel(d: dict, ledger: list[LedgerEntry], _det: dict) -> str:
    e, an = _anomalies(d, ledger)
    if e is None:
        return "No trace analysis (outpost_detect) has run on this incident, so no kernel or op is named."
    ops = [a for a in an if a.get("kind") in ("kernel", "op", "cpu_op", "operator", "collective", "memcpy")] or an
    if not ops:
        return f"Outpost found no anomalous kernel or op on ranks {_culprits(d)} {_ids([e.id])}."
    parts = []
    for a in ops[:4]:
        share = f", {a['effect_share']:.1%} of step time" if a.get("effect_share") is not None else ""
        effect = f"+{a['effect_ms']:.2f} ms{share}" if a.get("effect_ms") is not None else "effect not measured"
        where = (f"in {a['tree_path']}; " if a.get("tree_path") else "") + (a.get("detail") or str(a.get("method")))
        parts.append(
            f"{a.get('kind')} {a['name']} on rank {a['rank']} ({a.get('component')}, {a.get('method')}): "
            f"{a.get('ratio')}x its peers, {effect}, steps {a.get('steps')} - {where}"
        )
    return f"Anomalous kernels/ops on the culprit rank(s) {_culprits(d)} {_ids([e.id])}: " + "; ".join(parts) + "."


def _where(d: dict, ledger: list[LedgerEntry], _det: dict) -> str:
    e, an = _anomalies(d, ledger)
    if e is None or not an:
        return f"No trace anomaly locates the fault in time; the incident window is the diagnosis' scope. {_diag_text(d)}."
    by_rank: dict[int, list[dict]] = {}
    for a in an:
        by_rank.setdefault(a["rank"], []).append(a)
    parts = []
    for r, xs in sorted(by_rank.items()):
        t0 = min(a["start_ns"] for a in xs if a.get("start_ns") is not None)
        t1 = max(a["end_ns"] for a in xs if a.get("end_ns") is not None)
        steps = sorted({str(a["steps"]) for a in xs if a.get("steps")})
        parts.append(f"rank {r}: steps {', '.join(steps)}, time {t0}..{t1} ns ({(t1 - t0) / 1e6:.1f} ms)")
    return f"Where in the trace {_ids([e.id])}: " + "; ".join(parts) + ". Ask 'show rank N around step S' for the slice."


def _card_or_none(d: dict) -> Card | None:
    return CARDS.get(d["root_cause"]["category"])


def _first(d: dict, ledger: list[LedgerEntry], _det: dict) -> str:
    card = _card_or_none(d)
    if card is None or not card.remediation:
        return f"No remediation is recorded for {d['root_cause']['category']}."
    top, rest = card.remediation[0], card.remediation[1:]
    then = " Then: " + " ".join(f"{i + 2}. {a.action}" for i, a in enumerate(rest)) if rest else ""
    return (
        f"First, on rank(s) {_culprits(d)}: {top.action} Why first: {top.why}.{then} "
        f"(For {K.TITLE.get(card.category, card.category)}, supported by {_ids(_chain_ids(d))}.)"
    )


def _fix(d: dict, ledger: list[LedgerEntry], det: dict) -> str:
    card = _card_or_none(d)
    if card is None:
        return f"No remediation is recorded for {d['root_cause']['category']}."
    steps = " ".join(f"{i + 1}. {a.action} ({a.why})" for i, a in enumerate(card.remediation))
    return f"To fix {K.TITLE.get(card.category, card.category)} on rank(s) {_culprits(d)}: {steps} " + _confirm(d, ledger, det)


def _confirm(d: dict, ledger: list[LedgerEntry], _det: dict) -> str:
    card = _card_or_none(d)
    if card is None or not card.confirm:
        return "No confirmation check is recorded for this category."
    parts = []
    for c in card.confirm:
        seen = [e.id for e in ledger if e.status == "ok" and f'"family": "{c.family}"' in e.query]
        now = f" (reading before the fix {_ids(seen)})" if seen else ""
        parts.append(f"{c.family} on rank(s) {_culprits(d)}: {c.expect}{now}")
    return "To confirm the fix, re-check: " + "; ".join(parts) + "."


def _ranks(d: dict, ledger: list[LedgerEntry], _det: dict) -> str:
    e = _outpost(ledger)
    sus = "; ".join(f"rank {s['rank']} confidence {s['confidence']}: {s.get('why', '')}" for s in (e.data.get("suspects", []) if e else []))
    ids = ([e.id] if e else []) + _chain_ids(d)
    rc = d["root_cause"]
    return f"Slow rank(s): {_culprits(d) or 'none'} (diagnosis confidence {d['confidence']}, {rc['category']}) {_ids(ids)}. " + (
        f"Trace suspects: {sus}." if sus else "Outpost named no suspect rank."
    )


_ANSWERS = {"kernel": _kernel, "where": _where, "first": _first, "fix": _fix, "confirm": _confirm, "ranks": _ranks}


def _why_not(cat: str, d: dict, ledger: list[LedgerEntry], topo: Topo) -> str:
    """The ruled-out entry for `cat` with its evidence; else what is missing, or the weaker evidence."""
    rc = d["root_cause"]["category"]
    title = K.TITLE.get(cat, cat)
    ro = next((a for a in d.get("alternatives_ruled_out", []) if a["category"] == cat), None)
    if ro is not None:
        cited = list(dict.fromkeys([*ro.get("evidence", []), *re.findall(r"\bev-\d+\b", ro["why"])]))
        return f"Not {title}: ruled out {_ids(cited)}: {ro['why']}. The evidence points to {_diag_text(d)}."
    card = CARDS.get(cat)
    fams = set(card.supports) if card else set()
    missing = [e.id for e in ledger if e.status != "ok" and any(f'"family": "{f}"' in e.query for f in fams)]
    if missing:
        ok = [e.id for e in ledger if e.status == "ok" and any(f'"family": "{f}"' in e.query for f in fams)]
        partial = f" (other checks of it ran {_ids(ok)} but cannot rule it out alone)" if ok else ""
        return (
            f"{title} is not ruled out: missing data - the lookups that could test it returned nothing {_ids(missing)}{partial}. "
            f"The evidence gathered points to {_diag_text(d)}."
        )
    a = assess(ledger, topo)
    fs = a.of(cat)
    if fs:
        why = f"weaker evidence (score {a.scores.get(cat, 0):g} vs {a.scores.get(rc, 0):g}): " + "; ".join(
            f"{f.text} [{f.ev}]" for f in fs[:3]
        )
    else:
        checks = [e.id for e in ledger if e.status == "ok" and any(f'"family": "{f}"' in e.query for f in fams)][:3]
        why = K.NEGATIVE.get(cat, "no supporting signal was found") + f" {_ids(checks)}"
    return f"Not {title}: {why}. The evidence points to {_diag_text(d)}."
