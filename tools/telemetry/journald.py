"""systemd journal export records (`journalctl --output=json`) as KAT log rows.

Used twice: `kat capture` reads the journal itself, and a bundle's logs file may simply be such
an export (one JSON object a line, journald's own field names), which the log loader accepts as is.
"""

from __future__ import annotations

from typing import Any

# journald PRIORITY is the syslog severity (RFC 5424, section 6.2.1): 0 emerg .. 7 debug.
PRIORITY_LEVEL = {0: "critical", 1: "critical", 2: "critical", 3: "error", 4: "warning", 5: "info", 6: "info", 7: "debug"}
# The fields every journal export record has (systemd.journal-fields(7)).
JOURNAL_FIELDS = ("__REALTIME_TIMESTAMP", "MESSAGE")


def is_journal_export(columns: Any) -> bool:  # noqa: ANN401 - any column collection
    """The columns are journald's own (and not KAT's: a `message` column wins)."""
    cols = set(map(str, columns))
    return all(f in cols for f in JOURNAL_FIELDS) and "message" not in cols


def _text(value: object) -> str:
    if isinstance(value, list):  # journald writes a message that is not UTF-8 as an array of bytes
        try:
            return bytes(int(b) & 0xFF for b in value).decode("utf-8", errors="replace")
        except (TypeError, ValueError):
            return ""
    return "" if value is None or value != value else str(value)  # value != value: NaN from a frame


def journal_record(rec: dict[str, Any]) -> dict[str, Any]:
    """One record as a log row; `ts` is the epoch in ns, or '' when the record has none (the
    loader then drops the line and says why)."""
    raw_ts = _text(rec.get("__REALTIME_TIMESTAMP")).strip()
    try:
        level = PRIORITY_LEVEL.get(int(float(_text(rec.get("PRIORITY")) or 6)), "info")
    except ValueError:
        level = "info"
    unit = _text(rec.get("_SYSTEMD_UNIT")).removesuffix(".service")
    source = _text(rec.get("SYSLOG_IDENTIFIER")) or unit or "system"
    return {
        "ts": int(raw_ts) * 1000 if raw_ts.isdigit() else "",  # __REALTIME_TIMESTAMP is in microseconds
        "host": _text(rec.get("_HOSTNAME")),
        "source": "kernel" if _text(rec.get("_TRANSPORT")) == "kernel" else source,
        "level": level,
        "message": _text(rec.get("MESSAGE")),
    }


def journal_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`journalctl --output=json` records as log rows; records without a time or message are left out."""
    rows = [journal_record(r) for r in records if r.get("MESSAGE") is not None]
    return [r for r in rows if r["ts"] != ""]
