"""A tiny randomly initialised Llama + a small BPE tokenizer, built offline in a second (tests, smoke runs)."""

from __future__ import annotations

from pathlib import Path

from kat.evals.finetune.base_model import write_template
from kat.evals.finetune.chat_format import load_template

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_base(out: Path, extra_text: list[str] | None = None, vocab_size: int = 400, seed: int = 0) -> Path:
    """Write an HF folder (config, weights, tokenizer with our chat template) to `out`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = [
        load_template(),
        '<tool_call>\n{"name": "outpost_detect", "arguments": {}}\n</tool_call>',
        "TOOL RESULT ev-1 metric_lookup ok summary: gpu temperature rank",
        *(extra_text or []),
    ]
    tk.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>", unk_token="<|endoftext|>"
    )
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    write_template(tok, out)
    return out
