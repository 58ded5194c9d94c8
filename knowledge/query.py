"""Make user or model-supplied query text safe to search with.

Queries come from an LLM that may have read hostile log lines, so they can be huge, hold control
characters or prompt-injection text. Nothing here interprets the query (no regex built from it,
no eval); we only normalise it and cap its size so embedding and BM25 cost stay bounded.
"""

from __future__ import annotations

import unicodedata

MAX_QUERY_CHARS = 1000


def clean_query(raw: object, max_chars: int = MAX_QUERY_CHARS) -> tuple[str, bool]:
    """Return (cleaned query, was_truncated). Non-strings become their str()."""
    text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    # Cap before normalising too, so a multi-megabyte input costs little.
    text = text[: max_chars * 4]
    text = unicodedata.normalize("NFKC", text)
    # Control and format characters (NUL, escapes, bidi overrides, zero-width) become spaces.
    text = "".join(" " if unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} else ch for ch in text)
    text = " ".join(text.split())
    truncated = len(text) > max_chars
    if truncated:
        cut = text[:max_chars]
        # Prefer cutting at a word boundary.
        text = cut.rsplit(" ", 1)[0] if " " in cut[max_chars // 2 :] else cut
    return text, truncated
