"""The stats chart as PNG: decisions per hour by outcome, and time to decision (p50, p90).

Rendered with matplotlib's object API on the Agg canvas (no pyplot, no global state, no
display), so it is safe to call from a worker thread: `png` is CPU work, run it with
`asyncio.to_thread`. matplotlib is imported on the first chart, not when the bot starts.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

from store.stats import Report

# Outcome groups in stacking order, with their colours.
OUTCOMES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("approved by people", ("approved", "answered", "resolved"), "#2a9d8f"),
    ("rejected", ("rejected",), "#e63946"),
    ("expired", ("expired",), "#f4a261"),
    ("automatic", ("auto_approved",), "#a8dadc"),
    ("denied by policy", ("denied",), "#6d6875"),
    ("withdrawn by the agent", ("withdrawn",), "#cccccc"),
)


def png(report: Report) -> bytes:
    """The chart of one report's window as PNG bytes (about 900x560 pixels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cal = report.calibration
    fig = Figure(figsize=(13 if cal else 9, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2 if cal else 1, height_ratios=[3, 2], **({"width_ratios": [3, 2]} if cal else {}))
    top: Any = fig.add_subplot(grid[0, 0])  # matplotlib's stubs refuse datetimes on the x axis
    bottom: Any = fig.add_subplot(grid[1, 0], sharex=top)
    if cal:
        reliability(fig.add_subplot(grid[:, 1]), cal)
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


def reliability(ax: Any, rows: list[tuple[str, str, int, int]]) -> None:
    """The reliability diagram: per confidence band, how often people approved the proposal as
    it was; a calibrated agent sits on the diagonal. Point size grows with decisions."""
    bands: dict[float, list[int]] = {}
    for _, b, n, agree in rows:
        row = bands.setdefault(float(b), [0, 0])
        row[0] += n
        row[1] += agree
    xs = sorted(bands)
    ax.plot([0, 1], [0, 1], ":", color="#999999", label="calibrated")
    ax.scatter([x + 0.05 for x in xs], [bands[x][1] / bands[x][0] for x in xs],
               s=[20 + min(bands[x][0], 200) for x in xs], color="#e76f51", label="people agreed", zorder=3)
    for x in xs:
        ax.annotate(str(bands[x][0]), (x + 0.05, bands[x][1] / bands[x][0]), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize="x-small", color="#555555")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("agent confidence (band midpoint)")
    ax.set_ylabel("approved as proposed")
    ax.set_title("reliability: confidence vs. people")
    ax.legend(loc="upper left", fontsize="small", frameon=False)


def _window(hours: int) -> str:
    return f"{hours // 24} days" if hours > 48 else f"{hours} hours"
