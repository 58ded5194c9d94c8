"""The agent's investigation tools for one incident: pydantic argument models, runners, LangChain tools."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from kat.tools import knowledge_tool, log_search, metric_catalog, metric_compare, metric_lookup, outpost_tool, trace_slice
from kat.tools.context import IncidentContext
from kat.tools.evidence import ToolResult

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

_MODULES = (outpost_tool, metric_catalog, metric_compare, trace_slice, metric_lookup, log_search, knowledge_tool)
_ARGS: dict[str, type[BaseModel]] = {
    outpost_tool.NAME: outpost_tool.OutpostArgs,
    trace_slice.NAME: trace_slice.TraceSliceArgs,
    metric_lookup.NAME: metric_lookup.MetricLookupArgs,
    metric_catalog.NAME: metric_catalog.MetricCatalogArgs,
    metric_compare.NAME: metric_compare.MetricCompareArgs,
    log_search.NAME: log_search.LogSearchArgs,
    knowledge_tool.NAME: knowledge_tool.KnowledgeSearchArgs,
}


@dataclass(frozen=True)
class AgentTool:
    """One investigation tool bound to an incident."""

    name: str
    description: str
    args_model: type[BaseModel]
    runner: Callable[[IncidentContext, Any], ToolResult]
    ctx: IncidentContext

    def validate(self, args: dict[str, Any]) -> BaseModel:
        """Parse arguments; raises pydantic.ValidationError with the model's own message."""
        return self.args_model.model_validate(args or {})

    def run(self, args: dict[str, Any]) -> ToolResult:
        """Validate raw arguments, then run (LangChain's path; the graph validates itself and calls `call`)."""
        try:
            parsed = self.validate(args)
        except ValidationError as exc:
            return ToolResult(tool=self.name, status="error", query=dict(args or {}), message=f"invalid arguments: {exc}")
        return self.call(parsed)

    def call(self, parsed: BaseModel) -> ToolResult:
        """Run on arguments `validate` already parsed."""
        try:
            return self.runner(self.ctx, parsed)
        except Exception as exc:  # a tool bug must reach the Analyzer as a result, not kill the session
            return ToolResult(
                tool=self.name,
                status="error",
                query=parsed.model_dump(exclude_none=True),
                message=f"tool failed: {type(exc).__name__}: {exc}",
            )

    def as_langchain(self) -> StructuredTool:
        """A LangChain StructuredTool with the same schema (for `bind_tools`)."""
        from langchain_core.tools import StructuredTool

        def _call(**kwargs: Any) -> str:
            return self.run(kwargs).render()

        return StructuredTool.from_function(func=_call, name=self.name, description=self.description, args_schema=self.args_model)


def make_tools(ctx: IncidentContext) -> dict[str, AgentTool]:
    """Every investigation tool, keyed by name."""
    return {m.NAME: AgentTool(m.NAME, m.DESCRIPTION, _ARGS[m.NAME], m.run, ctx) for m in _MODULES}
