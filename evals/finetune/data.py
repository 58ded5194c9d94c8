"""`kat finetune data`: domain corpus + SFT examples from real `rules` trajectories, split by (task, seed).

Layout of DIR (described by DIR/manifest.json, a `DataManifest`):

    manifest.json            what was built, with which settings, token statistics, rejected cases
    corpus.jsonl             domain-adaptation text: {"id", "source", "text"} (knowledge/ + train narratives)
    sft/train.jsonl          SFT examples {"id", "task", "seed", "category", "split", "messages", "tools", ...}
    sft/validation.jsonl
    sft/test.jsonl           the held-out trajectories (for reference; never trained on)
    test/<case id>/          test incident bundles (with ground_truth.json): `kat eval DIR/test`
    README.md                this layout, for people

An example's `messages` are OpenAI chat dicts: the Analyzer's system prompt, the incident message,
then assistant turns with `tool_calls` and `tool` results, ending with the `submit_diagnosis` call.
Tool results are compacted exactly as LLMAnalyzer does with `tool_result_chars` set, so serve and
evaluate the tuned model with KAT_TOOL_RESULT_CHARS=<manifest.tool_result_chars>.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from kat.agent.backends.contract import SMALL
from kat.evals.finetune.chat_format import (
    REPO,
    SMALL_TEMPLATE_PATH,
    TEMPLATE_PATH,
    analyzer_tools,
    assistant_spans,
    load_template,
    to_openai_messages,
)

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
MANIFEST = "manifest.json"
DEFAULT_TOOL_RESULT_CHARS: int = SMALL.tool_result_chars or 0  # the short playbook's sweeps show their outliers / first log groups

# Cases per category in each split, by preset.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"train": 1, "validation": 1, "test": 1},
    "demo": {"train": 3, "validation": 1, "test": 1},
    "standard": {"train": 12, "validation": 2, "test": 3},
    "large": {"train": 60, "validation": 6, "test": 8},
}
# Seeds of each split live in disjoint ranges, so no (task, seed) group is ever shared.
_SPLIT_SEED_BASE = {"train": 500_000, "validation": 600_000, "test": 700_000}


class DataConfig(BaseModel):
    size: str = Field("demo", description=f"cases per category and split: {', '.join(SIZES)}")
    trajectory: Literal["short", "full"] = Field(
        "short",
        description="short: the 4-reply playbook of evals/finetune/short_playbook.py (small models); full: the whole rules trajectory",
    )
    max_steps: int = Field(6, ge=3, description="Analyzer step budget stated in the incident message (short trajectories)")
    jobs: int = Field(2, ge=1, description="cases generated in parallel (processes)")
    incident_size: str = Field("tiny", description="bundle size of generated incidents (tiny | small | ...)")
    categories: list[str] = Field(default_factory=list, description="restrict to these categories (default: all)")
    max_ranks: int = Field(16, description="tasks with at most this many ranks")
    tool_result_chars: int = Field(DEFAULT_TOOL_RESULT_CHARS, ge=0, description="payload characters per tool result")
    max_tokens: int = Field(8192, description="drop examples longer than this (the base model's context)")
    include_knowledge: bool = True


class CaseRef(BaseModel):
    """One generated incident: regenerate it with generate_incident(category, task, seed, severity, size)."""

    id: str
    split: Split
    category: str
    task: str
    seed: int
    severity: str | None
    size: str
    bundle: str | None = Field(None, description="relative path of the bundle under DIR (test split only)")


class Rejected(BaseModel):
    id: str
    reason: str


class TokenStats(BaseModel):
    examples: int = 0
    max: int = 0
    mean: float = 0.0
    median: float = 0.0
    assistant_mean: float = 0.0
    tool_result_mean: float = 0.0


class SplitInfo(BaseModel):
    file: str
    examples: int
    cases: list[CaseRef]
    tokens: TokenStats


class DataManifest(BaseModel):
    version: int = 1
    created: str
    config: DataConfig
    tokenizer: str
    chat_template: str
    chat_template_sha256: str
    tool_result_chars: int
    serve_env: dict[str, str]
    splits: dict[str, SplitInfo]
    test_dir: str = "test"
    corpus: dict[str, Any]
    rejected: list[Rejected] = Field(default_factory=list)
    seconds: float = 0.0

    def test_cases(self, root: Path) -> list[Path]:
        """Directories of the held-out incident bundles."""
        return [root / c.bundle for c in self.splits["test"].cases if c.bundle]


def load_manifest(root: Path | str) -> DataManifest:
    p = Path(root) / MANIFEST
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: build the data with `kat finetune data --out {root}`")
    try:
        return DataManifest.model_validate_json(p.read_text())
    except ValueError as exc:
        raise ValueError(f"{p}: not a valid data manifest: {exc}") from exc


def plan_cases(cfg: DataConfig) -> list[CaseRef]:
    """Every case of every split, deterministic from the config (no generation)."""
    from kat.evals.simulate.categories import ALL_CATEGORIES, SEVERITIES, Category, parse_category
    from kat.evals.simulate.faults import supported
    from kat.evals.simulate.tasks import load_tasks
    from kat.evals.simulate.topology import build_layout

    if cfg.size not in SIZES:
        raise ValueError(f"size: {cfg.size!r} is not one of {', '.join(SIZES)}")
    cats = [parse_category(c) for c in cfg.categories] if cfg.categories else list(ALL_CATEGORIES)
    pool = [t for t in load_tasks().values() if t.world_size <= cfg.max_ranks]
    if not pool:
        raise ValueError(f"max_ranks: no task has at most {cfg.max_ranks} ranks")
    sevs = [s.value for s in SEVERITIES]
    out: list[CaseRef] = []
    for ci, cat in enumerate(cats):
        usable = [t for t in pool if supported(cat, build_layout(t)) is None]
        if not usable:
            raise ValueError(f"categories: no task within {cfg.max_ranks} ranks supports {cat.value}")
        for si, split in enumerate(SPLITS):
            for k in range(SIZES[cfg.size][split]):
                seed = _SPLIT_SEED_BASE[split] + 1000 * ci + k
                task = usable[(ci * 7 + k * 5 + si * 3) % len(usable)]
                sev = None if cat == Category.NONE else sevs[(ci + k + si) % len(sevs)]
                cid = f"{split}-{cat.value}-{k:02d}"
                out.append(
                    CaseRef(
                        id=cid,
                        split=split,
                        category=cat.value,
                        task=task.name,
                        seed=seed,
                        severity=sev,
                        size=cfg.incident_size,
                        bundle=f"test/{cid}" if split == "test" else None,
                    )
                )
    groups: dict[tuple[str, int], str] = {}
    for c in out:  # the guarantee the split rests on
        prev = groups.setdefault((c.task, c.seed), c.split)
        if prev != c.split:
            raise AssertionError(f"(task, seed) group {(c.task, c.seed)} in both {prev} and {c.split}")
    return out


def _trim_diagnosis(args: dict) -> dict:
    """The target Diagnosis: evidence items name only the id (the validator fills tool/query/summary)."""
    args = json.loads(json.dumps(args, default=str))
    args["evidence"] = [{"id": e["id"]} for e in args.get("evidence") or [] if isinstance(e, dict) and e.get("id")]
    return args


class Trajectory(BaseModel):
    messages: list[dict]
    tools: list[dict]
    category: str
    diagnosis: dict
    evidence: list[dict]


def _rules_run(bundle: Path, config: Any = None, analyzer: Any = None) -> tuple[Any, dict, list[dict], list[Any]]:
    """(Diagnosis, final state, OpenAI tools, ledger) of one Session on `bundle` (rules, or a scripted Analyzer)."""
    from kat.agent.session import Session
    from kat.agent.state import ledger_entries

    s = Session(bundle, "rules", config=config)
    try:
        if analyzer is not None:
            s.rebind(analyzer=analyzer)
        thread_id, d = s.run_diagnosis()
        state = s.state(thread_id)
        tools = analyzer_tools(s.tools)
    finally:
        s.close()
    return d, state, tools, ledger_entries(state)


def _conversation(state: dict, tool_result_chars: int | None, system: str) -> list[dict]:
    """The messages up to the accepted submit_diagnosis call, as the LLM Analyzer sees them."""
    from langchain_core.messages import AIMessage

    from kat.agent.backends.llm import compact_messages
    from kat.agent.graph import SUBMIT

    msgs = list(state.get("messages") or [])
    last = max(
        (i for i, m in enumerate(msgs) if isinstance(m, AIMessage) and any(c["name"] == SUBMIT for c in m.tool_calls or [])), default=None
    )
    if last is None:
        raise ValueError("the trajectory has no submit_diagnosis call")
    return to_openai_messages(compact_messages(msgs[: last + 1], tool_result_chars), system=system)


def short_trajectory(bundle: Path, tool_result_chars: int | None, max_steps: int = 6) -> Trajectory:
    """The short playbook (evals/finetune/short_playbook.py) on `bundle`, submitting the full rules run's Diagnosis."""
    from kat import prompts
    from kat.agent.graph import AgentConfig, validate_diagnosis
    from kat.evals.finetune import short_playbook as pb

    d_full, _, _, full_ledger = _rules_run(bundle)
    target = d_full.model_dump()

    def submit(ledger: list[Any]) -> dict:
        return pb.remap_diagnosis(target, full_ledger, ledger)

    scripted = pb.ScriptedAnalyzer(d_full.root_cause.category, submit)
    d, state, tools, ledger = _rules_run(bundle, AgentConfig(max_steps=max_steps), scripted)
    if d.status != "complete":
        raise ValueError(f"the short trajectory ended without an accepted diagnosis: {d.root_cause.summary[:200]}")
    om = _conversation(state, tool_result_chars, prompts.load(pb.SYSTEM_PROMPT))
    call = om[-1]["tool_calls"][0]["function"]
    ok, reason = validate_diagnosis(call["arguments"], ledger)
    if ok is None:
        raise ValueError(f"remapped diagnosis rejected: {reason}")
    tools = [t for t in tools if t["function"]["name"] in (*pb.TOOLS, "submit_diagnosis")]
    ev = [{"id": e.id, "tool": e.tool, "summary": e.summary} for e in full_ledger]
    return Trajectory(messages=om, tools=tools, category=d.root_cause.category, diagnosis=target, evidence=ev)


def rules_trajectory(bundle: Path, tool_result_chars: int | None) -> Trajectory:
    """Run the real rules Session and return the conversation as the LLM Analyzer would see and produce it."""
    from langchain_core.messages import AIMessage

    from kat import prompts
    from kat.agent.backends.llm import compact_messages
    from kat.agent.graph import SUBMIT, validate_diagnosis
    from kat.agent.session import Session
    from kat.agent.state import ledger_entries

    s = Session(bundle, "rules")
    try:
        thread_id, d = s.run_diagnosis()
        state = s.state(thread_id)
        tools = analyzer_tools(s.tools)
    finally:
        s.close()
    msgs = list(state.get("messages") or [])
    last = max(
        (i for i, m in enumerate(msgs) if isinstance(m, AIMessage) and any(c["name"] == SUBMIT for c in m.tool_calls or [])), default=None
    )
    if last is None:
        raise ValueError("the trajectory has no submit_diagnosis call")
    msgs = compact_messages(msgs[: last + 1], tool_result_chars)
    om = to_openai_messages(msgs, system=prompts.load("system"))
    call = om[-1]["tool_calls"][0]["function"]
    call["arguments"] = _trim_diagnosis(call["arguments"])
    ledger = ledger_entries(state)
    ok, reason = validate_diagnosis(call["arguments"], ledger)
    if ok is None:  # the trimmed target must still pass the graph's validator
        raise ValueError(f"trimmed diagnosis rejected: {reason}")
    ev = [{"id": e.id, "tool": e.tool, "summary": e.summary} for e in ledger]
    return Trajectory(messages=om, tools=tools, category=d.root_cause.category, diagnosis=d.model_dump(), evidence=ev)


def narrative(gt: Any, title: str, traj: Trajectory) -> str:
    """An incident write-up from the ground truth and the evidence the playbook gathered."""
    lines = [
        f"# Incident: {title}",
        "",
        f"Symptom: {gt.symptom}",
        "",
        f"Root cause: {gt.category} (component {gt.component})"
        + (f" on rank(s) {', '.join(map(str, gt.affected_ranks))}" if gt.affected_ranks else "")
        + (f", host(s) {', '.join(gt.affected_hosts)}" if gt.affected_hosts else "")
        + ".",
        "",
        gt.summary,
        "",
    ]
    if gt.causal_chain:
        lines.append("Causal chain, from root cause to symptom:")
        lines += [f"{i}. {link.cause} -> {link.effect}" for i, link in enumerate(gt.causal_chain, 1)]
        lines.append("")
    cited = {i for link in traj.diagnosis.get("causal_chain") or [] for i in link.get("evidence") or []}
    ev = [e for e in traj.evidence if e["id"] in cited and e.get("summary")]
    if ev:
        lines.append("Evidence:")
        lines += [f"- {e['tool']}: {e['summary']}" for e in ev]
        lines.append("")
    for c in gt.confounders:
        lines.append(f"Look-alike, not the cause: {c.description}")
    ruled = traj.diagnosis.get("alternatives_ruled_out") or []
    lines += [f"Ruled out {r['category']}: {r['why']}" for r in ruled]
    rem = traj.diagnosis.get("remediation") or []
    if rem:
        lines += ["", "Remediation:"] + [f"- {r}" for r in rem]
    return "\n".join(lines).strip() + "\n"


def knowledge_docs() -> list[dict]:
    corpus = Path(__file__).resolve().parents[2] / "knowledge" / "corpus"
    return [
        {"id": f"kb:{p.stem}", "source": f"knowledge/corpus/{p.name}", "text": p.read_text(encoding="utf-8")}
        for p in sorted(corpus.glob("*.md"))
    ]


def _token_counts(tokenizer: Any, traj: Trajectory, template: str | None = None) -> dict[str, int]:
    full, spans = assistant_spans(tokenizer, traj.messages, traj.tools, template=template)
    n = len(tokenizer(full, add_special_tokens=False)["input_ids"])
    asst = sum(len(tokenizer(full[a:b], add_special_tokens=False)["input_ids"]) for a, b in spans)
    tool = sum(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in traj.messages if m["role"] == "tool")
    return {"tokens": n, "assistant_tokens": asst, "tool_result_tokens": tool}


def _stats(rows: list[dict]) -> TokenStats:
    if not rows:
        return TokenStats()
    t = [r["tokens"] for r in rows]
    return TokenStats(
        examples=len(rows),
        max=max(t),
        mean=round(statistics.mean(t), 1),
        median=statistics.median(t),
        assistant_mean=round(statistics.mean(r["assistant_tokens"] for r in rows), 1),
        tool_result_mean=round(statistics.mean(r["tool_result_tokens"] for r in rows), 1),
    )


def load_tokenizer(path: Path | str | None) -> tuple[Any, str]:
    """(tokenizer, description): an HF folder, or the SmolLM2 GGUF's own tokenizer."""
    from transformers import AutoTokenizer

    if path:
        p = Path(path)
        if not (p / "tokenizer_config.json").exists() and not (p / "tokenizer.json").exists():
            raise FileNotFoundError(f"--tokenizer: {p} has no tokenizer (tokenizer.json / tokenizer_config.json)")
        return AutoTokenizer.from_pretrained(str(p)), str(p)
    from kat.evals.finetune.base_model import smollm2_gguf

    g = smollm2_gguf()
    return AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name), str(g)


def _case_work(case: dict, bundle: str, cfg: dict) -> dict:
    """Generate one incident and its trajectory (top level: runs in a worker process)."""
    from kat.evals.simulate import generate_incident

    c, conf, b = CaseRef.model_validate(case), DataConfig.model_validate(cfg), Path(bundle)
    gt = generate_incident(c.category, c.task, c.seed, b, severity=c.severity, size=c.size, incident_id=f"ft-{c.id}")
    try:
        traj = (
            short_trajectory(b, conf.tool_result_chars, conf.max_steps)
            if conf.trajectory == "short"
            else rules_trajectory(b, conf.tool_result_chars)
        )
    except Exception as exc:  # reported as a rejection by the caller
        return {"generated": True, "error": f"{type(exc).__name__}: {exc}"}
    title = json.loads((b / "incident.json").read_text()).get("title") or c.id
    return {"truth": gt.category, "trajectory": traj.model_dump(), "narrative": narrative(gt, title, traj)}


def _map(fn: Callable[..., dict], work: list[tuple], jobs: int) -> Any:
    """fn(*w) for every w, in order; in `jobs` spawned processes when jobs > 1."""
    if jobs <= 1 or len(work) <= 1:
        yield from (fn(*w) for w in work)
        return
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        yield from pool.map(fn, *zip(*work))


def build_data(
    out: Path,
    cfg: DataConfig,
    tokenizer_path: Path | str | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] = lambda s: None,
) -> DataManifest:
    """Generate incidents, run the rules Analyzer, write corpus, SFT splits, test bundles and the manifest."""
    t0 = time.perf_counter()
    cases = plan_cases(cfg)
    tpath = SMALL_TEMPLATE_PATH if cfg.trajectory == "short" else TEMPLATE_PATH  # bad settings fail before anything is written or loaded
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to rebuild it")
        shutil.rmtree(out)
    (out / "sft").mkdir(parents=True)
    tok, tok_desc = load_tokenizer(tokenizer_path)
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    kept: dict[str, list[CaseRef]] = {s: [] for s in SPLITS}
    narratives: list[dict] = []
    rejected: list[Rejected] = []
    with tempfile.TemporaryDirectory(prefix="kat-ft-") as tmp:
        work = [(c.model_dump(), str(out / c.bundle if c.bundle else Path(tmp) / c.id), cfg.model_dump()) for c in cases]
        for i, (c, res) in enumerate(zip(cases, _map(_case_work, work, cfg.jobs)), 1):
            if res.get("error"):  # a failed run is not training data; say why
                rejected.append(Rejected(id=c.id, reason=res["error"][:300]))
                progress(f"[{i}/{len(cases)}] {c.id}: rejected ({res['error'][:120]})")
                if c.split == "test" and res.get("generated"):
                    kept["test"].append(c)  # a test case stays a test case: the eval scores it anyway
                continue
            traj = Trajectory.model_validate(res["trajectory"])
            if traj.category != res["truth"]:
                rejected.append(Rejected(id=c.id, reason=f"rules said {traj.category}, ground truth {res['truth']}"))
                progress(f"[{i}/{len(cases)}] {c.id}: rejected (wrong category {traj.category})")
                if c.split == "test":
                    kept["test"].append(c)
                continue
            counts = _token_counts(tok, traj, load_template(tpath))
            if counts["tokens"] > cfg.max_tokens:
                rejected.append(Rejected(id=c.id, reason=f"{counts['tokens']} tokens > max_tokens {cfg.max_tokens}"))
                if c.split == "test":
                    kept["test"].append(c)
                continue
            row = {
                "id": c.id,
                "split": c.split,
                "task": c.task,
                "seed": c.seed,
                "category": c.category,
                **counts,
                "messages": traj.messages,
                "tools": traj.tools,
            }
            rows[c.split].append(row)
            kept[c.split].append(c)
            if c.split == "train":
                narratives.append({"id": f"narrative:{c.id}", "source": "generated incident (train split)", "text": res["narrative"]})
            progress(f"[{i}/{len(cases)}] {c.id}: {counts['tokens']} tokens ({counts['assistant_tokens']} assistant)")
    splits = {}
    for s in SPLITS:
        f = f"sft/{s}.jsonl"
        with open(out / f, "w", encoding="utf-8") as fh:
            for r in rows[s]:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        splits[s] = SplitInfo(file=f, examples=len(rows[s]), cases=kept[s], tokens=_stats(rows[s]))
    docs = (knowledge_docs() if cfg.include_knowledge else []) + narratives
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    corpus_tokens = sum(len(tok(d["text"], add_special_tokens=False)["input_ids"]) for d in docs)
    template = tpath.read_bytes()
    m = DataManifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        config=cfg,
        tokenizer=tok_desc,
        chat_template=str(tpath.relative_to(REPO)),
        chat_template_sha256=hashlib.sha256(template).hexdigest(),
        tool_result_chars=cfg.tool_result_chars,
        serve_env=serve_env(cfg),
        splits=splits,
        corpus={
            "file": "corpus.jsonl",
            "documents": len(docs),
            "knowledge_documents": len(docs) - len(narratives),
            "narratives": len(narratives),
            "tokens": corpus_tokens,
        },
        rejected=rejected,
        seconds=round(time.perf_counter() - t0, 1),
    )
    (out / MANIFEST).write_text(m.model_dump_json(indent=2) + "\n")
    (out / "README.md").write_text(_readme(m))
    return m


def serve_env(cfg: DataConfig) -> dict[str, str]:
    """The agent environment the tuned model must run with: the compaction and, for short
    trajectories, the system prompt and tool list it was trained on."""
    from kat.evals.finetune.short_playbook import SHORT_ENV

    env = {"KAT_TOOL_RESULT_CHARS": str(cfg.tool_result_chars)}
    return {**env, **SHORT_ENV} if cfg.trajectory == "short" else env


def _readme(m: DataManifest) -> str:
    head = (__doc__ or "").split("Layout of DIR", 1)[-1]
    counts = "\n".join(
        f"- {s}: {i.examples} examples, {len(i.cases)} cases, tokens max {i.tokens.max} mean {i.tokens.mean}" for s, i in m.splits.items()
    )
    return (
        f"# KAT fine-tuning data\n\nBuilt {m.created} by `kat finetune data` (size {m.config.size}).\n\n{counts}\n\n"
        f"Corpus: {m.corpus['documents']} documents, {m.corpus['tokens']} tokens.\n\n"
        f"Evaluate the held-out cases with `kat eval {m.test_dir}` (bundle directory) and serve the tuned model "
        f"with KAT_TOOL_RESULT_CHARS={m.tool_result_chars} set for the agent.\n\nLayout of DIR{head}"
    )
