"""Batch cards: several related requests on one card, each with its own control.

Three kinds, from the batch's group (see `group_kind`): approvals (approve first), shadow
decisions (the same card with the agent's view hidden) and review batches (actions that
already ran, to be checked). A batch of one is the ordinary card of its request.

The block budget is computed: the card's fixed blocks are counted first and the items get
what is left of Slack's 50, so no warning line can push a card over the limit. The bulk
button binds the items the card draws (`BatchValue.i`, `BatchValue.h`): a click acts on
exactly what the reviewer saw. Agent text is escaped exactly once (`clip`); text that is
mrkdwn already is only cut (`truncate`), which never splits an entity or a mention.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from blocks.batch_lines import SUMMARY_MAX, item_line, mixes_actions, review_line, strike
from blocks.cards import card, delegation_note
from blocks.facts import voters
from blocks.ids import BatchActionId, BlockId, batch_item_block_id
from blocks.kit import (
    MESSAGE_BLOCKS_MAX,
    MESSAGE_TEXT_MAX,
    Block,
    button,
    context,
    fit_blocks,
    header,
    option,
    section,
    text_size,
)
from blocks.outcome import outcome_line
from blocks.payloads import BatchValue
from blocks.text import clip, escape, fmt_amount, fmt_duration, truncate, user_mention
from store.models import Batch, Mode, Record, State
from store.trust import Away

BATCH_OVERHEAD_MAX = 5
"""Fixed blocks of a batch card at most: header, lead, pause notice, actions, footer."""
BATCH_ITEMS_MAX = MESSAGE_BLOCKS_MAX - BATCH_OVERHEAD_MAX
"""Items that always fit on one card, one block each: the largest valid `batching.max_items`."""

REVIEW, SHADOW, APPROVE = "review", "shadow", "approve"
GRANT = "grant"
"""The item menu's choice "approve and allow similar" (a standing grant made on that item)."""


def group_kind(group: str) -> tuple[str, str]:
    """(`review` | `shadow` | `approve`, the group without its kind prefix)."""
    for kind in (REVIEW, SHADOW):
        if group.startswith(kind + ":"):
            return kind, group[len(kind) + 1:]
    return APPROVE, group


def _marks(prefix: list[str], shown: list[Record]) -> str:
    """The `params_mark` of each item drawn open, with its place in the card's items
    (`BatchValue.m`). Only open items take one, and each takes a block of the card, so this
    fits the button whatever the batch's length: the bulk check never has to be left out."""
    by_id = {r.id: r.params_mark for r in shown}
    return ",".join(f"{n}:{by_id[rid]}" for n, rid in enumerate(prefix) if rid in by_id)


def item_value(choice: str, record: Record) -> str:
    """An item menu option's value: the choice, and for an approval the values it approves."""
    return f"{choice}|{record.params_mark}" if choice in ("approve", GRANT) else choice


def parse_item_value(value: str) -> tuple[str, str | None]:
    """(choice, the values' mark or None) of an `item_value`."""
    choice, _, mark = value.partition("|")
    return choice, mark or None


def drawn_hash(ids: list[str]) -> str:
    """A short digest of the item ids a card drew, carried by its bulk buttons."""
    return hashlib.sha1("\n".join(ids).encode(), usedforsecurity=False).hexdigest()[:12]


def awaiting(record: Record, kind: str) -> bool:
    """Whether the item still waits for a person on a card of this kind."""
    if kind == REVIEW:
        return record.review is None and record.state is not State.pending
    return record.state is State.pending


def batch_card(batch: Batch, records: list[Record], *, paused: bool = False,
               paused_reason: str | None = None, absences: Mapping[str, Away] | None = None,
               now: datetime | None = None) -> dict[str, Any]:
    """`{"text", "blocks"}` of a batch card, within Slack's limits whatever the items say.
    `absences` and `now`: the lead says who decides for waiting items' approvers away now."""
    if len(records) == 1:
        return card(records[0], paused=paused, paused_reason=paused_reason, absences=absences, now=now)
    kind, name = group_kind(batch.group)
    by_id = {r.id: r for r in records}
    items = [by_id[i] for i in batch.items if i in by_id]
    open_items = [r for r in items if awaiting(r, kind)]
    def lead(waiting: list[Record]) -> Block:
        text = _lead(kind, items, waiting)
        if kind != REVIEW and (notes := _delegations(waiting, absences, now)):
            text += "\n" + notes
        return section(truncate(text, 3000))

    top: list[Block] = [header(_title(kind, name, items, open_items)), lead(open_items)]
    if paused and kind != REVIEW and open_items:
        why = clip(paused_reason, 500) if paused_reason else "every request needs a person"
        top.append(context([f"⏸ *Automation paused:* {why}"]))
    room = MESSAGE_BLOCKS_MAX - len(top) - 2  # the actions and the footer
    items_drawn: dict[tuple[str, int], Block] = {}  # each item's block, drawn once per summary length
    what = mixes_actions(items)
    prefix, drawn, lines = _draw(batch, kind, by_id, room, memo=items_drawn, what=what)
    # the text of all blocks together has a limit too: the items' summaries are shortened first,
    # then only if even the shortest do not fit do items wait for a later drawing ("N more not
    # shown yet"), as when blocks run short
    text_room = MESSAGE_TEXT_MAX - FOOTER_TEXT - text_size(top)
    for summary_max in SUMMARY_STEPS:
        if text_size(lines) <= text_room:
            break
        prefix, drawn, lines = _draw(batch, kind, by_id, room, summary_max=summary_max, memo=items_drawn,
                                     what=what)
    if len(prefix) > 1 and text_size(lines) > text_room:  # the longest prefix that fits (drawing is monotone)
        lo, hi = 1, len(prefix) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            shorter = _draw(batch, kind, by_id, room, upto=mid, summary_max=SUMMARY_STEPS[-1], memo=items_drawn,
                            what=what)
            if text_size(shorter[2]) <= text_room:
                lo = mid
            else:
                hi = mid - 1
        prefix, drawn, lines = _draw(batch, kind, by_id, room, upto=lo, summary_max=SUMMARY_STEPS[-1],
                                     memo=items_drawn, what=what)
    shown_open = [r for r in drawn if awaiting(r, kind)]
    if shown_open and len(shown_open) < len(open_items):
        # some wait for a later drawing: what "Approving all" runs, and its warnings, are about
        # the items the bulk buttons act on (the footer says how many more wait)
        top[1] = lead(shown_open)
    blocks = top + lines
    if shown_open:
        blocks.append(_actions(batch, kind, prefix, shown_open))
    blocks.append(context([_footer(kind, items, open_items, drawn)]))
    # the notification text is mrkdwn like every card's: the batch key, agent and action escaped
    text = clip(f"{_title(kind, name, items, open_items)}: {len(open_items)} waiting", 3000)
    return {"text": text, "blocks": fit_blocks(blocks[:MESSAGE_BLOCKS_MAX])}


FOOTER_TEXT = 900
"""Kept for the bulk buttons and the footer when items are drawn within the text limit: the
buttons' texts with their confirmations (a title of up to 100 and a text of up to 300 each, about
550 together) and the footer (up to about 300). Less, and a card filled to the limit is cut by
`fit_blocks` at its longest text, the lead, whose warnings come last."""
SUMMARY_STEPS = (120, 80, 50)
"""Shorter item summaries, tried in turn, when a card's items do not fit its text limit."""


def _delegations(open_items: list[Record], absences: Mapping[str, Away] | None, now: datetime | None) -> str:
    """One line per distinct delegation among the waiting items (the card rule of single cards)."""
    notes = dict.fromkeys(n for r in open_items if (n := delegation_note(r, absences, now)))
    return "\n".join(f"👤 {n}" for n in list(notes)[:3])


def _draw(batch: Batch, kind: str, by_id: dict[str, Record], room: int, upto: int | None = None,
          summary_max: int = SUMMARY_MAX, memo: dict[tuple[str, int], Block] | None = None,
          *, what: bool = False) -> tuple[list[str], list[Record], list[Block]]:
    """The prefix of the batch's item ids the card covers (what the bulk buttons bind), the
    records it draws, and their blocks: one per item; settled items folded into one block
    when room runs short (with `max_items` valid, every item fits on its own). `upto`: the
    prefix holds at most that many ids; `summary_max`: each item's summary cut to that; `memo`:
    item blocks drawn before in this card's drawing (an item draws the same at one length);
    `what`: each line names its action and agent (`mixes_actions`)."""
    items = [by_id[i] for i in batch.items if i in by_id]
    settled = [r for r in items if not awaiting(r, kind)]
    fold = len(items) > room
    prefix: list[str] = []
    drawn: list[Record] = []
    budget = room - (1 if fold and settled else 0)
    for rid in batch.items:
        if upto is not None and len(prefix) >= upto:
            break
        r = by_id.get(rid)
        if r is not None and (awaiting(r, kind) or not fold):
            if budget == 0:
                break
            budget -= 1
        prefix.append(rid)
        if r is not None:
            drawn.append(r)
    lines: list[Block] = []
    folded = [r for r in drawn if not awaiting(r, kind)] if fold else []
    if folded:
        text = "\n".join(_settled_line(kind, r, summary_max, what) for r in _arrival(folded))
        lines.append(section(truncate(f"*{len(folded)} settled:*\n{text}", 3000)))
    folded_ids = {r.id for r in folded}  # by id: comparing records field by field made big batches quadratic
    for r in _arrival(drawn):
        if r.id not in folded_ids:
            if memo is None:
                lines.append(_item(batch, kind, r, summary_max, what))
            else:
                if (r.id, summary_max) not in memo:
                    memo[r.id, summary_max] = _item(batch, kind, r, summary_max, what)
                lines.append(memo[r.id, summary_max])
    return prefix, drawn, lines


def _arrival(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r.created_at, r.id))


def _title(kind: str, name: str, items: list[Record], open_items: list[Record]) -> str:
    n = len(items)
    if kind == REVIEW:
        if open_items:
            return f"{n} actions ran on their own, please check them"
        return f"{n} actions ran on their own, all checked"
    first = items[0].request
    if name.startswith("key:"):
        return f"{n} requests: {name[4:]}"
    return f"{n} {first.action} requests from {first.agent}"


def _lead(kind: str, items: list[Record], open_items: list[Record]) -> str:
    """The one explanation line, consistent with the mode; a status line once all is settled."""
    if kind == REVIEW:
        if not open_items:
            wrong = sum(1 for r in items if r.review is not None and r.review.verdict == "wrong")
            return f"✅ *All checked:* {len(items) - wrong} looked right, {wrong} flagged as wrong."
        return ("🔍 *These already ran, review them:* for each, say whether it looks right or was "
                "wrong (the agent is told).")
    if not open_items:
        done = Counter(r.decision.status.value for r in items if r.decision is not None)
        return "✅ *All decided:* " + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in done.most_common()) + "."
    lead = "⏳ *Approval needed first:* nothing runs until a person approves it. " + _what_happens(open_items)
    if kind == SHADOW:
        lead += " Decide on the facts: the agent's recommendation and confidence are hidden."
    warnings = _warnings(open_items)
    return lead + ("\n" + " · ".join(warnings) if warnings else "")


def _what_happens(pending: list[Record]) -> str:
    """What approving every waiting item would do, in plain words (mrkdwn)."""
    actions = Counter(r.request.action for r in pending)
    parts = [f"*{clip(a, 80)}* {n} time{'s' if n > 1 else ''}" for a, n in actions.most_common(5)]
    total = sum(r.request.risk.amount or 0 for r in pending)
    currency = next((r.request.risk.currency for r in pending if r.request.risk.currency), None)
    money = f", moving {fmt_amount(total, currency)} in total" if total else ""
    return f"Approving all runs {', '.join(parts)}{money}."


def _warnings(pending: list[Record]) -> list[str]:
    out = []
    irreversible = sum(1 for r in pending if r.request.risk.reversible is False)
    if irreversible:
        out.append(f"⚠️ {irreversible} of these cannot be undone")
    quorum = max((r.route.quorum for r in pending), default=1)
    needing = sum(1 for r in pending if r.route.quorum == quorum)
    if quorum > 1 and needing == len(pending):
        out.append(f"Each needs {quorum} different approvers")
    elif quorum > 1:  # a card mixing tiers: only some need more than one person
        out.append(f"{needing} of these need{'s' if needing == 1 else ''} {quorum} different approvers")
    requesters = {r.request.requested_by for r in pending if r.request.requested_by}
    if requesters:
        out.append("Requested for " + ", ".join(user_mention(u) for u in sorted(requesters)[:5]))
    return out


def _settled_line(kind: str, record: Record, summary_max: int = SUMMARY_MAX, what: bool = False) -> str:
    return review_line(record, summary_max, what=what) if kind == REVIEW else _decided_line(record, summary_max, what)


def _decided_line(record: Record, summary_max: int = SUMMARY_MAX, what: bool = False) -> str:
    """Approved items read as done (✅), rejected and expired ones are struck through (❌)."""
    line = item_line(record, summary_max, what=what)
    d = record.decision
    if d is not None and d.status.value in ("approved", "auto_approved", "answered", "resolved"):
        return f"✅ {line}\n{outcome_line(record)}"
    return f"❌ {strike(line)}\n{outcome_line(record)}"


def _item(batch: Batch, kind: str, record: Record, summary_max: int = SUMMARY_MAX, what: bool = False) -> Block:
    block_id = batch_item_block_id(batch.id, record.id)
    if kind == REVIEW:
        if record.review is not None:
            return section(truncate(review_line(record, summary_max, what=what), 3000), block_id=block_id)
        return {**section(truncate(review_line(record, summary_max, what=what), 3000), block_id=block_id), "accessory": {
            "type": "overflow", "action_id": BatchActionId.review_item.value, "options": [
                option("✅ Looks right", "ok"), option("⚠️ Was wrong…", "wrong"), option("🔍 Details", "details")]}}
    if record.state is not State.pending:
        return section(truncate(_decided_line(record, summary_max, what), 3000), block_id=block_id)
    line = item_line(record, summary_max, what=what)
    if record.route.quorum > 1 and record.approvals():
        line += f"\n⏳ {len(record.approvals())} of {record.route.quorum} approvals: " + voters(record.approvals())
    choices = [option("✅ Approve", item_value("approve", record))]
    if record.route.grant_offer_s:  # the single card's "Approve and allow similar", for this item
        choices.append(option(f"✅ Approve + allow similar {fmt_duration(record.route.grant_offer_s)}",
                              item_value(GRANT, record)))
    if record.request.editable:
        choices.append(option("✏️ Edit…", "edit"))
    choices += [option("❌ Reject…", "reject"), option("🔍 Details", "details")]
    return {**section(truncate(line, 3000), block_id=block_id),
            "accessory": {"type": "overflow", "action_id": BatchActionId.item.value, "options": choices}}


def _actions(batch: Batch, kind: str, prefix: list[str], shown_open: list[Record]) -> Block:
    n = len(shown_open)
    value = BatchValue(b=batch.id, n=n, i=len(prefix), h=drawn_hash(prefix), m=_marks(prefix, shown_open)).pack()
    if kind == REVIEW:
        return {"type": "actions", "block_id": BlockId.actions.value, "elements": [
            _confirmed(button(f"All look right ({n})", BatchActionId.review_all, value, style="primary"),
                       f"All {n} look right?", f"You confirm each of the {n} actions shown as right; "
                       "each is recorded in your name.", "All look right", "primary")]}
    return {"type": "actions", "block_id": BlockId.actions.value, "elements": [
        _confirmed(button(f"Approve all {n}", BatchActionId.approve_all, value, style="primary"),
                   f"Approve all {n}?", _confirmation(shown_open), "Approve all", "primary"),
        _confirmed(button(f"Reject all {n}", BatchActionId.reject_all, value, style="danger"),
                   f"Reject all {n}?", f"All {n} requests shown will be rejected; you give one "
                   "reason for all of them.", "Reject all", "danger"),
        button("Review one by one", BatchActionId.one_by_one, value),
    ]}


def _confirmation(pending: list[Record]) -> str:
    """The confirmation dialog's text (Slack allows 300 chars): what will happen, the list."""
    text = _what_happens(pending)
    lines = [f"• {clip(r.request.summary, 60)}" for r in _arrival(pending)[:5]]
    more = f"\n…and {len(pending) - 5} more" if len(pending) > 5 else ""
    irreversible = sum(1 for r in pending if r.request.risk.reversible is False)
    undo = f"\n⚠️ {irreversible} cannot be undone." if irreversible else ""
    full = f"{text}\n" + "\n".join(lines) + more + undo
    return full if len(full) <= 300 else truncate(text, 300)


def _confirmed(element: dict[str, Any], title: str, text: str, confirm: str, style: str) -> dict[str, Any]:
    element["confirm"] = {"title": {"type": "plain_text", "text": truncate(title, 100)},
                          "text": {"type": "mrkdwn", "text": truncate(text, 300)},  # mrkdwn already
                          "confirm": {"type": "plain_text", "text": confirm},
                          "deny": {"type": "plain_text", "text": "Cancel"}, "style": style}
    return element


def _footer(kind: str, items: list[Record], open_items: list[Record], drawn: list[Record]) -> str:
    route = items[0].route
    word = "to check" if kind == REVIEW else "waiting"
    mode = {REVIEW: "ran, reviewed afterwards", SHADOW: "shadow review"}.get(kind, _mode(route.mode))
    tiers = list(dict.fromkeys(r.route.tier for r in items))  # a shared batch_key may mix tiers
    tier = (f"{clip(tiers[0], 40).capitalize()} tier" if len(tiers) == 1 else
            f"{', '.join(clip(t, 40) for t in tiers[:4]).capitalize()} tiers")
    parts = [f"Batch of {len(items)}", f"{len(open_items)} {word}", f"{len(items) - len(open_items)} settled",
             tier, mode]
    if len(drawn) < len(items):
        parts.append(f"{len(items) - len(drawn)} more not shown yet (they stay open)")
    return " · ".join(parts)


def _mode(mode: Mode) -> str:
    return "approve first" if mode is Mode.approve else escape(mode.value)
