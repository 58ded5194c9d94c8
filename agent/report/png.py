"""A PNG snapshot of the report (own-work heatmap + timeline) for chat replies without a link."""

from __future__ import annotations

import io

import numpy as np

from kat.agent.report.model import ReportData, rank_marks

SUSPECT = "#c0392b"
FINDING = "#e67e22"


def snapshot_png(r: ReportData, dpi: int = 110) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display; never opens a window
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7.5), gridspec_kw={"height_ratios": [1, 1.2]})
    who = ", ".join(f"rank {s}" for s in r.culprits) or "none"
    fig.suptitle(f"KAT: {r.incident_id} · culprit {who}", fontsize=12, fontweight="bold")
    marks = rank_marks(r)

    def label(rank: int) -> str:
        return f"rank {rank}" + (f" ◀ {marks[rank]}" if rank in marks else "")

    m = r.heatmap
    if m is not None:
        vals = np.array([[np.nan if v is None else v for v in row] for row in m.deviation_pct], dtype=float)
        fin = np.abs(vals[np.isfinite(vals)])
        lim = float(max(10.0, np.percentile(fin, 95))) if fin.size else 10.0
        im = ax1.imshow(vals, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0, -lim, lim), interpolation="nearest")
        ax1.set_yticks(range(len(m.ranks)), [label(x) for x in m.ranks], fontsize=8)
        for lab in ax1.get_yticklabels():
            if "◀" in lab.get_text():
                lab.set_color(SUSPECT if "culprit" in lab.get_text() else "#b9770e")
                lab.set_fontweight("bold")
        every = max(1, len(m.steps) // 20)
        ax1.set_xticks(range(0, len(m.steps), every), m.steps[::every], fontsize=8)
        ax1.set_xlabel("step")
        ax1.set_title("own work (step time minus collectives) vs lock-step peers, %", fontsize=10)
        fig.colorbar(im, ax=ax1, fraction=0.03)
    else:
        ax1.text(0.5, 0.5, "missing data: no steps in the traces", ha="center", transform=ax1.transAxes)
        ax1.set_axis_off()
    t = r.timeline
    if t is not None and t.ranks:
        t0 = t.t0_ns
        for i, rt in enumerate(t.ranks):
            xs = [((s.start_ns - t0) / 1e6, (s.end_ns - s.start_ns) / 1e6) for s in rt.spans]
            ax2.broken_barh(xs, (i - 0.35, 0.7), facecolors=["#9db4c8", "#c3d3e0"] * (len(xs) // 2 + 1))
            for f in t.findings:
                if f.rank == rt.rank:
                    ax2.broken_barh([((f.start_ns - t0) / 1e6, (f.end_ns - f.start_ns) / 1e6)], (i - 0.45, 0.9), facecolors="none",
                                    edgecolors=FINDING, linewidth=1.5)  # fmt: skip
        rows = {rt.rank: i for i, rt in enumerate(t.ranks)}
        for a in t.arrivals:
            if a.last_rank in rows:
                ax2.plot((a.ts_ns + a.skew_ns - t0) / 1e6, rows[a.last_rank] - 0.45, "v", color=SUSPECT, markersize=4)
        ax2.set_yticks(range(len(t.ranks)), [label(rt.rank) for rt in t.ranks], fontsize=8)
        for lab in ax2.get_yticklabels():
            if "◀" in lab.get_text():
                lab.set_color(SUSPECT if "culprit" in lab.get_text() else "#b9770e")
                lab.set_fontweight("bold")
        ax2.invert_yaxis()
        ax2.set_xlabel("ms since the capture's first step")
        ax2.set_title("timeline: steps, findings (orange), last arrival at the most skewed collectives (red)", fontsize=10)
    else:
        ax2.text(0.5, 0.5, "missing data: nothing to place on a timeline", ha="center", transform=ax2.transAxes)
        ax2.set_axis_off()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
