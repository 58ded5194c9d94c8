"""Fine-tuning the Analyzer: `kat finetune base|data|train|export` (see docs/finetune.md).

Modules, one job each: base_model (GGUF/HF -> HF base folder), chat_format (ChatML + Hermes tool
calls), data (corpus + SFT examples + splits), config (training config), train (LoRA stages),
export (adapter + merged folder). Heavy imports (torch, transformers, peft) happen inside functions.
"""
