"""`kat finetune compare`: base small model vs fine-tuned small model vs `rules` on the held-out split.

Every variant runs through the ordinary eval harness (evals/harness: runner, scoring, report),
on the test bundles listed in the data manifest (`kat finetune data`). The two models are served
by vLLM (VLLMServer): each on its own server, both at once or one after the other, or both from
one server (base + the adapter as a LoRA module); `rules` needs no server. The result is one table:

    variant | n | valid tool calls | root-cause top-1 | chain link F1 | faithfulness | mean steps | wall

* valid tool calls: sum over runs of calls that parsed and validated against the tool's args
  schema / every call attempted, including unparseable and in-text ones (evals/harness/toolcalls.py).
* root-cause top-1: as `kat eval` (evals/harness/scoring.py); errors count as wrong.
* chain link F1: 2PR/(P+R) of micro chain-link precision P and recall R (the harness's link
  matching), over the chains the model submitted itself: a run that ended in the graph's partial
  answer (status partial) carries a chain the finalize node built from the evidence, which counts
  as no chain here. 0 when the model predicted no link at all (P undefined, R = 0).
* faithfulness: per fault case (the truth has a chain), the share of the model's own predicted
  links that are faithful as `kat eval` defines it (evals/harness/scoring.py), averaged over the
  fault cases; a case with no chain of its own (no submission, a partial answer, an error) scores 0.
  `kat eval` scores the agent's answer, partial ones included, and divides by predicted links only
  (one faithful answer in 13 reads 1.0): those figures stay in report.md ("chain P/R", "faithful").
* mean steps: Analyzer calls per run; wall: mean and total seconds per run (model variants also
  report the server's start-up time and decode tokens/s separately).

The table goes to stdout, OUT/compare.md and OUT/compare.json; the harness's full report (per
category, confusion matrices, failed runs) to OUT/report.md, and per-run results to OUT/runs/.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from kat.evals.finetune.serve import ServeSpec, VLLMServer


@dataclass
class ModelUnderTest:
    """One model variant: a name in the table and how to serve it."""

    name: str  # base | tuned
    spec: ServeSpec


class CompareRow(BaseModel):
    variant: str
    analyzer: str
    model: str | None = None
    n: int
    errors: int = 0
    valid_call_rate: float | None = Field(None, description="valid / attempted tool calls, over all runs")
    calls_attempted: int = 0
    calls_valid: int = 0
    top1: float | None = None
    chain_precision: float | None = None
    chain_recall: float | None = None
    chain_f1: float | None = None
    faithfulness: float | None = None
    steps_mean: float | None = None
    wall_mean_s: float | None = None
    wall_total_s: float | None = None
    server_start_s: float | None = None
    tokens_out: int | None = None
    decode_tok_s: float | None = Field(None, description="output tokens / wall seconds of the model's runs (includes prefill and tools)")
    skipped: str | None = None


class CompareReport(BaseModel):
    created: str
    data_dir: str | None
    cases: list[str]
    settings: dict[str, Any]
    rows: list[CompareRow]
    notes: list[str] = Field(default_factory=list)


COLUMNS = (
    ("variant", "variant"),
    ("n", "n"),
    ("valid tool calls", "valid_call_rate"),
    ("root-cause top-1", "top1"),
    ("chain link F1", "chain_f1"),
    ("faithfulness", "faithfulness"),
    ("mean steps", "steps_mean"),
    ("wall/case s", "wall_mean_s"),
    ("wall total s", "wall_total_s"),
)


def test_cases(data_dir: Path, limit: int | None = None) -> list[tuple[str, Path]]:
    """(case id, bundle) of the manifest's test split; `limit` keeps one case per category first, in order."""
    from kat.evals.finetune.data import load_manifest
    from kat.evals.harness.cases import list_cases

    m = load_manifest(data_dir)
    dirs = [p for p in m.test_cases(Path(data_dir)) if p.exists()]
    if not dirs:  # a manifest without bundle paths: every bundle under the test dir
        return _limit(list_cases(Path(data_dir) / m.test_dir), limit)
    return _limit([(p.name, p) for p in dirs], limit)


def _limit(cases: list[tuple[str, Path]], limit: int | None) -> list[tuple[str, Path]]:
    if not limit or limit >= len(cases):
        return cases
    from kat.evals.simulate.ground_truth import load_ground_truth

    firsts: list[tuple[str, Path]] = []
    rest: list[tuple[str, Path]] = []
    seen: set[str | None] = set()
    for cid, p in cases:
        cat = load_ground_truth(p).category
        (rest if cat in seen else firsts).append((cid, p))
        seen.add(cat)
    return (firsts + rest)[:limit]


def _f1(p: float | None, r: float | None) -> float | None:
    if r == 0.0:  # nothing of the truth found, whatever P is (None: nothing predicted)
        return 0.0
    if p is None or r is None:
        return None
    return round(2 * p * r / (p + r), 4) if p + r else 0.0


def _own_chain(run: Any) -> tuple[int, int, int]:
    """(predicted, matched, faithful) links of the chain the model itself submitted. A run that ended in
    the graph's partial answer (status partial: no accepted submission) has a chain the finalize node
    built from the evidence ledger, not the model's: it counts as no chain."""
    sc = run.scores
    if sc is None or run.trajectory.status == "partial":
        return 0, 0, 0
    return sc.chain_predicted, sc.chain_matched, sc.faithful_links


def model_chain(runs: list[Any]) -> tuple[float | None, float | None]:
    """Micro chain-link precision and recall over the cases whose truth has a chain, own chains only."""
    from kat.evals.harness.aggregate import _r

    chained = [r for r in runs if r.scores is not None and r.scores.chain_truth]
    own = [_own_chain(r) for r in chained]
    return (
        _r(sum(m for _, m, _ in own), sum(p for p, _, _ in own)),
        _r(sum(m for _, m, _ in own), sum(r.scores.chain_truth for r in chained)),
    )


def faithfulness_per_case(runs: list[Any]) -> float | None:
    """Mean over fault cases of faithful links / predicted links of the model's own chain; a case with
    no chain of its own (none submitted, a partial answer, an error) scores 0."""
    from kat.evals.harness.scoring import CONTROLS

    per_case = []
    for r in runs:
        if r.category in CONTROLS:
            continue
        pred, _, faithful = _own_chain(r)
        per_case.append(faithful / pred if pred else 0.0)
    return round(sum(per_case) / len(per_case), 4) if per_case else None


def row_of(variant: Any, runs: list[Any], server_start_s: float | None = None) -> CompareRow:
    from kat.evals.harness.aggregate import tally

    t = tally(runs)
    chain_p, chain_r = model_chain(runs)
    att = sum(r.trajectory.calls_attempted or 0 for r in runs)
    val = sum(r.trajectory.calls_valid or 0 for r in runs)
    walls = [r.trajectory.wall_s for r in runs if r.error is None]
    tout = [r.trajectory.tokens_out for r in runs if r.trajectory.tokens_out is not None]
    return CompareRow(
        variant=variant.name,
        analyzer=variant.analyzer,
        model=variant.model,
        n=len(runs),
        errors=t.errors,
        valid_call_rate=round(val / att, 4) if att else None,
        calls_attempted=att,
        calls_valid=val,
        top1=t.top1,
        chain_precision=chain_p,
        chain_recall=chain_r,
        chain_f1=_f1(chain_p, chain_r),
        faithfulness=faithfulness_per_case(runs),
        steps_mean=t.steps_mean,
        wall_mean_s=round(sum(walls) / len(walls), 1) if walls else None,
        wall_total_s=round(sum(walls), 1) if walls else None,
        server_start_s=server_start_s,
        tokens_out=sum(tout) if tout else None,
        decode_tok_s=round(sum(tout) / sum(walls), 2) if tout and walls and sum(walls) else None,
    )


_SECONDS = ("wall_mean_s", "wall_total_s", "server_start_s", "steps_mean", "decode_tok_s")


def _fmt(v: Any, key: str = "") -> str:
    """Rates with 3 decimals; seconds, steps and tokens/s with 1 (0.9 s is not a rate of 0.900)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if key in _SECONDS or v > 1.0 else f"{v:.3f}"
    return str(v)


def markdown_table(rows: list[CompareRow]) -> list[str]:
    out = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for r in rows:
        if r.skipped:
            out.append(f"| {r.variant} | " + " | ".join(["-"] * (len(COLUMNS) - 1)) + " |")
        else:
            cells = [_fmt(getattr(r, k), k) for _, k in COLUMNS]
            cells[2] += f" ({r.calls_valid}/{r.calls_attempted})"  # valid tool calls: the counts behind the rate
            out.append("| " + " | ".join(cells) + " |")
    return out


def render_markdown(rep: CompareReport) -> str:
    md = [
        "# Analyzer comparison: base vs fine-tuned small model vs rules",
        "",
        f"{len(rep.cases)} held-out case(s) from `{rep.data_dir}`; created {rep.created}.",
        "",
    ]
    md += markdown_table(rep.rows) + [""]
    md += [
        "Definitions: valid tool calls = calls that parsed and validated against the tool's argument schema / all "
        "calls attempted (incl. unparseable arguments, calls left in the text, and one per reply with no call at all, "
        "since every reply must be a call; evals/harness/toolcalls.py), over all runs. Root-cause top-1 as `kat eval` "
        "(errors count as wrong). Chain link F1 = 2PR/(P+R) of micro chain-link precision/recall over the chains the "
        "model submitted (a partial answer's chain is the graph's, not the model's; 0 when no link was predicted). "
        "Faithfulness = mean over fault cases of the share of the model's own links that are faithful "
        "(`kat eval`'s test); a case without a chain of its own scores 0. Mean steps = Analyzer calls per run. "
        "Wall = seconds per run.",
        "",
    ]
    extra = [r for r in rep.rows if r.analyzer != "rules" and not r.skipped]
    if extra:
        md += [
            "| model variant | served model | server start s | calls valid/attempted | output tokens | tokens/s (whole run) | errors |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        md += [
            f"| {r.variant} | {r.model} | {_fmt(r.server_start_s, 'server_start_s')} | {r.calls_valid}/{r.calls_attempted} | "
            f"{_fmt(r.tokens_out)} | {_fmt(r.decode_tok_s, 'decode_tok_s')} | {r.errors} |"
            for r in extra
        ]
        md.append("")
    md += ["Settings: `" + json.dumps(rep.settings, default=str) + "`", ""]
    md += [f"> {n}" for n in rep.notes]
    md += ["", "Per-category figures, confusion matrices and failed runs: `report.md` in the same folder."]
    return "\n".join(md) + "\n"


def _all_cached(out: Path, v: Any, cases: list[tuple[str, Path]]) -> bool:
    from kat.evals.harness.models import CaseRun
    from kat.evals.harness.runner import result_path

    for cid, _ in cases:
        p = result_path(out, v.name, cid, 0)
        try:
            if CaseRun.model_validate_json(p.read_bytes()).variant_key != v.key():
                return False
        except (OSError, ValueError):
            return False
    return True


class _CompareRun:
    """The rows, runs and notes of one comparison, and the three ways of serving its models."""

    def __init__(
        self,
        out: Path,
        cases: list[tuple[str, Path]],
        jobs: int,
        resume: bool,
        say: Callable[[str], None],
        max_steps: int,
        time_budget_s: float,
        request_timeout_s: float | None,
    ):
        self.out, self.cases, self.jobs, self.resume, self.say = out, cases, jobs, resume, say
        self.budget = {"max_steps": max_steps, "time_budget_s": time_budget_s}
        self.request_timeout_s = request_timeout_s
        self.rows: list[CompareRow] = []
        self.all_runs: list[Any] = []
        self.variants: list[Any] = []
        self.notes: list[str] = []

    def variant(self, name: str, analyzer: str, base_url: str | None = None, model: str | None = None) -> Any:
        from kat.evals.harness.variants import Variant

        if analyzer == "rules":
            return Variant(name=name, analyzer=analyzer, **self.budget)
        return Variant(
            name=name, analyzer=analyzer, base_url=base_url, model=model, request_timeout_s=self.request_timeout_s, **self.budget
        )

    def progress(self, run: Any, done: int, total: int, cached: bool) -> None:
        sc, tr = run.scores, run.trajectory
        what = (
            f"error: {(run.error or '').splitlines()[0][:100]}"
            if run.error
            else f"{run.category} -> {sc.predicted}; calls {tr.calls_valid}/{tr.calls_attempted} valid; {tr.steps} steps"
        )
        self.say(f"  [{done}/{total}] {run.variant} {run.case}: {what} ({'cached' if cached else f'{tr.wall_s:.0f} s'})")

    def serving_failed(self, exc: Exception, failed: list[ModelUnderTest], what: str, where: str) -> None:
        """Models that could not be served get a skipped row each, and the report a note."""
        msg = str(exc)
        self.say(f"models: FAILED: {msg}")
        self.notes.append(f"{what}: {msg.splitlines()[0]} ({where})")
        done = {r.variant for r in self.rows}
        self.rows.extend(
            CompareRow(variant=m.name, analyzer="openai", model=m.spec.served_name, n=0, skipped=msg.splitlines()[0])
            for m in failed
            if m.name not in done
        )

    def run_variants(self, vs: list[Any], start_s: float | dict[str, float | None] | None, n_jobs: int = 1) -> None:
        from kat.evals.harness.runner import run_all

        if not self.resume:
            for v in vs:
                shutil.rmtree(self.out / "runs" / v.name, ignore_errors=True)
        runs = run_all(self.out, self.cases, vs, jobs=n_jobs, progress=self.progress)
        for v in vs:
            self.variants.append(v)
            mine = [r for r in runs if r.variant == v.name]
            self.all_runs.extend(mine)
            self.rows.append(row_of(v, mine, start_s.get(v.name) if isinstance(start_s, dict) else start_s))

    def run_variant(self, v: Any, start_s: float | None) -> None:
        # CPU-bound (rules, or a model on a server of its own): no more processes than cores.
        self.run_variants([v], start_s, min(self.jobs, os.cpu_count() or 1))

    def _cached(self, vs: list[Any]) -> bool:
        if self.resume and all(_all_cached(self.out, v, self.cases) for v in vs):
            self.say("every case already has a result (--resume); not serving")
            self.run_variants(vs, None)
            return True
        return False

    def one_server(self, server: ServeSpec, models: list[ModelUnderTest]) -> None:
        """One vLLM server (e.g. the base + the adapter as a LoRA module) for every model, started once."""
        vs = [self.variant(m.name, "openai", server.base_url, m.spec.served_name) for m in models]
        log = self.out / "logs" / "vllm.log"
        t0 = time.monotonic()
        if self._cached(vs):
            return
        self.say(
            f"serving {server.model}{' + LoRA ' + str(server.adapter) if server.adapter else ''} on {server.base_url} "
            f"for {', '.join(m.name + '=' + m.spec.served_name for m in models)} (log {log}) ..."
        )
        try:
            with VLLMServer(server, log) as srv:
                self.say(f"server ready in {srv.ready_s:.0f} s; {len(self.cases)} case(s) x {len(vs)} model(s), {self.jobs} at a time")
                self.run_variants(vs, srv.ready_s, self.jobs)
        except Exception as exc:  # reported in the table, not fatal for the rules row
            self.serving_failed(exc, models, "server", f"after {time.monotonic() - t0:.0f} s; log {log}")

    def parallel_servers(self, models: list[ModelUnderTest]) -> None:
        """A server per model (own port), all up at once; their runs go through the harness together."""
        vs = [self.variant(m.name, "openai", m.spec.base_url, m.spec.served_name) for m in models]
        if len({m.spec.base_url for m in models}) < len(models):
            raise ValueError("parallel servers need one port per model")
        t0 = time.monotonic()
        if self._cached(vs):
            return
        srvs = [VLLMServer(m.spec, self.out / "logs" / f"vllm-{m.name}.log") for m in models]
        try:
            for m, srv in zip(models, srvs):  # all boot at once
                self.say(
                    f"{m.name}: serving {m.spec.model}{' + ' + str(m.spec.adapter) if m.spec.adapter else ''} on "
                    f"{m.spec.base_url} (log {srv.log}) ..."
                )
                srv.start()
            for m, srv in zip(models, srvs):
                srv.wait_ready()
                self.say(f"{m.name}: server ready in {srv.ready_s:.0f} s")
            self.say(f"{len(self.cases)} case(s) x {len(vs)} model(s), {self.jobs} at a time")
            self.run_variants(vs, {m.name: srv.ready_s for m, srv in zip(models, srvs)}, self.jobs)
        except Exception as exc:  # reported in the table, not fatal for the rules row
            self.serving_failed(exc, models, "servers", f"after {time.monotonic() - t0:.0f} s; logs {self.out / 'logs'}")
        finally:
            for srv in srvs:
                srv.stop()

    def own_server(self, m: ModelUnderTest) -> None:
        """One model on a server of its own, after the others."""
        log = self.out / "logs" / f"vllm-{m.name}.log"
        v = self.variant(m.name, "openai", m.spec.base_url, m.spec.served_name)
        t0 = time.monotonic()
        if self.resume and _all_cached(self.out, v, self.cases):  # nothing left to run: no server needed
            self.say(f"{m.name}: every case already has a result (--resume); not serving")
            self.run_variant(v, None)
            return
        self.say(
            f"{m.name}: serving {m.spec.model}{' + ' + str(m.spec.adapter) if m.spec.adapter else ''} on {m.spec.base_url} (log {log}) ..."
        )
        try:
            with VLLMServer(m.spec, log) as srv:
                self.say(f"{m.name}: server ready in {srv.ready_s:.0f} s; {len(self.cases)} case(s)")
                self.run_variant(v, srv.ready_s)
        except Exception as exc:  # a model that cannot be served is reported, not fatal for the others
            msg = str(exc)
            self.say(f"{m.name}: FAILED: {msg}")
            self.notes.append(f"{m.name}: {msg.splitlines()[0]} (after {time.monotonic() - t0:.0f} s; log {log})")
            self.rows.append(CompareRow(variant=m.name, analyzer="openai", model=m.spec.served_name, n=0, skipped=msg.splitlines()[0]))


def _served_as(m: ModelUnderTest) -> dict[str, Any]:
    """How one model was served, as compare.json records it."""
    return {
        "model": str(m.spec.model),
        "adapter": str(m.spec.adapter) if m.spec.adapter else None,
        "dtype": m.spec.dtype,
        "max_model_len": m.spec.max_model_len,
        "max_tokens": m.spec.max_tokens,
        "threads": m.spec.threads,
        "device": m.spec.device,
    }


def run_compare(
    out: Path,
    cases: list[tuple[str, Path]],
    models: list[ModelUnderTest],
    *,
    data_dir: Path | None = None,
    rules: bool = True,
    max_steps: int = 12,
    time_budget_s: float = 300.0,
    request_timeout_s: float | None = 1800.0,
    tool_result_chars: int | None = None,
    agent_env: dict[str, str] | None = None,
    server: ServeSpec | None = None,
    jobs: int = 1,
    parallel: bool = False,
    resume: bool = False,
    say: Callable[[str], None] = print,
) -> CompareReport:
    """Serve each model in turn, run the harness on `cases`, and write compare.md/json + report.md under `out`.

    With `server`, one vLLM server (e.g. the base + the adapter as a LoRA module) serves every model
    (each asks for its own `spec.served_name`), started once, and all their runs go through the
    harness together, `jobs` at a time (vLLM batches the concurrent requests). `agent_env` (the
    data manifest's serve_env: compaction, system prompt, tool list) is set for every LLM run.
    With `parallel`, every model gets its own server (own port) and all are up at once: on CPU
    each server runs one thread, so two models use two cores, and their runs go through the
    harness together, `jobs` at a time.
    """
    from kat.evals.harness import report as rep_mod

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    all_models = list(models)
    for k, val in (agent_env or {}).items():  # the prompt, tools and compaction the model was trained on
        os.environ[k] = str(val)
    if tool_result_chars is not None:  # the compact tool results the model was trained on (the agent's settings read it)
        os.environ["KAT_TOOL_RESULT_CHARS"] = str(tool_result_chars)
    run = _CompareRun(out, cases, jobs, resume, say, max_steps, time_budget_s, request_timeout_s)
    rows, notes, all_runs, variants = run.rows, run.notes, run.all_runs, run.variants
    if rules:
        say(f"rules: {len(cases)} case(s)")
        run.run_variant(run.variant("rules", "rules"), None)
    if server is not None and models:
        run.one_server(server, models)
        models = []
    if parallel and len(models) > 1:
        run.parallel_servers(models)
        models = []
    for m in models:
        run.own_server(m)

    settings = {
        "max_steps": max_steps,
        "time_budget_s": time_budget_s,
        "request_timeout_s": request_timeout_s,
        "tool_result_chars": tool_result_chars,
        "agent_env": agent_env or {},
        "jobs": jobs,
        "one_server": server is not None,
        "parallel_servers": parallel and len(all_models) > 1,
        "models": {m.name: _served_as(m) for m in all_models},
    }
    rep = CompareReport(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        data_dir=str(data_dir) if data_dir else None,
        cases=[c for c, _ in cases],
        settings=settings,
        rows=rows,
        notes=notes,
    )
    (out / "compare.json").write_text(rep.model_dump_json(indent=1))
    (out / "compare.md").write_text(render_markdown(rep))
    if variants:  # the harness's own full report over the same runs
        full = rep_mod.build("finetune-compare", Path(data_dir or "."), len(cases), 1, variants, all_runs, notes)
        rep_mod.write(full, out)
    return rep
