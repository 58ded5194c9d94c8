"""The diagnosis evaluation harness behind `kat eval SUITE`.

cases.py     resolve SUITE (name or directory) to bundles with ground truth; generate and cache
answers.py   OpenSRE-style per-case answer files (required evidence, forbidden causes)
tagging.py   deterministic category/component tags for causal links, metric -> component map
scoring.py   per-case scores: category top-1/top-3, component, ranks, chain links, faithfulness
variants.py  what is run: analyzer, backend options, ablations (tools disabled)
agent_run.py one agent run with its trajectory (tool calls, steps, tokens, wall time)
runner.py    resumable, parallel runs over cases x variants x repeats
aggregate.py per-category tallies, confusion matrix, stability classes
report.py    report.md + report.json;  plots.py  the PNGs
"""
