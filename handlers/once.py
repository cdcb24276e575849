"""Each Slack request acts once: a retry of one already handled is acknowledged and dropped
(a Bolt middleware, after `only_our_people`).

Slack sends a request again when its acknowledgement came late or was lost (HTTP: the same body
with `X-Slack-Retry-Num`; Socket Mode: the envelope again, its `retry_attempt` passed on as
that header), and a second replica may get an envelope again after a reconnect. Most of what a
request does is safe to repeat (a vote is counted once by the record's version), but not all: a
reply to the agent would reach it twice, a stats chart would be sent twice, the clicker would be
told their own click came late. So every request that acts is claimed in Redis by what makes it
unique (a click's `action_ts`, a form's view and its values, a command's `trigger_id`, an
event's `event_id`) for ten minutes, shared by every replica: a first delivery claims it without
waiting (nothing is added to a click's path) and leaves its answer there once it has one (a
form's errors, a command's reply); a retry of a request already claimed gets that answer again
(Slack asks because it never got it) and acts no more. A first delivery that answered nothing,
or a refusal, drops its claim, so a retry of it is handled afresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from slack_bolt.async_app import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from handlers.deps import deps
from store.slack_once import SlackClaims

log = logging.getLogger("hitl.once")

_CLAIMS: set[asyncio.Task[Any]] = set()


def once_key(body: dict[str, Any]) -> str | None:
    """What makes this request unique, or None for what is safe to repeat."""
    kind = body.get("type")
    if kind == "block_actions":
        actions = body.get("actions") or [{}]
        user = (body.get("user") or {}).get("id")
        first = actions[0] if isinstance(actions[0], dict) else {}
        ts = first.get("action_ts")
        return f"a:{user}:{first.get('action_id')}:{ts}" if ts else None
    if kind == "view_submission":
        view = body.get("view") or {}
        values = json.dumps((view.get("state") or {}).get("values"), sort_keys=True, default=str)
        return f"v:{view.get('id')}:{view.get('hash')}:{values}" if view.get("id") else None
    if kind == "event_callback":
        return f"e:{body['event_id']}" if body.get("event_id") else None
    if "command" in body or kind in ("shortcut", "message_action"):
        return f"t:{body['trigger_id']}" if body.get("trigger_id") else None
    return None


def _retry(request: AsyncBoltRequest) -> bool:
    value = request.headers.get("x-slack-retry-num") or []
    return bool(value and str(value[0]).strip() not in ("", "0"))


ANSWERED = "hitl_once_answered"
"""Where a claimed request keeps the callback its door calls with the answer it gave Slack."""


async def once_only(body: dict[str, Any], request: AsyncBoltRequest, context: AsyncBoltContext,
                    next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
    key = once_key(body)
    if key is None:
        await next()
        return None
    claims = deps(context).store.slack_claims
    first: asyncio.Future[Any] | None = None
    if _retry(request):
        mine, answer = await claims.claim(key)
        if not mine:
            log.info("slack: a retry of a request already handled (%s): its first answer again", key[0])
            return _replay(answer)
    else:  # claimed on the side: a retry comes seconds later, by when this is written
        first = _background(claims.note(key))
    # what the first delivery answers is known only once the door has its answer (listeners run
    # after every middleware): the door calls this with it (bot.http_ack.dispatch)
    context[ANSWERED] = lambda sent: _background(_settle(claims, key, first, sent))
    await next()
    return None


async def _settle(claims: SlackClaims, key: str, first: asyncio.Future[Any] | None,
                  sent: BoltResponse | None) -> None:
    """After the first delivery: its answer kept for a retry to give again, or (it answered no
    acknowledgement, or a refusal) the claim dropped, so a retry is handled afresh."""
    if first is not None:
        await asyncio.gather(first, return_exceptions=True)
    if sent is None or sent.status >= 400:
        await claims.drop(key)
        return
    await claims.answered(key, sent.body or "", (sent.headers.get("content-type") or [""])[0])


def _replay(first: dict[str, str] | None) -> BoltResponse:
    """What the first delivery answered (Slack asks again because it never got it), or an empty
    acknowledgement while it is still being handled."""
    if not first or not first.get("body"):
        return BoltResponse(status=200, body="")
    headers: dict[str, str | Sequence[str]] = {"content-type": [str(first.get("type") or "application/json")]}
    return BoltResponse(status=200, body=str(first["body"]), headers=headers)


def _background(work: Awaitable[Any]) -> asyncio.Future[Any]:
    task = asyncio.ensure_future(_logged(work))
    _CLAIMS.add(task)
    task.add_done_callback(_CLAIMS.discard)
    return task


async def _logged(work: Awaitable[Any]) -> Any:
    try:
        return await work
    except Exception as e:  # only a retry's guard: the request itself goes on
        log.warning("slack: could not note a request as handled: %s", e)
        return None
