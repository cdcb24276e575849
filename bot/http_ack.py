"""Answer Slack's HTTP request the moment a listener calls `ack()`.

slack-bolt's async runner (with `process_before_response=False`) starts the listener as a
task and then checks every 10 ms whether `ack()` was called, so every click's HTTP answer
waited up to 10 ms after the listener acknowledged it. Here the request's `ack` signals an
event: the HTTP answer goes out at once, with exactly the body `ack()` built (modal errors
included), while the listener carries on (the decision, ephemeral explanations, modals).
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
_RUNNING: set[asyncio.Future[BoltResponse]] = set()


class SignallingAck(AsyncAck):
    """`ack()` that also sets `acked`."""

    def __init__(self) -> None:
        super().__init__()
        self.acked = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        response = await super().__call__(*args, **kwargs)
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
    _RUNNING.add(task)  # Bolt finishes in the background (its poll notices the ack)
    task.add_done_callback(_finished)
    return ack.response


def _finished(task: asyncio.Future[BoltResponse]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("slack request failed after it was acknowledged", exc_info=task.exception())
