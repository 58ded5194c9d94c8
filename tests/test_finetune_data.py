"""kat finetune data: splits, chat template rendering, assistant-only labels, hermes round trip."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("langgraph")

from kat.evals.finetune.chat_format import assistant_spans, parse_tool_calls, render  # noqa: E402
from kat.evals.finetune.data import SIZES, DataConfig, plan_cases, rules_trajectory  # noqa: E402
from kat.evals.finetune.train import IGNORE, sft_sample  # noqa: E402

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

    from kat.evals.finetune.data import Trajectory
    from kat.evals.simulate.ground_truth import GroundTruth


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    from kat.evals.finetune.tiny import build_tiny_base

    return AutoTokenizer.from_pretrained(str(build_tiny_base(tmp_path_factory.mktemp("tiny"))))


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory: pytest.TempPathFactory) -> tuple[GroundTruth, Trajectory]:
    from kat.evals.simulate import generate_incident

    d = tmp_path_factory.mktemp("inc") / "b"
    gt = generate_incident("gpu_thermal_throttling", "vllm-l8b-tp8-h100-decode-graph", 7, d, size="tiny")
    return gt, rules_trajectory(d, tool_result_chars=0)


def test_split_never_shares_a_task_seed_group() -> None:
    for size in ("demo", "standard"):
        cases = plan_cases(DataConfig(size=size))
        per_cat = sum(SIZES[size].values())
        assert len(cases) == 13 * per_cat
        groups: dict[tuple[str, int], set[str]] = {}
        for c in cases:
            groups.setdefault((c.task, c.seed), set()).add(c.split)
        assert all(len(s) == 1 for s in groups.values())
        assert {c.split for c in cases} == {"train", "validation", "test"}
        assert all(c.bundle for c in cases if c.split == "test") and not any(c.bundle for c in cases if c.split != "test")
    # deterministic
    assert plan_cases(DataConfig(size="demo")) == plan_cases(DataConfig(size="demo"))


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="size"):
        plan_cases(DataConfig(size="huge"))
    with pytest.raises(ValueError, match="tool_result_chars"):
        DataConfig(tool_result_chars=-1)


def test_trajectory_is_what_the_llm_analyzer_sees(trajectory: tuple[GroundTruth, Trajectory]) -> None:
    from kat import prompts

    gt, traj = trajectory
    assert traj.category == gt.category
    m = traj.messages
    assert m[0] == {"role": "system", "content": prompts.load("system")}
    assert m[1]["role"] == "user" and "Diagnose this incident" in m[1]["content"]
    assert m[2]["tool_calls"][0]["function"]["name"] == "outpost_detect"
    assert m[-1]["role"] == "assistant" and m[-1]["tool_calls"][0]["function"]["name"] == "submit_diagnosis"
    names = [t["function"]["name"] for t in traj.tools]
    assert names[-1] == "submit_diagnosis" and "metric_lookup" in names
    tool_msgs = [x for x in m if x["role"] == "tool"]
    assert tool_msgs and all(x["content"].startswith("TOOL RESULT ev-") for x in tool_msgs)
    # every tool call has its result, in order
    calls = [c["id"] for x in m if x["role"] == "assistant" for c in x.get("tool_calls", [])][:-1]
    assert calls == [x["tool_call_id"] for x in tool_msgs]


def test_assistant_text_round_trips_through_hermes_parse(tiny_tok: Any, trajectory: tuple[GroundTruth, Trajectory]) -> None:
    _, traj = trajectory
    full, spans = assistant_spans(tiny_tok, traj.messages, traj.tools)
    assistants = [x for x in traj.messages if x["role"] == "assistant"]
    assert len(spans) == len(assistants)
    assert "<tools>" in full and "- submit_diagnosis:" in full and "<tool_response>" in full
    for (a, b), msg in zip(spans, assistants):
        text = full[a:b]
        assert text.endswith("<|im_end|>") and full[:a].endswith("<|im_start|>assistant\n")
        content, calls = parse_tool_calls(text[: -len("<|im_end|>")])
        assert (content or "").strip() == msg["content"].strip()
        assert [(c.name, c.arguments) for c in calls] == [(c["function"]["name"], c["function"]["arguments"]) for c in msg["tool_calls"]]
    # the submitted Diagnosis parses back into the contract
    from kat.agent.diagnosis import Diagnosis

    Diagnosis.model_validate(calls[-1].arguments)


def test_labels_cover_only_assistant_tokens(tiny_tok: Any) -> None:
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "diagnose"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "a", "type": "function", "function": {"name": "outpost_detect", "arguments": {}}}],
        },
        {"role": "tool", "tool_call_id": "a", "content": "TOOL RESULT ev-1 outpost_detect ok"},
        {
            "role": "assistant",
            "content": "done",
            "tool_calls": [{"id": "b", "type": "function", "function": {"name": "submit_diagnosis", "arguments": {"x": 1}}}],
        },
    ]
    s = sft_sample(tiny_tok, msgs, None, 10_000)
    assert len(s.input_ids) == len(s.labels)
    assert tiny_tok.decode(s.input_ids) == render(tiny_tok, msgs)
    trained = tiny_tok.decode([t for t, lab in zip(s.input_ids, s.labels) if lab != IGNORE])
    assert trained == (
        '<tool_call>\n{"name": "outpost_detect", "arguments": {}}\n</tool_call><|im_end|>'
        'done\n<tool_call>\n{"name": "submit_diagnosis", "arguments": {"x": 1}}\n</tool_call><|im_end|>'
    )
    # the prompt before each reply is exactly the generation prompt vLLM renders
    prompt = render(tiny_tok, msgs[:2], add_generation_prompt=True)
    first = next(i for i, lab in enumerate(s.labels) if lab != IGNORE)
    assert tiny_tok.decode(s.input_ids[:first]) == prompt
    # truncation keeps the mask aligned
    cut = sft_sample(tiny_tok, msgs, None, first + 3)
    assert len(cut.input_ids) == first + 3 and sum(lab != IGNORE for lab in cut.labels) == 3


def test_template_accepts_string_arguments_like_vllm_history(tiny_tok: Any) -> None:
    as_dict = [
        {"role": "user", "content": "u"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": {"k": [1, 2]}}}],
        },
    ]
    as_str = json.loads(json.dumps(as_dict))
    as_str[1]["tool_calls"][0]["function"]["arguments"] = json.dumps({"k": [1, 2]})
    assert render(tiny_tok, as_dict) == render(tiny_tok, as_str)


def test_hermes_parse_rejects_what_vllm_rejects() -> None:
    with pytest.raises(ValueError):
        parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {oops}\n</tool_call>')
    content, calls = parse_tool_calls("plain answer")
    assert content == "plain answer" and calls == []
    _, calls = parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {"a": 1}}')  # unclosed: still parsed
    assert calls[0].arguments == {"a": 1}


def test_compact_tool_result_is_what_llm_analyzer_sends(
    trajectory: tuple[GroundTruth, Trajectory], monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_core.messages import ToolMessage

    from kat.agent.backends.llm import compact_messages, compact_tool_result

    art = {"tool": "metric_lookup", "evidence_id": "ev-2", "status": "ok", "summary": "8 series", "data": {"a": "x" * 50}}
    txt = compact_tool_result("full", art, 10)
    assert txt.splitlines()[0] == "TOOL RESULT ev-2 metric_lookup ok" and "more characters" in txt
    assert "<untrusted_data>" not in compact_tool_result("full", art, 0)
    m = ToolMessage(content="full text", tool_call_id="x", artifact=art)
    assert compact_messages([m], None)[0].content == "full text"
    assert compact_messages([m], 0)[0].content == "TOOL RESULT ev-2 metric_lookup ok\nsummary: 8 series"
    assert m.content == "full text"  # a view, the state is untouched


# -- the short playbook (small models) ----------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_tok: Any) -> Any:
    """A real `kat finetune data` run: one category, one case per split (train, validation, test)."""
    from kat.evals.finetune.data import build_data

    tok_dir = tmp_path_factory.mktemp("tok")
    tiny_tok.save_pretrained(str(tok_dir))
    out = tmp_path_factory.mktemp("data") / "d"
    m = build_data(out, DataConfig(size="tiny", categories=["pcie_link_degradation"], jobs=1), tokenizer_path=tok_dir)
    return out, m


@pytest.fixture(scope="module")
def short(built: Any) -> tuple[str, Trajectory]:
    from kat.evals.finetune.data import Trajectory

    out, _ = built
    row = json.loads((out / "sft" / "train.jsonl").read_text().splitlines()[0])
    traj = Trajectory(messages=row["messages"], tools=row["tools"], category=row["category"], diagnosis={}, evidence=[])
    return row["category"], traj


def _turns(traj: Trajectory) -> list[tuple[str, list[tuple[str, dict]]]]:
    return [
        (x.get("content") or "", [(c["function"]["name"], c["function"]["arguments"]) for c in x["tool_calls"]])
        for x in traj.messages
        if x["role"] == "assistant"
    ]


def test_short_trajectory_follows_the_rules_steps(built: Any, short: tuple[str, Trajectory]) -> None:
    from kat import prompts
    from kat.agent.backends.llm import bound_tools
    from kat.agent.diagnosis import Diagnosis
    from kat.evals.finetune import short_playbook as pb
    from kat.tools.context import IncidentContext
    from kat.tools.registry import make_tools

    truth, traj = short
    assert traj.category == truth == "pcie_link_degradation"
    m = traj.messages
    assert m[0] == {"role": "system", "content": prompts.load(pb.SYSTEM_PROMPT)}
    assert "at most 6 Analyzer steps" in m[1]["content"]
    turns = _turns(traj)
    out, manifest = built
    tools = make_tools(IncidentContext(out / manifest.splits["test"].cases[0].bundle))
    # the tools LLMAnalyzer binds under the contract, in the same order
    assert [t["function"]["name"] for t in traj.tools] == [*bound_tools(tools, pb.TOOLS), "submit_diagnosis"]
    # catalogue first, with the detector; then hypotheses -> compares + logs; the leader's card; submit
    assert turns[0][1][0] == ("metric_catalog", {}) and [n for n, _ in turns[0][1]] == ["metric_catalog", "outpost_detect"]
    text2, calls2 = turns[1]
    assert text2.startswith("Hypotheses: ") and "pcie_link_degradation" in text2
    assert {n for n, _ in calls2} == {"metric_compare", "log_search"} and ("metric_compare", {"family": "pcie"}) in calls2
    assert calls2[-1] == ("log_search", {"pattern": pb.LOG_PATTERN})
    assert turns[2][0] == "Leading: pcie_link_degradation." and [n for n, _ in turns[2][1]] == ["knowledge_search"]
    assert len(turns) == 4 and [n for n, _ in turns[3][1]] == ["submit_diagnosis"]
    # every investigation call validates against the tool registry's argument models
    for _, calls in turns[:3]:
        for name, args in calls:
            tools[name].validate(args)
    # the families compared are ones the catalogue listed (its summary is in the first result)
    catalogue = next(x["content"] for x in m if x["role"] == "tool" and " metric_catalog " in x["content"].splitlines()[0])
    assert all(a["family"] in catalogue for n, a in calls2 if n == "metric_compare")
    d = Diagnosis.model_validate(turns[3][1][0][1], context={"draft": True})  # a submission: the graph fills the evidence list
    assert d.root_cause.category == truth and d.root_cause.ranks
    ids = {x["content"].split()[2] for x in m if x["role"] == "tool"}
    assert d.cited_ids() <= ids and all(link.evidence for link in d.causal_chain)
    assert d.causal_chain[0].category == truth  # the link tags the scorer reads are kept


def test_test_split_bundles_are_disjoint_from_train(built: Any) -> None:
    from kat.evals.finetune.data import load_manifest

    out, _ = built
    m = load_manifest(out)
    groups = {s: {(c.task, c.seed) for c in m.splits[s].cases} for s in ("train", "validation", "test")}
    assert groups["test"] and groups["train"] and not groups["test"] & (groups["train"] | groups["validation"])
    rows = [json.loads(x) for x in (out / "sft" / "train.jsonl").read_text().splitlines()]
    test_ids = set()
    for p in m.test_cases(out):
        assert (p / "ground_truth.json").exists() and (p / "incident.json").exists()
        test_ids.add(json.loads((p / "incident.json").read_text())["id"])
    train_ids = {json.loads(r["messages"][1]["content"].split("<untrusted_data>")[1].split("</untrusted_data>")[0])["id"] for r in rows}
    assert train_ids and not train_ids & test_ids
    assert not any(c.bundle for s in ("train", "validation") for c in m.splits[s].cases)


def test_hypotheses_come_from_outposts_components_and_the_cards() -> None:
    from kat.evals.finetune import short_playbook as pb
    from kat.knowledge.cards import CARDS

    comps = pb.outpost_components("suspect ranks 3 (0.9); 5 anomalies (pcie x3, gpu x2)")
    assert comps == ["pcie", "gpu"]
    hyps = pb.hypotheses(comps)
    assert hyps[0] == "pcie_link_degradation" and CARDS["pcie_link_degradation"].lookalikes[0] in hyps
    assert {"gpu_thermal_throttling", "gpu_power_or_clock_cap", "gpu_hardware_error"} <= set(hyps)
    assert pb.hypotheses([]) == [*pb.QUIET_HYPOTHESES, *[h for h in pb.hypotheses([]) if h not in pb.QUIET_HYPOTHESES]]
    fams = pb.families_for(["gpu_thermal_throttling"], ["gpu_temperature", "latency", "power_limit", "disk_io"])
    assert fams == ["gpu_temperature", "power_limit", "latency"]  # supports, refutes, latency; only what the catalogue has


def test_system_small_spells_out_the_playbook() -> None:
    from kat import prompts
    from kat.evals.finetune import short_playbook as pb
    from kat.tools.context import IncidentContext
    from kat.tools.registry import make_tools

    text = prompts.load(pb.SYSTEM_PROMPT)
    assert json.dumps({"pattern": pb.LOG_PATTERN}) in text and json.dumps(dict(pb.FIRST_CALLS)["outpost_detect"]) in text
    offered = set(make_tools(IncidentContext(".")))
    # every tool the prompt names is one the agent offers and the contract binds, and vice versa
    named = {t for t in offered | {"metric_lookup", "trace_slice"} if t in text}
    assert set(pb.TOOLS) <= offered and named == set(pb.TOOLS)
    assert text.index("metric_catalog") < text.index("outpost_detect")


def test_remap_diagnosis_maps_citations_by_tool_and_family() -> None:
    from kat.agent.state import LedgerEntry
    from kat.evals.finetune.short_playbook import remap_diagnosis

    def e(i: str, tool: str, query: str = "{}", status: str = "ok") -> LedgerEntry:
        return LedgerEntry(id=i, tool=tool, query=query, status=status, summary="s", data={})

    full = [
        e("ev-1", "outpost_detect"),
        e("ev-2", "metric_catalog"),
        e("ev-4", "metric_compare", '{"family": "gpu_temperature", "token_budget": 2500}'),
        e("ev-5", "metric_compare", '{"family": "disk_io"}'),
        e("ev-9", "log_search"),
        e("ev-12", "knowledge_search"),
        e("ev-13", "metric_lookup"),
    ]
    short = [
        e("ev-1", "metric_catalog"),
        e("ev-2", "outpost_detect"),
        e("ev-3", "metric_compare", '{"family": "gpu_temperature"}'),
        e("ev-4", "log_search"),
        e("ev-5", "knowledge_search"),
    ]
    diag = {
        "root_cause": {
            "category": "gpu_thermal_throttling",
            "component": "gpu",
            "ranks": [3],
            "hosts": ["h"],
            "summary": "GPU thermal throttling on rank(s) [3] (h): GPU temperature reached 90 C; more",
        },
        "causal_chain": [
            {
                "cause": "hot: temp 90 C; throttle bit set",
                "effect": "slow kernels",
                "evidence": ["ev-4", "ev-5", "ev-9", "ev-12"],
                "category": "gpu_thermal_throttling",
            },
            {"cause": "slow kernels", "effect": "peers wait", "evidence": ["ev-13", "ev-5"]},
        ],
        "confidence": 0.9,
        "alternatives_ruled_out": [{"category": "none", "why": "x"}],
        "remediation": ["cool it"],
    }
    out = remap_diagnosis(diag, full, short)
    # free text keeps the words that name the finding, not its figures; ids map by tool and family
    assert out["causal_chain"][0] == {
        "cause": "hot",
        "effect": "slow kernels",
        "evidence": ["ev-3", "ev-4", "ev-5"],
        "category": "gpu_thermal_throttling",
    }
    assert out["causal_chain"][1]["evidence"] == ["ev-2"]  # no counterpart (lookup, an uncompared family): the detector
    assert out["root_cause"] == {"category": "gpu_thermal_throttling", "ranks": [3], "summary": "GPU thermal throttling on rank(s) [3]"}
    assert list(out["root_cause"]) == ["summary", "category", "ranks"]  # closes on a list, like every link
    assert not {"evidence", "alternatives_ruled_out", "remediation"} & set(out)
    assert out["confidence"] == 0.9
    # Outpost found nothing: a link without a counterpart cites the catalogue instead
    quiet = [short[0], e("ev-2", "outpost_detect", status="no_data"), *short[2:]]
    assert remap_diagnosis(diag, full, quiet)["causal_chain"][1]["evidence"] == ["ev-1"]
    # a failed call is never cited
    assert remap_diagnosis(diag, full, [*short[:2], e("ev-3", "metric_compare", '{"family": "gpu_temperature"}', "no_data")])[
        "causal_chain"
    ][0]["evidence"] == ["ev-2"]


def test_short_data_env_and_template(tiny_tok: Any, short: tuple[str, Trajectory]) -> None:
    from kat.evals.finetune.chat_format import SMALL_TEMPLATE_PATH, TEMPLATE_PATH, load_template
    from kat.evals.finetune.data import DataConfig, serve_env

    assert serve_env(DataConfig(trajectory="short", tool_result_chars=160)) == {
        "KAT_TOOL_RESULT_CHARS": "160",
        "KAT_SYSTEM_PROMPT": "system_small",
        "KAT_ANALYZER_TOOLS": "metric_catalog,outpost_detect,metric_compare,log_search,knowledge_search",
    }
    assert serve_env(DataConfig(trajectory="full", tool_result_chars=0)) == {"KAT_TOOL_RESULT_CHARS": "0"}
    _, traj = short
    small = render(tiny_tok, traj.messages, traj.tools, template=load_template(SMALL_TEMPLATE_PATH))
    std = render(tiny_tok, traj.messages, traj.tools, template=load_template(TEMPLATE_PATH))
    assert len(small) < len(std) and small.split("<tools>")[2].split("</tools>")[0].count("\n- ") == 6
    # same turns: everything after the tool list renders identically
    assert small.rsplit("</tools>", 1)[1] == std.rsplit("</tools>", 1)[1]


def test_llm_analyzer_takes_prompt_and_tools_from_env(monkeypatch: pytest.MonkeyPatch, short: tuple[str, Trajectory]) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    from kat.agent.backends.llm import LLMAnalyzer

    class M(GenericFakeChatModel):
        def bind_tools(self, tools: list[Any], **kw: Any) -> M:
            self.__dict__["bound_names"] = [t.name for t in tools]
            return self

    tools = {n: object() for n in ("outpost_detect", "metric_lookup", "log_search", "trace_slice")}

    class T:
        def __init__(self, n: str) -> None:
            self.n = n

        def as_langchain(self) -> StructuredTool:
            from langchain_core.tools import StructuredTool

            return StructuredTool.from_function(func=lambda: "", name=self.n, description=self.n)

    tools = {n: T(n) for n in tools}
    m = M(messages=iter([]))
    a = LLMAnalyzer(m, tools)
    assert a.system_prompt == "system" and m.bound_names[-1] == "submit_diagnosis" and len(m.bound_names) == 5
    monkeypatch.setenv("KAT_SYSTEM_PROMPT", "system_small")
    monkeypatch.setenv("KAT_ANALYZER_TOOLS", "outpost_detect,log_search")
    a = LLMAnalyzer(m, tools)
    assert a.system_prompt == "system_small" and m.bound_names == ["outpost_detect", "log_search", "submit_diagnosis"]
    monkeypatch.setenv("KAT_ANALYZER_TOOLS", "outpost_detect,nope")
    with pytest.raises(ValueError, match="nope"):
        LLMAnalyzer(m, tools)
