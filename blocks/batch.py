"""Batch cards: several related requests on one card, and the bulk and one-by-one views.

A batch of one is the ordinary card of its request. From two items on, the card lists one
line per item with its key facts and its own Approve/Reject control, says in plain words
what approving all would do, and offers Approve all, Reject all (each behind a confirmation)
and Review one by one. Everything is escaped and kept within Slack's limits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blocks.cards import card
from blocks.facts import REJECT_REASONS, current_params, mode_label
from blocks.ids import INPUT_ACTION, BatchActionId, BlockId, CallbackId, batch_item_block_id
from blocks.kit import (
    MESSAGE_BLOCKS_MAX,
    Block,
    button,
    context,
    divider,
    header,
    input_block,
    modal,
    option,
    section,
)
from blocks.messages import MESSAGES
from blocks.outcome import outcome_line
from blocks.payloads import BatchMeta, BatchValue
from blocks.text import clip, escape, fmt_amount, fmt_confidence, fmt_value, truncate, user_mention
from store.errors import AlreadyDecided, NotAllowed
from store.models import Batch, Record, State

ITEM_LINE_MAX = 280


def batch_card(batch: Batch, records: list[Record]) -> dict[str, Any]:
    """`{"text", "blocks"}` of a batch card; one item is its request's ordinary card."""
    if len(records) == 1:
        return card(records[0])
    pending = [r for r in records if r.state is State.pending]
    first = records[0]
    title = _title(batch, records)
    blocks: list[Block] = [header(title)]
    if pending:
        blocks.append(section(_what_happens(pending)))
    warnings = _warnings(pending)
    if warnings:
        blocks.append(context(warnings))
    blocks.append(divider())
    for r in records:
        blocks.append(_item(batch, r))
    n = len(pending)
    if n:
        value = BatchValue(b=batch.id, n=n).pack()
        blocks.append({"type": "actions", "block_id": BlockId.actions.value, "elements": [
            _confirmed(button(f"Approve all {n}", BatchActionId.approve_all, value, style="primary"),
                       f"Approve all {n}?", _confirmation(pending), "Approve all", "primary"),
            _confirmed(button(f"Reject all {n}", BatchActionId.reject_all, value, style="danger"),
                       f"Reject all {n}?", f"All {n} waiting requests will be rejected; you give one "
                       "reason for all of them.", "Reject all", "danger"),
            button("Review one by one", BatchActionId.one_by_one, value),
        ]})
    done = len(records) - n
    route = first.route
    blocks.append(context([f"Batch of {len(records)} · {n} waiting · {done} decided · "
                           f"{escape(route.tier.capitalize())} tier · {mode_label(route.mode)}"]))
    assert len(blocks) <= MESSAGE_BLOCKS_MAX, "batches are capped below Slack's block limit"
    text = clip(f"{title}: {n} waiting for a decision", 3000)
    return {"text": text, "blocks": blocks}


def _title(batch: Batch, records: list[Record]) -> str:
    first = records[0].request
    if batch.group.startswith("key:"):
        return truncate(f"{len(records)} requests: {batch.group[4:]}", 150)
    return truncate(f"{len(records)} {first.action} requests from {first.agent}", 150)


def _what_happens(pending: list[Record]) -> str:
    """What approving every waiting item would do, in plain words."""
    actions = Counter(r.request.action for r in pending)
    parts = [f"*{escape(a)}* {n} time{'s' if n > 1 else ''}" for a, n in actions.most_common(5)]
    total = sum(r.request.risk.amount or 0 for r in pending)
    currency = next((r.request.risk.currency for r in pending if r.request.risk.currency), None)
    money = f", moving {fmt_amount(total, currency)} in total" if total else ""
    return clip(f"Approving all runs {', '.join(parts)}{money}.", 3000)


def _confirmation(pending: list[Record]) -> str:
    """The confirmation dialog's text: what will happen, then the list (Slack allows 300 chars)."""
    text = _what_happens(pending)
    lines = [f"• {escape(truncate(r.request.summary, 60))}" for r in pending[:5]]
    more = f"\n…and {len(pending) - 5} more" if len(pending) > 5 else ""
    irreversible = sum(1 for r in pending if r.request.risk.reversible is False)
    undo = f"\n⚠️ {irreversible} cannot be undone." if irreversible else ""
    full = f"{text}\n" + "\n".join(lines) + more + undo
    return full if len(full) <= 300 else text[:300]


def _warnings(pending: list[Record]) -> list[str]:
    out = []
    irreversible = sum(1 for r in pending if r.request.risk.reversible is False)
    if irreversible:
        out.append(f"⚠️ {irreversible} of these cannot be undone")
    quorum = max((r.route.quorum for r in pending), default=1)
    if quorum > 1:
        out.append(f"Each needs {quorum} different approvers")
    requesters = {r.request.requested_by for r in pending if r.request.requested_by}
    if requesters:
        out.append("Requested for " + ", ".join(user_mention(u) for u in sorted(requesters)[:5]))
    return out


def item_line(record: Record) -> str:
    """One line of key facts: the summary, the first params, amount and confidence."""
    req = record.request
    facts = []
    if req.risk.amount is not None:
        facts.append(fmt_amount(req.risk.amount, req.risk.currency))
    for key, value in list(current_params(record).items())[:2]:
        facts.append(f"{escape(key)}: {fmt_value(value, key=key, limit=40)}")
    if req.confidence is not None:
        facts.append(fmt_confidence(req.confidence))
    tail = f" · {' · '.join(facts)}" if facts else ""
    return truncate(f"{escape(truncate(req.summary, 160))}{tail}", ITEM_LINE_MAX)  # escaped already


def _item(batch: Batch, record: Record) -> Block:
    block_id = batch_item_block_id(batch.id, record.id)
    if record.state is not State.pending:
        # both parts are mrkdwn already (escaped where they hold agent text): cut, never re-escape
        return {"type": "section", "block_id": block_id,
                "text": {"type": "mrkdwn", "text": truncate(f"~{item_line(record)}~\n{outcome_line(record)}", 3000)}}
    line = item_line(record)
    if record.route.quorum > 1 and record.approvals():
        line += f"\n⏳ {len(record.approvals())} of {record.route.quorum} approvals: " + ", ".join(
            user_mention(v.user_id) for v in record.approvals())
    return {"type": "section", "block_id": block_id, "text": {"type": "mrkdwn", "text": truncate(line, 3000)},
            "accessory": {"type": "overflow", "action_id": BatchActionId.item.value, "options": [
                option("✅ Approve", "approve"), option("❌ Reject…", "reject"), option("🔍 Details", "details")]}}


def _confirmed(element: dict[str, Any], title: str, text: str, confirm: str, style: str) -> dict[str, Any]:
    element["confirm"] = {"title": {"type": "plain_text", "text": truncate(title, 100)},
                          "text": {"type": "mrkdwn", "text": truncate(text, 300)},  # mrkdwn already
                          "confirm": {"type": "plain_text", "text": confirm},
                          "deny": {"type": "plain_text", "text": "Cancel"}, "style": style}
    return element


def reject_all_modal(batch: Batch, pending: list[Record], meta: BatchMeta) -> dict[str, Any]:
    """The reason for rejecting every waiting item of a batch."""
    lines = "\n".join(f"• {item_line(r)}" for r in pending[:15])
    more = f"\n…and {len(pending) - 15} more" if len(pending) > 15 else ""
    return modal(CallbackId.reject_all_modal, "Reject all", [
        section(clip(f"Rejecting {len(pending)} requests:\n{lines}{more}", 3000)),
        input_block(BlockId.reason_code, "Reason", _reasons()),
        input_block(BlockId.reason_text, "Details (optional)", {
            "type": "plain_text_input", "action_id": INPUT_ACTION, "multiline": True, "max_length": 2000},
            optional=True),
    ], submit="Reject all", private_metadata=meta.pack())


def _reasons() -> dict[str, Any]:
    return {"type": "static_select", "action_id": INPUT_ACTION,
            "options": [option(label, code) for code, label in REJECT_REASONS]}


def one_by_one_modal(batch: Batch, record: Record | None, position: tuple[int, int], meta: BatchMeta,
                     *, note: str | None = None) -> dict[str, Any]:
    """Review a batch's waiting items one at a time (or say that none are left)."""
    top = [context([clip(note, 2000)])] if note else []
    if record is None:
        return modal(CallbackId.one_by_one_modal, "Review one by one",
                     [*top, section("✅ Nothing is waiting in this batch any more.")], private_metadata=meta.pack())
    index, total = position
    shown = card(record)["blocks"]
    body = [b for b in shown if b.get("type") != "actions"][: 100 - 6]
    body[:0] = [*top, context([f"Item {index} of {total} waiting"])]
    body.append(section("*Reason, if you reject:*"))
    body.append({"type": "actions", "block_id": BlockId.reason_code.value, "elements": [
        {**_reasons(), "action_id": BatchActionId.step_reason.value,
         "placeholder": {"type": "plain_text", "text": "Choose a reason"}}]})
    body.append({"type": "actions", "block_id": BlockId.actions.value, "elements": [
        button("Approve", BatchActionId.step_approve, meta.pack(), style="primary"),
        button("Reject", BatchActionId.step_reject, meta.pack(), style="danger"),
        button("Skip", BatchActionId.step_skip, meta.pack()),
    ]})
    return modal(CallbackId.one_by_one_modal, "Review one by one", body, private_metadata=meta.pack())


@dataclass(frozen=True)
class DigestCounts:
    """Everything waiting for a card in a channel: how many, by action and by tier."""

    total: int
    by_action: Mapping[str, int]
    by_tier: Mapping[str, int]


def digest_card(channel: str, waiting: list[Record], oldest_age_s: float | None, *, cleared: bool,
                counts: DigestCounts | None = None) -> dict[str, Any]:
    """The backlog digest of a channel: counts by action and tier, oldest waiting, a queue button.

    `counts` (everything waiting) wins over counting the `waiting` records given."""
    if cleared:
        text = f"✅ Backlog in {escape(channel)} cleared: every request is on a card."
        return {"text": text, "blocks": [section(text)]}
    if counts is None:
        counts = DigestCounts(len(waiting), Counter(r.request.action for r in waiting),
                              Counter(r.route.tier for r in waiting))
    by_action, by_tier = Counter(counts.by_action), Counter(counts.by_tier)
    n = counts.total
    lines = [
        f"📥 *{n} requests* are queued for {escape(channel)} faster than Slack lets us post "
        "them; their cards follow one per second. This summary updates in place.",
        "*By action:* " + ", ".join(f"{escape(a)} {k}" for a, k in by_action.most_common(8))
        + (f" and {len(by_action) - 8} more" if len(by_action) > 8 else ""),
        "*By tier:* " + ", ".join(f"{escape(t)} {k}" for t, k in by_tier.most_common()),
    ]
    if oldest_age_s is not None:
        lines.append(f"*Oldest waiting:* {int(oldest_age_s)} s")
    return {"text": clip(f"{n} requests queued for {channel}", 3000), "blocks": [
        header("Approval backlog"),
        section(clip("\n".join(lines), 3000)),
        {"type": "actions", "block_id": BlockId.actions.value, "elements": [
            button("Open the queue", BatchActionId.open_queue, BatchValue(b=channel).pack())]},
    ]}


def queue_modal(channel: str, waiting: list[Record], *, total: int | None = None) -> dict[str, Any]:
    """The requests waiting for a card in a channel, oldest first (the first of them when
    `total`, how many wait in all, is larger)."""
    lines = [f"• {item_line(r)}" for r in waiting[:90]]
    body = [section(clip("\n".join(lines[i:i + 10]), 3000)) for i in range(0, len(lines), 10)] or [
        section("Nothing is waiting.")]
    return modal(CallbackId.queue_modal, "Queue", [
        context([f"{len(waiting) if total is None else total} requests waiting in {escape(channel)}"]), *body],
        private_metadata="")


def bulk_result_message(verb: str, outcomes: list[tuple[str, Record | None, Exception | None]]) -> dict[str, Any]:
    """`{"text", "blocks"}` telling the clicker what a bulk action did to each item, honestly."""
    done = [r for _, r, e in outcomes if r is not None and r.decision is not None]
    waiting = [r for _, r, e in outcomes if r is not None and r.decision is None]
    refused: Counter[str] = Counter()
    late = 0
    for _, _, e in outcomes:
        if isinstance(e, NotAllowed):
            refused[e.reason] += 1
        elif isinstance(e, AlreadyDecided):
            late += 1
    lines = [f"{verb.capitalize()} {len(done)} of {len(outcomes)}."]
    if waiting:
        lines.append(f"⏳ {len(waiting)} still need another approver to reach their quorum; they stay open.")
    for reason, n in refused.most_common():
        lines.append(f"⛔ {n} not {verb}: {MESSAGES.get(reason, reason)}")
    if late:
        lines.append(f"{late} had already been decided; nothing changed for them.")
    text = clip("\n".join(lines), 3000)
    return {"text": text, "blocks": [section(text)]}
