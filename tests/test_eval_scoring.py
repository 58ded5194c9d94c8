"""Deterministic diagnosis scorers on hand-made cases: perfect, empty, partially right, wrong chain."""

from __future__ import annotations

import pytest

from kat.evals.harness.answers import AnswerSpec, load_answer
from kat.evals.harness.scoring import score
from kat.evals.harness.tagging import tag_link, tool_supports
from kat.evals.simulate.ground_truth import ChainLink, GroundTruth, Window

W = Window.of(1_000, 2_000)


def truth(
    category: str = "nvlink_degradation",
    component: str = "nvlink",
    ranks: tuple[int, ...] = (2,),
    chain: list[ChainLink] | None = None,
    **params: str,
) -> GroundTruth:
    fault = category not in ("none", "workload_shift")
    if chain is None:
        chain = (
            [
                ChainLink(
                    cause="NVLink of GPU 2 degrades (CRC errors)", effect="lower NVLink bandwidth", category=category, component=component
                ),
                ChainLink(cause="lower NVLink bandwidth", effect="intra-node all-reduce slower", category=category, component=component),
                ChainLink(cause="all-reduce slows", effect="TPOT rises"),
            ]
            if fault
            else []
        )
    return GroundTruth(
        incident_id="t",
        category=category,
        component=component if fault else "-",
        is_fault=fault,
        task="x",
        seed=0,
        size="tiny",
        affected_ranks=list(ranks) if fault else [],
        window=W if fault else None,
        trace_window=W,
        symptom="s",
        summary="s",
        causal_chain=chain,
        parameters=dict(params),
    )


EVIDENCE = [
    {"id": "ev-1", "tool": "outpost_detect", "query": "{}", "summary": "suspect ranks [2]"},
    {"id": "ev-8", "tool": "metric_lookup", "query": '{"name": "NVLINK_CRC"}', "summary": "rank 2 high"},
    {"id": "ev-9", "tool": "metric_lookup", "query": '{"name": "DCGM_FI_DEV_GPU_TEMP"}', "summary": "normal"},
    {"id": "ev-26", "tool": "knowledge_search", "query": '{"query": "nvlink"}', "summary": "kb"},
]


def diagnosis(
    category: str = "nvlink_degradation",
    component: str = "nvlink",
    ranks: list[int] | None = None,
    chain: list[dict] | None = None,
    alternatives: list[str] = (),
    evidence: list[dict] | None = None,
) -> dict:
    return {
        "root_cause": {"category": category, "component": component, "ranks": [2] if ranks is None else ranks, "hosts": [], "summary": "s"},
        "causal_chain": chain
        if chain is not None
        else [
            {"cause": "NVLink CRC errors on rank 2", "effect": "NVLink bandwidth drops", "evidence": ["ev-8", "ev-26"]},
            {"cause": "a degraded NVLink replays traffic", "effect": "intra-node all-reduce slower", "evidence": ["ev-1"]},
            {"cause": "all-reduce kernels take longer", "effect": "step time rises", "evidence": ["ev-1"]},
        ],
        "evidence": EVIDENCE if evidence is None else evidence,
        "confidence": 0.9,
        "alternatives_ruled_out": [{"category": c, "why": "-"} for c in alternatives],
        "remediation": [],
    }


def test_perfect() -> None:
    s = score(diagnosis(), truth())
    assert s.top1 and s.top3 and s.component_ok and s.ranks_exact and s.passed
    assert (s.rank_precision, s.rank_recall) == (1.0, 1.0)
    assert (s.chain_matched, s.chain_precision, s.chain_recall) == (3, 1.0, 1.0)
    assert s.link_tags == ["nvlink_degradation", "nvlink_degradation", "-"]
    assert s.faithfulness == 1.0


def test_empty_diagnosis() -> None:
    d = diagnosis(category="undetermined", component="-", ranks=[], chain=[], evidence=[])
    s = score(d, truth())
    assert not (s.top1 or s.top3 or s.component_ok or s.ranks_exact or s.passed)
    assert s.rank_precision is None and s.rank_recall == 0.0
    assert s.chain_precision is None and s.chain_recall == 0.0
    assert s.faithfulness is None


def test_partially_right() -> None:
    # Right category and one of two culprits; one extra rank; chain misses the symptom link.
    gt = truth(ranks=(2, 5))
    chain = diagnosis()["causal_chain"][:2]
    s = score(diagnosis(ranks=[2, 3], chain=chain), gt)
    assert s.top1 and s.passed and not s.ranks_exact
    assert (s.rank_precision, s.rank_recall) == (0.5, 0.5)
    assert (s.chain_precision, s.chain_recall) == (1.0, round(2 / 3, 4))
    # Wrong top-1 but the truth is the runner-up: top-3 only.
    s2 = score(diagnosis(category="network_congestion", component="network", alternatives=["nvlink_degradation", "gpu_hardware_error"]), gt)
    assert not s2.top1 and s2.top3 and not s2.component_ok and not s2.passed


def test_wrong_chain() -> None:
    chain = [
        {
            "cause": "NIC retransmits on the inter-node fabric",
            "effect": "inter-node collectives slow",
            "evidence": ["ev-9"],
        },  # a GPU temperature metric cannot back a network link
        {"cause": "network congestion", "effect": "TPOT rises", "evidence": ["ev-26"]},  # knowledge only
        {"cause": "collectives wait", "effect": "latency rises", "evidence": ["ev-404"]},  # id never returned
        {"cause": "NVLink CRC errors", "effect": "slow all-reduce", "evidence": []},
    ]  # cites nothing
    s = score(diagnosis(chain=chain), truth())
    assert s.link_tags == ["network_congestion", "network_congestion", "-", "nvlink_degradation"]
    assert s.chain_matched == 2 and s.chain_precision == 0.5  # the generic and the NVLink link match
    assert s.faithful_links == 0 and s.faithfulness == 0.0


@pytest.mark.parametrize(
    "pred,ranks,ok", [("none", [], True), ("workload_shift", [], True), ("none", [3], False), ("gpu_thermal_throttling", [3], False)]
)
def test_controls(pred: str, ranks: list[int], ok: bool) -> None:
    gt = truth(category="none", component="-")
    d = diagnosis(
        category=pred,
        component="-",
        ranks=ranks,
        chain=[{"cause": "no rank deviates from its peers", "effect": "normal variation", "evidence": ["ev-1"]}],
    )
    s = score(d, gt)
    assert s.is_control and s.control_ok is ok
    assert s.chain_precision is None and s.rank_recall is None
    assert s.passed is (ok and pred == "none")


def test_acceptable_categories_from_real_traces() -> None:
    gt = truth(category="host_cpu_contention", component="host_cpu", acceptable_categories="host_cpu_contention,runtime_stall")
    s = score(diagnosis(category="runtime_stall", component="software", chain=[]), gt)
    assert s.top1


def test_answer_file(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "answer.yaml").write_text(
        "required_evidence: [metric_lookup, NVLINK_CRC, trace_slice]\nforbidden_causes: [network-congestion]\n"
    )
    spec = load_answer(tmp_path)
    assert spec == AnswerSpec(required_evidence=["metric_lookup", "NVLINK_CRC", "trace_slice"], forbidden_causes=["network-congestion"])
    s = score(diagnosis(), truth(), spec)
    assert s.answer.missing_evidence == ["trace_slice"] and not s.answer.forbidden_hit and not s.passed
    s2 = score(diagnosis(category="network_congestion"), truth(), AnswerSpec(forbidden_causes=["network_congestion"]))
    assert s2.answer.forbidden_hit
    assert load_answer(tmp_path / "missing") is None


def test_tagging_and_support() -> None:
    assert tag_link("power limit lowered; temperature normal", "") == "gpu_power_or_clock_cap"
    assert tag_link("Xid 74: NVLink replay errors", "") == "nvlink_degradation"
    assert tag_link("step time rises", "TPOT rises") is None
    assert tag_link("clocks locked while hot", "", prefer="gpu_thermal_throttling") == "gpu_thermal_throttling"
    assert tool_supports("metric_lookup", '{"name": "DCGM_FI_DEV_GPU_TEMP"}', "gpu")
    assert not tool_supports("metric_lookup", '{"name": "DCGM_FI_DEV_GPU_TEMP"}', "network")
    assert tool_supports("log_search", "{}", "storage") and not tool_supports("knowledge_search", "{}", None)
