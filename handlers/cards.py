"""Listeners for card buttons and the modals they open: approve, reject, edit."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.ids import ActionId, CallbackId
from blocks.messages import refusal_message
from blocks.modals import edit_modal, parse_edit_values, reject_modal
from blocks.payloads import ButtonValue, ModalMeta, PayloadError
from handlers import reviews
from handlers.deps import deps, user_name
from handlers.forms import ack_rejection
from store.errors import StoreError
from store.models import Choice


async def on_approve(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                     respond: AsyncRespond, context: AsyncBoltContext) -> None:
    await ack()
    user = body["user"]
    try:
        value = ButtonValue.unpack(action["value"])
        # a button without the values' mark (a card drawn by an older version) is stale: the
        # card is redrawn with its mark, and the person approves what it then shows
        await reviews.decide(deps(context), value.r, user["id"], user_name(user), Choice.approve,
                             seen=value.p or reviews.UNSEEN)
    except (StoreError, PayloadError) as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)


async def _open(choice: Choice, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                context: AsyncBoltContext, client: AsyncWebClient) -> None:
    try:
        rid = ButtonValue.unpack(action["value"]).r
        record = await reviews.check(deps(context), rid, body["user"]["id"], choice)
    except (StoreError, PayloadError) as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)
        return
    container = body.get("container") or {}
    # the form shows the values as they stand now: its submission must find them unchanged
    meta = ModalMeta(r=rid, c=container.get("channel_id"), t=container.get("message_ts"),
                     p=record.params_mark if choice is Choice.edit else None)
    view = reject_modal(record, meta) if choice is Choice.reject else edit_modal(record, meta)
    await client.views_open(trigger_id=body["trigger_id"], view=view)


async def on_reject(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                    context: AsyncBoltContext, client: AsyncWebClient) -> None:
    await ack()
    await _open(Choice.reject, body, action, respond, context, client)


async def on_edit(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                  context: AsyncBoltContext, client: AsyncWebClient) -> None:
    await ack()
    await _open(Choice.edit, body, action, respond, context, client)


async def on_reject_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                              context: AsyncBoltContext, client: AsyncWebClient) -> None:
    rejection = await ack_rejection(ack, view)
    if rejection is None:
        return
    meta = ModalMeta.unpack(view.get("private_metadata"))
    await _decide_from_modal(body, meta, context, client, Choice.reject,
                             reason_code=rejection.code, reason=rejection.text)


async def on_edit_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                            context: AsyncBoltContext, client: AsyncWebClient) -> None:
    try:
        meta = ModalMeta.unpack(view.get("private_metadata"))
        record = await deps(context).store.get(meta.r)
    except (StoreError, PayloadError) as e:  # acknowledge first: the modal closes, the person is told
        await ack()
        await client.chat_postMessage(channel=body["user"]["id"], **refusal_message(e))  # a DM
        return
    values, errors = parse_edit_values(record, view["state"]["values"])
    if errors:
        await ack(response_action="errors", errors=errors)
        return
    await ack()
    await _decide_from_modal(body, meta, context, client, Choice.edit, edits=values, seen=meta.p)


async def _decide_from_modal(body: dict[str, Any], meta: ModalMeta, context: AsyncBoltContext,
                             client: AsyncWebClient, choice: Choice, **kw: Any) -> None:
    user = body["user"]
    try:
        await reviews.decide(deps(context), meta.r, user["id"], user_name(user), choice, **kw)
    except (StoreError, PayloadError) as e:
        if meta.c:
            await client.chat_postEphemeral(channel=meta.c, user=user["id"], **refusal_message(e))


async def on_review_ok(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                       respond: AsyncRespond, context: AsyncBoltContext) -> None:
    await ack()
    user = body["user"]
    try:
        await reviews.review(deps(context), ButtonValue.unpack(action["value"]).r, user["id"],
                             user_name(user), "ok")
    except (StoreError, PayloadError) as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)


async def on_review_wrong(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
                          context: AsyncBoltContext, client: AsyncWebClient) -> None:
    await ack()
    user = body["user"]
    try:
        rid = ButtonValue.unpack(action["value"]).r
        record = await reviews.check_review(deps(context), rid, user["id"])
    except (StoreError, PayloadError) as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)
        return
    container = body.get("container") or {}
    meta = ModalMeta(r=rid, c=container.get("channel_id"), t=container.get("message_ts"))
    await client.views_open(trigger_id=body["trigger_id"], view=reject_modal(record, meta, after_the_fact=True))


async def on_review_wrong_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                                    context: AsyncBoltContext, client: AsyncWebClient) -> None:
    rejection = await ack_rejection(ack, view)
    if rejection is None:
        return
    meta = ModalMeta.unpack(view.get("private_metadata"))
    user = body["user"]
    try:
        await reviews.review(deps(context), meta.r, user["id"], user_name(user), "wrong",
                             reason_code=rejection.code, reason=rejection.text)
    except StoreError as e:
        if meta.c:
            await client.chat_postEphemeral(channel=meta.c, user=user["id"], **refusal_message(e))


def register(app: AsyncApp) -> None:
    app.action(ActionId.approve.value)(on_approve)
    app.action(ActionId.reject.value)(on_reject)
    app.action(ActionId.edit.value)(on_edit)
    app.view(CallbackId.reject_modal.value)(on_reject_submitted)
    app.action(ActionId.review_ok.value)(on_review_ok)
    app.action(ActionId.review_wrong.value)(on_review_wrong)
    app.view(CallbackId.review_wrong_modal.value)(on_review_wrong_submitted)
    app.view(CallbackId.edit_modal.value)(on_edit_submitted)
