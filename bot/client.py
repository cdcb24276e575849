"""Python client for agents: push a request, get its decision by a blocking read (no polling).

    client = HitlClient.from_url("redis://localhost:6379/0")
    decision = await client.ask(agent="billing", action="refund", summary="Refund $250 to Ana",
                                params={"amount": 250}, editable=["amount"])
    if decision.approved: refund(**decision.params)

A restarted agent can `wait()` on an id it pushed earlier: the decision is read from the
request's stored state first, then awaited on its reply stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.connect import connect
from store.keys import Keys
from store.models import AgentMessage, Decision, Request

OnMessage = Callable[[AgentMessage], Awaitable[None] | None]

BLOCK_MS = 10_000
RECONNECT_S = 0.5


class HitlClient:
    """Async client; one per agent process. Decisions arrive on `{prefix}:results:<name>`."""

    def __init__(self, client: aioredis.Redis, blocking: aioredis.Redis, *, prefix: str = "hitl",
                 name: str | None = None) -> None:
        self.redis: Any = client
        self._blocking: Any = blocking
        self.keys = Keys(prefix)
        self.reply_to = self.keys.results(name or f"client-{uuid.uuid4().hex[:12]}")
        self._replies: dict[str, str] = {}  # request id -> reply_to, for requests pushed here

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "hitl", name: str | None = None) -> HitlClient:
        """A client with its own connections; the blocking one's timeout outlasts its BLOCK."""
        plain = connect(url, socket_timeout=5)
        blocking = connect(url, socket_timeout=BLOCK_MS / 1000 + 10, retry=False)
        return cls(plain, blocking, prefix=prefix, name=name)

    async def close(self) -> None:
        await self.redis.aclose()
        await self._blocking.aclose()

    async def __aenter__(self) -> HitlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def submit(self, request: Request) -> str:
        """Push a validated request; returns its id (client-chosen ids are idempotent)."""
        update: dict[str, Any] = {}
        if request.id is None:
            update["id"] = uuid.uuid4().hex
        if request.reply_to is None:
            update["reply_to"] = self.reply_to
        request = request.model_copy(update=update)
        assert request.id is not None and request.reply_to is not None
        if len(self._replies) >= 10_000:
            self._replies.pop(next(iter(self._replies)))
        self._replies[request.id] = request.reply_to
        await self.redis.xadd(self.keys.requests, {"request": request.model_dump_json(exclude_none=True)})
        return request.id

    async def request(self, agent: str, action: str, summary: str, **fields: Any) -> str:
        """Build a request from keyword fields (validated here, before it is sent) and push it."""
        return await self.submit(Request.model_validate({"agent": agent, "action": action,
                                                         "summary": summary, **fields}))

    async def decision(self, request_id: str) -> Decision | None:
        """The stored decision of a request, or None while it is pending or unknown."""
        raw = await self.redis.hget(self.keys.request(request_id), "decision")
        raw = raw or await self.redis.get(self.keys.invalid(request_id))
        return Decision.model_validate_json(raw) if raw else None

    async def wait(self, request_id: str, timeout: float | None = None, *,
                   reply_to: str | None = None, on_message: OnMessage | None = None) -> Decision:
        """Block until the request is decided; TimeoutError after `timeout` seconds.

        `on_message` is called with each interim message that arrives meanwhile (a person took
        the case over, replied, or flagged an action that ran on its own as wrong)."""
        stream = reply_to or self._replies.get(request_id) or await self._reply_stream(request_id)
        return await self._wait(request_id, stream, await self._last_id(stream), timeout, on_message)

    async def messages(self, request_id: str) -> list[AgentMessage]:
        """Every interim message of a request so far, oldest first (kept on the record)."""
        raw = await self.redis.hget(self.keys.request(request_id), "messages")
        return [AgentMessage.model_validate(m) for m in json.loads(raw)] if raw else []

    async def ask(self, agent: str, action: str, summary: str, *, timeout: float | None = None,
                  **fields: Any) -> Decision:
        """Push a request and wait for its decision."""
        stream = fields.get("reply_to") or self.reply_to
        last = await self._last_id(stream)
        request_id = await self.request(agent, action, summary, **fields)
        return await self._wait(request_id, stream, last, timeout)

    async def _wait(self, request_id: str, stream: str, last: str, timeout: float | None,
                    on_message: OnMessage | None = None) -> Decision:
        found = await self.decision(request_id)
        if found:
            return found
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            block = BLOCK_MS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no decision for {request_id} within {timeout}s")
                block = max(1, min(BLOCK_MS, int(left * 1000)))
            try:
                rows = await self._blocking.xread({stream: last}, count=100, block=block)
            except (RedisConnectionError, RedisTimeoutError):
                # Redis restarting: wait a moment and carry on from the same stream position;
                # the decision is stored by id too, in case it was published meanwhile
                await asyncio.sleep(RECONNECT_S)
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                    if found := await self.decision(request_id):
                        return found
                continue
            for _, entries in rows or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get("request_id") == request_id:
                        return Decision.model_validate(json.loads(fields["decision"]))
                    if on_message is not None and fields.get("message_for") == request_id:
                        result = on_message(AgentMessage.model_validate_json(fields["message"]))
                        if inspect.isawaitable(result):
                            await result

    async def _reply_stream(self, request_id: str) -> str:
        raw = await self.redis.hget(self.keys.request(request_id), "request")
        if raw:
            reply = json.loads(raw).get("reply_to")
            if reply:
                return str(reply)
        # Not read by the bot yet (or no reply_to): every decision also goes to this stream.
        return self.keys.decisions

    async def _last_id(self, stream: str) -> str:
        rows = await self.redis.xrevrange(stream, count=1)
        return str(rows[0][0]) if rows else "0-0"


class SyncHitlClient:
    """The same client for agents that are not async; runs its own event loop."""

    def __init__(self, url: str, *, prefix: str = "hitl", name: str | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = HitlClient.from_url(url, prefix=prefix, name=name)

    def request(self, agent: str, action: str, summary: str, **fields: Any) -> str:
        return self._loop.run_until_complete(self._client.request(agent, action, summary, **fields))

    def wait(self, request_id: str, timeout: float | None = None) -> Decision:
        return self._loop.run_until_complete(self._client.wait(request_id, timeout))

    def ask(self, agent: str, action: str, summary: str, *, timeout: float | None = None,
            **fields: Any) -> Decision:
        return self._loop.run_until_complete(self._client.ask(agent, action, summary, timeout=timeout, **fields))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()
