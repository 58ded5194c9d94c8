"""Where a training run keeps its checkpoints, and loading its tokenizer back (train and export share these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kat.evals.finetune.chat_format import load_template, template_of


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def latest_checkpoint(out: Path) -> Path | None:
    cks = sorted(p for p in checkpoint_dir(out).glob("step-*") if (p / "trainer_state.json").exists())
    return cks[-1] if cks else None


def load_tokenizer(base: Path, data_dir: Path | None = None) -> Any:
    """The base model's tokenizer with the chat template the data was rendered with."""
    from transformers import AutoTokenizer

    if not (Path(base) / "config.json").exists():
        raise FileNotFoundError(
            f"base_model: {base} is not an HF model folder (no config.json); create one with `kat finetune base --out DIR`"
        )
    tok = AutoTokenizer.from_pretrained(str(base))
    tok.chat_template = template_of(data_dir) if data_dir else load_template()  # the data's template
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
