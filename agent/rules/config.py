"""Thresholds of the rules Analyzer, each marked vendor fact or calibration (statistical level or
documented minimum effect). One object, so a test or a user can see and change them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RulesConfig(BaseModel):
    # calibration (statistical level): robust z of a series' in-window mean against its own
    # out-of-window samples; 4 MADs keeps one-sample jitter of gauges out.
    z_min: float = Field(4.0, description="calibration: robust z, inside vs outside the window")
    # calibration (statistical level): robust z of the series' change against its peers' changes.
    peer_z_min: float = Field(3.0, description="calibration: robust z, suspect vs peers")
    # documented minimum effects: a few degrees / percent are normal load swings.
    temp_rise_min: float = Field(0.05, description="minimum effect: relative temperature rise (5%)")
    clock_drop_min: float = Field(0.05, description="minimum effect: relative SM clock / power-limit drop (5%)")
    load_rise_min: float = Field(0.15, description="minimum effect: relative rise of request rate / prompt length (15%)")
    # vendor fact: vLLM preempts/recomputes when the KV block pool is exhausted (usage reaches 1.0).
    kv_full: float = Field(0.98, description="vendor fact: KV usage at which vLLM has no free blocks (1.0, minus rounding)")
    # calibration: Outpost suspects below this confidence are not leads (share of the anomaly score).
    suspect_conf_min: float = Field(0.5, description="calibration: Outpost suspect confidence to count as a lead")
    trace_weight: float = Field(1.0, description="calibration: weight of Outpost support (never a fault on its own)")
    fault_min: float = Field(2.5, description="calibration: score a fault needs, from metric or log evidence")
    margin: float = Field(1.0, description="calibration: lead over the runner-up to stop early / for full confidence")
    sustained_share: float = Field(0.25, description="calibration: share of the series span a load change must last")
    workload_min: float = Field(1.5, description="calibration: score of engine-wide load rise to call a workload shift")
    repeated_lines: int = Field(5, description="calibration: lines of one signature that make it repeated, not a one-off")
    concentrated_boost: float = Field(1.7, description="calibration: weight of a repeated signature that only one worker logs")
    rank_z_share: float = Field(
        0.1, description="calibration: a rank's change (robust z) under this share of the strongest rank's in the same family is noise"
    )
    rank_share: float = Field(0.6, description="calibration: share of the best-supported rank's score another rank needs to be named")
    max_steps: int = Field(5, description="budget: Analyzer steps before submitting")


CONFIG = RulesConfig()
