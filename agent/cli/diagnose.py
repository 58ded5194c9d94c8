"""`kat diagnose` and `kat chat`: the agent's command-line front end."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from kat.agent.session import ProgressEvent, Session

err = Console(stderr=True, soft_wrap=True)  # one-line errors, never wrapped at 80 columns
PROMETHEUS_HELP = "read metrics from this Prometheus (base URL) instead of the bundle's file; auth from KAT_PROMETHEUS_*"


def default_chat_db() -> Path:
    from kat.knowledge.settings import settings

    return settings().state_db("chat.sqlite")


def _session(
    path: Path,
    analyzer: str,
    base_url: str | None,
    model: str | None,
    max_steps: int,
    time_budget: float,
    db: Path | None = None,
    prometheus: str | None = None,
) -> Session:
    from kat.agent.graph import AgentConfig
    from kat.agent.session import Session
    from kat.tools.telemetry import BundleError

    opts: dict[str, Any] = {k: v for k, v in (("base_url", base_url), ("model", model)) if v}  # backend options
    try:
        cfg = AgentConfig(max_steps=max_steps, time_budget_s=time_budget)
        return Session(path, analyzer, config=cfg, db=db, prometheus=prometheus, **opts)
    except BundleError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except (ImportError, ValueError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _progress(quiet: bool) -> Callable[[ProgressEvent], None]:
    def show(ev: ProgressEvent) -> None:
        if quiet:
            return
        style = {
            "tool_call": "cyan",
            "tool_result": "dim",
            "rejected": "yellow",
            "accepted": "green",
            "partial": "bold yellow",
            "note": "yellow",
        }.get(ev.kind, "")
        if ev.kind in ("answer",):
            return
        mark = {"tool_call": "->", "tool_result": "  <-", "rejected": "  !", "accepted": "  ok", "partial": "  ~", "note": "  ~"}.get(
            ev.kind, " "
        )
        err.print(f"[{style}]{mark} {ev.text}[/]" if style else f"{mark} {ev.text}", highlight=False, markup=True, soft_wrap=False)

    return show


def register(app: typer.Typer) -> None:
    @app.command("diagnose")
    def diagnose_cmd(
        path: Path = typer.Argument(..., help="incident bundle (or a directory of Kineto traces)"),
        analyzer: str = typer.Option("rules", "--analyzer", help="rules | openai | llamacpp"),
        base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1"),
        model: str | None = typer.Option(None, "--model", help="model name (openai) or GGUF path (llamacpp)"),
        json_out: bool = typer.Option(False, "--json", help="print only the Diagnosis JSON on stdout"),
        max_steps: int = typer.Option(24, "--max-steps", help="Analyzer step budget"),
        time_budget: float = typer.Option(300.0, "--time-budget", help="seconds"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no live progress"),
        prometheus: str | None = typer.Option(None, "--prometheus", help=PROMETHEUS_HELP),
    ) -> None:
        """Find the root cause of an incident and the causal chain behind it."""
        from kat.agent.backends.llm import BackendUnreachable

        s = _session(path, analyzer, base_url, model, max_steps, time_budget, prometheus=prometheus)
        try:
            d = s.diagnose(on_event=_progress(quiet or json_out))
        except BackendUnreachable as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(3) from None
        finally:
            s.close()
        if json_out:
            sys.stdout.write(d.model_dump_json(indent=2) + "\n")
        else:
            from kat.agent.render import print_diagnosis

            print_diagnosis(Console(), d)
        if d.missing_data and (d.status == "partial" or d.root_cause.category == "undetermined"):
            raise typer.Exit(1)  # a source failed and the rest of the evidence did not suffice

    @app.command("chat")
    def chat_cmd(
        path: Path = typer.Argument(..., help="incident bundle"),
        thread: str | None = typer.Option(None, "--thread", help="resume this conversation (thread id)"),
        analyzer: str = typer.Option("rules", "--analyzer", help="rules | openai | llamacpp"),
        base_url: str | None = typer.Option(None, "--base-url"),
        model: str | None = typer.Option(None, "--model"),
        db: Path | None = typer.Option(None, "--db", help="SQLite file for conversations (default: cache dir)"),
        max_steps: int = typer.Option(24, "--max-steps"),
        time_budget: float = typer.Option(300.0, "--time-budget"),
        prometheus: str | None = typer.Option(None, "--prometheus", help=PROMETHEUS_HELP),
    ) -> None:
        """Diagnose, then answer follow-up questions (one per line on stdin; 'exit' or EOF ends). Resumable."""
        from kat.agent.diagnosis import Diagnosis
        from kat.agent.render import print_diagnosis

        out = Console()
        s = _session(path, analyzer, base_url, model, max_steps, time_budget, db=db or default_chat_db(), prometheus=prometheus)
        try:
            tid = thread or uuid.uuid4().hex[:12]
            st = s.state(tid)
            if st.get("diagnosis") and Path(st.get("bundle", "")).resolve() != s.ctx.path:
                err.print(f"[bold red]error:[/] thread {tid} belongs to another incident ({st.get('bundle')})")
                raise typer.Exit(2)
            if not st.get("diagnosis"):
                from kat.agent.backends.llm import BackendUnreachable

                try:
                    d = s.diagnose(thread_id=tid, on_event=_progress(False))
                except BackendUnreachable as exc:
                    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                    raise typer.Exit(3) from None
                print_diagnosis(out, d)
            else:
                n = len(st.get("ledger") or [])
                out.print(
                    f"resumed thread {tid}: {n} evidence item(s); diagnosis {Diagnosis.model_validate(st['diagnosis']).root_cause.category}"
                )
            out.print(f"thread id: {tid}  (resume with --thread {tid})")
            interactive = sys.stdin.isatty()
            while True:
                if interactive:
                    out.print("[bold]kat>[/] ", end="")
                line = sys.stdin.readline()
                if not line:
                    break
                q = line.strip()
                if not q:
                    continue
                if q.lower() in ("exit", "quit", ":q"):
                    break
                try:
                    answer = s.ask(q, tid, on_event=_progress(False))
                except Exception as exc:  # one bad question must not end the conversation
                    from kat.agent.errors import one_line

                    err.print(f"[bold red]error:[/] that question failed: {escape(one_line(exc))}", highlight=False, markup=True)
                    continue
                out.print(answer, highlight=False, markup=False)
        finally:
            s.close()
