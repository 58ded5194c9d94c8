"""The expert playbook: which tools to call next, and the Diagnosis written from what they returned.

Phases, each one Analyzer step emitting tool calls through the graph:
1. `outpost_detect` (which ranks, which components).
2. A sweep: the metrics that tell look-alikes apart, plus one log search for known fault signatures.
3. Confirmation of the leading hypotheses: a focused log search, a trace slice where ranks come
   from the trace (storage), and the knowledge base entry for the leading category.
4. `submit_diagnosis` with a causal chain whose links cite the evidence ids found above.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from kat.agent.rules import knowledge as K
from kat.agent.rules.signals import (
    LOG_SIGNATURES,
    SIGNATURE_SEARCHES,
    STORAGE_OPS,
    SWEEP,
    Finding,
    log_findings,
    metric_findings,
    outpost_findings,
    query_of,
    sweep_entry,
    trace_storage_ranks,
)
from kat.agent.rules.topology import Topo
from kat.agent.state import LedgerEntry

FAULT_THRESHOLD = 3.0


def call(name: str, args: dict) -> dict:
    return {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}


@dataclass
class Assessment:
    findings: list[Finding]
    scores: dict[str, float]
    ranking: list[tuple[str, float]]

    def of(self, cat: str) -> list[Finding]:
        return [f for f in self.findings if f.category == cat]


def assess(ledger: list[LedgerEntry], topo: Topo) -> Assessment:
    findings: list[Finding] = metric_findings(ledger, topo)
    for e in ledger:
        findings += log_findings(e, topo)
        findings += outpost_findings(e)
    scores: dict[str, float] = {}
    for cat in K.TITLE:
        best: dict[str, float] = {}
        for f in findings:
            if f.category == cat:
                best[f.kind] = max(best.get(f.kind, 0.0), f.strength)
        scores[cat] = sum(best.values())
    ranking = sorted(((c, s) for c, s in scores.items() if c not in ("none",)), key=lambda cs: -cs[1])
    return Assessment(findings, scores, ranking)


def decide(a: Assessment) -> tuple[str, float]:
    """(category, confidence) from the scores."""
    faults = [(c, s) for c, s in a.ranking if c != "workload_shift"]
    best, score = faults[0] if faults else ("none", 0.0)
    runner = faults[1][1] if len(faults) > 1 else 0.0
    has_trace = any(f.kind == "trace" for f in a.of(best))
    if score >= FAULT_THRESHOLD or (score >= 2.0 and has_trace and score > runner):
        conf = min(0.95, 0.35 + 0.1 * score) - (0.15 if runner >= score - 1.0 else 0.0)
        return best, round(max(0.3, conf), 2)
    if a.scores.get("workload_shift", 0) >= 1.0:
        return "workload_shift", round(min(0.85, 0.5 + 0.1 * a.scores["workload_shift"]), 2)
    return "none", round(0.8 - 0.1 * score, 2)


def plan_next(ledger: list[LedgerEntry], topo: Topo) -> list[dict] | None:
    """The next batch of tool calls, or None when it is time to submit."""
    if not any(e.tool == "outpost_detect" for e in ledger):
        return [call("outpost_detect", {"max_anomalies": 20})]
    if sweep_entry(ledger, "temp") is None and not any(e.tool == "metric_lookup" for e in ledger):
        calls = [call("metric_lookup", {"name": name}) for _, name in SWEEP]
        calls += [call("log_search", {"pattern": p, "limit": 60, "token_budget": 6000}) for p in SIGNATURE_SEARCHES]
        return calls
    if not any(e.tool == "knowledge_search" for e in ledger):
        a = assess(ledger, topo)
        cat, _ = decide(a)
        calls = []
        leading = [cat] + [c for c, s in a.ranking[:2] if c != cat and s >= 2.0]
        for c in leading:
            if c in LOG_SIGNATURES and c != "none":
                calls.append(call("log_search", {"pattern": LOG_SIGNATURES[c], "limit": 20}))
        if cat == "storage_io_stall":
            calls.append(call("trace_slice", {"name_pattern": STORAGE_OPS, "kinds": ["python"], "compare_peers": False}))
        calls.append(call("knowledge_search", {"query": K.KB_QUERY[cat], "k": 2, **({"category": cat} if cat in K.TITLE else {})}))
        return calls
    return None


# -- writing the diagnosis --------------------------------------------------------------------
def _ranks_for(cat: str, a: Assessment, ledger: list[LedgerEntry], topo: Topo) -> list[int]:
    fs = a.of(cat)
    metric = sorted({r for f in fs if f.kind == "metric" for r in f.ranks})
    logs = sorted({r for f in fs if f.kind == "log" for r in f.ranks})
    trace = sorted({r for f in fs if f.kind == "trace" for r in f.ranks})
    hosts = {h for f in fs if f.kind in ("metric", "log") for h in f.hosts if h}
    if cat in (
        "gpu_thermal_throttling",
        "gpu_power_or_clock_cap",
        "gpu_hardware_error",
        "nvlink_degradation",
        "pcie_link_degradation",
        "kv_cache_pressure",
    ):
        return metric or logs or trace
    if cat == "network_congestion":
        hs = sorted({h for f in fs if f.kind == "metric" for h in f.hosts if h}) or sorted(hosts)
        out = sorted({r for h in hs for r in (topo.cross_host_ranks(h) or topo.on_host(h))})
        return out or logs or trace
    if cat == "storage_io_stall":
        for e in reversed(ledger):
            if e.tool == "trace_slice" and e.status == "ok" and query_of(e).get("name_pattern") == STORAGE_OPS:
                ranks = trace_storage_ranks(e)
                if ranks:
                    return ranks
        return trace or logs
    if cat in ("numa_misbinding", "runtime_stall") and logs:
        return logs  # the worker names itself (affinity line, GC/GIL pause) more precisely than a 1.2x slowdown
    # host_cpu_contention (and the rest): the trace pins the worker; metrics pin the host.
    pinned = [r for r in trace if not hosts or topo.host_of.get(r) in hosts]
    return sorted(set(pinned) | set(logs)) or trace or logs


def _ids(fs: list[Finding]) -> list[str]:
    out: list[str] = []
    for f in fs:
        if f.ev not in out:
            out.append(f.ev)
    return out


def compose(ledger: list[LedgerEntry], topo: Topo) -> dict:
    """The Diagnosis (as submit_diagnosis arguments) from the gathered evidence."""
    a = assess(ledger, topo)
    cat, conf = decide(a)
    outpost = next((e for e in ledger if e.tool == "outpost_detect"), None)
    kb = next((e for e in reversed(ledger) if e.tool == "knowledge_search" and e.status == "ok"), None)
    chain: list[dict] = []
    ranks: list[int] = []
    if cat not in ("none", "workload_shift"):
        ranks = _ranks_for(cat, a, ledger, topo)
        fs = a.of(cat)
        direct = [f for f in fs if f.kind in ("metric", "log")] or fs
        trace = [f for f in fs if f.kind == "trace"]
        trace_ids = _ids(trace) or ([outpost.id] if outpost else [])
        for e in ledger:
            if e.tool == "trace_slice" and e.status == "ok" and e.id not in trace_ids:
                trace_ids.append(e.id)
        where = f"rank(s) {ranks}" if ranks else "the affected workers"
        chain.append(
            {
                "cause": f"{K.TITLE[cat]} on {where}: " + "; ".join(f.text for f in direct[:3]),
                "effect": K.MECHANISM[cat],
                "evidence": _ids(direct)[:4],
            }
        )
        chain.append({"cause": K.MECHANISM[cat], "effect": K.SYMPTOM[cat], "evidence": trace_ids[:3] or _ids(direct)[:2]})
        if kb:
            chain[0]["evidence"].append(kb.id)
    elif cat == "workload_shift":
        fs = a.of(cat)
        ids = _ids(fs) + ([outpost.id] if outpost else [])
        chain.append(
            {
                "cause": "more and longer requests on every replica: " + "; ".join(f.text for f in fs[:3]),
                "effect": K.SYMPTOM[cat],
                "evidence": ids[:4],
            }
        )
    else:
        checked = [e for e in (sweep_entry(ledger, k) for k in ("temp", "throttle", "kv_usage", "retrans")) if e and e.status == "ok"]
        ids = ([outpost.id] if outpost else []) + [e.id for e in checked]
        flagged = outpost.data.get("suspect_ranks", []) if outpost and outpost.status == "ok" else []
        if flagged:
            # Trace anomalies nothing else corroborates: report them as unconfirmed, lower confidence.
            cause = f"Outpost flags ranks {flagged} ({outpost.summary}), but no metric or log confirms a fault" + (
                "" if checked else "; the bundle has no metrics to check"
            )
            conf = min(conf, 0.5 if checked else 0.35)
        else:
            cause = "no rank deviates from its peers and no fault signal is present"
        chain.append({"cause": cause, "effect": K.SYMPTOM["none"], "evidence": ids[:4]})
    hosts = sorted({topo.host_of[r] for r in ranks if r in topo.host_of})
    alts = []
    for other in K.LOOKALIKES.get(cat, []):
        if other == cat:
            continue
        # Only lookups that returned data can rule anything out (no_data / error never do).
        checks = [e.id for e in (sweep_entry(ledger, k) for k in K.CHECKS.get(other, [])) if e and e.status == "ok"]
        s = a.scores.get(other, 0.0)
        own = [f for f in a.of(other) if f.kind in ("metric", "log")]
        if s == 0 or not own:
            why = f"{K.NEGATIVE[other]}" + (f" ({', '.join(checks)})" if checks else "")
            if s > 0:
                why += "; the trace slowdown alone fits both, the metrics and logs decide"
        else:
            seen = "; ".join(f.text for f in a.of(other)[:2])
            why = f"weaker evidence (score {s:g} vs {a.scores.get(cat, 0):g}): {seen}" + (
                f" ({', '.join(_ids(a.of(other))[:3])})" if a.of(other) else ""
            )
        alts.append({"category": other, "why": why})
    top = "; ".join(f.text for f in a.of(cat)[:2]) if cat not in ("none",) else chain[0]["cause"]
    title = K.TITLE[cat][0].upper() + K.TITLE[cat][1:]
    summary = (
        f"{title}"
        + (f" on rank(s) {ranks}" + (f" ({', '.join(hosts)})" if hosts else "") if ranks else "")
        + f": {top}. "
        + (
            "Treat the flagged ranks as leads to check, not as a diagnosis."
            if cat == "none" and "Outpost flags" in top
            else f"{K.MECHANISM[cat][0].upper() + K.MECHANISM[cat][1:]}."
        )
    )
    evidence = []
    for link in chain:
        for i in link["evidence"]:
            e = next((x for x in ledger if x.id == i), None)
            if e and all(i != x["id"] for x in evidence):
                evidence.append({"id": i, "tool": e.tool, "query": e.query, "summary": e.summary[:300]})
    from kat.agent.diagnosis import COMPONENT_OF

    return {
        "root_cause": {"category": cat, "component": COMPONENT_OF[cat], "ranks": ranks, "hosts": hosts, "summary": summary},
        "causal_chain": chain,
        "evidence": evidence,
        "confidence": conf,
        "alternatives_ruled_out": alts,
        "remediation": K.REMEDIATION[cat],
    }


def hypotheses(ledger: list[LedgerEntry], topo: Topo) -> list[dict]:
    """Open hypotheses after the sweep: every category with some support, best first."""
    if not any(e.tool == "metric_lookup" for e in ledger):
        return [{"category": "undetermined", "status": "open", "note": "waiting for Outpost and the metric sweep"}]
    a = assess(ledger, topo)
    cat, _ = decide(a)
    out = []
    for c, s in a.ranking:
        if s > 0:
            out.append({"category": c, "status": "supported" if c == cat else "open", "note": f"score {s:g}"})
    if cat == "none":
        out.insert(0, {"category": "none", "status": "supported", "note": "no fault signal"})
    return out
