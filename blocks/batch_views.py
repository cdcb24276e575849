"""The views a batch card opens and the replies its bulk buttons send: reject all, one by one,
the backlog digest and its queue, and the honest per-item result of a bulk action.

Lines from `item_line` are mrkdwn already: they are joined and cut (`truncate`), never
escaped again; only raw agent or channel text goes through `clip`/`escape`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blocks.batch_lines import item_line, mixes_actions
from blocks.cards import card
from blocks.facts import REJECT_REASONS
from blocks.ids import INPUT_ACTION, BatchActionId, BlockId, CallbackId
from blocks.kit import Block, button, context, header, input_block, modal, option, section
from blocks.messages import MESSAGES
from blocks.payloads import BatchMeta, BatchValue
from blocks.text import escape, truncate
from store.errors import AlreadyDecided, NotAllowed
from store.models import Batch, Record


def reject_all_modal(batch: Batch, pending: list[Record], meta: BatchMeta, *, left: int = 0) -> dict[str, Any]:
    """The reason for rejecting every waiting item the card showed that the person may decide
    (`left`: how many others it showed are not theirs to decide)."""
    what = mixes_actions(pending)
    lines = "\n".join(f"• {item_line(r, what=what)}" for r in pending[:15])
    more = f"\n…and {len(pending) - 15} more" if len(pending) > 15 else ""
    n = len(pending)
    others = (f"\n{left} other{'s' if left > 1 else ''} on the card {'are' if left > 1 else 'is'} not yours to "
              "decide; they stay open for their approvers.") if left else ""
    return modal(CallbackId.reject_all_modal, "Reject all", [
        section(truncate(f"Rejecting {n} request{'s' if n > 1 else ''}:\n{lines}{more}{others}", 3000)),
        input_block(BlockId.reason_code, "Reason", reasons()),
        input_block(BlockId.reason_text, "Details", {  # Slack itself adds "(optional)"
            "type": "plain_text_input", "action_id": INPUT_ACTION, "multiline": True, "max_length": 2000},
            optional=True),
    ], submit="Reject all", private_metadata=meta.pack())


def reasons() -> dict[str, Any]:
    """The static select of rejection reasons."""
    return {"type": "static_select", "action_id": INPUT_ACTION,
            "options": [option(label, code) for code, label in REJECT_REASONS]}


def one_by_one_modal(batch: Batch, record: Record | None, position: tuple[int, int], meta: BatchMeta,
                     *, note: str | None = None) -> dict[str, Any]:
    """Review a batch's waiting items one at a time (or say that none are left).

    `note` is mrkdwn already (a refusal message): it is cut, not escaped again."""
    top = [context([truncate(note, 2000)])] if note else []
    if record is None:
        return modal(CallbackId.one_by_one_modal, "Review one by one",
                     [*top, section("✅ Nothing is waiting in this batch any more.")], private_metadata=meta.pack())
    index, total = position
    shown = card(record)["blocks"]
    body = [b for b in shown if b.get("type") != "actions"][: 100 - 6]
    body[:0] = [*top, context([f"Item {index} of {total} waiting"])]
    body.append(section("*Reason, if you reject:*"))
    body.append({"type": "actions", "block_id": BlockId.reason_code.value, "elements": [
        {**reasons(), "action_id": BatchActionId.step_reason.value,
         "placeholder": {"type": "plain_text", "text": "Choose a reason"}}]})
    steps = [button("Approve", BatchActionId.step_approve, meta.pack(), style="primary")]
    if record.request.editable:
        steps.append(button("Edit…", BatchActionId.step_edit, meta.pack()))
    steps += [button("Reject", BatchActionId.step_reject, meta.pack(), style="danger"),
              button("Skip", BatchActionId.step_skip, meta.pack())]
    body.append({"type": "actions", "block_id": BlockId.actions.value, "elements": steps})
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
    return {"text": truncate(f"{n} requests queued for {escape(channel)}", 3000), "blocks": [
        header("Approval backlog"),
        section(truncate("\n".join(lines), 3000)),
        {"type": "actions", "block_id": BlockId.actions.value, "elements": [
            button("Open the queue", BatchActionId.open_queue, BatchValue(b=channel).pack())]},
    ]}


def queue_modal(channel: str, waiting: list[Record], *, total: int | None = None,
                hidden: int = 0) -> dict[str, Any]:
    """The requests waiting for a card in a channel, oldest first (the first of them when
    `total`, how many wait in all, is larger); `hidden`: how many of those looked at the
    person may not see (counted, nothing else shown)."""
    lines = [f"• {item_line(r, what=True)}" for r in waiting[:90]]  # a channel's queue mixes actions
    body: list[Block] = [section(truncate("\n".join(lines[i:i + 10]), 3000)) for i in range(0, len(lines), 10)]
    lock = [context([f":lock: {hidden} of them you cannot see: only their approvers, requester, people "
                     "who acted on them, hitl admins and, when none is named, the channel's members see them."])]
    return modal(CallbackId.queue_modal, "Queue", [
        context([f"{len(waiting) if total is None else total} requests waiting in {escape(channel)}"]),
        *(body or [section("Nothing is waiting." if not hidden else "None of them is yours to see.")]),
        *(lock if hidden else [])], private_metadata="")


def bulk_result_message(verb: str, outcomes: list[tuple[str, Record | None, Exception | None]], *,
                        arrived: int = 0, gone: int = 0) -> dict[str, Any]:
    """`{"text", "blocks"}` telling the clicker what a bulk action did to each item, honestly.

    `arrived`: items that joined the card after it was drawn (left alone, still waiting);
    `gone`: items shown that were settled between drawing and the click (by anyone, the
    clicker's own earlier click included)."""
    done = [r for _, r, e in outcomes if r is not None and (r.decision is not None or r.review is not None)]
    waiting = [r for _, r, e in outcomes if r is not None and r.decision is None and r.review is None]
    refused: Counter[str] = Counter()
    late = gone
    for _, _, e in outcomes:
        if isinstance(e, NotAllowed):
            refused[e.reason] += 1
        elif isinstance(e, AlreadyDecided):
            late += 1
    lines = [f"{verb.capitalize()} {len(done)} of the {len(outcomes) + gone} you saw."]
    if waiting:
        lines.append(f"⏳ {len(waiting)} still need another approver to reach their quorum; they stay open.")
    for reason, n in refused.most_common():
        lines.append(f"⛔ {n} not {verb}: {escape(MESSAGES.get(reason, reason))}")
    if late:
        # not "by someone else": a double click finds the items its own first click settled
        lines.append(f"{late} had already been settled; nothing changed for them (the card shows by whom).")
    if arrived:
        lines.append(f"🆕 {arrived} arrived after you looked and wait on the card.")
    text = truncate("\n".join(lines), 3000)
    return {"text": text, "blocks": [section(text)]}
