"""`kat eval`: the smoke suite end to end (CI budget), resume, ablations, repeats, stability."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kat.evals.cli.eval import register
from kat.evals.harness.aggregate import stability_of, summarize
from kat.evals.harness.models import CaseRun, CaseScores

DEMO = Path(__file__).resolve().parent.parent / "evals" / "suites" / "demo"


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def _root() -> None:  # keeps `eval` a sub-command, as under `kat`
        pass

    register(a)
    return a


def test_smoke_suite_end_to_end(app: typer.Typer, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["eval", "smoke", "--out", str(tmp_path)])
    first = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    assert first < 120, f"kat eval smoke took {first:.0f} s (CI budget 120 s)"
    assert (tmp_path / "cases" / "smoke" / ".kat-eval-generated").exists()
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["cases"] == 13 and len(rep["runs"]) == 13
    overall = rep["summaries"][0]["overall"]
    assert overall["errors"] == 0
    assert overall["top1"] >= 0.75 and overall["faithfulness"] >= 0.75  # tolerant to playbook tuning
    md = (tmp_path / "report.md").read_text()
    assert "## Headline" in md and "| variant | runs | top-1" in md
    for png in ("latency.png", "confusion-rules.png", "class-pr-rules.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Resumable: a rerun reads every finished case instead of running it again.
    t1 = time.perf_counter()
    res2 = CliRunner().invoke(app, ["eval", "smoke", "--out", str(tmp_path), "--json"])
    assert res2.exit_code == 0, res2.output
    assert time.perf_counter() - t1 < first / 2
    assert "(cached)" in res2.output
    assert json.loads(res2.stdout)["summaries"][0]["overall"]["runs"] == 13


def test_directory_ablations_repeats_and_answer_file(app: typer.Typer, tmp_path: Path) -> None:
    cases = tmp_path / "bundles"
    shutil.copytree(DEMO / "runtime_stall", cases / "runtime_stall")
    (cases / "runtime_stall" / "answer.yaml").write_text("required_evidence: [log_search]\nforbidden_causes: [host_cpu_contention]\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["eval", str(cases), "--out", str(out), "--repeats", "2", "--ablation", "no-outpost"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    names = [s["variant"] for s in rep["summaries"]]
    assert names == ["rules", "rules-no-outpost"]
    assert len(rep["runs"]) == 4
    for s in rep["summaries"]:  # rules is deterministic: both repeats agree
        assert sum(s["stability_counts"].values()) == 1
        assert s["stability_counts"]["flaky-pass"] == s["stability_counts"]["flaky-fail"] == 0
    ablated = next(r for r in rep["runs"] if r["variant"] == "rules-no-outpost")
    assert ablated["trajectory"]["tool_calls_by_name"].get("outpost_detect", 0) >= 1  # the stub answered
    base = next(r for r in rep["runs"] if r["variant"] == "rules")
    assert base["scores"]["answer"]["required_evidence"] == ["log_search"]
    assert "## Ablations: top-1 per category" in (out / "report.md").read_text()


def test_unknown_suite_and_ablation(app: typer.Typer, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["eval", "no-such-suite", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown suite" in r.output
    r = CliRunner().invoke(app, ["eval", str(DEMO), "--out", str(tmp_path), "--ablation", "no-gpu"])
    assert r.exit_code == 2 and "unknown ablation" in r.output


def _run(case: str, passed: bool, predicted: str = "none", variant: str = "v") -> CaseRun:
    sc = CaseScores(
        truth="none",
        predicted=predicted,
        ranked=[predicted],
        top1=predicted == "none",
        top3=True,
        component_ok=True,
        is_control=True,
        control_ok=passed,
        ranks_truth=[],
        ranks_predicted=[],
        ranks_exact=True,
        passed=passed,
    )
    return CaseRun(case=case, variant=variant, category="none", scores=sc)


def test_stability_classes_and_confusion() -> None:
    assert [stability_of(p) for p in ([True] * 3, [True, True, False], [True, False, False], [False] * 3, [True, False])] == [
        "stable-pass",
        "flaky-pass",
        "flaky-fail",
        "stable-fail",
        "flaky-fail",
    ]
    runs = [
        _run("a", True),
        _run("a", True),
        _run("b", True),
        _run("b", False, "runtime_stall"),
        CaseRun(case="c", variant="v", category="none", error="boom"),
    ]
    s = summarize("v", runs)
    assert s.stability == {"a": "stable-pass", "b": "flaky-fail", "c": "stable-fail"}
    assert s.confusion["none"] == {"none": 3, "runtime_stall": 1, "error": 1}
    assert s.overall.runs == 5 and s.overall.errors == 1 and s.overall.top1 == 0.6
    assert s.class_pr["none"].recall == 0.6 and s.class_pr["runtime_stall"].precision == 0.0


def test_llm_backend_and_ablation_over_http(app: typer.Typer, tmp_path: Path) -> None:
    """An OpenAI-compatible server (scripted): tokens are counted; no-outpost unbinds the tool."""
    from tests.agent_fakes import ScriptedOpenAIServer, openai_tool_call

    def reply(body: dict) -> dict:
        if not any(m["role"] == "tool" for m in body["messages"]):
            return openai_tool_call("metric_lookup", {"name": "DCGM_FI_DEV_GPU_TEMP"}, 1)
        args = {
            "root_cause": {"category": "runtime_stall", "component": "software", "ranks": [1], "summary": "GC pauses"},
            "causal_chain": [{"cause": "GC pauses in rank 1", "effect": "steps start late", "evidence": ["ev-1"]}],
            "evidence": [{"id": "ev-1"}],
            "confidence": 0.6,
        }
        return openai_tool_call("submit_diagnosis", args, 2)

    cases = tmp_path / "bundles"
    shutil.copytree(DEMO / "runtime_stall", cases / "runtime_stall")
    with ScriptedOpenAIServer([reply]) as srv:
        res = CliRunner().invoke(
            app,
            [
                "eval",
                str(cases),
                "--out",
                str(tmp_path / "out"),
                "--analyzer",
                "openai",
                "--base-url",
                srv.base_url,
                "--model",
                "m",
                "--ablation",
                "no-outpost",
            ],
        )
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [s["variant"] for s in rep["summaries"]] == ["openai-m", "openai-m-no-outpost"]
    for r in rep["runs"]:
        assert r["scores"]["top1"] and r["trajectory"]["tokens_in"] == 2 and r["trajectory"]["steps"] == 2
        # ev-1 is a GPU temperature metric: it cannot back a GC-pause (software) link.
        assert r["scores"]["faithfulness"] == 0.0
    tool_sets = [{t["function"]["name"] for t in q["tools"]} for q in srv.requests]
    assert sum("outpost_detect" in t for t in tool_sets) == 2 and sum("outpost_detect" not in t for t in tool_sets) == 2
