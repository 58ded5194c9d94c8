"""`kat kb ...` commands: build, search, eval. Heavy imports happen inside the commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer
from rich.markup import escape

if TYPE_CHECKING:  # rich is imported lazily: `kat --help` stays fast
    from rich.console import Console

    from kat.knowledge.models import SearchMode

_INDEX_HELP = "index directory (default: $KAT_KB_DIR, $KAT_CACHE_DIR/kb or ~/.cache/kat/kb)"


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr)


def register(app: typer.Typer) -> None:
    """Add the `kb` command group to a typer app."""
    kb_app = typer.Typer(help="LMDI knowledge base: build the index, search it, measure retrieval.", no_args_is_help=True)
    app.add_typer(kb_app, name="kb")

    @kb_app.command("build")
    def build_cmd(
        index_dir: Path | None = typer.Option(None, "--index-dir", help=_INDEX_HELP),
        force: bool = typer.Option(False, "--force", help="re-embed everything"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Build or update the index (idempotent: only changed sections are re-embedded)."""
        from kat.knowledge.chunking import CorpusError
        from kat.knowledge.kb import KnowledgeBase, KnowledgeBaseError

        try:
            report = KnowledgeBase(index_dir).build(force=force)
        except (KnowledgeBaseError, CorpusError) as exc:
            _console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        if json_out:
            sys.stdout.write(report.model_dump_json(indent=2) + "\n")
            return
        _console().print(
            f"{report.message}: {report.documents} documents, {report.chunks} chunks, "
            f"{report.embedded} embedded, {report.unchanged} unchanged, {report.deleted} deleted "
            f"in {report.seconds:.1f}s -> {report.index_dir}",
            highlight=False,
        )

    @kb_app.command("search")
    def search_cmd(
        query: str = typer.Argument(..., help="symptom or question, in plain words"),
        category: str | None = typer.Option(None, "--category", "-c", help="taxonomy category, 'reference' or 'playbook'"),
        component: str | None = typer.Option(None, "--component", help="gpu, nvlink, pcie, network, host_cpu, ..."),
        k: int = typer.Option(5, "-k", "--k", help="number of hits"),
        mode: str = typer.Option("hybrid", "--mode", help="hybrid, dense or lexical"),
        index_dir: Path | None = typer.Option(None, "--index-dir", help=_INDEX_HELP),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Search the knowledge base."""
        from kat.knowledge.kb import KnowledgeBase

        if mode != "lexical" and not json_out:
            # A cold process loads the sentence-embedding model first (seconds); say so, not a silent wait.
            _console(stderr=True).print("[dim]loading the embedding model (a warm process answers in well under a second)…[/]")
        # search() answers an unknown mode with an error result naming it, as for MCP and HTTP callers.
        res = KnowledgeBase(index_dir).search(query, k=k, category=category, component=component, mode=cast("SearchMode", mode))
        if json_out:
            sys.stdout.write(res.model_dump_json(indent=2) + "\n")
        else:
            from rich.markup import escape

            out = _console()
            if res.message:
                _console(stderr=True).print(f"[yellow]{escape(res.message)}[/]", highlight=False)
            for n, h in enumerate(res.hits, 1):
                out.print(
                    f"[bold]{n}. {escape(h.title)} - {escape(h.section)}[/]  [dim]{escape(h.evidence_id)}  score {h.score:.3f}[/]",
                    highlight=False,
                )
                snippet = " ".join(h.text.split())
                out.print("   " + escape(snippet[:300] + ("…" if len(snippet) > 300 else "")), highlight=False)
        if res.status == "error":
            raise typer.Exit(2)

    @kb_app.command("eval")
    def eval_cmd(
        index_dir: Path | None = typer.Option(None, "--index-dir", help=_INDEX_HELP),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
        show_misses: bool = typer.Option(False, "--misses", help="list the questions each mode missed"),
    ) -> None:
        """Retrieval quality on the question set: recall@3 and MRR, lexical / dense / hybrid."""
        print_eval(index_dir=index_dir, json_out=json_out, show_misses=show_misses)


def print_eval(index_dir: Path | None = None, json_out: bool = False, show_misses: bool = False) -> int:
    """Run knowledge.evaluation.evaluate and print it (also what `kat eval kb` can call)."""
    from rich.table import Table

    from kat.knowledge.evaluation import evaluate
    from kat.knowledge.kb import KnowledgeBase

    report = evaluate(kb=KnowledgeBase(index_dir))
    if json_out:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
        return 0
    t = Table(title=f"knowledge retrieval: {report.questions} questions, {report.documents} documents")
    for col in ("mode", f"recall@{report.k}", "MRR", f"strict recall@{report.k}", "median ms"):
        t.add_column(col)
    for s in report.scores:
        t.add_row(s.mode, f"{s.recall_at_k:.3f}", f"{s.mrr:.3f}", f"{s.strict_recall_at_k:.3f}", f"{s.median_ms:.1f}")
    out = _console()
    out.print(t)
    if show_misses:
        for s in report.scores:
            for m in s.misses:
                out.print(f"[dim]{s.mode}[/] {m.id} {m.query!r}: want {m.expected}, got {m.got}", highlight=False)
    return 0
