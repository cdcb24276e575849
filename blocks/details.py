"""The details modal: the full context of a request, one click away from its card."""

from __future__ import annotations

from typing import Any

from blocks.escalation import request_title, status_lines
from blocks.facts import current_draft, current_params, hides_agent_view
from blocks.ids import CallbackId
from blocks.kit import MODAL_BLOCKS_MAX, Block, context, divider, fields, header, modal, section
from blocks.payloads import ModalMeta
from blocks.text import clip, fmt_time, fmt_value, label
from store.models import Record

MAX_PARAMS = 40


def context_modal(record: Record, meta: ModalMeta | None = None) -> dict[str, Any]:
    """A read-only modal with everything the agent sent, escaped, within 100 blocks."""
    r = record.request
    ctx = r.context
    blocks: list[Block] = [
        header(f"{request_title(record)}: {r.action}"),
        section(clip(r.summary, 3000)),
    ]
    blocks += _params(record)
    draft = current_draft(record)
    if draft:
        blocks.append(section(f"*Draft*\n{clip(draft, 2990)}"))
    agent_view = not hides_agent_view(record)
    for title, text in (
        ("Agent recommends", ctx.recommendation if agent_view else None),
        ("Goal", ctx.goal),
        ("Why the agent stopped", ctx.failure_reason),
    ):
        if text:
            blocks.append(section(f"*{title}*\n{clip(text, 2900)}"))
    if ctx.alternatives and agent_view:
        blocks.append(section("*Alternatives*\n" + clip("\n".join(ctx.alternatives), 2900)))
    if ctx.actions_attempted:
        lines = [
            f"{'•' if a.ok is None else '✓' if a.ok else '✗'} {clip(a.action, 200)}"
            + (f" — {clip(a.result, 300)}" if a.result else "")
            for a in ctx.actions_attempted
        ]
        blocks.append(section("*Tried before asking*\n" + "\n".join(lines)))
    if ctx.customer:
        blocks.append(section("*Customer*"))
        blocks.append(
            fields(
                [
                    f"*{clip(label(k), 100)}*\n{fmt_value(v, key=k, limit=500)}"
                    for k, v in list(ctx.customer.items())[:10]
                ]
            )
        )
    blocks.append(context([_meta_line(record)]))
    if status := status_lines(record):
        blocks.append(context(status))
    if record.messages:
        lines = [f"*{clip(m.by.name or m.by.user_id, 80)}* ({m.event.replace('_', ' ')})"
                 + (f": {clip(m.text, 400)}" if m.text else "") for m in record.messages[-5:]]
        blocks.append(section("*Messages to the agent*\n" + "\n".join(lines)))
    blocks += _conversation(record, MODAL_BLOCKS_MAX - len(blocks))
    return modal(
        CallbackId.context_modal,
        "Request details",
        blocks,
        private_metadata=meta.pack() if meta else "",
        close="Close",
    )


def _params(record: Record) -> list[Block]:
    params = current_params(record)
    items = [
        f"*{clip(label(k), 100)}*\n{fmt_value(v, key=k, limit=1800)}"
        for k, v in list(params.items())[:MAX_PARAMS]
    ]
    blocks = [fields(items[i : i + 10]) for i in range(0, len(items), 10)]
    if len(params) > MAX_PARAMS:
        blocks.append(context([f"+{len(params) - MAX_PARAMS} more params not shown"]))
    return blocks


def _meta_line(record: Record) -> str:
    r = record.request
    m = r.metadata
    parts = [f"Agent {clip(r.agent, 100)}", f"received {fmt_time(record.created_at)}"]
    if r.confidence is not None and not hides_agent_view(record):
        parts.append(f"confidence {round(r.confidence * 100)}%")
    for name, value in (
        ("model", m.model),
        ("prompt", m.prompt_version),
        ("session", m.session_id),
        ("tool calls", m.tool_calls),
    ):
        if value is not None:
            parts.append(f"{name} {clip(str(value), 100)}")
    return " · ".join(parts)


def _conversation(record: Record, room: int) -> list[Block]:
    turns = record.request.context.conversation
    if not turns or room < 3:
        return []
    shown = turns[-(room - 2) :]
    head = "*Conversation*" + (
        f" (last {len(shown)} of {len(turns)}; the {len(turns) - len(shown)} earlier turns are "
        f"stored with request {clip(record.id, 128)})"
        if len(shown) < len(turns) else ""
    )
    return [
        divider(),
        section(head),
        *(context([f"*{clip(t.role or 'message', 40)}:* {clip(t.text, 1900)}"]) for t in shown),
    ]
