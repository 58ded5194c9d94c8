"""What one evaluation run executes: an Analyzer backend plus optional ablations.

The agent has no switch to hide a tool, so an ablation edits the Session's tool table after
construction (evals may import everything): for an LLM Analyzer the tool is removed, so the
model never sees it; the rules playbook always calls its fixed tools, so there the tool is
replaced by a stub that answers `no_data` ("disabled for this evaluation").
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# Ablation name -> tools it takes away.
ABLATIONS: dict[str, tuple[str, ...]] = {
    "no-outpost": ("outpost_detect",),  # raw tools only: metrics, logs, trace slices, knowledge
    "no-knowledge": ("knowledge_search",),
}
# `--ablations` (all at once): every tool ablation, plus the LLM backend when one is configured.
LLM_ABLATION = "llm"


class Variant(BaseModel):
    """One configuration under test; `name` keys its result directory."""

    name: str
    analyzer: str = "rules"
    base_url: str | None = None
    model: str | None = None
    disabled_tools: list[str] = Field(default_factory=list)
    max_steps: int = 24
    time_budget_s: float = 300.0
    request_timeout_s: float | None = Field(None, description="LLM backends: seconds per model request (backend default 120)")

    def key(self) -> str:
        import hashlib

        # Unset optional settings stay out of the hash, so adding one does not invalidate cached runs.
        return hashlib.sha1(
            self.model_dump_json(exclude={k for k in ("request_timeout_s",) if getattr(self, k) is None}).encode()
        ).hexdigest()[:12]

    def backend_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {k: v for k, v in (("base_url", self.base_url), ("model", self.model)) if v}
        if self.request_timeout_s:  # a small model on CPU can take minutes per reply
            opts["timeout"] = self.request_timeout_s
        return opts


def base_variant(analyzer: str, base_url: str | None, model: str | None) -> Variant:
    tag = analyzer if not model else f"{analyzer}-{model.rsplit('/', 1)[-1]}"
    return Variant(name=_safe(tag), analyzer=analyzer, base_url=base_url, model=model)


def ablation_variants(base: Variant, names: list[str], llm: Variant | None = None) -> list[Variant]:
    """The baseline first, then one variant per ablation name (unknown names raise ValueError)."""
    out = [base]
    for n in names:
        n = n.strip().lower()
        if not n or n in ("baseline", "none"):
            continue
        if n == LLM_ABLATION or n.startswith("analyzer="):
            v = llm if n == LLM_ABLATION else Variant(name=_safe(n.split("=", 1)[1]), analyzer=n.split("=", 1)[1])
            if v is None:
                raise ValueError("the 'llm' ablation needs an LLM backend: pass --llm-analyzer/--base-url/--model")
            out.append(v)
            continue
        if n not in ABLATIONS:
            raise ValueError(f"unknown ablation {n!r}; known: {', '.join([*ABLATIONS, LLM_ABLATION, 'analyzer=NAME'])}")
        out.append(base.model_copy(update={"name": f"{base.name}-{n}", "disabled_tools": list(ABLATIONS[n])}))
    return out


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)
