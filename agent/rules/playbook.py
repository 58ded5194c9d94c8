"""The hypothesis-driven playbook: which tools to call next, and the Diagnosis from what they returned.

Steps, each one Analyzer step emitting tool calls through the graph:
1. `outpost_detect` (suspect ranks and their confidence) and `metric_catalog` (what metric
   families this incident has: names differ between exporters).
2. Open hypotheses: every category whose card names a family the catalogue has; compare those
   families (`metric_compare`: inside vs outside the window, suspect vs peers) and search the
   logs for the generic vendor-format signatures.
3. Separate the leaders: re-compare, inside the leader's window, the families that support one
   leading hypothesis and refute the other; read the leader's knowledge card.
4. Stop when one hypothesis leads by the margin or the budget ends; `submit_diagnosis` with a
   causal chain whose links cite the evidence ids found above.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from kat.agent.rules import knowledge as K
from kat.agent.rules.config import CONFIG, RulesConfig
from kat.agent.rules.signals import Finding, log_findings, metric_findings, outpost_findings, query_of, suspects
from kat.agent.rules.topology import Topo
from kat.agent.state import LedgerEntry
from kat.knowledge.cards import CARDS
from kat.knowledge.log_signatures import search_patterns
from kat.knowledge.taxonomy import COMPONENT_OF, FAULT_CATEGORIES


def call(name: str, args: dict) -> dict:
    return {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}


@dataclass
class Assessment:
    findings: list[Finding]
    scores: dict[str, float]
    ranking: list[tuple[str, float]]

    def of(self, cat: str, positive: bool = True) -> list[Finding]:
        return [f for f in self.findings if f.category == cat and (f.strength > 0) == positive]


def assess(ledger: list[LedgerEntry], topo: Topo, cfg: RulesConfig = CONFIG) -> Assessment:
    findings: list[Finding] = []
    for e in ledger:
        findings += metric_findings(e, topo, cfg) + log_findings(e, topo, cfg) + outpost_findings(e, cfg)
    scores: dict[str, float] = {}
    for cat in (*FAULT_CATEGORIES, "workload_shift"):
        # Per evidence family the strongest support counts once; refutations subtract.
        best: dict[str, float] = {}
        neg = 0.0
        for f in findings:
            if f.category != cat:
                continue
            if f.strength > 0:
                best[f.family] = max(best.get(f.family, 0.0), f.strength)
            else:
                neg += f.strength
        scores[cat] = round(sum(best.values()) + neg, 2)
    ranking = sorted(scores.items(), key=lambda cs: -cs[1])
    return Assessment(findings, scores, ranking)


def _direct(a: Assessment, cat: str) -> float:
    """Score from metric and log evidence only (Outpost alone never makes a fault)."""
    best: dict[str, float] = {}
    for f in a.of(cat):
        if f.kind in ("metric", "log"):
            best[f.family] = max(best.get(f.family, 0.0), f.strength)
    return sum(best.values())


def decide(a: Assessment, cfg: RulesConfig = CONFIG, missing: int = 0) -> tuple[str, float]:
    """(category, confidence): the margin over the runner-up and missing data lower confidence."""
    faults = [(c, s) for c, s in a.ranking if c != "workload_shift"]
    best, score = faults[0]
    runner = faults[1][1] if len(faults) > 1 else 0.0
    penalty = min(0.2, 0.03 * missing)
    if score >= cfg.fault_min and _direct(a, best) >= cfg.fault_min * 0.8:
        margin = score - runner
        conf = 0.45 + 0.1 * min(score, 4) + (0.1 if margin >= cfg.margin else -0.1) - penalty
        return best, round(min(0.95, max(0.3, conf)), 2)
    ws = a.scores.get("workload_shift", 0.0)
    if ws >= cfg.workload_min:
        return "workload_shift", round(min(0.85, 0.5 + 0.1 * ws - penalty), 2)
    return "none", round(max(0.3, 0.8 - 0.1 * score - penalty), 2)


def _catalog(ledger: list[LedgerEntry]) -> LedgerEntry | None:
    return next((e for e in ledger if e.tool == "metric_catalog"), None)


def present_families(ledger: list[LedgerEntry]) -> list[str]:
    e = _catalog(ledger)
    return sorted(e.data.get("families", {})) if e and e.status == "ok" else []


def relevant_families(present: list[str]) -> list[str]:
    """Families some card names (supporting or refuting), in the order the catalogue has them."""
    named = {f for c in CARDS.values() for f in (*c.supports, *c.refutes)}
    return [f for f in present if f in named]


def missing_families(ledger: list[LedgerEntry], cat: str) -> list[str]:
    present = set(present_families(ledger))
    card = CARDS.get(cat)
    return [f for f in (card.supports if card else ()) if f not in present]


def _compared(ledger: list[LedgerEntry]) -> set[tuple[str, int | None]]:
    return {(query_of(e).get("family", ""), query_of(e).get("start_ns")) for e in ledger if e.tool == "metric_compare"}


def leader_window(a: Assessment, cat: str, ledger: list[LedgerEntry]) -> tuple[int, int] | None:
    """The window of the leader's strongest metric evidence (where to compare the other families)."""
    fs = sorted((f for f in a.of(cat) if f.kind == "metric"), key=lambda f: -f.strength)
    for f in fs:
        e = next((x for x in ledger if x.id == f.ev), None)
        if e is None:
            continue
        for row in e.data.get("series", []):
            if f.ranks and row.get("rank") in f.ranks and row.get("window_ns"):
                return int(row["window_ns"][0]), int(row["window_ns"][1])
    return None


def plan_next(ledger: list[LedgerEntry], topo: Topo, cfg: RulesConfig = CONFIG) -> list[dict] | None:
    """The next batch of tool calls, or None when it is time to submit."""
    tools = {e.tool for e in ledger}
    if "outpost_detect" not in tools or "metric_catalog" not in tools:
        calls = []
        if "outpost_detect" not in tools:
            calls.append(call("outpost_detect", {"max_anomalies": 20}))
        if "metric_catalog" not in tools:
            calls.append(call("metric_catalog", {}))
        return calls
    if "metric_compare" not in tools and "log_search" not in tools:
        calls = [call("metric_compare", {"family": f, "token_budget": 2500}) for f in relevant_families(present_families(ledger))]
        calls += [call("log_search", {"pattern": p, "limit": 60, "token_budget": 6000}) for p in search_patterns()]
        return calls
    if "knowledge_search" not in tools:
        a = assess(ledger, topo, cfg)
        cat, _ = decide(a, cfg)
        calls = []
        # Separate the two leaders: compare, inside the leader's window, the families that
        # support the runner-up or refute the leader (suspect vs peers there).
        faults = [c for c, _ in a.ranking if c != "workload_shift"]
        if cat in FAULT_CATEGORIES and len(faults) > 1:
            runner = faults[1] if faults[0] == cat else faults[0]
            win = leader_window(a, cat, ledger)
            if win:
                present = set(present_families(ledger))
                fams = [f for f in (*CARDS[runner].supports, *CARDS[cat].refutes) if f in present]
                done = _compared(ledger)
                for f in dict.fromkeys(fams):
                    if (f, win[0]) not in done:
                        calls.append(call("metric_compare", {"family": f, "start_ns": win[0], "end_ns": win[1], "token_budget": 2000}))
        card = CARDS.get(cat)
        calls.append(call("knowledge_search", {"query": card.kb_query if card else K.KB_QUERY[cat], "k": 2, "category": cat}))
        return calls
    return None


# -- writing the diagnosis --------------------------------------------------------------------
def _ranks_for(cat: str, a: Assessment, ledger: list[LedgerEntry], topo: Topo, cfg: RulesConfig) -> list[int]:
    fs = a.of(cat)
    # Each rank's support (strongest finding per evidence family); weakly supported ranks drop out.
    per: dict[int, dict[str, float]] = {}
    for f in fs:
        if f.kind in ("metric", "log"):
            for r in f.ranks:
                per.setdefault(r, {})[f.family] = max(per.get(r, {}).get(f.family, 0.0), f.strength)
    rank_score = {r: sum(v.values()) for r, v in per.items()}
    top = max(rank_score.values(), default=0.0)
    direct = sorted(r for r, sc in rank_score.items() if sc >= cfg.rank_share * top)
    if cat == "host_cpu_contention":
        # The starved workers (their own CPU down, involuntary switches up) or the confident suspects on that host.
        hosts = {h for f in fs for h in f.hosts if h}
        e = next((x for x in ledger if x.tool == "outpost_detect" and x.status == "ok"), None)
        conf = {int(x["rank"]): float(x.get("confidence", 0)) for x in (e.data.get("suspects", []) if e else [])}
        top = max(conf.values(), default=0.0)
        # Several workers can share the contended cores: every suspect near the leading one, on that host.
        flagged = {int(x["rank"]) for x in (e.data.get("anomalies", []) if e else []) if x.get("component") == "host_cpu"}
        sus = sorted(r for r in flagged if top >= cfg.suspect_conf_min and (not hosts or topo.host_of.get(r) in hosts))
        return direct or sus
    if direct:
        return direct
    return [r for r, _ in suspects(ledger, cfg)][:1]


def _ids(fs: list[Finding]) -> list[str]:
    out: list[str] = []
    for f in fs:
        if f.ev not in out:
            out.append(f.ev)
    return out


def compose(ledger: list[LedgerEntry], topo: Topo, cfg: RulesConfig = CONFIG) -> dict:
    """The Diagnosis (as submit_diagnosis arguments) from the gathered evidence."""
    a = assess(ledger, topo, cfg)
    failed = [e for e in ledger if e.status != "ok" and e.tool in ("metric_compare", "log_search", "metric_catalog")]
    cat0, _ = decide(a, cfg)
    cat, conf = decide(a, cfg, missing=len(missing_families(ledger, cat0)) + len(failed))
    outpost = next((e for e in ledger if e.tool == "outpost_detect"), None)
    catalog = _catalog(ledger)
    kb = next((e for e in reversed(ledger) if e.tool == "knowledge_search" and e.status == "ok"), None)
    chain: list[dict] = []
    ranks: list[int] = []
    if cat in FAULT_CATEGORIES:
        ranks = _ranks_for(cat, a, ledger, topo, cfg)
        fs = sorted(a.of(cat), key=lambda f: -f.strength)
        direct = [f for f in fs if f.kind in ("metric", "log")] or fs
        trace_ids = _ids([f for f in fs if f.kind == "trace"]) or ([outpost.id] if outpost and outpost.status == "ok" else [])
        where = f"rank(s) {ranks}" if ranks else "the affected workers"
        comp = COMPONENT_OF[cat]
        latency = next(
            (e.id for e in ledger if e.tool == "metric_compare" and e.status == "ok" and query_of(e).get("family") == "latency"), None
        )
        chain.append(
            {
                "cause": f"{K.TITLE[cat]} on {where}: " + "; ".join(f.text for f in direct[:3]),
                "effect": K.MECHANISM[cat],
                "evidence": _ids(direct)[:4],
                "category": cat,
                "component": comp,
            }
        )
        chain.append(
            {
                "cause": K.MECHANISM[cat],
                "effect": f"the work of {where} takes longer than its peers' in the same steps",
                "evidence": (_ids(direct)[:1] + trace_ids[:1]) or _ids(direct)[:2],
                "category": cat,
                "component": comp,
            }
        )
        chain.append(
            {
                "cause": f"{where} late at the collectives",
                "effect": K.SYMPTOM[cat],
                "evidence": trace_ids[:2] or _ids(direct)[:2],
                "category": cat,
                "component": comp,
            }
        )
        chain.append(
            {
                "cause": "every decode step waits for the slowest worker",
                "effect": "step time and time per output token rise for the whole group",
                "evidence": [latency] if latency else (trace_ids[:1] or _ids(direct)[:1]),
                "category": "none",
            }
        )
        if kb:
            chain[0]["evidence"].append(kb.id)
    elif cat == "workload_shift":
        fs = a.of(cat)
        chain.append(
            {
                "cause": "more and longer requests on every replica: " + "; ".join(f.text for f in fs[:3]),
                "effect": K.SYMPTOM[cat],
                "evidence": _ids(fs)[:4],
                "category": "workload_shift",
            }
        )
    else:
        checked = [e.id for e in ledger if e.tool == "metric_compare" and e.status == "ok"][:3]
        ids = (
            ([outpost.id] if outpost and outpost.status == "ok" else [])
            + ([catalog.id] if catalog and catalog.status == "ok" else [])
            + checked
        )
        sus = suspects(ledger, cfg)
        if sus:
            cause = f"Outpost leans on rank(s) {[r for r, _ in sus]}, but no metric or log confirms a fault"
            conf = min(conf, 0.6)
        else:
            cause = _healthy_cause(ledger, single=len(topo.ranks) <= 1, metrics_compared=bool(checked))
        chain.append({"cause": cause, "effect": K.SYMPTOM["none"], "evidence": ids[:4], "category": "none"})
    hosts = sorted({topo.host_of[r] for r in ranks if r in topo.host_of})
    alts = _ruled_out(cat, a, ledger)
    top = "; ".join(f.text for f in a.of(cat)[:2]) if cat in FAULT_CATEGORIES or cat == "workload_shift" else chain[0]["cause"]
    title = K.TITLE[cat][0].upper() + K.TITLE[cat][1:]
    summary = (
        f"{title}"
        + (f" on rank(s) {ranks}" + (f" ({', '.join(hosts)})" if hosts else "") if ranks else "")
        + f": {top}. "
        + f"{_mechanism(cat, single=len(topo.ranks) <= 1)}."
    )
    evidence: list[dict[str, Any]] = []
    cited = [i for link in chain for i in link["evidence"]] + [i for alt in alts for i in alt["evidence"]]
    for i in cited:
        e = next((x for x in ledger if x.id == i), None)
        if e and all(i != x["id"] for x in evidence):
            evidence.append({"id": i, "tool": e.tool, "query": e.query, "summary": e.summary[:300]})
    return {
        "root_cause": {"category": cat, "component": COMPONENT_OF[cat], "ranks": ranks, "hosts": hosts, "summary": summary},
        "causal_chain": chain,
        "evidence": evidence,
        "confidence": conf,
        "alternatives_ruled_out": alts,
        "remediation": K.REMEDIATION[cat],
    }


def _ruled_out(cat: str, a: Assessment, ledger: list[LedgerEntry]) -> list[dict]:
    """Look-alikes, best-scored first. Only a family that was compared and returned data rules anything out."""
    ok_fams = {query_of(e).get("family"): e.id for e in ledger if e.tool == "metric_compare" and e.status == "ok"}
    out: list[dict[str, Any]] = []
    others = [c for c, _ in a.ranking if c != cat]
    for other in [c for c in K.LOOKALIKES.get(cat, []) if c != cat] + [c for c in others[:2] if c not in K.LOOKALIKES.get(cat, [])]:
        if other == cat or any(x["category"] == other for x in out):
            continue
        card = CARDS.get(other)
        checked = [(f, ok_fams[f]) for f in (card.supports if card else ()) if f in ok_fams]
        own = a.of(other)
        if own:
            why = f"weaker evidence (score {a.scores.get(other, 0):g} vs {a.scores.get(cat, 0):g}): " + "; ".join(f.text for f in own[:2])
            ids = _ids(own)[:3]
        elif checked:
            why = K.NEGATIVE[other] + " (checked: " + ", ".join(f for f, _ in checked[:3]) + ")"
            ids = [i for _, i in checked[:3]]
        else:
            continue  # nothing was measured for it: missing data rules nothing out
        out.append({"category": other, "why": why + f" ({', '.join(ids)})", "evidence": ids})
    return out


def hypotheses(ledger: list[LedgerEntry], topo: Topo, cfg: RulesConfig = CONFIG) -> list[dict]:
    """Open hypotheses with their scores (supports minus refutes), best first."""
    if not any(e.tool in ("metric_compare", "log_search") for e in ledger):
        return [
            {"category": "undetermined", "status": "open", "note": "waiting for Outpost, the metric catalogue and the first comparisons"}
        ]
    a = assess(ledger, topo, cfg)
    cat, _ = decide(a, cfg)
    out = []
    for c, s in a.ranking:
        if s != 0:
            out.append({"category": c, "status": "supported" if c == cat else "open" if s > 0 else "refuted", "note": f"score {s:g}"})
    if cat == "none":
        out.insert(0, {"category": "none", "status": "supported", "note": "no fault signal"})
    return out


def _healthy_cause(ledger: list[LedgerEntry], single: bool, metrics_compared: bool) -> str:
    """Why nothing points at a fault, naming only the checks that had data (missing data is said, not counted)."""
    # a search that matched nothing counts; a bundle without logs (or a failed search) does not
    logs_searched = any(e.tool == "log_search" and e.status in ("ok", "no_data") and "no logs" not in e.summary for e in ledger)
    parts = [
        "Outpost finds nothing significant in the traces" + (" (one rank: only its own repetitions could be compared)" if single else "")
    ]
    parts.append(
        ("no metric family changes on one GPU/host/process against the others" if not single else "no metric family changes")
        if metrics_compared
        else "no metrics could be compared, so metric-only faults are not ruled out"
    )
    parts.append("no fault signature is logged" if logs_searched else "no logs could be searched")
    return "; ".join(parts)


def _mechanism(cat: str, single: bool) -> str:
    text = "the worker behaves like its own history" if cat == "none" and single else K.MECHANISM[cat]
    return text[0].upper() + text[1:]
