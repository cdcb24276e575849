"""Listeners of question cards ("human as a tool"): an option button, or the Answer modal.

Either way the decision is `answered`: with `option` (the chosen option's value) or `answer`
(the free text).
"""

from __future__ import annotations

import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.ids import ActionId, CallbackId
from blocks.modals import answer_modal, parse_answer_values
from blocks.payloads import ButtonValue, ModalMeta, PayloadError
from handlers import reviews
from handlers.deps import deps, user_name
from handlers.escalations import decide_from_modal, refusal
from store.errors import StoreError
from store.models import Choice

OPTION_ACTION = re.compile(rf"^{re.escape(ActionId.option.value)}:\d+$")
"""Option buttons share one actions block, so each action id carries its index."""


async def on_option(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                    respond: AsyncRespond, context: AsyncBoltContext) -> None:
    await ack()
    user, rid = body["user"], None
    try:
        value = ButtonValue.unpack(action["value"])
        rid = value.r
        if value.o is None:
            raise PayloadError("option button without an option")
        await reviews.decide(deps(context), rid, user["id"], user_name(user), Choice.answer,
                             option=value.o)
    except (StoreError, PayloadError) as e:
        await respond(**await refusal(deps(context), e, rid), response_type="ephemeral",
                      replace_original=False)


async def on_answer(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                    respond: AsyncRespond, context: AsyncBoltContext, client: AsyncWebClient) -> None:
    await ack()
    rid = None
    try:
        rid = ButtonValue.unpack(action["value"]).r
        record = await reviews.check(deps(context), rid, body["user"]["id"], Choice.answer)
    except (StoreError, PayloadError) as e:
        await respond(**await refusal(deps(context), e, rid), response_type="ephemeral",
                      replace_original=False)
        return
    container = body.get("container") or {}
    meta = ModalMeta(r=rid, c=container.get("channel_id"), t=container.get("message_ts"))
    await client.views_open(trigger_id=body["trigger_id"], view=answer_modal(record, meta))


async def on_answer_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                              context: AsyncBoltContext, client: AsyncWebClient) -> None:
    text, errors = parse_answer_values(view["state"]["values"])
    if errors:
        await ack(response_action="errors", errors=errors)
        return
    await ack()
    await decide_from_modal(body, view, context, client, Choice.answer, answer=text)


def register(app: AsyncApp) -> None:
    app.action(OPTION_ACTION)(on_option)
    app.action(ActionId.answer.value)(on_answer)
    app.view(CallbackId.answer_modal.value)(on_answer_submitted)
