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

A request no listener takes (a shortcut, `view_closed`, `block_suggestion`, an event such as
`app_uninstalled` or `tokens_revoked` that hitl has no listener for) is acknowledged with an
empty 200, as Socket Mode acknowledges its envelope: Bolt's 404 would make Slack retry an event
(and count it failed) or show the person an error. Bolt's other answers (401) are kept.
A listener that fails never makes the answer a server error: after `ack()` Slack gets the
acknowledgement (the failure is logged); before it, 503 when Redis or the network is
unreachable or refused the call, and 400 otherwise (`settled`). A request Bolt could not
authorize (its check of the bot token, `auth.test`, failed: a Slack error, a rate limit) ran
no listener: 503 too, not Bolt's 200 with a text, which acknowledged a click and dropped it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from handlers.once import ANSWERED
from store.failures import StoreFailure, Unavailable

log = logging.getLogger("hitl.http")
ACK_WAIT_S = 1.0
"""How long a click's answer may wait for its listener after `ack()` (Slack allows 3 s)."""
_RUNNING: set[asyncio.Future[BoltResponse]] = set()
_LISTENERS: set[asyncio.Task[Any]] = set()
"""Listeners that acknowledged their request and may still be working: Slack told the person
it went through, so a bot that stops lets them finish (`drain`)."""
UNAUTHORIZED = "hitl could not check its Slack token with Slack just now; try again in a moment."
"""Bolt's answer (`user_facing_authorize_error_message`) when its check of the bot token failed:
`settled` makes it a 503."""
ERROR = "hitl_listener_error"
"""Where `remember_error` keeps a listener's failure in the request's context."""


class SignallingAck(AsyncAck):
    """`ack()` that also sets `acked` and remembers the listener's task."""

    def __init__(self) -> None:
        super().__init__()
        self.acked = asyncio.Event()
        self.listener: asyncio.Task[Any] | None = None
        self.sent: BoltResponse | None = None
        """The acknowledgement as built (Bolt forgets `response` when the listener then fails)."""

    async def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        response = await super().__call__(*args, **kwargs)
        self.sent = response
        self.listener = asyncio.current_task()
        if self.listener is not None and not self.listener.done():
            _LISTENERS.add(self.listener)
            self.listener.add_done_callback(_LISTENERS.discard)
        self.acked.set()
        return response


_ENTERED: set[asyncio.Task[Any]] = set()
"""Requests being dispatched (from their arrival to their answer): a bot that stops waits for
them too, since any of them may be acknowledged after the stop began."""


async def dispatch(bolt: AsyncApp, request: AsyncBoltRequest) -> BoltResponse:
    """Bolt's response, or the acknowledgement as soon as a listener makes it."""
    me = asyncio.current_task()
    if me is not None:
        _ENTERED.add(me)
    try:
        response = await _dispatch(bolt, request)
        answered = request.context.get(ANSWERED)
        if answered is not None:  # a claimed request (handlers.once): a retry gets this answer again
            answered(response)
        return response
    finally:
        if me is not None:
            _ENTERED.discard(me)


async def _dispatch(bolt: AsyncApp, request: AsyncBoltRequest) -> BoltResponse:
    ack = SignallingAck()
    request.context["ack"] = ack
    task = asyncio.ensure_future(bolt.async_dispatch(request))
    acked = asyncio.ensure_future(ack.acked.wait())
    await asyncio.wait({task, acked}, return_when=asyncio.FIRST_COMPLETED)
    acked.cancel()
    if task.done() or ack.sent is None:
        return settled(await task, ack, request)
    body = request.body if isinstance(request.body, dict) else {}
    if body.get("type") == "block_actions" and ack.listener is not None and ack.listener is not task:
        # the listener itself, not Bolt's dispatch: that returns on its next ack poll (10 ms),
        # which may come before the listener has stored its decision
        await asyncio.wait({ack.listener}, timeout=ACK_WAIT_S)
        if task.done():
            return settled(await task, ack, request)
    _RUNNING.add(task)  # Bolt finishes in the background (its poll notices the ack)
    task.add_done_callback(_finished)
    return ack.sent


def settled(response: BoltResponse | None, ack: SignallingAck, request: AsyncBoltRequest) -> BoltResponse:
    """Bolt's answer, unless a listener failed: then the acknowledgement it had sent, or (it
    failed before acknowledging) 503 for Redis or a network that cannot be reached or refused the
    call, 400 for anything else; or Bolt could not authorize it: 503. Never a 500."""
    if response is not None and ack.sent is None and response.body == UNAUTHORIZED:
        log.warning("slack: request not authorized (Slack failed the bot token's check); answered 503")
        return _json(503, "hitl could not complete this right now; try again in a moment")
    if response is not None and response.status == 404 and ack.sent is None and ERROR not in request.context:
        body = request.body if isinstance(request.body, dict) else {}
        kind = body.get("type") or ("slash_command" if "command" in body else "?")
        event = body.get("event") if isinstance(body.get("event"), dict) else {}
        log.info("slack: no listener for %s%s; acknowledged", kind, f" ({event.get('type')})" if event else "")
        return BoltResponse(status=200, body="")
    if response is not None and response.status < 500:
        return response
    if ack.sent is not None:
        return ack.sent
    error = request.context.get(ERROR)
    if isinstance(error, (Unavailable, StoreFailure)):
        return _json(503, "hitl could not complete this right now; try again in a moment")
    return _json(400, "this request could not be handled")


def _json(status: int, error: str) -> BoltResponse:
    return BoltResponse(status=status, body=json.dumps({"ok": False, "error": error}),
                        headers={"content-type": ["application/json; charset=utf-8"]})


async def remember_error(error: Exception, request: AsyncBoltRequest) -> None:
    """Bolt's listener error handler: log the failure and keep it for `settled`."""
    log.error("slack listener failed: %s: %s", type(error).__name__, error, exc_info=error)
    request.context[ERROR] = error


def _finished(task: asyncio.Future[BoltResponse]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("slack request failed after it was acknowledged", exc_info=task.exception())


async def drain(timeout: float) -> int:
    """Wait, at most `timeout` seconds, for the work Slack was or may yet be told is done:
    requests being dispatched, listeners that acknowledged theirs, Bolt's dispatches finishing
    after the answer. How many were still running then (a bot that stops calls this after it
    stopped taking requests, before it closes Redis)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    me = asyncio.current_task()
    while True:  # again after each wait: a request being dispatched may have acknowledged meanwhile
        running = {t for t in (*_ENTERED, *_LISTENERS, *_RUNNING) if not t.done() and t is not me}
        left = deadline - loop.time()
        if not running or left <= 0:
            return len(running)
        await asyncio.wait(running, timeout=left)
