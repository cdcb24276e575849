"""The App Home tab: what waits for the viewer, the loop's health, the pause switch, the policy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from blocks.commands import chunks, queue_line
from blocks.ids import INPUT_ACTION, BlockId, CallbackId, HomeActionId
from blocks.kit import Block, button, context, divider, fields, header, input_block, modal, section
from blocks.stats import decisions_per_hour, metric_fields, sparkline, warning_lines, window_label
from blocks.text import fmt_time
from store.models import Record
from store.stats import Report

HOME_BLOCKS_MAX = 100
WAITING_SHOWN = 10


def home_view(*, waiting: list[tuple[Record, str | None]], waiting_total: int, report: Report,
              looked_at: int | None = None,
              pause: str, policy: list[str], now: datetime, switch: bool | None = None,
              audit: str | None = None,
              trust: list[Block] | None = None) -> dict[str, Any]:
    """The Home view (`type: home`) for one person; `pause` and `policy` are ready mrkdwn.

    `looked_at`: set when only that many of the oldest pending requests were looked at (more
    wait): the count is then at least `waiting_total`, and says so.
    `trust`: the standing grants (Revoke buttons) and the calibration table (blocks.trust).
    `switch`: for admins, whether automation is paused now (the switch offers the other
    state); None for everyone else (no switch)."""
    blocks: list[Block] = [header("hitl: human judgment for your agents"), section(pause)]
    if switch is not None:
        blocks.append(pause_switch(paused=switch))
    more = "+" if looked_at is not None else ""
    blocks += [divider(), header(f"Waiting for you: {waiting_total}{more}")]
    if waiting:
        blocks += [section(queue_line(r, link, now)) for r, link in waiting[:WAITING_SHOWN]]
        if waiting_total > WAITING_SHOWN:
            blocks.append(context([f"and {waiting_total - WAITING_SHOWN}{more} more: `/hitl queue` "
                                   "lists everything waiting."]))
    else:
        blocks.append(section(":white_check_mark: Nothing is waiting for you"
                              + (" among the oldest requests." if more else ".")))
    if looked_at is not None:
        blocks.append(context([f"Counted among the {looked_at} oldest requests waiting; more wait "
                               "beyond them (`/hitl queue` shows the total)."]))
    blocks += [
        divider(),
        header(f"The last {window_label(report.hours)}"),
        fields(metric_fields(report)),
        section("*Warning signs*\n" + "\n".join(warning_lines(report))),
        section(f"*Decisions per hour* `{sparkline(decisions_per_hour(report))}`"),
        *([section(audit)] if audit else []),
        *([divider(), *trust] if trust else []),
        divider(),
        header("Policy"),
        *chunks(policy),
        context([f"Updated {fmt_time(now)}. `/hitl help` lists the commands; "
                 "`/hitl stats 7d` shows a week with a chart."]),
    ]
    return {"type": "home", "blocks": blocks[:HOME_BLOCKS_MAX]}


def pause_switch(*, paused: bool) -> Block:
    """The admins' pause switch: Resume while paused, else Pause (which asks for a reason)."""
    if paused:
        element = button("▶️ Resume automation", HomeActionId.resume, "resume", style="primary")
        element["confirm"] = {"title": {"type": "plain_text", "text": "Resume automation?"},
                              "text": {"type": "mrkdwn", "text": "Requests route by policy again; "
                                       "open cards lose the pause notice."},
                              "confirm": {"type": "plain_text", "text": "Resume"},
                              "deny": {"type": "plain_text", "text": "Cancel"}}
    else:
        element = button("⏸ Pause automation…", HomeActionId.pause, "pause", style="danger")
    return {"type": "actions", "block_id": BlockId.actions.value, "elements": [element]}


def pause_modal() -> dict[str, Any]:
    """Ask an admin why automation is paused (shown on every open card)."""
    return modal(CallbackId.pause_modal, "Pause automation", [
        section("Every request goes to a person for approval until someone resumes. The reason "
                "is shown on every open card."),
        input_block(BlockId.reason_text, "Reason", {
            "type": "plain_text_input", "action_id": INPUT_ACTION, "max_length": 500}, optional=True),
    ], submit="Pause", private_metadata="")
