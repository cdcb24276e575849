"""Listeners of the handover card: take over, reply to agent, resolve, hand back, full context.

Each is one domain call (`reviews.decide` with the person's choice): take over and reply keep
the case open and send the agent an interim message; resolve and hand back decide it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.details import context_modal
from blocks.escalation import already_owner_message, owned_message
from blocks.ids import ActionId, BlockId, CallbackId
from blocks.messages import refusal_message
from blocks.modals import hand_back_modal, parse_text_value, reply_modal, resolve_modal
from blocks.payloads import ButtonValue, ModalMeta, PayloadError
from handlers import reviews
from handlers.deps import Deps, deps, user_name
from store.errors import NotAllowed, NotFound, StoreError
from store.models import Choice, Record, utcnow

Modal = Callable[[Record, ModalMeta], dict[str, Any]]

_MODALS: dict[Choice, tuple[Modal, str]] = {
    Choice.reply: (reply_modal, BlockId.reply_text),
    Choice.resolve: (resolve_modal, BlockId.resolution_text),
    Choice.hand_back: (hand_back_modal, BlockId.instructions_text),
}
_BY_CALLBACK = {
    CallbackId.reply_modal: Choice.reply,
    CallbackId.resolve_modal: Choice.resolve,
    CallbackId.hand_back_modal: Choice.hand_back,
}
# What the modal's text becomes: the interim message or instructions (`answer`), or the
# resolution note (`reason`).
_TEXT_ARG = {Choice.reply: "answer", Choice.hand_back: "answer", Choice.resolve: "reason"}


async def refusal(d: Deps, e: Exception, request_id: str | None) -> dict[str, Any]:
    """The ephemeral reply to a refused click; a case someone owns names its owner."""
    if isinstance(e, NotAllowed) and e.reason == "already_owner":
        return already_owner_message()
    if isinstance(e, NotAllowed) and e.reason == "owned" and request_id:
        try:
            record = await d.store.get(request_id)
        except NotFound:
            return refusal_message(e)
        if record.owner is not None:
            return owned_message(record.owner)
    return refusal_message(e)


async def on_take_over(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                       respond: AsyncRespond, context: AsyncBoltContext) -> None:
    await ack()
    user, rid = body["user"], None
    try:
        rid = ButtonValue.unpack(action["value"]).r
        await reviews.decide(deps(context), rid, user["id"], user_name(user), Choice.take_over)
    except (StoreError, PayloadError) as e:
        await respond(**await refusal(deps(context), e, rid), response_type="ephemeral",
                      replace_original=False)


async def _open(choice: Choice, body: dict[str, Any], action: dict[str, Any],
                respond: AsyncRespond, context: AsyncBoltContext, client: AsyncWebClient) -> None:
    rid = None
    try:
        rid = ButtonValue.unpack(action["value"]).r
        record = await reviews.check(deps(context), rid, body["user"]["id"], choice)
    except (StoreError, PayloadError) as e:
        await respond(**await refusal(deps(context), e, rid), response_type="ephemeral",
                      replace_original=False)
        return
    container = body.get("container") or {}
    meta = ModalMeta(r=rid, c=container.get("channel_id"), t=container.get("message_ts"))
    build, _ = _MODALS[choice]
    await client.views_open(trigger_id=body["trigger_id"], view=build(record, meta))


async def on_reply(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                   respond: AsyncRespond, context: AsyncBoltContext, client: AsyncWebClient) -> None:
    await ack()
    await _open(Choice.reply, body, action, respond, context, client)


async def on_resolve(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                     respond: AsyncRespond, context: AsyncBoltContext, client: AsyncWebClient) -> None:
    await ack()
    await _open(Choice.resolve, body, action, respond, context, client)


async def on_hand_back(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                       respond: AsyncRespond, context: AsyncBoltContext,
                       client: AsyncWebClient) -> None:
    await ack()
    await _open(Choice.hand_back, body, action, respond, context, client)


async def on_text_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                            context: AsyncBoltContext, client: AsyncWebClient) -> None:
    """Reply, resolve or hand back: the modal's one text, validated, then the decision."""
    choice = _BY_CALLBACK[CallbackId(view["callback_id"])]
    text, errors = parse_text_value(view["state"]["values"], _MODALS[choice][1])
    if errors:
        await ack(response_action="errors", errors=errors)
        return
    await ack()
    await decide_from_modal(body, view, context, client, choice, **{_TEXT_ARG[choice]: text})


async def decide_from_modal(body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext,
                            client: AsyncWebClient, choice: Choice, **kw: Any) -> None:
    """Apply a modal's choice; a refusal is told to the person next to the card."""
    user, meta = body["user"], None
    try:
        meta = ModalMeta.unpack(view.get("private_metadata"))
        await reviews.decide(deps(context), meta.r, user["id"], user_name(user), choice, **kw)
    except (StoreError, PayloadError) as e:
        if meta is not None and meta.c:
            message = await refusal(deps(context), e, meta.r)
            await client.chat_postEphemeral(channel=meta.c, user=user["id"], **message)


async def on_show_context(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                          respond: AsyncRespond, context: AsyncBoltContext,
                          client: AsyncWebClient) -> None:
    """"Show full context": everything the agent sent, in a modal (anyone who sees the card). A
    value naming a request of another card (made by hand) opens only for someone who may see
    that request; anyone else is told it does not exist, and the attempt audited."""
    await ack()
    d, user = deps(context), body["user"]["id"]
    container = body.get("container") or {}
    channel, ts = container.get("channel_id"), container.get("message_ts")
    try:
        rid = ButtonValue.unpack(action["value"]).r
        record = await d.store.get(rid)
        if (record.channel, record.ts) != (channel, ts) and not await reviews.may_see(d, record, user):
            await d.store.audit_system("refused", user, {"choice": "show_context", "reason": "not_allowed",
                                                         "request": rid, "channel": channel}, utcnow())
            raise NotFound(rid)
    except (StoreError, PayloadError) as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)
        return
    meta = ModalMeta(r=rid, c=channel, t=ts)
    await client.views_open(trigger_id=body["trigger_id"], view=context_modal(record, meta))


def register(app: AsyncApp) -> None:
    app.action(ActionId.take_over.value)(on_take_over)
    app.action(ActionId.reply.value)(on_reply)
    app.action(ActionId.resolve.value)(on_resolve)
    app.action(ActionId.hand_back.value)(on_hand_back)
    app.action(ActionId.show_context.value)(on_show_context)
    for callback in _BY_CALLBACK:
        app.view(callback.value)(on_text_submitted)
