"""Training configuration (YAML, validated): `kat finetune train --config CFG`.

Relative paths are resolved against the current directory. Unknown keys are errors, so a typo
is named instead of silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    r: int = Field(16, gt=0, description="LoRA rank")
    alpha: int = Field(32, gt=0, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], min_length=1
    )
    layers: list[int] | None = Field(None, description="adapt only these decoder layers (default: all)")


class StageSettings(_Strict):
    steps: int = Field(ge=0, description="optimizer steps in this stage (0 skips it)")
    lr: float = Field(gt=0.0, description="peak learning rate")
    batch_size: int = Field(1, gt=0)
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    max_length: int = Field(gt=16, description="tokens per sequence (longer ones are cut)")
    warmup_steps: int = Field(0, ge=0)
    max_minutes: float | None = Field(None, gt=0, description="end the stage early when its next step would pass this budget")
    order: Literal["shuffle", "interleave"] = Field(
        "shuffle",
        description="shuffle: a fresh permutation per epoch; interleave (SFT): round-robin over categories, "
        "shuffled per round, so every stretch of steps sees every category",
    )
    category_loss_weight: float = Field(
        1.0, ge=1.0, description="(SFT) loss weight of the submitted root-cause category's tokens; the rest weigh 1"
    )


class TrainConfig(_Strict):
    base_model: Path = Field(description="HF model folder (from `kat finetune base` or your own)")
    data_dir: Path = Field(description="output of `kat finetune data`")
    output_dir: Path = Field(description="checkpoints, metrics, loss curve, adapter, merged model")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="float32 on CPU, bfloat16 on GPU")
    gradient_checkpointing: bool = False
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's choice)")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    cpt: StageSettings = Field(description="continued pre-training on corpus.jsonl")
    sft: StageSettings = Field(description="supervised fine-tuning on sft/train.jsonl (loss on assistant tokens only)")
    checkpoint_every: int = Field(10, gt=0, description="save a resumable checkpoint every N optimizer steps")
    eval_every: int = Field(0, ge=0, description="validation loss every N steps (0: only before and after each stage)")
    eval_examples: int = Field(8, gt=0, description="validation examples (or corpus blocks) per evaluation")
    keep_checkpoints: int = Field(2, gt=0)
    export: bool = Field(True, description="write adapter/ and merged/ at the end")

    @model_validator(mode="after")
    def _some_training(self) -> TrainConfig:
        if self.cpt.steps == 0 and self.sft.steps == 0:
            raise ValueError("cpt.steps and sft.steps are both 0: nothing to train")
        return self


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


def load_config(path: Path | str, overrides: dict | None = None) -> TrainConfig:
    p = Path(path)
    if not p.exists() and (CONFIGS_DIR / p.name).exists():
        p = CONFIGS_DIR / p.name
    if not p.exists():
        raise ConfigError(f"{path}: no such config file (shipped: {', '.join(x.name for x in CONFIGS_DIR.glob('*.yaml'))})")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{p}: {errs}") from None
