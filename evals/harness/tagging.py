"""Deterministic tags for free-text causal links, and which tools can back which component.

A Diagnosis link has only text (`cause`, `effect`) and evidence ids; ground-truth links carry
`category`/`component`. Links are matched on tags, not wording: a fixed lexicon of each fault
category's vocabulary tags a predicted link with the category whose terms it uses most (its
cause first, then its effect). Links that name no fault vocabulary are generic symptom links
(tag None), like the untagged last link(s) of a ground-truth chain.
"""

from __future__ import annotations

import json
import re

from kat.knowledge.cards import CARDS
from kat.knowledge.taxonomy import COMPONENT_OF, CONTROL_CATEGORIES, FAULT_CATEGORIES, NO_COMPONENT, normalize_label

# Order breaks ties (more specific first). Patterns are matched case-insensitively on word edges.
LEXICON: dict[str, tuple[str, ...]] = {
    "nvlink_degradation": (r"nvlink", r"xid\W*74", r"crc", r"nvswitch", r"intra-node collective"),
    "gpu_power_or_clock_cap": (
        r"power[- ]cap\w*",
        r"power limit",
        r"clock cap",
        r"clocks? locked",
        r"locked clocks?",
        r"application clocks?",
        r"power brake",
        r"capped",
    ),
    "gpu_thermal_throttling": (r"thermal", r"temperature", r"overheat\w*", r"heat", r"hot", r"cooling", r"airflow"),
    "gpu_hardware_error": (
        r"xid",
        r"ecc",
        r"hardware (?:error|fault)s?",
        r"uncorrectable",
        r"retired pages?",
        r"row remap\w*",
        r"fell off the bus",
    ),
    "pcie_link_degradation": (r"pcie", r"aer", r"host<->device", r"h2d", r"d2h", r"link width", r"downtrain\w*", r"link gen\w*"),
    "network_congestion": (
        r"network",
        r"nics?",
        r"retransmit\w*",
        r"infiniband",
        r"inter-node",
        r"net/ib",
        r"roce",
        r"congest\w*",
        r"fabric",
        r"cross(?:es|ing)? hosts",
    ),
    "numa_misbinding": (r"numa", r"remote from its gpu", r"cross(?:es)? sockets?", r"wrong socket", r"remote memory"),
    "host_cpu_contention": (
        r"contention",
        r"compet\w*",
        r"run-?queue",
        r"cpu-bound",
        r"noisy neighbou?r",
        r"cpu steal",
        r"launch gaps?",
        r"oversubscri\w*",
    ),
    "kv_cache_pressure": (r"kv[- ]cache", r"preempt\w*", r"recompute\w*", r"swap\w*", r"cache usage"),
    "runtime_stall": (r"gc", r"garbage collect\w*", r"gil", r"detokeni[sz]\w*", r"runtime stall", r"paus\w*"),
    "storage_io_stall": (r"storage", r"disk", r"i/o", r"nfs", r"file reads?", r"offload\w*", r"weight/adapter loads?", r"adapter loads?"),
}
_PATTERNS = {cat: re.compile(r"\b(?:" + "|".join(p) + r")\b", re.IGNORECASE) for cat, p in LEXICON.items()}


def category_hits(text: str) -> dict[str, int]:
    """How many lexicon terms of each fault category a text uses."""
    return {cat: n for cat, pat in _PATTERNS.items() if (n := len(pat.findall(text or "")))}


def tag_link(cause: str, effect: str, prefer: str | None = None) -> str | None:
    """The fault category a link is about (its cause decides, else its effect), or None (generic).

    `prefer` (the diagnosis's own root cause) wins ties: a link in a thermal diagnosis that
    mentions both heat and clocks is about heat.
    """
    for text in (cause, effect):
        hits = category_hits(text)
        if hits:
            best = max(hits.values())
            top = [c for c in LEXICON if hits.get(c) == best]
            return prefer if prefer in top else top[0]
    return None


def link_tag(link: dict, prefer: str | None = None) -> str | None:
    """A link's own category tag when it has one ('none' = generic symptom link); else the lexicon's."""
    cat = normalize_label(str(link.get("category") or "")) if link.get("category") else None
    if cat in FAULT_CATEGORIES:
        return cat
    if cat in CONTROL_CATEGORIES:
        return None
    return tag_link(str(link.get("cause", "")), str(link.get("effect", "")), prefer)


def family_components(query: str) -> set[str]:
    """Components a metric family (metric_compare / metric_catalog query) can speak for, from the cards."""
    try:
        fam = json.loads(query or "{}").get("family")
    except (ValueError, AttributeError):
        fam = None
    if not fam:
        return set()
    return {COMPONENT_OF[c.category] for c in CARDS.values() if fam in c.supports or fam in c.refutes} - {NO_COMPONENT}


def component_of(category: str | None) -> str | None:
    return None if category is None else COMPONENT_OF.get(category, "-")


# Metric name fragments -> the components a metric can speak for (case-insensitive substrings).
METRIC_COMPONENTS: tuple[tuple[str, str], ...] = (
    ("NVLINK", "nvlink"),
    ("PCIE", "pcie"),
    ("TEMP", "gpu"),
    ("THERMAL", "gpu"),
    ("CLOCK", "gpu"),
    ("POWER", "gpu"),
    ("THROTTLE", "gpu"),
    ("XID", "gpu"),
    ("ECC", "gpu"),
    ("GPU_UTIL", "gpu"),
    ("FB_USED", "gpu_memory"),
    ("gpu_cache", "gpu_memory"),
    ("preempt", "gpu_memory"),
    ("kv", "gpu_memory"),
    ("num_requests", "gpu_memory"),
    ("node_network", "network"),
    ("retrans", "network"),
    ("tcp", "network"),
    ("infiniband", "network"),
    ("xmit", "network"),
    ("node_cpu", "host_cpu"),
    ("load", "host_cpu"),
    ("run_queue", "host_cpu"),
    ("runqueue", "host_cpu"),
    ("schedstat", "host_cpu"),
    ("pressure_cpu", "host_cpu"),
    ("numa", "host_memory"),
    ("node_disk", "storage"),
    ("disk", "storage"),
    ("filesystem", "storage"),
    ("io_time", "storage"),
)
# Tools whose results are incident data about any component (traces and logs carry every signature).
ANY_COMPONENT_TOOLS = frozenset({"outpost_detect", "trace_slice", "log_search"})


def metric_components(query: str) -> set[str]:
    q = (query or "").lower()
    return {comp for frag, comp in METRIC_COMPONENTS if frag.lower() in q}


def tool_supports(tool: str, query: str, component: str | None) -> bool:
    """Could a result of `tool` with `query` back a link about `component`?

    Knowledge search is background, never incident evidence: it supports no link on its own.
    A metric supports the components its name speaks for; an unrecognised metric name is given
    the benefit of the doubt.
    """
    if tool == "knowledge_search":
        return False
    if component is None or tool in ANY_COMPONENT_TOOLS:
        return True
    if tool in ("metric_compare", "metric_catalog"):
        comps = family_components(query)
        return not comps or component in comps
    if tool == "metric_lookup":
        comps = metric_components(query)
        return not comps or component in comps
    return False
