"""Chat follow-ups answered from the evidence ledger and the signature cards (rules Analyzer, demo bundle)."""

from __future__ import annotations

import re

import pytest

from kat.agent.demo import DEMO_INCIDENT
from kat.agent.session import Session
from kat.knowledge.cards import CARDS

QUESTIONS = {
    "kernel": "which kernel?",
    "where": "where in the trace?",
    "first": "what should I do first?",
    "fix": "how do I fix it?",
    "confirm": "how do I confirm the fix?",
    "why_not": "why not gpu_power_or_clock_cap?",
    "ranks": "which rank is slow?",
}


@pytest.fixture(scope="module")
def chat() -> tuple[dict, dict[str, str], list[dict]]:
    s = Session(DEMO_INCIDENT, "rules")
    try:
        d = s.diagnose("fu").model_dump()
        answers = {k: s.ask(q, "fu") for k, q in QUESTIONS.items()}
        answers["logs"] = s.ask("logs for rank 2", "fu")
        ledger = s.state("fu")["ledger"]
    finally:
        s.close()
    return d, answers, ledger


def _cited(text: str) -> set[str]:
    return set(re.findall(r"\bev-\d+\b", text))


def test_each_answer_is_its_own_and_cites_existing_evidence(chat) -> None:
    d, answers, ledger = chat
    ids = {e["id"] for e in ledger}
    texts = [a for k, a in answers.items() if k != "logs"]
    assert len(set(texts)) == len(texts), "two follow-ups got the same answer"
    for k, a in answers.items():
        assert d["root_cause"]["summary"] not in a, k
        assert _cited(a) and _cited(a) <= ids, (k, a)


def test_kernel_answer_names_an_outpost_anomaly_on_the_culprit(chat) -> None:
    d, answers, ledger = chat
    outpost = next(e for e in ledger if e["tool"] == "outpost_detect")
    mine = [a for a in outpost["data"]["anomalies"] if a["rank"] in d["root_cause"]["ranks"]]
    assert mine and any(a["name"] in answers["kernel"] for a in mine)
    assert any(a["tree_path"] and a["tree_path"] in answers["kernel"] for a in mine)
    assert outpost["id"] in _cited(answers["kernel"])
    assert any(a["steps"] in answers["where"] for a in mine) and outpost["id"] in _cited(answers["where"])


def test_remediation_and_confirmation_come_from_the_card(chat) -> None:
    d, answers, ledger = chat
    card = CARDS[d["root_cause"]["category"]]
    first = answers["first"]
    assert first.index(card.remediation[0].action) < first.index(card.remediation[1].action)
    assert card.remediation[0].why in first
    for c in card.confirm:
        assert c.family in answers["confirm"] and c.expect in answers["confirm"]
    # The confirmation cites the pre-fix readings of those families that were gathered.
    fam_ids = {e["id"] for e in ledger if e["status"] == "ok" and any(f'"family": "{c.family}"' in e["query"] for c in card.confirm)}
    assert fam_ids and _cited(answers["confirm"]) == fam_ids


def test_why_not_cites_the_ruled_out_entry(chat) -> None:
    d, answers, _ = chat
    ro = next(a for a in d["alternatives_ruled_out"] if a["category"] == "gpu_power_or_clock_cap")
    assert set(ro["evidence"]) and set(ro["evidence"]) <= _cited(answers["why_not"])
    assert ro["why"] in answers["why_not"]


def test_which_rank_names_culprits_with_confidence(chat) -> None:
    d, answers, ledger = chat
    outpost = next(e for e in ledger if e["tool"] == "outpost_detect")
    assert str(d["root_cause"]["ranks"]) in answers["ranks"] and str(d["confidence"]) in answers["ranks"]
    for s in outpost["data"]["suspects"]:
        assert f"rank {s['rank']} confidence {s['confidence']}" in answers["ranks"]


def test_logs_question_calls_log_search_scoped_to_the_rank(chat) -> None:
    _, answers, ledger = chat
    last = ledger[-1]
    assert last["tool"] == "log_search" and '"ranks": [2]' in last["query"]
    assert last["id"] in _cited(answers["logs"])


def test_why_not_with_missing_data_says_so() -> None:
    s = Session(DEMO_INCIDENT, "rules")
    try:
        s.diagnose("m")
        ledger = s.state("m")["ledger"]
        a = s.ask("why not kv cache pressure?", "m")
    finally:
        s.close()
    gaps = {
        e["id"]
        for e in ledger
        if e["status"] != "ok" and any(f'"family": "{f}"' in e["query"] for f in CARDS["kv_cache_pressure"].supports)
    }
    assert gaps, "the demo bundle has no preemption series: its lookup comes back no_data"
    assert "not ruled out: missing data" in a and gaps <= _cited(a)
