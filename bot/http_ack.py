"""Answer Slack's HTTP request as soon as it is acknowledged, and a click's once it is done.

slack-bolt's async runner (with `process_before_response=False`) starts the listener as a
task and then checks every 10 ms whether `ack()` was called, so every click's HTTP answer
waited up to 10 ms after the listener acknowledged it. Here the request's `ack` signals an
event and the answer carries exactly the body `ack()` built (modal errors included):

- a button click (`block_actions`) is answered when its listener has finished (the decision
  stored, any ephemeral explanation sent, a modal opened), or ACK_WAIT_S after `ack()`,
  whichever comes first: the decision reaches the agent before the bot spends anything on
  the answer, and the answer follows at once instead of on the next 10 ms poll;
- everything else (modal submissions, slash commands, events) is answered at `ack()`, while
  its listener carries on (a chart, a DM).

A request no listener acknowledges gets Bolt's own answer (401 for a bad signature, 404).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

log = logging.getLogger("hitl.http")
ACK_WAIT_S = 1.0
"""How long a click's answer may wait for its listener after `ack()` (Slack allows 3 s)."""
_RUNNING: set[asyncio.Future[BoltResponse]] = set()


class SignallingAck(AsyncAck):
    """`ack()` that also sets `acked` and remembers the listener's task."""

    def __init__(self) -> None:
        super().__init__()
        self.acked = asyncio.Event()
        self.listener: asyncio.Task[Any] | None = None

    async def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        response = await super().__call__(*args, **kwargs)
        self.listener = asyncio.current_task()
        self.acked.set()
        return response


async def dispatch(bolt: AsyncApp, request: AsyncBoltRequest) -> BoltResponse:
    """Bolt's response, or the acknowledgement as soon as a listener makes it."""
    ack = SignallingAck()
    request.context["ack"] = ack
    task = asyncio.ensure_future(bolt.async_dispatch(request))
    acked = asyncio.ensure_future(ack.acked.wait())
    await asyncio.wait({task, acked}, return_when=asyncio.FIRST_COMPLETED)
    acked.cancel()
    if task.done() or ack.response is None:
        return await task
    body = request.body if isinstance(request.body, dict) else {}
    if body.get("type") == "block_actions" and ack.listener is not None and ack.listener is not task:
        # the listener itself, not Bolt's dispatch: that returns on its next ack poll (10 ms),
        # which may come before the listener has stored its decision
        await asyncio.wait({ack.listener}, timeout=ACK_WAIT_S)
        if task.done():
            return await task
    _RUNNING.add(task)  # Bolt finishes in the background (its poll notices the ack)
    task.add_done_callback(_finished)
    return ack.response


def _finished(task: asyncio.Future[BoltResponse]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("slack request failed after it was acknowledged", exc_info=task.exception())
