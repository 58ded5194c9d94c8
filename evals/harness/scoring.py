"""Score one Diagnosis (a dict in the `kat diagnose --json` shape) against one GroundTruth.

Definitions (all deterministic):
* top-1: root_cause.category equals the truth (real-trace cases may list several acceptable
  categories in `parameters.acceptable_categories`; any of them counts).
* top-3: the truth is among the first three of [root cause] + alternatives_ruled_out in their
  order. The Diagnosis carries no ranked hypothesis list; the rules playbook orders its ruled-out
  alternatives by score, so this is "the runner-ups it considered".
* component: root_cause.component equals the truth's component ('-' for controls).
* ranks: exact set equality, plus precision/recall of the named ranks (faults only).
* controls (none, workload_shift): control_ok when the diagnosis says none/workload_shift and
  names no rank.
* chain: predicted links are tagged (tagging.tag_link) and matched one-to-one, in order, to
  ground-truth links with the same (category, component); generic links match untagged ones.
  Not applicable (None) when the truth has no chain (healthy control) or nothing was predicted.
* faithfulness: share of predicted links that cite evidence, whose cited ids all appear in the
  Diagnosis's evidence list, and at least one of which comes from a tool that can back the
  link's component (tagging.tool_supports).
* passed: category right; faults name at least one affected rank; controls name none; answer
  file checks (when present) pass.
"""

from __future__ import annotations

import re
from typing import Any

from kat.evals.harness.answers import AnswerSpec, check_answer
from kat.evals.harness.models import CaseScores
from kat.evals.harness.tagging import component_of, link_tag, tool_supports
from kat.evals.simulate.ground_truth import GroundTruth

CONTROLS = ("none", "workload_shift")
_EV_ID = re.compile(r"^ev-\d+$")


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def acceptable(gt: GroundTruth) -> set[str]:
    extra = str(gt.parameters.get("acceptable_categories", "") or "")
    return {gt.category} | {c.strip() for c in extra.split(",") if c.strip()}


def ranked_categories(diag: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for c in [diag["root_cause"]["category"]] + [a.get("category", "") for a in diag.get("alternatives_ruled_out") or []]:
        c = str(c).strip().lower().replace("-", "_")
        if c and c not in out:
            out.append(c)
    return out


def match_chain(links: list[dict], gt: GroundTruth, prefer: str | None) -> tuple[list[str | None], int]:
    """Tag each predicted link; count one-to-one matches with ground-truth links by (category, component)."""
    tags = [link_tag(link, prefer) for link in links]
    free = [(g.category, g.component) for g in gt.causal_chain]
    matched = 0
    for t in tags:
        key = (t, component_of(t))
        if key in free:
            free.remove(key)
            matched += 1
    return tags, matched


def faithful(link: dict, evidence: dict[str, dict], tag: str | None) -> bool:
    ids = [str(i) for i in link.get("evidence") or []]
    if not ids:
        return False
    has_kb = any(e.get("tool") == "knowledge_search" for e in evidence.values())
    # Knowledge ids (not ev-N) are legal citations when a knowledge search is in the evidence list.
    if any(i not in evidence and (_EV_ID.match(i) or not has_kb) for i in ids):
        return False
    comp = component_of(tag)
    return any(tool_supports(str(evidence[i].get("tool", "")), str(evidence[i].get("query", "")), comp) for i in ids if i in evidence)


def score(diag: dict[str, Any], gt: GroundTruth, answer: AnswerSpec | None = None) -> CaseScores:
    rc = diag["root_cause"]
    pred = str(rc["category"])
    ok_cats = acceptable(gt)
    ranked = ranked_categories(diag)
    is_control = gt.category in CONTROLS
    truth_ranks = sorted(set(gt.affected_ranks)) if not is_control else []
    pred_ranks = sorted({int(r) for r in rc.get("ranks") or []})
    tp = len(set(truth_ranks) & set(pred_ranks))

    links = diag.get("causal_chain") or []
    tags, matched = match_chain(links, gt, pred if pred not in CONTROLS else None)
    evidence = {str(e.get("id")): e for e in diag.get("evidence") or []}
    n_faithful = sum(faithful(link, evidence, t) for link, t in zip(links, tags))

    top1 = pred in ok_cats
    control_ok = (pred in CONTROLS and not pred_ranks) if is_control else None
    check = check_answer(answer, pred, diag.get("evidence") or []) if answer else None
    passed = top1 and (bool(control_ok) if is_control else tp > 0) and (check is None or check.ok)
    return CaseScores(
        truth=gt.category,
        predicted=pred,
        ranked=ranked,
        top1=top1,
        top3=bool(ok_cats & set(ranked[:3])),
        component_ok=str(rc.get("component") or "-") == gt.component,
        is_control=is_control,
        control_ok=control_ok,
        ranks_truth=truth_ranks,
        ranks_predicted=pred_ranks,
        ranks_exact=truth_ranks == pred_ranks,
        rank_precision=None if is_control else _ratio(tp, len(pred_ranks)),
        rank_recall=None if is_control else _ratio(tp, len(truth_ranks)),
        chain_predicted=len(links),
        chain_truth=len(gt.causal_chain),
        chain_matched=matched,
        chain_precision=_ratio(matched, len(links)) if gt.causal_chain else None,
        chain_recall=_ratio(matched, len(gt.causal_chain)) if links else (0.0 if gt.causal_chain else None),
        link_tags=[t or "-" for t in tags],
        faithful_links=n_faithful,
        faithfulness=_ratio(n_faithful, len(links)),
        answer=check,
        passed=passed,
    )
