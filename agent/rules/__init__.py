"""The `rules` Analyzer: an expert playbook (deterministic, no model) driving the same tools."""
