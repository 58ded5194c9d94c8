"""`kat finetune train`: LoRA, two stages (continued pre-training, then SFT on assistant tokens), resumable.

A plain PyTorch loop over a peft model (no Trainer): the same code runs a 135M model on 2 CPU cores
and a 14B model on a GPU (bf16, gradient checkpointing). Layout of output_dir:

    checkpoints/step-NNNNN/   adapter + optimizer/scheduler/RNG state + trainer_state.json
    metrics.json              per-step loss, validation loss before/after each stage, timings
    loss.png                  train and validation loss curves
    adapter/ , merged/        written at the end (export), see evals/finetune/export.py
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from kat.evals.finetune.artifacts import checkpoint_dir, latest_checkpoint, load_tokenizer
from kat.evals.finetune.chat_format import assistant_spans
from kat.evals.finetune.config import StageSettings, TrainConfig

IGNORE = -100
STAGES = ("cpt", "sft")
# The submitted root cause's category value inside a submit_diagnosis call (the first "category" after "root_cause").
_CATEGORY = re.compile(r'"root_cause":\s*\{[^{}]*?"category":\s*"([^"]*)"')


class Sample(BaseModel):
    input_ids: list[int]
    labels: list[int]
    weights: list[float] | None = None  # per-token loss weight (None: all 1)
    group: str = ""  # the example's category, for the interleaved order


class StepLog(BaseModel):
    step: int
    stage: str
    loss: float
    lr: float
    seconds: float
    tokens: int


class EvalLog(BaseModel):
    step: int
    stage: str
    loss: float


class TrainerState(BaseModel):
    global_step: int = 0
    stage: str = "cpt"
    stage_step: int = 0
    cursor: int = 0  # samples consumed in the current stage
    steps: list[StepLog] = Field(default_factory=list)
    evals: list[EvalLog] = Field(default_factory=list)
    early_stops: dict[str, int] = Field(default_factory=dict)  # stage -> steps run when its time budget ran out
    seconds: float = 0.0


# -- data ----------------------------------------------------------------------------------------
def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the data with `kat finetune data`")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: not JSON: {exc}") from exc
    return out


def category_token_weights(tokenizer: Any, text: str, weight: float) -> tuple[list[int], list[float]]:
    """Token ids of an assistant reply and a loss weight per token: `weight` on the tokens that spell
    the submitted root-cause category (a few tokens among hundreds, yet the answer), 1 elsewhere."""
    if weight == 1.0 or not (m := _CATEGORY.search(text)):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids, [1.0] * len(ids)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    a, b = m.span(1)
    return enc["input_ids"], [weight if s < b and e > a else 1.0 for s, e in enc["offset_mapping"]]


def sft_sample(
    tokenizer: Any,
    messages: list[dict],
    tools: list[dict] | None,
    max_length: int,
    template: str | None = None,
    category_weight: float = 1.0,
) -> Sample:
    """Token ids and labels: loss only on assistant replies (each piece tokenized on its own, as vLLM
    sees the prompt up to `<|im_start|>assistant\\n` and the model writes the rest)."""
    full, spans = assistant_spans(tokenizer, messages, tools, template=template or tokenizer.chat_template)
    ids: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    pos = 0
    for a, b in spans + [(len(full), len(full))]:
        for text, train in ((full[pos:a], False), (full[a:b], True)):
            if not text:
                continue
            if train:
                t, w = category_token_weights(tokenizer, text, category_weight)
            else:
                t = tokenizer(text, add_special_tokens=False)["input_ids"]
                w = [1.0] * len(t)
            ids += t
            labels += t if train else [IGNORE] * len(t)
            weights += w
        pos = b
    return Sample(input_ids=ids[:max_length], labels=labels[:max_length], weights=weights[:max_length] if category_weight != 1.0 else None)


def sft_samples(tokenizer: Any, path: Path, max_length: int, category_weight: float = 1.0) -> list[Sample]:
    rows = _read_jsonl(path)
    out = []
    for i, r in enumerate(rows, 1):
        if "messages" not in r:
            raise ValueError(f"{path}:{i}: example has no 'messages'")
        s = sft_sample(tokenizer, r["messages"], r.get("tools"), max_length, category_weight=category_weight)
        s.group = str(r.get("category") or "")
        if any(x != IGNORE for x in s.labels):
            out.append(s)
    return out


def corpus_blocks(tokenizer: Any, path: Path, max_length: int) -> list[Sample]:
    """Documents joined with EOS and cut into max_length blocks (causal LM on every token)."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for r in _read_jsonl(path):
        ids += tokenizer(r["text"], add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
    return [Sample(input_ids=ids[i : i + max_length], labels=ids[i : i + max_length]) for i in range(0, max(len(ids) - 16, 0), max_length)]


def _order(n: int, seed: int, stage: str) -> Iterator[int]:
    """Deterministic endless order: a fresh permutation each epoch (resumable by position)."""
    epoch = 0
    while True:
        idx = list(range(n))
        random.Random(f"{seed}:{stage}:{epoch}").shuffle(idx)
        yield from idx
        epoch += 1


def interleaved_order(groups: list[str], seed: int, stage: str) -> Iterator[int]:
    """Deterministic endless order that takes one example of every group per round (groups in a fresh
    random order each round, each group's examples shuffled per epoch): a run that stops after a few
    steps has seen every category, and no category owns the last, low-learning-rate steps."""
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    epoch = 0
    while True:
        rng = random.Random(f"{seed}:{stage}:interleave:{epoch}")
        queues = {g: rng.sample(idx, len(idx)) for g, idx in sorted(by.items())}
        while any(queues.values()):
            names = [g for g in sorted(queues) if queues[g]]
            rng.shuffle(names)
            for g in names:
                yield queues[g].pop()
        epoch += 1


def sample_order(samples: list[Sample], settings: StageSettings, seed: int, stage: str) -> Iterator[int]:
    """The stage's example order (settings.order); interleave needs groups, else it is a plain shuffle."""
    if settings.order == "interleave" and any(s.group for s in samples):
        return interleaved_order([s.group for s in samples], seed, stage)
    return _order(len(samples), seed, stage)


def _collate(batch: list[Sample], pad_id: int) -> tuple[Any, Any, Any, Any]:
    import torch

    n = max(len(s.input_ids) for s in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    lab = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    att = torch.zeros((len(batch), n), dtype=torch.long)
    wts = torch.ones((len(batch), n), dtype=torch.float32)
    for i, s in enumerate(batch):
        k = len(s.input_ids)
        ids[i, :k] = torch.tensor(s.input_ids)
        lab[i, :k] = torch.tensor(s.labels)
        att[i, :k] = 1
        if s.weights is not None:
            wts[i, :k] = torch.tensor(s.weights)
    return ids, lab, att, wts


# -- model ---------------------------------------------------------------------------------------
def _device(cfg: TrainConfig) -> str:
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but no GPU is visible")
    return cfg.device


def build_model(cfg: TrainConfig, device: str) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, cfg.dtype)
    model = AutoModelForCausalLM.from_pretrained(str(cfg.base_model), dtype=dtype)
    model.to(device)  # type: ignore[arg-type]  # transformers types the wrapped .to() as unbound (self first)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lcfg = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        layers_to_transform=cfg.lora.layers,
        task_type="CAUSAL_LM",
        bias="none",
    )
    peft_model = get_peft_model(model, lcfg)
    for p in peft_model.parameters():  # LoRA weights train in fp32 even when the base is bf16
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return peft_model


def planned_steps(stage: StageSettings, done: list[float]) -> int:
    """Steps the stage will run: `stage.steps`, or fewer when its time budget will end it first
    (estimated from the last steps' seconds), so the cosine decay finishes inside the budget
    instead of stopping near the peak learning rate."""
    if not stage.max_minutes or not done:
        return stage.steps
    recent = done[-5:]
    per = sum(recent) / len(recent)
    fit = len(done) + int(max(0.0, 60 * stage.max_minutes - sum(done)) // max(per, 1e-9))
    return max(len(done) + 1, min(stage.steps, fit))


def _lr_at(stage: StageSettings, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if stage.warmup_steps and step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    span = max(1, stage.steps - stage.warmup_steps)
    t = min(1.0, (step - stage.warmup_steps) / span)
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _loss(model: Any, batch: list[Sample], pad_id: int, device: str, weighted: bool = True) -> tuple[Any, int]:
    """Cross-entropy over labelled tokens, averaged with the samples' token weights (plain mean when
    `weighted` is off or no weights are set). The LM head (49k x 576 for SmolLM2: a quarter of the
    compute at 6k tokens) runs only on positions that carry a label, not on the whole prompt."""
    import torch.nn.functional as F

    ids, lab, att, wts = _collate(batch, pad_id)
    ids, lab, att, wts = ids.to(device), lab.to(device), att.to(device), wts.to(device)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "final_logit_softcapping", None):  # models that post-process logits: the plain path
        return model(input_ids=ids, attention_mask=att, labels=lab).loss, int(att.sum())
    hidden = base.get_decoder()(input_ids=ids, attention_mask=att).last_hidden_state
    target = lab[:, 1:]
    keep = target != IGNORE
    logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
    if not weighted or all(s.weights is None for s in batch):
        return F.cross_entropy(logits, target[keep]), int(att.sum())
    w = wts[:, 1:][keep]
    per_token = F.cross_entropy(logits, target[keep], reduction="none")
    return (per_token * w).sum() / w.sum(), int(att.sum())


def evaluate(model: Any, samples: list[Sample], pad_id: int, device: str) -> float:
    import torch

    if not samples:
        return float("nan")
    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for s in samples:
            k = sum(1 for x in s.labels[1:] if x != IGNORE)
            loss, _ = _loss(model, [s], pad_id, device, weighted=False)  # comparable across weightings
            tot += float(loss) * k
            n += k
    model.train()
    return tot / max(n, 1)


# -- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(out: Path, model: Any, opt: Any, state: TrainerState, keep: int) -> Path:
    import torch

    d = checkpoint_dir(out) / f"step-{state.global_step:06d}"
    tmp = d.with_name(d.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))
    torch.save({"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(), "py_rng": random.getstate()}, tmp / "optimizer.pt")
    (tmp / "trainer_state.json").write_text(state.model_dump_json(indent=1))
    if d.exists():
        shutil.rmtree(d)
    tmp.rename(d)
    for old in sorted(checkpoint_dir(out).glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return d


def _restore(ck: Path, model: Any) -> tuple[TrainerState, dict]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = ck / "adapter_model.safetensors"
    set_peft_model_state_dict(model, load_file(str(weights)))
    extra = torch.load(ck / "optimizer.pt", weights_only=False)
    return TrainerState.model_validate_json((ck / "trainer_state.json").read_text()), extra


# -- the loop ------------------------------------------------------------------------------------
class TrainResult(BaseModel):
    output_dir: str
    global_step: int
    finished: bool
    seconds: float
    metrics: str
    loss_png: str | None = None


def train(
    cfg: TrainConfig, resume: bool = False, max_steps_this_run: int | None = None, say: Callable[[str], None] = print, progress: bool = True
) -> TrainResult:
    """Run (or continue) both stages; checkpoints every cfg.checkpoint_every steps."""
    import torch
    from tqdm.auto import tqdm

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ck = latest_checkpoint(out) if resume else None
    if not resume and latest_checkpoint(out) is not None:
        raise FileExistsError(f"output_dir: {out} already has checkpoints; pass --resume to continue, or use another directory")
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = _device(cfg)
    tok = load_tokenizer(cfg.base_model, cfg.data_dir)
    data = Path(cfg.data_dir)
    say(f"loading data from {data} ...")
    sets: dict[str, tuple[list[Sample], list[Sample]]] = {}
    if cfg.cpt.steps:
        blocks = corpus_blocks(tok, data / "corpus.jsonl", cfg.cpt.max_length)
        n_val = min(cfg.eval_examples, max(1, len(blocks) // 10)) if len(blocks) > 1 else 0
        sets["cpt"] = (blocks[n_val:] or blocks, blocks[:n_val])
    if cfg.sft.steps:
        tr = sft_samples(tok, data / "sft" / "train.jsonl", cfg.sft.max_length, cfg.sft.category_loss_weight)
        va = sft_samples(tok, data / "sft" / "validation.jsonl", cfg.sft.max_length)[: cfg.eval_examples]
        if not tr:
            raise ValueError(f"{data / 'sft' / 'train.jsonl'}: no training examples")
        sets["sft"] = (tr, va)
    model = build_model(cfg, device)
    state, extra = TrainerState(stage=next(s for s in STAGES if getattr(cfg, s).steps)), None
    if ck is not None:
        state, extra = _restore(ck, model)
        say(f"resuming from {ck} (step {state.global_step}, stage {state.stage} step {state.stage_step})")
    model.train()
    pad = tok.pad_token_id
    total = cfg.cpt.steps + cfg.sft.steps
    ran = 0
    t_run = time.perf_counter()
    bar = tqdm(total=total, initial=state.global_step, disable=not progress, desc="train", unit="step")
    try:
        for stage in STAGES:
            st: StageSettings = getattr(cfg, stage)
            if not st.steps or STAGES.index(stage) < STAGES.index(state.stage) or stage in state.early_stops:
                continue
            if stage != state.stage:
                state.stage, state.stage_step, state.cursor = stage, 0, 0
            train_set, val_set = sets[stage]
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=st.lr, weight_decay=0.0)
            if extra is not None and state.stage_step > 0:
                opt.load_state_dict(extra["optimizer"])
                torch.set_rng_state(extra["torch_rng"])
                random.setstate(extra["py_rng"])
            extra = None
            if state.stage_step == 0:
                state.evals.append(EvalLog(step=state.global_step, stage=stage, loss=evaluate(model, val_set, pad, device)))
                say(f"{stage}: validation loss before {state.evals[-1].loss:.4f} ({len(train_set)} train, {len(val_set)} validation)")
            order = sample_order(train_set, st, cfg.seed, stage)
            for _ in range(state.cursor):
                next(order)
            while state.stage_step < st.steps:
                if max_steps_this_run is not None and ran >= max_steps_this_run:
                    return _finish(cfg, out, state, model, tok, t_run, finished=False, say=say)
                done = [x.seconds for x in state.steps if x.stage == stage]
                if st.max_minutes and done and sum(done) + done[-1] > 60 * st.max_minutes:
                    say(f"\n{stage}: time budget of {st.max_minutes} min reached after {len(done)} steps")
                    state.early_stops[stage] = len(done)
                    st = st.model_copy(update={"steps": state.stage_step})
                    state.evals.append(EvalLog(step=state.global_step, stage=stage, loss=evaluate(model, val_set, pad, device)))
                    save_checkpoint(out, model, opt, state, cfg.keep_checkpoints)
                    break
                t0 = time.perf_counter()
                lr = _lr_at(st.model_copy(update={"steps": planned_steps(st, done)}), state.stage_step)
                for g in opt.param_groups:
                    g["lr"] = lr
                loss_sum, toks = 0.0, 0
                for _ in range(st.grad_accum):
                    batch = [train_set[next(order)] for _ in range(st.batch_size)]
                    state.cursor += st.batch_size
                    loss, n = _loss(model, batch, pad, device)
                    (loss / st.grad_accum).backward()
                    loss_sum += float(loss.detach()) / st.grad_accum
                    toks += n
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                state.stage_step += 1
                state.global_step += 1
                ran += 1
                dt = time.perf_counter() - t0
                state.seconds += dt
                state.steps.append(
                    StepLog(step=state.global_step, stage=stage, loss=round(loss_sum, 5), lr=lr, seconds=round(dt, 3), tokens=toks)
                )
                bar.update(1)
                bar.set_postfix(stage=stage, loss=f"{loss_sum:.3f}", s_per_step=f"{dt:.1f}")
                last = state.stage_step == st.steps
                if cfg.eval_every and state.global_step % cfg.eval_every == 0 and not last:
                    state.evals.append(EvalLog(step=state.global_step, stage=stage, loss=evaluate(model, val_set, pad, device)))
                if last:
                    state.evals.append(EvalLog(step=state.global_step, stage=stage, loss=evaluate(model, val_set, pad, device)))
                    say(f"\n{stage}: validation loss after {state.evals[-1].loss:.4f}")
                if state.global_step % cfg.checkpoint_every == 0 or last:
                    save_checkpoint(out, model, opt, state, cfg.keep_checkpoints)
    finally:
        bar.close()
    return _finish(cfg, out, state, model, tok, t_run, finished=True, say=say)


def _finish(
    cfg: TrainConfig, out: Path, state: TrainerState, model: Any, tok: Any, t_run: float, finished: bool, say: Callable[[str], None]
) -> TrainResult:
    from kat.evals.finetune.report import write_metrics

    metrics, png = write_metrics(out, cfg, state, finished)
    if finished and cfg.export:
        from kat.evals.finetune.export import export_model

        export_model(model, tok, cfg.base_model, out, data_dir=cfg.data_dir, say=say)
    return TrainResult(
        output_dir=str(out),
        global_step=state.global_step,
        finished=finished,
        seconds=round(time.perf_counter() - t_run, 1),
        metrics=str(metrics),
        loss_png=png,
    )
