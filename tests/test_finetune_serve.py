"""Serving and comparison plumbing without vLLM: command lines, the server's process lifecycle
(a fake `vllm` that speaks the OpenAI API), the valid tool-call rate, and the comparison table."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import BaseModel

from kat.evals.finetune.serve import LAUNCHER, ServeError, ServeSpec, VLLMServer, command, environment
from kat.evals.harness.toolcalls import text_calls, tool_call_stats

DEMO_SUITE = Path(__file__).resolve().parent.parent / "evals" / "suites" / "demo"

# A stand-in for .venv-vllm/bin/python: started as `python LAUNCHER serve MODEL --port P ...`, it serves
# /v1/models and scripted chat completions (a call left in text, a valid call, then the diagnosis).
FAKE_VLLM = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    argv = sys.argv[1:]
    if os.environ.get("FAKE_VLLM_DIE"):
        print("fake vllm: boom, cannot load the model", flush=True)
        sys.exit(3)
    port = int(argv[argv.index("--port") + 1])
    name = argv[argv.index("--served-model-name") + 1]
    loras = [argv[argv.index("--lora-modules") + 1].split("=")[0]] if "--lora-modules" in argv else []
    n = {{}}
    def reply(body):
        n[body["model"]] = n.get(body["model"], 0) + 1
        print("request", body["model"], body["messages"][0]["content"][:40], [t["function"]["name"] for t in body.get("tools", [])],
              flush=True)
        if body["model"].endswith("-base"):  # the untuned base: talks, never calls a tool
            return {{"role": "assistant", "content": "The incident looks like a slow GPU."}}
        tools = sum(m["role"] == "tool" for m in body["messages"])
        if n[body["model"]] == 1:
            return {{"role": "assistant", "content": '<tool_call>{{"name": "metric_lookup", "arguments": {{"name": }}</tool_call>'}}
        if tools == 0:
            return {{"role": "assistant", "content": None, "tool_calls": [{{"id": "c1", "type": "function",
                    "function": {{"name": "log_search", "arguments": json.dumps({{"query": "pause"}})}}}}]}}
        args = {{"root_cause": {{"category": "runtime_stall", "component": "software", "ranks": [1], "summary": "GC pauses"}},
                "causal_chain": [{{"cause": "GC pauses in rank 1", "effect": "steps start late", "evidence": ["ev-1"]}}],
                "evidence": [{{"id": "ev-1"}}], "confidence": 0.6}}
        return {{"role": "assistant", "content": None, "tool_calls": [{{"id": "c2", "type": "function",
                "function": {{"name": "submit_diagnosis", "arguments": json.dumps(args)}}}}]}}
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def _send(self, obj):
            data = json.dumps(obj).encode()
            self.send_response(200); self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
        def do_GET(self):
            self._send({{"object": "list", "data": [{{"id": x, "object": "model"}} for x in [name, *loras]]}})
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            m = reply(body)
            self._send({{"id": "x", "object": "chat.completion", "created": 0, "model": name,
                        "choices": [{{"index": 0, "message": m, "finish_reason": "stop"}}],
                        "usage": {{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}}})
    print("fake vllm: serving", name, "on", port, flush=True)
    HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


@pytest.fixture
def fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv-vllm"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(FAKE_VLLM.format(python=sys.executable))
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    return venv


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text("{}")
    return m


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- command line ------------------------------------------------------------------------------


def test_cpu_command_merged_model(fake_venv: Path, model_dir: Path) -> None:
    spec = ServeSpec(model=model_dir, venv=fake_venv, port=8123, max_tokens=512)
    argv = command(spec)
    assert argv[:3] == [str(fake_venv / "bin" / "python"), str(LAUNCHER), "serve"] and argv[3] == str(model_dir)
    joined = " ".join(argv)
    for flag in (
        "--enable-auto-tool-choice",
        "--tool-call-parser hermes",
        "--served-model-name kat-analyzer",
        "--max-model-len 8192",
        "--dtype float32",
        "--port 8123",
        "--enforce-eager",
        "analyzer_chat_template.jinja",
    ):
        assert flag in joined
    assert json.loads(argv[argv.index("--override-generation-config") + 1]) == {"max_new_tokens": 512}
    assert "--enable-lora" not in argv
    env = environment(spec, base={"VIRTUAL_ENV": "/x", "PATH": "/bin"})
    assert env["VLLM_TARGET_DEVICE"] == "cpu" and env["VLLM_CPU_KVCACHE_SPACE"] == "2" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind" and "VIRTUAL_ENV" not in env
    # the model runs inside the engine-core process: no busy-waiting worker hand-off
    assert argv[argv.index("--distributed-executor-backend") + 1] == "uni" and env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    split = ServeSpec(model=model_dir, venv=fake_venv, in_process_worker=False)
    assert "--distributed-executor-backend" not in command(split)
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in environment(split, base={})


def test_lora_command_and_gpu_command(fake_venv: Path, model_dir: Path, tmp_path: Path) -> None:
    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"r": 12}))
    argv = command(ServeSpec(model=model_dir, adapter=ad, venv=fake_venv, threads=2))
    assert argv[argv.index("--lora-modules") + 1] == f"kat-analyzer={ad}"
    assert argv[argv.index("--max-lora-rank") + 1] == "16"  # vLLM accepts 8, 16, ...: the next one up
    assert argv[argv.index("--served-model-name") + 1] == "kat-analyzer-base"
    env = environment(ServeSpec(model=model_dir, venv=fake_venv, threads=2), base={})
    assert env["OMP_NUM_THREADS"] == "2" and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    gpu = command(
        ServeSpec(
            model="Qwen/Qwen2.5-14B-Instruct", device="gpu", dtype="bfloat16", venv=tmp_path / "none", enforce_eager=False, max_tokens=None
        )
    )
    assert gpu[:2] == ["vllm", "serve"] and "--enforce-eager" not in gpu and "--override-generation-config" not in gpu
    assert "--distributed-executor-backend" not in gpu  # GPU: vLLM's own executor choice
    with pytest.raises(ServeError, match="adapter_config.json"):
        command(ServeSpec(model=model_dir, adapter=tmp_path, venv=fake_venv))


def test_missing_venv_is_a_clear_error(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ServeError, match="make vllm-venv"):
        command(ServeSpec(model=model_dir, venv=tmp_path / "nope"))


# -- process lifecycle -------------------------------------------------------------------------


def test_server_starts_answers_and_stops_its_process_group(fake_venv: Path, model_dir: Path, tmp_path: Path) -> None:
    spec = ServeSpec(model=model_dir, venv=fake_venv, port=_free_port())
    log = tmp_path / "logs" / "serve.log"
    with VLLMServer(spec, log, ready_timeout=30) as srv:
        assert srv.ready_s is not None and srv.alive()
        pgid = os.getpgid(srv.proc.pid)
        assert pgid != os.getpgid(0)  # its own group: stopping it never touches ours
    assert not srv.alive()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert "fake vllm: serving kat-analyzer" in log.read_text()


def test_server_that_dies_reports_the_log_tail(fake_venv: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_DIE", "1")
    srv = VLLMServer(ServeSpec(model=model_dir, venv=fake_venv, port=_free_port()), tmp_path / "s.log", ready_timeout=30)
    t0 = time.monotonic()
    with pytest.raises(ServeError, match="(?s)exited with code 3.*boom"):
        with srv:
            pass
    assert time.monotonic() - t0 < 20


# -- valid tool-call rate ----------------------------------------------------------------------


class _Args(BaseModel):
    name: str


def test_tool_call_stats_counts_every_kind_of_attempt() -> None:
    schemas = {"metric_lookup": _Args}
    msgs = [
        HumanMessage(content="incident"),
        AIMessage(
            content="",
            tool_calls=[
                {"name": "metric_lookup", "args": {"name": "x"}, "id": "1"},  # valid
                {"name": "metric_lookup", "args": {"nme": "x"}, "id": "2"},  # bad args
                {"name": "nope", "args": {}, "id": "3"},
            ],
        ),  # unknown tool
        AIMessage(content="", invalid_tool_calls=[{"name": "metric_lookup", "args": "{bad", "id": "4", "error": "json"}]),
        AIMessage(content='<tool_call>{"name": "metric_lookup", "arguments": {</tool_call> <tool_call>x</tool_call>'),
        AIMessage(content="I would call metric_lookup(name='x') now"),  # in text, no tag
        AIMessage(content="The GPU is hot."),  # no attempt
        AIMessage(content="(Analyzer model error: APITimeoutError: timed out)"),  # not a reply
        AIMessage(content="Partial answer: step budget exhausted."),  # not a reply
    ]
    st = tool_call_stats(msgs, schemas)
    assert (st.attempted, st.valid) == (8, 1)  # 7 calls + the reply that made none
    assert (st.parsed, st.unparsed, st.in_text, st.unknown_tool, st.bad_args) == (3, 1, 3, 1, 1)
    assert (st.replies, st.no_call_replies) == (5, 1) and st.rate == round(1 / 8, 4)
    prose = tool_call_stats([AIMessage(content="hello"), AIMessage(content="the GPU")], schemas)
    assert (prose.attempted, prose.valid, prose.rate) == (2, 0, 0.0)  # prose only: 0, not undefined
    assert tool_call_stats([HumanMessage(content="incident")], schemas).rate is None  # no reply at all
    assert text_calls('{"name": "submit_diagnosis", "arguments": {}}', {"submit_diagnosis"}) == 1


def test_submit_diagnosis_is_validated_against_the_diagnosis_schema() -> None:
    from tests.agent_fakes import diagnosis_args

    good = AIMessage(content="", tool_calls=[{"name": "submit_diagnosis", "args": diagnosis_args(["ev-1"]), "id": "1"}])
    bad = AIMessage(content="", tool_calls=[{"name": "submit_diagnosis", "args": {"root_cause": "gpu"}, "id": "2"}])
    st = tool_call_stats([good, bad], {})
    assert (st.attempted, st.valid, st.bad_args) == (2, 1, 1)


# -- the comparison, end to end against the fake server ----------------------------------------


def test_compare_rules_and_a_served_model(fake_venv: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kat.evals.finetune.compare import ModelUnderTest, run_compare

    for k in ("KAT_TOOL_RESULT_CHARS", "KAT_SYSTEM_PROMPT", "KAT_ANALYZER_TOOLS"):
        monkeypatch.setenv(k, "")  # run_compare sets them for its agents; restored after this test
    cases_root = tmp_path / "test"
    shutil.copytree(DEMO_SUITE / "runtime_stall", cases_root / "runtime_stall")
    cases = [("runtime_stall", cases_root / "runtime_stall")]
    spec = ServeSpec(model=model_dir, venv=fake_venv, port=_free_port(), served_name="kat-analyzer")
    lines: list[str] = []
    rep = run_compare(
        tmp_path / "out", cases, [ModelUnderTest("tuned", spec)], max_steps=6, time_budget_s=60, tool_result_chars=160, say=lines.append
    )
    rules, tuned = rep.rows
    assert (rules.variant, rules.n, rules.errors, rules.valid_call_rate) == ("rules", 1, 0, 1.0)
    assert (tuned.variant, tuned.n, tuned.errors) == ("tuned", 1, 0)
    # one call left in text (not parsed), then log_search and submit_diagnosis: 2 of 3 valid
    assert (tuned.calls_valid, tuned.calls_attempted, tuned.valid_call_rate) == (2, 3, 0.6667)
    assert tuned.top1 == 1.0 and tuned.steps_mean == 3 and tuned.server_start_s is not None
    assert tuned.chain_f1 is not None and tuned.tokens_out == 15
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| variant | n | valid tool calls | root-cause top-1 | chain link F1 | faithfulness |" in md
    assert "| tuned | 1 | 0.667 (2/3) | 1.000 |" in md
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert [r["variant"] for r in data["rows"]] == ["rules", "tuned"] and data["settings"]["tool_result_chars"] == 160
    run = json.loads((tmp_path / "out" / "runs" / "tuned" / "runtime_stall" / "r0.json").read_text())
    assert run["trajectory"]["tool_call_detail"]["in_text"] == 1
    assert (tmp_path / "out" / "report.md").exists() and (tmp_path / "out" / "logs" / "vllm-tuned.log").exists()
    assert os.environ.get("KAT_TOOL_RESULT_CHARS") == "160"


def test_compare_serves_base_and_adapter_from_one_server(
    fake_venv: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kat.evals.finetune.compare import ModelUnderTest, run_compare

    for k in ("KAT_TOOL_RESULT_CHARS", "KAT_SYSTEM_PROMPT", "KAT_ANALYZER_TOOLS"):
        monkeypatch.setenv(k, "")  # empty = unset for LLMAnalyzer; restored after the test (run_compare sets them)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16}))
    cases = [("runtime_stall", DEMO_SUITE / "runtime_stall")]
    server = ServeSpec(model=model_dir, adapter=adapter, venv=fake_venv, port=_free_port(), served_name="kat-analyzer")
    models = [
        ModelUnderTest("base", ServeSpec(model=model_dir, served_name="kat-analyzer-base")),
        ModelUnderTest("tuned", ServeSpec(model=model_dir, adapter=adapter, served_name="kat-analyzer")),
    ]
    env = {
        "KAT_TOOL_RESULT_CHARS": "300",
        "KAT_SYSTEM_PROMPT": "system_small",
        "KAT_ANALYZER_TOOLS": "outpost_detect,metric_lookup,log_search",
    }
    lines: list[str] = []
    rep = run_compare(
        tmp_path / "out", cases, models, rules=False, max_steps=6, time_budget_s=60, agent_env=env, server=server, jobs=2, say=lines.append
    )
    base, tuned = rep.rows
    # the fake base only writes prose: 3 replies (nudged twice, then given up), each a failed call;
    # no chain and no submission give F1 0 and faithfulness 0 rather than undefined figures
    assert (base.variant, base.calls_attempted, base.valid_call_rate, base.top1) == ("base", 3, 0.0, 0.0)
    assert (base.chain_f1, base.faithfulness) == (0.0, 0.0)
    assert tuned.faithfulness is not None and tuned.faithfulness > 0
    assert (tuned.variant, tuned.calls_valid, tuned.calls_attempted, tuned.top1) == ("tuned", 2, 3, 1.0)
    assert base.server_start_s == tuned.server_start_s is not None  # one server, started once
    log = (tmp_path / "out" / "logs" / "vllm.log").read_text()
    assert log.count("=== ") == 1 and "--lora-modules kat-analyzer=" in log
    # both models got the short playbook's system prompt and only its tools
    assert "request kat-analyzer-base You are KAT's Analyzer for large-model" in log
    assert "['outpost_detect', 'metric_lookup', 'log_search', 'submit_diagnosis']" in log
    assert rep.settings["one_server"] and rep.settings["agent_env"] == env


def test_compare_reports_a_model_that_cannot_be_served(
    fake_venv: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kat.evals.finetune.compare import ModelUnderTest, run_compare

    monkeypatch.setenv("FAKE_VLLM_DIE", "1")
    monkeypatch.delenv("KAT_TOOL_RESULT_CHARS", raising=False)
    cases = [("runtime_stall", DEMO_SUITE / "runtime_stall")]
    spec = ServeSpec(model=model_dir, venv=fake_venv, port=_free_port())
    rep = run_compare(tmp_path / "out", cases, [ModelUnderTest("base", spec)], rules=False, say=lambda s: None)
    assert rep.rows[0].skipped and "exited with code 3" in rep.rows[0].skipped
    assert "| base | - |" in (tmp_path / "out" / "compare.md").read_text()


def test_compare_resume_reuses_finished_runs_without_a_server(
    fake_venv: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kat.evals.finetune.compare import ModelUnderTest, run_compare

    cases = [("runtime_stall", DEMO_SUITE / "runtime_stall")]
    spec = ServeSpec(model=model_dir, venv=fake_venv, port=_free_port())
    first = run_compare(tmp_path / "out", cases, [ModelUnderTest("base", spec)], rules=False, say=lambda s: None)
    monkeypatch.setenv("FAKE_VLLM_DIE", "1")  # a second server start would fail
    lines: list[str] = []
    again = run_compare(tmp_path / "out", cases, [ModelUnderTest("base", spec)], rules=False, resume=True, say=lines.append)
    assert again.rows[0].skipped is None and again.rows[0].top1 == first.rows[0].top1
    assert any("not serving" in s for s in lines)


def test_compare_parallel_servers_one_per_model(fake_venv: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kat.evals.finetune.compare import ModelUnderTest, run_compare

    monkeypatch.setenv("KAT_TOOL_RESULT_CHARS", "")
    cases = [("runtime_stall", DEMO_SUITE / "runtime_stall")]
    p1, p2 = _free_port(), _free_port()
    models = [
        ModelUnderTest("base", ServeSpec(model=model_dir, venv=fake_venv, port=p1, served_name="kat-analyzer-base")),
        ModelUnderTest("tuned", ServeSpec(model=model_dir, venv=fake_venv, port=p2, served_name="kat-analyzer")),
    ]
    rep = run_compare(
        tmp_path / "out", cases, models, rules=False, max_steps=6, time_budget_s=60, jobs=2, parallel=True, say=lambda s: None
    )
    base, tuned = rep.rows
    assert (base.calls_attempted, base.top1, tuned.top1) == (3, 0.0, 1.0)
    assert base.server_start_s is not None and tuned.server_start_s is not None and rep.settings["parallel_servers"]
    logs = tmp_path / "out" / "logs"
    assert "kat-analyzer-base" in (logs / "vllm-base.log").read_text() and (logs / "vllm-tuned.log").exists()
    with pytest.raises(ValueError, match="one port per model"):
        run_compare(
            tmp_path / "o2", cases, [models[0], ModelUnderTest("t", models[0].spec)], rules=False, parallel=True, say=lambda s: None
        )


def test_compare_scores_only_the_chain_the_model_submitted() -> None:
    from kat.evals.finetune.compare import _f1, faithfulness_per_case, model_chain
    from kat.evals.harness.models import CaseRun, CaseScores, Trajectory

    def run(category: str, links: int, faithful: int, matched: int = 0, status: str = "complete", error: bool = False) -> CaseRun:
        sc = CaseScores(
            truth=category,
            predicted=category,
            ranked=[category],
            top1=True,
            top3=True,
            component_ok=True,
            is_control=category == "none",
            ranks_truth=[],
            ranks_predicted=[],
            ranks_exact=True,
            chain_predicted=links,
            chain_truth=0 if category == "none" else 2,
            chain_matched=matched,
            faithful_links=faithful,
            passed=True,
        )
        return CaseRun(
            case=category,
            variant="tuned",
            category=category,
            scores=None if error else sc,
            trajectory=Trajectory(status=status),
            error="boom" if error else None,
        )

    runs = [
        run("gpu_thermal", 2, 2, matched=2),
        run("nvlink_degradation", 0, 0),
        run("network_congestion", 4, 1, matched=1),
        run("none", 0, 0),
        run("kv_cache_full", 3, 3, error=True),
        run("runtime_stall", 1, 1, matched=1, status="partial"),
    ]  # the graph's fallback chain, not the model's
    # fault cases: 1.0, 0 (no chain), 0.25, 0 (an error), 0 (partial answer); the control is no fault case
    assert faithfulness_per_case(runs) == round(1.25 / 5, 4)
    assert faithfulness_per_case([run("none", 0, 0)]) is None
    # own links: 2 + 4 predicted, 2 + 1 matched; truth links: 2 per scored fault case (4: an error has no scores)
    assert model_chain(runs) == (0.5, round(3 / 8, 4))
    assert model_chain([run("runtime_stall", 1, 1, matched=1, status="partial")]) == (None, 0.0)
    assert (_f1(None, 0.0), _f1(None, None), _f1(0.5, 0.5)) == (0.0, None, 0.5)


def test_compare_table_prints_seconds_as_seconds_and_rates_as_rates() -> None:
    from kat.evals.finetune.compare import CompareRow, markdown_table

    row = CompareRow(
        variant="rules",
        analyzer="rules",
        n=13,
        valid_call_rate=1.0,
        calls_attempted=9,
        calls_valid=9,
        top1=0.3077,
        chain_f1=0.0,
        faithfulness=0.9091,
        steps_mean=1.0,
        wall_mean_s=0.9,
        wall_total_s=11.3,
    )
    assert markdown_table([row])[2] == "| rules | 13 | 1.000 (9/9) | 0.308 | 0.000 | 0.909 | 1.0 | 0.9 | 11.3 |"
