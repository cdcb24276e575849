"""The App Home tab: what waits for the viewer, the loop's health, the pause switch, the policy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from blocks.commands import chunks, queue_line
from blocks.kit import Block, context, divider, fields, header, section
from blocks.stats import decisions_per_hour, metric_fields, sparkline, warning_lines, window_label
from blocks.text import fmt_time
from store.models import Record
from store.stats import Report

HOME_BLOCKS_MAX = 100
WAITING_SHOWN = 10


def home_view(*, waiting: list[tuple[Record, str | None]], waiting_total: int, report: Report,
              pause: str, policy: list[str], now: datetime, audit: str | None = None) -> dict[str, Any]:
    """The Home view (`type: home`) for one person; `pause` and `policy` are ready mrkdwn."""
    blocks: list[Block] = [header("hitl: human judgment for your agents"), section(pause),
                           divider(), header(f"Waiting for you: {waiting_total}")]
    if waiting:
        blocks += [section(queue_line(r, link, now)) for r, link in waiting[:WAITING_SHOWN]]
        if waiting_total > WAITING_SHOWN:
            blocks.append(context([f"and {waiting_total - WAITING_SHOWN} more: `/hitl queue` "
                                   "lists everything waiting."]))
    else:
        blocks.append(section(":white_check_mark: Nothing is waiting for you."))
    blocks += [
        divider(),
        header(f"The last {window_label(report.hours)}"),
        fields(metric_fields(report)),
        section("*Warning signs*\n" + "\n".join(warning_lines(report))),
        section(f"*Decisions per hour* `{sparkline(decisions_per_hour(report))}`"),
        *([section(audit)] if audit else []),
        divider(),
        header("Policy"),
        *chunks(policy),
        context([f"Updated {fmt_time(now)}. `/hitl help` lists the commands; "
                 "`/hitl stats 7d` shows a week with a chart."]),
    ]
    return {"type": "home", "blocks": blocks[:HOME_BLOCKS_MAX]}
