"""An honest partial answer from whatever evidence was gathered (budget or retry limit hit)."""

from __future__ import annotations

from kat.agent.diagnosis import CausalLink, Diagnosis, EvidenceItem, RootCause
from kat.agent.state import LedgerEntry


def partial_diagnosis(ledger: list[LedgerEntry], reason: str) -> Diagnosis:
    """Category 'undetermined', low confidence, and the evidence as it stands."""
    ok = [e for e in ledger if e.status != "error"]
    outpost = next((e for e in ok if e.tool == "outpost_detect"), None)
    ranks = list(outpost.data.get("suspect_ranks", [])) if outpost else []
    chain = []
    if outpost and ranks:
        comps = sorted({a.get("component", "?") for a in outpost.data.get("anomalies", []) if a.get("rank") in ranks})
        chain.append(
            CausalLink(
                cause=f"unconfirmed: anomalies on ranks {ranks} (components {comps})",
                effect="the symptom in the incident report",
                evidence=[outpost.id],
            )
        )
    what = f"Outpost suspects ranks {ranks}" if ranks else "no suspect rank established"
    summary = f"No root cause established: {reason}. {len(ok)} tool result(s) were gathered; {what}. Treat this as a lead, not a diagnosis."
    return Diagnosis(
        root_cause=RootCause(category="undetermined", component="-", ranks=ranks, hosts=[], summary=summary),
        causal_chain=chain,
        evidence=[EvidenceItem(id=e.id, tool=e.tool, query=e.query, summary=e.summary) for e in ok[:20] if e is not outpost]
        + ([EvidenceItem(id=outpost.id, tool=outpost.tool, query=outpost.query, summary=outpost.summary)] if outpost else []),
        confidence=0.1 if ranks else 0.0,
        alternatives_ruled_out=[],
        remediation=["Re-run with a larger budget (--max-steps / --time-budget) or inspect the evidence listed."],
        status="partial",
    )
