"""Export: the LoRA adapter folder and a merged HF folder (tokenizer + our chat template) vLLM can serve.

    output_dir/adapter/   adapter_config.json + adapter_model.safetensors (vllm --enable-lora --lora-modules kat=...)
    output_dir/merged/    full model with the adapter merged in (vllm serve output_dir/merged ...)
Both carry kat_model.json: base model, data manifest and the agent settings to use with them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kat.evals.finetune.base_model import write_template

SERVE_INFO = "kat_model.json"


def _serve_info(base: Path, data_dir: Path | None) -> dict:
    info: dict = {
        "base_model": str(base),
        "chat_template": "prompts/analyzer_chat_template.jinja",
        "tool_call_parser": "hermes",
        "agent_env": {},
    }
    if data_dir and (Path(data_dir) / "manifest.json").exists():
        m = json.loads((Path(data_dir) / "manifest.json").read_text())
        info["data_dir"] = str(data_dir)
        info["agent_env"] = m.get("serve_env") or {}
        info["chat_template"] = m.get("chat_template") or info["chat_template"]
    return info


def export_model(
    model: Any, tokenizer: Any, base: Path, out: Path, data_dir: Path | None = None, say: Callable[[str], None] = print
) -> tuple[Path, Path]:
    """Write out/adapter and out/merged from a trained peft model."""
    import torch

    out = Path(out)
    info = _serve_info(Path(base), data_dir)
    adapter, merged = out / "adapter", out / "merged"
    for d in (adapter, merged):
        if d.exists():
            shutil.rmtree(d)
    model.save_pretrained(str(adapter))
    write_template(tokenizer, adapter, tokenizer.chat_template)
    (adapter / SERVE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    # Merge a copy on the CPU in the base dtype, so training can continue with the original.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_model = AutoModelForCausalLM.from_pretrained(str(base), dtype=model.base_model.model.dtype)
    pm = PeftModel.from_pretrained(base_model, str(adapter))
    full = pm.merge_and_unload()
    with torch.no_grad():
        full.save_pretrained(str(merged))
    write_template(tokenizer, merged, tokenizer.chat_template)
    (merged / SERVE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    say(f"exported adapter -> {adapter}\nexported merged model -> {merged}")
    return adapter, merged


def export_checkpoint(train_dir: Path, checkpoint: Path | None = None, say: Callable[[str], None] = print) -> tuple[Path, Path]:
    """`kat finetune export`: adapter + merged folder from the last (or a given) checkpoint of a run."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from kat.evals.finetune.artifacts import latest_checkpoint, load_tokenizer
    from kat.evals.finetune.config import TrainConfig

    train_dir = Path(train_dir)
    cfg_path = train_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path} not found: {train_dir} is not a `kat finetune train` output directory")
    cfg = TrainConfig.model_validate_json(cfg_path.read_text())
    ck = Path(checkpoint) if checkpoint else latest_checkpoint(train_dir)
    if ck is None or not (ck / "adapter_model.safetensors").exists():
        raise FileNotFoundError(f"no checkpoint with an adapter under {train_dir / 'checkpoints'}")
    import torch

    base = AutoModelForCausalLM.from_pretrained(str(cfg.base_model), dtype=getattr(torch, cfg.dtype))
    model = PeftModel.from_pretrained(base, str(ck))
    return export_model(model, load_tokenizer(cfg.base_model, cfg.data_dir), cfg.base_model, train_dir, data_dir=cfg.data_dir, say=say)
