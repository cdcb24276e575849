"""The async client: push a request, get its decision by a blocking read (no polling).

    async with AsyncClient.from_url(agent="billing") as client:
        decision = await client.ask(action="refund", summary="Refund $250 to Ana",
                                    params={"amount": 250}, editable=["amount"])

A restarted agent resumes with `wait(request_id)`: the decision is read from the request's
stored state first, then awaited on its reply stream. `hitl.Client` is the same client for
code that is not async (it runs this one on a private event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hitl import config
from hitl.connect import connect
from hitl.errors import DecisionTimeout, InvalidRequest, Unreachable
from hitl.keys import AgentKeys
from hitl.protocol import AgentMessage, Decision, Kind, Request

OnMessage = Callable[[AgentMessage], Awaitable[None] | None]

BLOCK_MS = 10_000
RECONNECT_S = 0.5
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def validate(fields: dict[str, Any]) -> Request:
    """A `Request` from keyword fields, or `InvalidRequest` naming each bad field."""
    try:
        return Request.model_validate(fields)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'request'}: {err['msg']}"
                             for err in e.errors())
        raise InvalidRequest(f"invalid request: {problems}") from e


class AsyncClient:
    """Async client; one per agent process. Decisions arrive on `{prefix}:results:<name>`."""

    def __init__(self, client: aioredis.Redis, blocking: aioredis.Redis, *, prefix: str | None = None,
                 name: str | None = None, agent: str | None = None, url: str = "") -> None:
        self.redis: Any = client
        self._blocking: Any = blocking
        self.keys = AgentKeys(config.prefix(prefix))
        self.agent = config.agent_name(agent)
        self.url = url
        self.reply_to = self.keys.results(name or f"client-{uuid.uuid4().hex[:12]}")
        self._replies: dict[str, str] = {}  # request id -> reply_to, for requests pushed here
        self._cluster = isinstance(client, RedisCluster)

    @classmethod
    def from_url(cls, url: str | None = None, *, prefix: str | None = None, name: str | None = None,
                 agent: str | None = None, retries: int = 8) -> AsyncClient:
        """A client with its own connections (URL from `REDIS_URL` when not given); the blocking
        one's timeout outlasts its BLOCK. `retries` spans a Redis restart (about 6 s at 8)."""
        url = config.redis_url(url)
        # every REDIS_URL form: one server, redis+cluster://, redis+sentinel:// (hitl.connect)
        plain = connect(url, socket_timeout=5, retries=retries)
        blocking = connect(url, socket_timeout=BLOCK_MS / 1000 + 10, retry=False)
        return cls(plain, blocking, prefix=prefix, name=name, agent=agent, url=url)

    async def close(self) -> None:
        await self.redis.aclose()
        await self._blocking.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _redis(self) -> AsyncIterator[None]:
        try:
            yield
        except REDIS_ERRORS as e:
            raise Unreachable(f"hitl: cannot reach Redis at {config.shown_url(self.url or '?')} "
                              f"(set REDIS_URL to hitl's Redis): {e}") from e

    def build(self, **fields: Any) -> Request:
        """Validate keyword fields into a request (the client's agent name by default)."""
        fields.setdefault("agent", self.agent)
        return validate(fields)

    async def submit(self, request: Request | dict[str, Any]) -> str:
        """Push a validated request; returns its id (client-chosen ids are idempotent)."""
        if not isinstance(request, Request):
            request = self.build(**request)
        request = self._addressed(request)
        assert request.id is not None
        async with self._redis():
            await self.redis.xadd(self.keys.requests, {"request": request.model_dump_json(exclude_none=True)})
        return request.id

    def _addressed(self, request: Request) -> Request:
        """`request` with an id (a new one unless the caller chose it) and a reply stream,
        remembered so `wait` knows where its decision arrives."""
        update: dict[str, Any] = {}
        if request.id is None:
            update["id"] = uuid.uuid4().hex
        if request.reply_to is None:
            update["reply_to"] = self.reply_to
        request = request.model_copy(update=update) if update else request
        assert request.id is not None and request.reply_to is not None
        if len(self._replies) >= 10_000:
            self._replies.pop(next(iter(self._replies)))
        self._replies[request.id] = request.reply_to
        return request

    async def request(self, **fields: Any) -> str:
        """Build a request from keyword fields (validated here, before it is sent) and push it."""
        return await self.submit(self.build(**fields))

    async def decision(self, request_id: str) -> Decision | None:
        """The stored decision of a request, or None while it is pending or unknown."""
        async with self._redis():
            raw = await self.redis.hget(self.keys.request(request_id), "decision")
            raw = raw or await self.redis.get(self.keys.invalid(request_id))  # plain commands: they retry across a Redis restart
        return Decision.model_validate_json(raw) if raw else None

    async def wait(self, request_id: str, timeout: float | None = None, *,
                   reply_to: str | None = None, on_message: OnMessage | None = None) -> Decision:
        """Block until the request is decided; `DecisionTimeout` after `timeout` seconds.

        `on_message` is called with each interim message that arrives meanwhile (a person took
        the case over, replied, or flagged an action that ran on its own as wrong)."""
        stream = reply_to or self._replies.get(request_id) or await self._reply_stream(request_id)
        return await self._wait(request_id, stream, await self._last_id(stream), timeout, on_message)

    async def messages(self, request_id: str) -> list[AgentMessage]:
        """Every interim message of a request so far, oldest first (kept on the record)."""
        async with self._redis():
            raw = await self.redis.hget(self.keys.request(request_id), "messages")
        return [AgentMessage.model_validate(m) for m in json.loads(raw)] if raw else []

    async def ask(self, *, timeout: float | None = None, on_message: OnMessage | None = None,
                  **fields: Any) -> Decision:
        """Push a request and wait for its decision (any status: check `decision.approved`)."""
        request = self.build(**fields)
        if self._cluster:  # a cluster pipeline may run its commands on several nodes in any order
            stream = request.reply_to or self.reply_to
            last = await self._last_id(stream)
            return await self._wait(await self.submit(request), stream, last, timeout, on_message)
        chosen = request.id is not None
        request = self._addressed(request)
        assert request.id is not None and request.reply_to is not None
        stream, key = request.reply_to, self.keys.request(request.id)
        # One round trip, run in this order by Redis: the reply stream's newest id (the wait
        # starts after it, so the decision cannot slip in before), a decision already stored
        # (a chosen id decided earlier is not published again; and when the client sends the
        # pipeline again after a lost connection, the first send may have been decided already:
        # the newest id is then past its decision, and the stored one is the answer), the XADD.
        async with self._redis(), self.redis.pipeline(transaction=False) as p:
            p.xrevrange(stream, count=1)
            p.hget(key, "decision")
            p.get(self.keys.invalid(request.id))
            p.xadd(self.keys.requests, {"request": request.model_dump_json(exclude_none=True)})
            res = await p.execute()
        last = str(res[0][0][0]) if res[0] else "0-0"
        stored = res[1] or res[2]
        if stored:
            return Decision.model_validate_json(stored)
        return await self._wait(request.id, stream, last, timeout, on_message, look_first=chosen)

    async def ask_human(self, question: str, options: list[str] | None = None, *,
                        timeout: float | None = None, **fields: Any) -> str:
        """Ask people a question and return the answer (an option's value, or free text)."""
        from hitl.errors import raise_unless_answered

        fields.setdefault("action", "question")
        decision = await self.ask(kind=Kind.question, summary=question, options=options or [],
                                  timeout=timeout, **fields)
        return raise_unless_answered(decision)

    async def _wait(self, request_id: str, stream: str, last: str, timeout: float | None,
                    on_message: OnMessage | None = None, *, look_first: bool = True) -> Decision:
        if look_first and (found := await self.decision(request_id)):
            return found
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            block = BLOCK_MS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DecisionTimeout(f"no decision for {request_id} within {timeout}s; "
                                          f"wait({request_id!r}) resumes it", [request_id])
                block = max(1, min(BLOCK_MS, int(left * 1000)))
            try:
                rows = await self._blocking.xread({stream: last}, count=100, block=block)
            except (RedisConnectionError, RedisTimeoutError):
                # Redis restarting: wait a moment and carry on from the same stream position;
                # the decision is stored by id too, in case it was published meanwhile
                await asyncio.sleep(RECONNECT_S)
                with contextlib.suppress(Unreachable):
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
        async with self._redis():
            raw = await self.redis.hget(self.keys.request(request_id), "request")
        if raw:
            reply = json.loads(raw).get("reply_to")
            if reply:
                return str(reply)
        # Not read by the bot yet (or no reply_to): every decision also goes to this stream.
        return self.keys.decisions

    async def _last_id(self, stream: str) -> str:
        async with self._redis():
            rows = await self.redis.xrevrange(stream, count=1)
        return str(rows[0][0]) if rows else "0-0"
