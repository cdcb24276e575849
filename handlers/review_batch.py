"""Listeners for review batches (actions that ran on their own): an item's Looks right /
Was wrong / Details, and "All look right", which checks each item the card drew separately
(its own authorization and audit), and says honestly what it did to each."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.batch import REVIEW, awaiting
from blocks.batch_views import bulk_result_message
from blocks.details import context_modal
from blocks.ids import BatchActionId
from blocks.messages import refusal_message
from blocks.modals import reject_modal
from blocks.payloads import BatchValue
from handlers import reviews
from handlers.batch import ERRORS, catch_up, drawn, item_choice
from handlers.deps import deps, user_name
from store.errors import AlreadyDecided, NotAllowed
from store.models import Record


def _unchecked(record: Record) -> bool:
    return awaiting(record, REVIEW)


async def on_review_item(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                         context: AsyncBoltContext, client: AsyncWebClient) -> None:
    await ack()
    d, user = deps(context), body["user"]
    try:
        choice, meta = item_choice(body, action)
        rid = meta.r
        if choice == "ok":
            await reviews.review(d, rid, user["id"], user_name(user), "ok")
        elif choice == "wrong":  # the same "what was wrong" modal as a single review card
            record = await reviews.check_review(d, rid, user["id"])
            await client.views_open(trigger_id=body["trigger_id"],
                                    view=reject_modal(record, meta, after_the_fact=True))
        else:
            await client.views_open(trigger_id=body["trigger_id"], view=context_modal(await d.store.get(rid)))
    except ERRORS as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)


async def on_review_all(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                        context: AsyncBoltContext) -> None:
    """Looks right for each unchecked item the card showed; each is its own review."""
    await ack()
    d, user = deps(context), body["user"]
    try:
        v = BatchValue.unpack(action["value"])
        _, unchecked, arrived = await drawn(context, v.b, v.i, v.h, _unchecked)
        outcomes: list[tuple[str, Record | None, Exception | None]] = []
        for r in unchecked:
            try:
                outcomes.append((r.id, await reviews.review(d, r.id, user["id"], user_name(user), "ok"), None))
            except (NotAllowed, AlreadyDecided) as e:
                outcomes.append((r.id, None, e))
        gone = max(0, (v.n or 0) - len(unchecked))
        if gone:
            await catch_up(context, v.b)
        await respond(**bulk_result_message("marked right", outcomes, arrived=arrived, gone=gone),
                      response_type="ephemeral", replace_original=False)
    except ERRORS as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)


def register(app: AsyncApp) -> None:
    app.action(BatchActionId.review_item.value)(on_review_item)
    app.action(BatchActionId.review_all.value)(on_review_all)
