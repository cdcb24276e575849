"""Listeners for batch cards: an item's own control, Approve all, Reject all, one by one,
and the backlog digest's queue button. Bulk actions decide each item separately, and only
the items the card drew (`BatchValue.i`/`h`): later arrivals stay open and the reply says so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.batch import GRANT, drawn_hash, parse_item_value
from blocks.batch_views import bulk_result_message, one_by_one_modal, queue_modal, reject_all_modal
from blocks.details import context_modal
from blocks.ids import BatchActionId, BlockId, CallbackId, from_batch_item_block_id
from blocks.messages import refusal_message
from blocks.modals import edit_modal, reject_modal
from blocks.payloads import BatchMeta, BatchValue, ModalMeta, PayloadError
from handlers import reviews
from handlers.deps import deps, user_name
from handlers.forms import ack_rejection
from store.backlog import BacklogStore
from store.errors import NotAllowed, StoreError
from store.models import Batch, Choice, Record, State, utcnow

ERRORS = (StoreError, PayloadError)


def _where(body: dict[str, Any]) -> tuple[str | None, str | None]:
    c = body.get("container") or {}
    return c.get("channel_id"), c.get("message_ts")


def item_choice(body: dict[str, Any], action: dict[str, Any]) -> tuple[str | None, ModalMeta]:
    """What a batch item's menu chose, and where (request id, channel, message) for a modal;
    PayloadError when the action is not from a batch item line."""
    ids = from_batch_item_block_id(str(action.get("block_id", "")))
    if ids is None:
        raise PayloadError("not a batch item")
    channel, ts = _where(body)
    choice, mark = parse_item_value(str((action.get("selected_option") or {}).get("value") or ""))
    return choice or None, ModalMeta(r=ids[1], c=channel, t=ts, p=mark)


async def on_item(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                  context: AsyncBoltContext, client: AsyncWebClient) -> None:
    await ack()
    d, user = deps(context), body["user"]
    try:
        choice, meta = item_choice(body, action)
        rid = meta.r
        if choice == "approve":
            # an item value with no mark (a card drawn by an older version) is stale, as on single cards
            await reviews.decide(d, rid, user["id"], user_name(user), Choice.approve, seen=meta.p or reviews.UNSEEN)
        elif choice == GRANT:  # the single card's "Approve and allow similar", same path
            reply = await reviews.approve_with_grant(d, rid, user["id"], user_name(user),
                                                     seen=meta.p or reviews.UNSEEN)
            await respond(text=reply["text"], response_type="ephemeral", replace_original=False)
        elif choice == "reject":
            record = await reviews.check(d, rid, user["id"], Choice.reject)
            await client.views_open(trigger_id=body["trigger_id"],
                                    view=reject_modal(record, meta))
        elif choice == "edit":  # the same typed modal and validation as a single card's Edit
            record = await reviews.check(d, rid, user["id"], Choice.edit)
            await client.views_open(trigger_id=body["trigger_id"],
                                    view=edit_modal(record, meta.model_copy(update={"p": record.params_mark})))
        else:
            record = await d.store.get(rid)
            await client.views_open(trigger_id=body["trigger_id"], view=context_modal(record))
    except ERRORS as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)


async def _pending(context: AsyncBoltContext, batch_id: str) -> tuple[Batch, list[Record]]:
    """The batch and its items still waiting for a decision, in card order."""
    store = deps(context).store
    batch = await store.get_batch(batch_id)
    return batch, [r for r in await store.get_many(batch.items) if r.state is State.pending]


async def drawn(context: AsyncBoltContext, batch_id: str, i: int | None, h: str | None,
                waiting: Callable[[Record], bool]) -> tuple[Batch, list[Record], int]:
    """The waiting items among those the card drew (the batch's first `i`, hashing to `h`),
    and how many waiting items joined after it was drawn. A card that does not match its
    batch (tampered, or from another batch) is refused: nothing is decided on a guess."""
    store = deps(context).store
    batch = await store.get_batch(batch_id)
    shown = batch.items if i is None else batch.items[:i]
    if h is not None and drawn_hash(shown) != h:
        raise PayloadError("the card does not match its batch")
    records = await store.get_many(batch.items)
    chosen = set(shown)
    return (batch, [r for r in records if r.id in chosen and waiting(r)],
            sum(1 for r in records if r.id not in chosen and waiting(r)))


def _is_pending(r: Record) -> bool:
    return r.state is State.pending


async def catch_up(context: AsyncBoltContext, batch_id: str) -> None:
    """Redraw the batch card: a click found items it offered settled since (its lock redraw may
    have been refused or lost), so the card must catch up and end locked, as a single card does
    on a late click."""
    d = deps(context)
    await d.store.enqueue(f"batch:{batch_id}", int(utcnow().timestamp() * 1000))
    d.kick()


async def on_approve_all(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                         context: AsyncBoltContext) -> None:
    await ack()
    user = body["user"]
    try:
        v = BatchValue.unpack(action["value"])
        batch, pending, arrived = await drawn(context, v.b, v.i, v.h, _is_pending)
        marks = v.marks_of(batch.items if v.i is None else batch.items[:v.i])
        outcomes = await reviews.decide_many(deps(context), [r.id for r in pending], user["id"],
                                             user_name(user), Choice.approve, seen=marks)
        gone = max(0, (v.n or 0) - len(pending))
        if gone:
            await catch_up(context, v.b)
        await respond(**bulk_result_message("approved", outcomes, arrived=arrived, gone=gone),
                      response_type="ephemeral", replace_original=False)
    except ERRORS as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)


async def on_reject_all(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                        context: AsyncBoltContext, client: AsyncWebClient) -> None:
    await ack()
    try:
        v = BatchValue.unpack(action["value"])
        batch, pending, arrived = await drawn(context, v.b, v.i, v.h, _is_pending)
        if len(pending) < (v.n or 0):
            await catch_up(context, v.b)
        if not pending:  # nothing the card showed still waits: no form to reject nothing
            await respond(**bulk_result_message("rejected", [], arrived=arrived, gone=v.n or 0),
                          response_type="ephemeral", replace_original=False)
            return
        # the form lists only what this person may reject; none: refused now, not at the form's end
        mine, refused = await reviews.check_many(deps(context), pending, body["user"]["id"], Choice.reject)
        if not mine:
            await respond(**bulk_result_message("rejected", refused, arrived=arrived),
                          response_type="ephemeral", replace_original=False)
            return
        channel, ts = _where(body)
        places = {rid: n for n, rid in enumerate(batch.items)}
        listed = None if not refused else ",".join(str(places[r.id]) for r in mine)
        await client.views_open(trigger_id=body["trigger_id"], view=reject_all_modal(
            batch, mine, BatchMeta(b=v.b, c=channel, t=ts, i=v.i, h=v.h, n=len(mine), k=listed),
            left=sum(1 for _, _, e in refused if isinstance(e, NotAllowed))))
    except ERRORS as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)


async def on_reject_all_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                                  context: AsyncBoltContext, client: AsyncWebClient) -> None:
    rejection = await ack_rejection(ack, view)
    if rejection is None:
        return
    meta = BatchMeta.unpack(view.get("private_metadata"))
    user = body["user"]
    try:
        batch, pending, arrived = await drawn(context, meta.b, meta.i, meta.h, _is_pending)
        if (listed := meta.listed_of(batch.items)) is not None:  # the others are not this person's
            pending = [r for r in pending if r.id in listed]
    except ERRORS as e:
        if meta.c:
            await client.chat_postEphemeral(channel=meta.c, user=user["id"], **refusal_message(e))
        return
    outcomes = await reviews.decide_many(deps(context), [r.id for r in pending], user["id"], user_name(user),
                                         Choice.reject, reason_code=rejection.code, reason=rejection.text)
    gone = max(0, (meta.n or 0) - len(pending))  # listed in the form, settled before it was sent
    if gone:
        await catch_up(context, meta.b)
    if meta.c:
        await client.chat_postEphemeral(channel=meta.c, user=user["id"],
                                        **bulk_result_message("rejected", outcomes, arrived=arrived, gone=gone))


async def on_one_by_one(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                        context: AsyncBoltContext, client: AsyncWebClient) -> None:
    """Open the one-by-one modal on the batch of the clicked card. A value naming another batch
    (made by hand) is refused and audited; someone who may decide none of its waiting items is
    told why at once (each item's trail has the refusal, as for Reject all), no modal."""
    await ack()
    d, user = deps(context), body["user"]["id"]
    try:
        bid = BatchValue.unpack(action["value"]).b
        batch = await d.store.get_batch(bid)
        records = await d.store.get_many(batch.items)
        channel, ts = _where(body)
        if not any((r.channel, r.ts) == (channel, ts) for r in records):  # not this card's batch
            await d.store.audit_system("refused", user, {"choice": "one_by_one", "reason": "not_allowed",
                                                         "batch": bid, "channel": channel}, utcnow())
            raise PayloadError("not the batch of this card")
        pending = [r for r in records if r.state is State.pending]
        first = pending[0] if pending else None
        if first is None:
            await catch_up(context, bid)
        else:  # the least a step asks (rejecting): someone who may not even reject gets no modal
            mine, refused = await reviews.check_many(d, pending, user, Choice.reject)
            if not mine:
                error = refused[0][2]
                assert error is not None
                await respond(**refusal_message(error), response_type="ephemeral", replace_original=False)
                return
        meta = BatchMeta(b=bid, r=first.id if first else None, c=channel, t=ts, p=first.params_mark if first else None)
        await client.views_open(trigger_id=body["trigger_id"],
                                view=one_by_one_modal(batch, first, (1, len(pending)), meta))
    except ERRORS as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)


async def on_step(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext,
                  client: AsyncWebClient) -> None:
    """Approve, reject or skip the item shown in the one-by-one modal, then show the next."""
    await ack()
    d, user, view = deps(context), body["user"], body["view"]
    meta = BatchMeta.unpack(action["value"])
    note = None
    if meta.r and meta.r not in (await d.store.get_batch(meta.b)).items:
        # a hand-made value naming a request outside this batch: nothing is decided on it
        note = refusal_message(PayloadError("not an item of this batch"))["text"]
        meta = meta.model_copy(update={"r": None})
    elif meta.r and action["action_id"] == BatchActionId.step_edit:
        try:  # the edit modal goes on top; its submission decides like a card's Edit
            record = await reviews.check(d, meta.r, user["id"], Choice.edit)
            await client.views_push(trigger_id=body["trigger_id"], view=edit_modal(record, ModalMeta(
                r=meta.r, c=meta.c, t=meta.t, p=record.params_mark)))
            return
        except ERRORS as e:
            note = refusal_message(e)["text"]
    elif meta.r and action["action_id"] != BatchActionId.step_skip:
        values = view.get("state", {}).get("values", {})
        chosen = values.get(BlockId.reason_code, {}).get(BatchActionId.step_reason) or {}
        code = (chosen.get("selected_option") or {}).get("value")
        try:
            if action["action_id"] == BatchActionId.step_approve:
                await reviews.decide(d, meta.r, user["id"], user_name(user), Choice.approve,
                                     seen=meta.p or reviews.UNSEEN)
            else:
                await reviews.decide(d, meta.r, user["id"], user_name(user), Choice.reject,
                                     reason_code=code or "other", reason=None if code else "Rejected in one-by-one review")
        except ERRORS as e:
            note = refusal_message(e)["text"]
    batch, pending = await _pending(context, meta.b)
    after = [r for r in pending if meta.r is None or batch.items.index(r.id) > batch.items.index(meta.r)]
    candidates = after or pending
    nxt: Record | None = candidates[0] if candidates else None
    position = (pending.index(nxt) + 1 if nxt else 0, len(pending))
    new = one_by_one_modal(batch, nxt, position, BatchMeta(b=meta.b, r=nxt.id if nxt else None, c=meta.c, t=meta.t,
                                                           p=nxt.params_mark if nxt else None), note=note)
    await client.views_update(view_id=view["id"], hash=view.get("hash"), view=new)


async def on_open_queue(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                        context: AsyncBoltContext, client: AsyncWebClient) -> None:
    """The backlog digest's "Open the queue": the requests waiting for a card in the channel the
    clicked digest is about, those the person may see (`reviews.may_see`, as `/hitl queue`). A
    value naming another channel's queue (made by hand) is refused and audited."""
    await ack()
    d, user = deps(context), body["user"]["id"]
    store = d.store
    state = BacklogStore(store)
    try:
        channel = BatchValue.unpack(action["value"]).b
    except PayloadError as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)
        return
    where = _where(body)
    digest = await state.digest(channel)
    if (digest.get("channel_id"), digest.get("ts")) != where:  # not this card's queue
        await store.audit_system("refused", user, {"choice": "open_queue", "reason": "not_allowed",
                                                   "queue": channel, "channel": where[0]}, utcnow())
        await respond(**refusal_message(PayloadError("not the queue of this card")), response_type="ephemeral",
                      replace_original=False)
        return
    ids = await state.waiting_ids(channel, None)  # all of them: the count says how many wait
    records = [r for r in await store.get_many(ids[:200]) if not r.ts]
    absences = await store.trust.absences()  # read once for the whole list
    seen = await asyncio.gather(*(reviews.may_see(d, r, user, absences=absences) for r in records))
    waiting = [r for r, ok in zip(records, seen, strict=True) if ok]
    total = len(ids) - len(await state.posted(ids))
    await client.views_open(trigger_id=body["trigger_id"], view=queue_modal(
        channel, waiting, total=total, hidden=len(records) - len(waiting)))


async def on_reason_chosen(ack: AsyncAck) -> None:
    """Choosing a reason in the one-by-one modal only fills its state; Reject reads it."""
    await ack()


def register(app: AsyncApp) -> None:
    app.action(BatchActionId.item.value)(on_item)
    app.action(BatchActionId.approve_all.value)(on_approve_all)
    app.action(BatchActionId.reject_all.value)(on_reject_all)
    app.action(BatchActionId.one_by_one.value)(on_one_by_one)
    for step in (BatchActionId.step_approve, BatchActionId.step_reject, BatchActionId.step_skip,
                 BatchActionId.step_edit):
        app.action(step.value)(on_step)
    app.action(BatchActionId.open_queue.value)(on_open_queue)
    app.action(BatchActionId.step_reason.value)(on_reason_chosen)
    app.view(CallbackId.reject_all_modal.value)(on_reject_all_submitted)
