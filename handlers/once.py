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
waiting (nothing is added to a click's path), a retry only if nobody has, else it is dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from handlers.deps import deps

log = logging.getLogger("hitl.once")

CLAIM_S = 600
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


async def once_only(body: dict[str, Any], request: AsyncBoltRequest, context: AsyncBoltContext,
                    next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
    key = once_key(body)
    if key is None:
        await next()
        return None
    store = deps(context).store
    claim = store.keys.slack_once(hashlib.sha256(key.encode("utf-8", "backslashreplace")).hexdigest()[:32])
    if _retry(request):
        if not await store.redis.set(claim, "1", nx=True, ex=CLAIM_S):
            log.info("slack: a retry of a request already handled (%s) dropped", key.split(":", 1)[0])
            return BoltResponse(status=200, body="")
    else:  # claimed on the side: a retry comes seconds later, by when this is written
        task = asyncio.ensure_future(_claim(store.redis, claim))
        _CLAIMS.add(task)
        task.add_done_callback(_CLAIMS.discard)
    await next()
    return None


async def _claim(redis: Any, claim: str) -> None:
    try:
        await redis.set(claim, "1", ex=CLAIM_S)
    except Exception as e:  # only a retry's guard: the request itself goes on
        log.warning("slack: could not note a request as handled: %s", e)
