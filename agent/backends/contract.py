"""The serving contract of an LLM Analyzer: the prompt, tools, compaction, chat template and reply
cap a model is run with. A model fine-tuned on the short playbook must be run exactly as it was
trained (evals/finetune reads `SMALL` from here; agent/ never reads evals/).

Unset fields fall back to the settings (`KAT_SYSTEM_PROMPT`, `KAT_ANALYZER_TOOLS`,
`KAT_TOOL_RESULT_CHARS`; kat.knowledge.settings), so a server started by hand can be matched
from the environment; `env()` gives those variables for a contract.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kat.knowledge.settings import settings


class AnalyzerContract(BaseModel):
    """How an LLM Analyzer is prompted and served."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system_prompt: str = Field("system", description="prompts/ file of the system prompt")
    tools: tuple[str, ...] = Field((), description="tools bound to the model (empty: every tool)")
    tool_result_chars: int | None = Field(None, ge=0, description="compact tool results to this many payload characters")
    chat_template: str = Field("analyzer_chat_template.jinja", description="prompts/ file the server renders the chat with")
    tool_call_parser: str = Field("hermes", description="vLLM --tool-call-parser matching the template")
    max_tokens: int | None = Field(None, ge=1, description="cap on tokens per Analyzer reply (None: the server's)")

    @classmethod
    def from_settings(cls) -> AnalyzerContract:
        """The default contract with the environment's overrides."""
        env = settings()
        return cls(system_prompt=env.system_prompt, tools=env.analyzer_tools, tool_result_chars=env.tool_result_chars)

    def env(self) -> dict[str, str]:
        """The KAT_* variables that state this contract's prompt and tools (and compaction, when set)."""
        out = {"KAT_SYSTEM_PROMPT": self.system_prompt}
        if self.tools:
            out["KAT_ANALYZER_TOOLS"] = ",".join(self.tools)
        if self.tool_result_chars is not None:
            out["KAT_TOOL_RESULT_CHARS"] = str(self.tool_result_chars)
        return out


DEFAULT = AnalyzerContract()
# The short playbook a small model is fine-tuned on (evals/finetune/short_playbook.py): the rules
# Analyzer's tools in its order (catalogue and detector, hypotheses -> compares + one log search, the
# leader's card, submit), its own prompt and template, results compacted to 160 payload characters
# (the summaries carry what decides; an example is then ~3.6k-4.1k tokens). Replies are up to ~420
# tokens (eight compares and the log search), so 512 caps a reply that runs on.
SMALL = AnalyzerContract(
    system_prompt="system_small",
    tools=("metric_catalog", "outpost_detect", "metric_compare", "log_search", "knowledge_search"),
    tool_result_chars=160,
    chat_template="analyzer_chat_template_small.jinja",
    max_tokens=512,
)
