"""Everything the agent calls. Nothing here imports an LLM stack or LangGraph."""
