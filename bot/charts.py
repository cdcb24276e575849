"""The stats chart as PNG: decisions per hour by outcome, and time to decision (p50, p90).

Rendered with matplotlib's object API on the Agg canvas (no pyplot, no global state, no
display), so it is safe to call from a worker thread: `png` is CPU work, run it with
`asyncio.to_thread`. matplotlib is imported on the first chart, not when the bot starts.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from store.stats import Report

# Outcome groups in stacking order, with their colours.
OUTCOMES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("approved by people", ("approved", "answered", "resolved"), "#2a9d8f"),
    ("rejected", ("rejected",), "#e63946"),
    ("expired", ("expired",), "#f4a261"),
    ("automatic", ("auto_approved",), "#a8dadc"),
    ("denied by policy", ("denied",), "#6d6875"),
)


def png(report: Report) -> bytes:
    """The chart of one report's window as PNG bytes (about 900x560 pixels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    hours = [datetime.fromtimestamp(h.start_s, UTC) for h in report.series]
    width = 1 / 24 * 0.85
    base = [0] * len(hours)
    for label, statuses, colour in OUTCOMES:
        values = [sum(h.outcomes.get(s, 0) for s in statuses) for h in report.series]
        if any(values):
            top.bar(hours, values, width=width, bottom=base, label=label, color=colour,
                    align="edge")
            base = [b + v for b, v in zip(base, values, strict=True)]
    top.set_ylabel("decisions per hour")
    top.set_title(f"hitl: the last {_window(report.hours)} (UTC)")
    if any(base):
        top.set_ylim(0, max(base) * 1.35)  # room for the legend above the bars
        top.legend(loc="upper left", fontsize="small", frameon=False, ncols=3)
    else:
        top.text(0.5, 0.5, "no decisions in this window", ha="center", va="center",
                 transform=top.transAxes, color="#666666")
    for q, style in (("p50", "-"), ("p90", "--")):
        points = [(t + timedelta(minutes=30), (h.ttd_p50_s if q == "p50" else h.ttd_p90_s))
                  for t, h in zip(hours, report.series, strict=True)]
        xs = [t for t, v in points if v is not None]
        ys = [v / 60 for _, v in points if v is not None]
        if xs:
            bottom.plot(xs, ys, style, marker="o", markersize=3, color="#1d3557",
                        label=f"time to decision {q}")
    bottom.set_ylabel("minutes")
    bottom.set_ylim(bottom=0)
    if bottom.lines:
        top_y = max(max(line.get_ydata()) for line in bottom.lines)
        bottom.set_ylim(0, max(top_y * 1.35, 1))
        bottom.legend(loc="upper left", fontsize="small", frameon=False, ncols=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _window(hours: int) -> str:
    return f"{hours // 24} days" if hours > 48 else f"{hours} hours"
