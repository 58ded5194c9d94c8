"""`kat finetune serve` and `kat finetune compare` (added to the `finetune` app by evals/cli/finetune.py)."""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kat.evals.finetune.serve import CHAT_TEMPLATE, DEFAULT_VENV, SERVED_NAME, ServeError, ServeSpec, VLLMServer, command

if TYPE_CHECKING:
    from kat.evals.finetune.compare import CompareReport, ModelUnderTest


def _spec(
    model: Path,
    adapter: Path | None,
    name: str,
    host: str,
    port: int,
    max_model_len: int,
    dtype: str,
    max_tokens: int,
    threads: int | None,
    kv_cache_gb: int,
    eager: bool,
    device: str,
    venv: Path,
    template: Path | None,
) -> ServeSpec:
    return ServeSpec(
        model=model,
        adapter=adapter,
        served_name=name,
        host=host,
        port=port,
        max_model_len=max_model_len,
        dtype=dtype,
        max_tokens=max_tokens or None,
        threads=threads or None,
        kv_cache_gb=kv_cache_gb,
        enforce_eager=eager,
        device=device,
        venv=venv,
        chat_template=CHAT_TEMPLATE if template is None else template,
    )


def probe(base_url: str, model: str, max_tokens: int = 128) -> dict:
    """One chat request with a tool: whether a tool call came back, output tokens and their rate."""
    import urllib.request

    body = {
        "model": model,
        "temperature": 0,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Look up the GPU temperature metric of rank 3."}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "metric_lookup",
                    "description": "Read one metric series",
                    "parameters": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "rank": {"type": "integer"}},
                        "required": ["name"],
                    },
                },
            }
        ],
    }
    req = urllib.request.Request(
        base_url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=600) as r:  # noqa: S310 - the local server we started
        res = json.loads(r.read())
    dt = time.monotonic() - t0
    msg = res["choices"][0]["message"]
    n = int(res.get("usage", {}).get("completion_tokens") or 0)
    return {
        "seconds": round(dt, 2),
        "completion_tokens": n,
        "tokens_per_s": round(n / dt, 2) if dt else None,
        "prompt_tokens": res.get("usage", {}).get("prompt_tokens"),
        "tool_calls": msg.get("tool_calls") or [],
        "content": (msg.get("content") or "")[:300],
    }


def serve(
    model: Path = typer.Argument(..., help="HF model folder: the merged tuned model, or the base with --adapter"),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter folder: serve MODEL + --enable-lora"),
    name: str = typer.Option(SERVED_NAME, "--name", help="served model name (the openai backend's --model)"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    max_model_len: int = typer.Option(8192, "--max-model-len", help="context length (SmolLM2: 8192)"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 (CPU: float32 was faster here)"),
    max_tokens: int = typer.Option(2048, "--max-tokens", help="server default cap on tokens per reply (0: none)"),
    threads: int = typer.Option(1, "--threads", help="OMP threads for the model (1: best on a busy 2-core machine; 0: vLLM decides)"),
    kv_cache_gb: int = typer.Option(2, "--kv-cache-gb", help="VLLM_CPU_KVCACHE_SPACE (GiB)"),
    eager: bool = typer.Option(True, "--eager/--compile", help="skip torch.compile (CPU start-up 1 min instead of 4-6)"),
    device: str = typer.Option("cpu", "--device", help="cpu (vllm-cpu in --venv, via scripts/vllm_cpu_serve.py) | gpu (`vllm serve`)"),
    venv: Path = typer.Option(DEFAULT_VENV, "--venv", help="virtualenv holding vLLM"),
    template: Path | None = typer.Option(None, "--chat-template", help="default: prompts/analyzer_chat_template.jinja"),
    log: Path = typer.Option(Path("reports/finetune/vllm-serve.log"), "--log", help="server log file"),
    timeout: float = typer.Option(900.0, "--timeout", help="seconds to wait for /v1/models"),
    check: bool = typer.Option(False, "--check", help="start, send one tool-calling request, print timings, stop"),
    print_command: bool = typer.Option(False, "--print-command", help="print the command and environment, do not start"),
) -> None:
    """Serve a model with vLLM (tool calling on, our chat template) until Ctrl-C; or --check it once."""
    spec = _spec(model, adapter, name, host, port, max_model_len, dtype, max_tokens, threads, kv_cache_gb, eager, device, venv, template)
    try:
        argv = command(spec)
    except ServeError as exc:
        typer.echo(f"kat finetune serve: {exc}", err=True)
        raise typer.Exit(2) from None
    if print_command:
        from kat.evals.finetune.serve import environment

        env = environment(spec, base={})
        typer.echo(" ".join(f"{k}={v}" for k, v in sorted(env.items())) + " \\\n  " + shlex.join(argv))
        return
    srv = VLLMServer(spec, log, ready_timeout=timeout)
    typer.echo(f"starting vLLM ({spec.device}) for {model}{' + ' + str(adapter) if adapter else ''}; log: {log}", err=True)
    try:
        srv.start()
        ready = srv.wait_ready()
    except ServeError as exc:
        srv.stop()
        typer.echo(f"kat finetune serve: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        srv.stop()
        raise typer.Exit(130) from None
    typer.echo(f"ready in {ready:.0f} s: {srv.base_url} model {name}", err=True)
    typer.echo(
        f"point KAT at it:  KAT_OPENAI_BASE_URL={srv.base_url} KAT_OPENAI_MODEL={name} kat diagnose BUNDLE --analyzer openai", err=True
    )
    if check:
        try:
            res = probe(srv.base_url, name)
        finally:
            srv.stop()
        typer.echo(json.dumps({"ready_s": ready, **res}, indent=1))
        return
    _serve_until_stopped(srv, log)


def _serve_until_stopped(srv: VLLMServer, log: Path) -> None:
    """Keep the server up until Ctrl-C or SIGTERM; a server that dies on its own is an error."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while srv.alive():
            time.sleep(1.0)
        from kat.evals.finetune.serve import log_tail

        rc = srv.proc.returncode if srv.proc is not None else None
        typer.echo(f"kat finetune serve: vLLM exited with code {rc}; log {log}:\n{log_tail(log)}", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        typer.echo("stopping vLLM ...", err=True)
    finally:
        srv.stop()


def compare(
    data: Path = typer.Option(..., "--data", help="`kat finetune data` output (its manifest lists the test split)"),
    tuned: Path | None = typer.Option(None, "--tuned", help="merged tuned HF folder (or the base folder with --adapter)"),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter: tuned = --base + adapter via --enable-lora"),
    base: Path | None = typer.Option(None, "--base", help="base HF folder (the untuned model)"),
    out: Path = typer.Option(Path("reports/finetune/compare"), "--out", help="report folder"),
    limit: int | None = typer.Option(None, "--limit", help="at most N test cases (one per category first)"),
    max_steps: int = typer.Option(12, "--max-steps", help="Analyzer step budget per case"),
    time_budget: float = typer.Option(300.0, "--time-budget", help="seconds per case (checked between steps)"),
    request_timeout: float = typer.Option(1800.0, "--request-timeout", help="seconds per model reply (CPU: minutes)"),
    rules: bool = typer.Option(True, "--rules/--no-rules", help="include the rules Analyzer"),
    port: int = typer.Option(8011, "--port", help="port for the vLLM servers (one at a time)"),
    dtype: str = typer.Option("bfloat16", "--dtype", help="bfloat16: prefill ~2x faster than float32 on CPUs with AMX (measured)"),
    max_model_len: int = typer.Option(8192, "--max-model-len"),
    max_tokens: int = typer.Option(
        1536,
        "--max-tokens",
        help="server cap on tokens per reply, same for both models (a 23-call reply of the training data is ~1.3k tokens)",
    ),
    threads: int = typer.Option(1, "--threads", help="OMP threads for the model (0: vLLM decides)"),
    eager: bool = typer.Option(True, "--eager/--compile"),
    device: str = typer.Option("cpu", "--device"),
    venv: Path = typer.Option(DEFAULT_VENV, "--venv"),
    tool_result_chars: int | None = typer.Option(None, "--tool-result-chars", help="default: the data manifest's"),
    resume: bool = typer.Option(False, "--resume", help="reuse finished per-case runs under OUT/runs"),
    jobs: int = typer.Option(1, "--jobs", help="cases run at once (vLLM batches concurrent requests)"),
    one_server: bool = typer.Option(
        False,
        "--one-server/--server-per-model",
        help="with --adapter: serve the base and the adapter (LoRA module) from one server "
        "(on CPU LoRA requests ran 5-7x slower than a merged model: off by default)",
    ),
    parallel: bool = typer.Option(
        True, "--parallel/--sequential", help="one server per model, all up at once (own ports from --port; CPU: one core each)"
    ),
    json_out: bool = typer.Option(False, "--json", help="the report as JSON on stdout"),
) -> None:
    """Held-out comparison: base vs fine-tuned small model (each served by vLLM) vs rules, one table."""
    from kat.evals.finetune.compare import run_compare, test_cases
    from kat.evals.finetune.data import load_manifest

    say = (lambda s: print(s, file=sys.stderr, flush=True)) if json_out else (lambda s: print(s, flush=True))
    # SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the running vLLM server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        manifest = load_manifest(data)
        cases = test_cases(data, limit)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"kat finetune compare: {exc}", err=True)
        raise typer.Exit(2) from None
    if not cases:
        typer.echo(f"kat finetune compare: no test bundles in {data}", err=True)
        raise typer.Exit(2)
    template = Path(manifest.chat_template) if manifest.chat_template else None  # what the data was rendered with

    def spec_at(model: Path, ad: Path | None, served: str, p: int) -> ServeSpec:
        return _spec(model, ad, served, "127.0.0.1", p, max_model_len, dtype, max_tokens, threads, 2, eager, device, venv, template)

    models = _models_under_test(base, tuned, adapter, spec_at, port, parallel)
    trc = tool_result_chars if tool_result_chars is not None else manifest.tool_result_chars
    server = None
    if one_server and adapter is not None and base is not None and tuned is None:
        server = spec_at(base, adapter, SERVED_NAME, port)
        for m in models:  # `command` serves the base as NAME-base and the adapter as NAME
            m.spec.served_name = f"{SERVED_NAME}-base" if m.name == "base" else SERVED_NAME
    say(
        f"compare: {len(cases)} held-out case(s) from {data}; variants: "
        + ", ".join((["rules"] if rules else []) + [m.name for m in models])
        + f"; results in {out}"
    )
    rep = run_compare(
        out,
        cases,
        models,
        data_dir=data,
        rules=rules,
        max_steps=max_steps,
        time_budget_s=time_budget,
        request_timeout_s=request_timeout,
        tool_result_chars=trc,
        agent_env=manifest.serve_env,
        server=server,
        jobs=jobs,
        parallel=parallel and server is None,
        resume=resume,
        say=say,
    )
    _print_report(rep, out, json_out)
    if any(r.skipped for r in rep.rows):
        raise typer.Exit(1)


def _models_under_test(
    base: Path | None, tuned: Path | None, adapter: Path | None, spec_at: Callable[..., ServeSpec], port: int, parallel: bool
) -> list[ModelUnderTest]:
    """The base and/or tuned model, each with its serving spec (parallel servers: one port each)."""
    from kat.evals.finetune.compare import ModelUnderTest

    models: list[ModelUnderTest] = []

    def mk(name: str, model: Path, ad: Path | None, served: str) -> ModelUnderTest:
        return ModelUnderTest(name, spec_at(model, ad, served, port + len(models) if parallel else port))

    if base is not None:
        models.append(mk("base", base, None, "kat-analyzer-base"))
    if adapter is not None:
        model = tuned or base
        if model is None:
            typer.echo("kat finetune compare: --adapter needs --base (or --tuned) as the model it applies to", err=True)
            raise typer.Exit(2)
        models.append(mk("tuned", model, adapter, SERVED_NAME))
    elif tuned is not None:
        models.append(mk("tuned", tuned, None, SERVED_NAME))
    return models


def _print_report(rep: CompareReport, out: Path, json_out: bool) -> None:
    from kat.evals.finetune.compare import markdown_table

    if json_out:
        sys.stdout.write(rep.model_dump_json(indent=1) + "\n")
        return
    print()
    for line in markdown_table(rep.rows):
        print(line)
    for n in rep.notes:
        print(f"note: {n}")
    print(f"\nreport: {out / 'compare.md'} (json: {out / 'compare.json'}; full harness report: {out / 'report.md'})")


def add_commands(app: typer.Typer) -> None:
    """Add `serve` and `compare` to the `kat finetune` app."""
    app.command("serve")(serve)
    app.command("compare")(compare)
