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
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hitl import config
from hitl.bounds import OutOfBounds, check_entry, check_value
from hitl.connect import check_prefix, connect, hash_tag, same_slot
from hitl.errors import DecisionTimeout, InvalidRequest, RequestLost, Unreachable
from hitl.keys import AgentKeys
from hitl.protocol import AgentMessage, Cancel, Decision, Kind, Request, ReviewResult
from hitl.reading import read_decision, read_message

log = logging.getLogger("hitl")

OnMessage = Callable[[AgentMessage], Awaitable[None] | None]

BLOCK_MS = 10_000
BLOCK_MARGIN_S = 2.0
"""The blocking connection's socket timeout beyond BLOCK: a hung Redis is noticed this soon."""
RECONNECT_S = 0.5
LOCATE_S = 1.0
"""Until the bot has stored a request, how often (at most) a wait looks up where its decision
will be published while other requests' decisions arrive on `{prefix}:decisions`."""
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
RECHECK_S = 10.0
"""How often (at most) a wait with nothing for it checks that Redis still has its request (a
restart without persistence or a failover can lose it); also done after each reconnect. Never
on the path of a decision that arrives within this time."""
SCAN_MAX = 10_000
"""How many queue entries a resumed wait reads, at most, looking for its request's entry."""
HELD_MAX = 1000
"""How many sent, not yet answered requests a client keeps to send again if Redis loses them."""
CANCEL_S = 10.0
"""How long `cancel` waits, by default, for the decision in force."""


@dataclass
class _Watch:
    """The streams a wait reads (stream -> position), and what it knows of the request."""

    streams: dict[str, str]
    settled: bool
    """The request's own reply stream is known (the only one watched then)."""
    marker: bool
    """An invalid marker answers when no request is stored (a resume, not a new try)."""
    sent: tuple[str, str] | None = None
    """(agent, action) of the request this client sent under the id: a stored request of
    another agent or action under it is not its answer (InvalidRequest: the id is taken)."""


def _taken(request_id: str, raw_request: str | None, sent: tuple[str, str] | None) -> None:
    """InvalidRequest when the request stored under `request_id` is not the one this client sent
    (another agent's, or another action): its decision must never answer this call."""
    if sent is None or not raw_request:
        return
    try:
        stored = json.loads(raw_request)
        agent, action = str(stored.get("agent")), str(stored.get("action"))
    except (ValueError, AttributeError):
        return
    if (agent, action) != sent:
        raise InvalidRequest(f"invalid request: id {request_id!r} is taken by another request ({agent}: {action}); "
                             "choose another id (the same id is the same request)")


def _reply_of(raw_request: str) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        reply = json.loads(raw_request).get("reply_to")
        return str(reply) if reply else None
    return None


def _timed_out(request_id: str, timeout: float | None) -> DecisionTimeout:
    return DecisionTimeout(f"no decision for {request_id} within {timeout}s; "
                           f"wait({request_id!r}) resumes it", [request_id])


def validate(fields: dict[str, Any]) -> Request:
    """A `Request` from keyword fields, or `InvalidRequest` naming each bad field."""
    try:
        return Request.model_validate(fields)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'request'}: {err['msg']}"
                             for err in e.errors())
        raise InvalidRequest(f"invalid request: {problems}") from e


def entry(request: Request) -> str:
    """The queue entry's `request` field for `request`; InvalidRequest when the bot would refuse
    it (a number past 1e15, nesting past 32 levels, half a surrogate pair, over 64 KiB)."""
    try:
        check_value(request.model_dump(exclude_none=True))
        text = request.model_dump_json(exclude_none=True)
        check_entry(text)
    except OutOfBounds as e:
        raise InvalidRequest(f"invalid request: {e}") from e
    return text


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
        self._sent: dict[str, _Watch] = {}  # request id -> where its first wait starts (submit)
        self._seen: dict[str, str] = {}  # stream -> an entry id this client has read up to there
        self._unsending: dict[str, str] = {}  # request id -> its entry, while (or if) not known sent
        self._held: dict[str, tuple[str, str]] = {}  # request id -> (its entry, the XADD's id), until answered
        self._cluster = isinstance(client, RedisCluster)

    @classmethod
    def from_url(cls, url: str | None = None, *, prefix: str | None = None, name: str | None = None,
                 agent: str | None = None, retries: int = 8) -> AsyncClient:
        """A client with its own connections (URL from `REDIS_URL` when not given); the blocking
        one's timeout outlasts its BLOCK. `retries` spans a Redis restart (about 6 s at 8)."""
        url = config.redis_url(url)
        check_prefix(url, config.prefix(prefix))  # on a cluster, a prefix the bot would refuse
        # every REDIS_URL form: one server, redis+cluster://, redis+sentinel:// (hitl.connect)
        plain = connect(url, socket_timeout=5, retries=retries)
        blocking = connect(url, socket_timeout=BLOCK_MS / 1000 + BLOCK_MARGIN_S, retry=False)
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
        chosen = request.id is not None
        request = self._addressed(request)
        assert request.id is not None and request.reply_to is not None
        body = entry(request)
        streams = self._streams(request.reply_to, chosen)
        # The watched streams' newest ids, read before the XADD: the first `wait` for this id
        # starts there, so no decision (not even the bot's refusal of it) slips in between.
        self._unsent(request.id, body)
        if self._cluster:  # a cluster pipeline may run its commands on several nodes in any order
            positions = await self._positions(streams)
            async with self._redis():
                entry_id = await self.redis.xadd(self.keys.requests, {"request": body})
        else:
            async with self._redis(), self.redis.pipeline(transaction=False) as p:
                for s in streams:
                    p.xrevrange(s, count=1)
                p.xadd(self.keys.requests, {"request": body})
                res = await p.execute()
            entry_id = res[-1]
        self._sent_as(request.id, body, entry_id)
        if not self._cluster:
            positions = {s: str(r[0][0]) if r else "0-0" for s, r in zip(streams, res, strict=False)}
        if len(self._sent) >= 10_000:
            self._sent.pop(next(iter(self._sent)))
        self._sent[request.id] = _Watch(positions, settled=not chosen, marker=False,
                                        sent=(request.agent, request.action) if chosen else None)
        return request.id

    def _streams(self, reply_to: str, chosen: bool) -> list[str]:
        """Where a request's decision may arrive: its reply stream; for a client-chosen id (which
        may be stored already, or be stored first from another client's try, whose reply
        stream then gets the decision) also {prefix}:decisions, until the stored one is known."""
        return list(dict.fromkeys([reply_to, self.keys.decisions] if chosen else [reply_to]))

    def _addressed(self, request: Request) -> Request:
        """`request` with an id (a new one unless the caller chose it) and a reply stream,
        remembered so `wait` knows where its decision arrives."""
        update: dict[str, Any] = {}
        if request.id is None:
            update["id"] = uuid.uuid4().hex
        if request.reply_to is None:
            update["reply_to"] = self.reply_to
        elif self._cluster and not same_slot(request.reply_to, self.keys.requests):
            # the bot writes the decision in the same script as the record: it refuses this
            tag = hash_tag(self.keys.prefix)
            raise InvalidRequest(f"invalid request: reply_to {request.reply_to!r} is in another Redis Cluster "
                                 f"slot than hitl's keys; use {self.keys.results('<name>')}, or a stream of "
                                 f"your own whose first {{...}} is {{{tag}}} (such as agent:{{{tag}}}:inbox)")
        request = request.model_copy(update=update) if update else request
        assert request.id is not None and request.reply_to is not None
        if self.keys.owns(request.reply_to):
            raise InvalidRequest(f"invalid request: reply_to {request.reply_to!r} names one of the bot's own keys; "
                                 f"use a stream of your own or {self.keys.results('<name>')}")
        if len(self._replies) >= 10_000:
            self._replies.pop(next(iter(self._replies)))
        self._replies[request.id] = request.reply_to
        return request

    async def request(self, **fields: Any) -> str:
        """Build a request from keyword fields (validated here, before it is sent) and push it."""
        return await self.submit(self.build(**fields))

    async def decision(self, request_id: str) -> Decision | None:
        """The stored decision of a request, or None while it is pending or unknown (an id
        whose last try the bot refused, with no request stored, reports that `invalid`)."""
        async with self._redis():
            raw = await self.redis.hget(self.keys.request(request_id), "decision")
            raw = raw or await self.redis.get(self.keys.invalid(request_id))  # plain commands: they retry across a Redis restart
        return read_decision(raw) if raw else None

    async def wait(self, request_id: str, timeout: float | None = None, *,
                   reply_to: str | None = None, on_message: OnMessage | None = None) -> Decision:
        """Block until the request is decided; `DecisionTimeout` after `timeout` seconds
        (the whole call is bounded by it, Redis answering or not).

        The decision is read where the bot publishes it: the reply stream stored with the
        request (the first submission's, whichever client sent it), or `{prefix}:decisions`
        until the bot has stored the request. `on_message` is called with each interim message
        that arrives meanwhile (a person took the case over, replied, or flagged an action that
        ran on its own as wrong)."""
        async with self._bounded(request_id, timeout) as deadline:
            if (body := self._unsending.get(request_id)) is not None:
                # an ask that timed out before its request was known sent: send it now (again is
                # harmless: the same id is the same request for the bot)
                async with self._redis():
                    entry_id = await self.redis.xadd(self.keys.requests, {"request": body})
                self._sent_as(request_id, body, entry_id)
            sent = self._sent.pop(request_id, None) if reply_to is None else None
            if sent is None:  # a resume: an invalid marker with no request stored answers it
                own = reply_to or self._replies.get(request_id)
                streams = [s for s in (own, self.keys.decisions) if s]
                sent = _Watch(await self._positions(streams), settled=False, marker=True)
            return await self._wait(request_id, sent, deadline, timeout, on_message)

    async def cancel(self, request_id: str, reason: str | None = None, *,
                     timeout: float | None = CANCEL_S) -> Decision:
        """Withdraw a pending request of this client's agent: it ends `rejected` with reason_code
        `withdrawn`, its card locked showing `reason`. Returns the decision in force: the
        withdrawal, or the decision made before the withdrawal arrived (an approval stays an
        approval: check `approved`). DecisionTimeout when none comes within `timeout` (the bot
        down or behind; an id that is not this agent's request: that withdrawal is refused)."""
        try:
            body = Cancel(id=request_id, agent=self.agent, reason=reason).model_dump_json(exclude_none=True)
        except ValidationError as e:
            raise InvalidRequest(f"invalid withdrawal: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from e
        # withdrawn: never sent again by a wait (one that never went out, one Redis lost)
        self._unsending.pop(request_id, None)
        self._held.pop(request_id, None)
        async with self._bounded(request_id, timeout) as deadline, self._redis():
            await self.redis.xadd(self.keys.requests, {"cancel": body})
        left = None if deadline is None else max(0.001, deadline - asyncio.get_running_loop().time())
        return await self.wait(request_id, left)

    async def agent_of(self, request_id: str) -> str | None:
        """The agent of the request stored under `request_id` (None while there is none)."""
        stored = await self.stored(request_id)
        return str(stored.get("agent")) if stored is not None else None

    async def refused_agent(self, request_id: str, scan: int = 2000) -> str | None:
        """The agent of the newest entry under `request_id` the bot refused (its dead letter,
        among the newest `scan`), or None when none is found: whose an `invalid` marker is."""
        async with self._redis():
            rows = await self.redis.xrevrange(self.keys.dead, count=scan)
        for _, fields in rows:
            raw = fields.get("request") or ""
            if request_id not in raw:
                continue
            with contextlib.suppress(ValueError, AttributeError):
                sent = json.loads(raw)
                if sent.get("id") == request_id:
                    return str(sent.get("agent")) if sent.get("agent") is not None else None
        return None

    async def stored(self, request_id: str) -> dict[str, Any] | None:
        """The request the bot stored under `request_id`, as sent (None while there is none)."""
        async with self._redis():
            raw = await self.redis.hget(self.keys.request(request_id), "request")
        with contextlib.suppress(ValueError):
            stored = json.loads(raw) if raw else None
            return stored if isinstance(stored, dict) else None
        return None

    async def messages(self, request_id: str) -> list[AgentMessage]:
        """Every interim message of a request so far, oldest first (kept on the record)."""
        async with self._redis():
            raw = await self.redis.hget(self.keys.request(request_id), "messages")
        return [m for m in map(read_message, json.loads(raw)) if m is not None] if raw else []

    async def notes(self, request_id: str) -> tuple[list[AgentMessage], ReviewResult | None]:
        """Every interim message of a request so far, oldest first, the override a `wrong`
        review sent included, and that after-the-fact review (None until there is one)."""
        async with self._redis():
            raw, review_raw = await self.redis.hmget(self.keys.request(request_id), ["messages", "review"])
        messages = [m for m in map(read_message, json.loads(raw)) if m is not None] if raw else []
        review = None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            review = ReviewResult.from_stored(json.loads(review_raw)) if review_raw else None
        override = review.override(request_id) if review is not None else None
        return ([*messages, override] if override is not None else messages), review

    async def ask(self, *, timeout: float | None = None, on_message: OnMessage | None = None,
                  **fields: Any) -> Decision:
        """Push a request and wait for its decision (any status: check `decision.approved`)."""
        request = self.build(**fields)
        chosen = request.id is not None
        request = self._addressed(request)
        assert request.id is not None and request.reply_to is not None
        stream, key = request.reply_to, self.keys.request(request.id)
        body = entry(request)
        streams = self._streams(stream, chosen)
        async with self._bounded(request.id, timeout) as deadline:
            if not chosen and (last := self._seen.get(stream)) is not None:
                # A fresh id, on a stream this client has read: nothing can be published for it
                # before this XADD, so the wait starts at the last entry read there (one command,
                # no pipeline: the hot path of an agent's every call).
                self._unsent(request.id, body)
                async with self._redis():
                    entry_id = await self.redis.xadd(self.keys.requests, {"request": body})
                self._sent_as(request.id, body, entry_id)
                watch = _Watch({stream: last}, settled=True, marker=False)
                return await self._wait(request.id, watch, deadline, timeout, on_message, look_first=False)
            if self._cluster:  # a cluster pipeline may run its commands on several nodes in any order
                await self.submit(request)
                watch = self._sent.pop(request.id)
                if not chosen:  # addressed here: no other client's try can be stored under it
                    watch = _Watch({stream: watch.streams[stream]}, settled=True, marker=False)
                return await self._wait(request.id, watch, deadline, timeout, on_message, look_first=chosen)
            # One round trip, run in this order by Redis: the watched streams' newest ids (the
            # wait starts after them, so the decision cannot slip in before), a decision already
            # stored (a chosen id decided earlier is not published again; and when the client
            # sends the pipeline again after a lost connection, the first send may have been
            # decided already: the newest id is then past its decision, and the stored one is
            # the answer), the XADD. Only the request's own decision answers here: an invalid
            # marker left by an earlier try of the id does not (this try is a new request).
            self._unsent(request.id, body)
            async with self._redis(), self.redis.pipeline(transaction=False) as p:
                for s in streams:
                    p.xrevrange(s, count=1)
                p.hmget(key, ["decision", "request"])
                p.xadd(self.keys.requests, {"request": body})
                res = await p.execute()
            self._sent_as(request.id, body, res[-1])
            stored, stored_request = res[len(streams)]
            if chosen:
                _taken(request.id, stored_request, (request.agent, request.action))
            if stored:
                self._held.pop(request.id, None)
                return read_decision(stored)
            positions = {s: str(r[0][0]) if r else "0-0" for s, r in zip(streams, res, strict=False)}
            self._note_seen(stream, positions[stream])
            watch = _Watch(positions, settled=not chosen, marker=False,
                           sent=(request.agent, request.action) if chosen else None)
            return await self._wait(request.id, watch, deadline, timeout, on_message, look_first=chosen)

    def _unsent(self, request_id: str, body: str) -> None:
        """Remember `body` until its XADD is known done: an `ask` whose timeout ends before then
        raises DecisionTimeout, and `wait(request_id)` on this client sends it then."""
        if len(self._unsending) >= 10_000:
            self._unsending.pop(next(iter(self._unsending)))
        self._unsending[request_id] = body

    def _sent_as(self, request_id: str, body: str, entry_id: Any) -> None:
        """`body` went out as queue entry `entry_id`: kept until its wait is answered, so a wait
        that finds Redis without it (a restart without persistence, a failover) sends it again."""
        self._unsending.pop(request_id, None)
        self._held.pop(request_id, None)
        if len(self._held) >= HELD_MAX:
            self._held.pop(next(iter(self._held)))
        self._held[request_id] = (body, entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))

    def _refuses_another(self, request_id: str, fields: dict[str, Any]) -> bool:
        """Whether a published entry is the bot's refusal (`invalid`) of another queue entry
        than the one this client sent under `request_id` (someone else's malformed entry naming
        the same id): not this request's answer, which is still to come."""
        refused, held = fields.get("entry_id"), self._held.get(request_id)
        return refused is not None and held is not None and refused != held[1]

    def _note_seen(self, stream: str, entry_id: str) -> None:
        """Remember a position on `stream` this client has reached (a later fresh ask waits from it)."""
        if stream not in self._seen and len(self._seen) >= 1000:
            self._seen.pop(next(iter(self._seen)))
        self._seen[stream] = entry_id

    async def ask_human(self, question: str, options: list[str] | None = None, *,
                        timeout: float | None = None, **fields: Any) -> str:
        """Ask people a question and return the answer (an option's value, or free text)."""
        from hitl.errors import raise_unless_answered

        fields.setdefault("action", "question")
        decision = await self.ask(kind=Kind.question, summary=question, options=options or [],
                                  timeout=timeout, **fields)
        return raise_unless_answered(decision)

    @contextlib.asynccontextmanager
    async def _bounded(self, request_id: str, timeout: float | None) -> AsyncIterator[float | None]:
        """Bounds everything inside by `timeout` (a hung Redis included): DecisionTimeout then.
        Yields the deadline (loop time), None for no timeout (None or infinity)."""
        if timeout is not None and math.isnan(timeout):
            raise ValueError("timeout is NaN: give a number of seconds, or None to wait without a limit")
        if timeout is None or timeout == math.inf:
            yield None
            return
        deadline = asyncio.get_running_loop().time() + timeout
        bound = asyncio.timeout_at(deadline)
        try:
            async with bound:
                yield deadline
        except TimeoutError as e:
            if not bound.expired() or isinstance(e, DecisionTimeout):
                raise
            raise _timed_out(request_id, timeout) from e

    async def _wait(self, request_id: str, watch: _Watch, deadline: float | None, timeout: float | None,
                    on_message: OnMessage | None = None, *, look_first: bool = True) -> Decision:
        decision = await self._await(request_id, watch, deadline, timeout, on_message, look_first=look_first)
        self._held.pop(request_id, None)
        return decision

    async def _await(self, request_id: str, watch: _Watch, deadline: float | None, timeout: float | None,
                     on_message: OnMessage | None, *, look_first: bool) -> Decision:
        loop = asyncio.get_running_loop()
        if look_first and (found := await self._locate(request_id, watch)):
            return found
        next_locate = 0.0
        next_check = loop.time() + RECHECK_S  # never on the way of a decision that comes at once
        while True:
            block = BLOCK_MS
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise _timed_out(request_id, timeout)
                block = max(1, min(BLOCK_MS, int(left * 1000)))
            try:
                rows = await self._blocking.xread(dict(watch.streams), count=100, block=block)
            except (RedisConnectionError, RedisTimeoutError):
                # Redis restarting: wait a moment and carry on from the same stream positions;
                # the decision is stored by id too, in case it was published meanwhile
                await asyncio.sleep(RECONNECT_S)
                with contextlib.suppress(Unreachable):
                    if found := await self._locate(request_id, watch):
                        return found
                    # back after a connection loss: Redis may have come back without the request
                    next_check = loop.time() + RECHECK_S
                    await self._recover(request_id, watch)
                continue
            for stream, entries in rows or []:
                if stream not in watch.streams:
                    continue
                for entry_id, fields in entries:
                    watch.streams[stream] = entry_id
                    self._note_seen(stream, entry_id)
                    if fields.get("request_id") == request_id and "decision" in fields \
                            and not self._refuses_another(request_id, fields):
                        if watch.sent is not None:  # a chosen id: the request stored under it must be ours
                            async with self._redis():
                                _taken(request_id, await self.redis.hget(self.keys.request(request_id), "request"),
                                       watch.sent)
                        return read_decision(fields["decision"])
                    if on_message is not None and fields.get("message_for") == request_id:
                        if (message := read_message(fields["message"])) is None:
                            continue
                        result = on_message(message)
                        if inspect.isawaitable(result):
                            await result
            # Look at the stored state after a whole BLOCK with nothing for us (the decision may
            # have gone where nobody listens here), and, until the request's reply stream is
            # known, at most every LOCATE_S while other requests' decisions go by.
            if not rows or (not watch.settled and loop.time() >= next_locate):
                next_locate = loop.time() + LOCATE_S
                with contextlib.suppress(Unreachable):
                    if found := await self._locate(request_id, watch):
                        return found
            if loop.time() >= next_check:
                next_check = loop.time() + RECHECK_S
                with contextlib.suppress(Unreachable):
                    await self._recover(request_id, watch)

    async def _recover(self, request_id: str, watch: _Watch) -> None:
        """When Redis no longer knows the request (no record, no invalid marker, its entry not in
        the queue: lost in a restart without persistence or a failover to a replica that never
        had it), send it again if this client holds it (the same id is the same request: the bot
        keeps one); else raise RequestLost, as no decision can ever come."""
        held = self._held.get(request_id)
        async with self._redis():
            if held is not None:  # its own entry, by id, checked first: once read, it is recorded
                queued = bool(await self.redis.xrange(self.keys.requests, held[1], held[1]))
            else:
                queued = await self._queued(request_id)
            if queued or await self.redis.exists(self.keys.request(request_id)) \
                    or await self.redis.exists(self.keys.invalid(request_id)):
                return
            if held is None:
                raise RequestLost(f"request {request_id} is not in hitl's Redis (no record, no refusal, not queued): "
                                  "lost in a Redis restart without persistence or a failover, or never sent, and this "
                                  "client does not hold it to send again; submit it again (the same id is the same "
                                  "request)", request_id)
            body = held[0]
            entry_id = await self.redis.xadd(self.keys.requests, {"request": body})
        log.warning("hitl: Redis lost request %s (a restart without persistence or a failover); sent it again",
                    request_id)
        self._sent_as(request_id, body, entry_id)
        reply = _reply_of(body)
        if reply and reply not in watch.streams:  # the bot publishes to this try's reply stream now
            watch.streams[reply] = await self._last_id(reply)

    async def _queued(self, request_id: str) -> bool:
        """Whether an entry for `request_id` is in the queue (read up to SCAN_MAX entries: the bot
        trims read ones, so it holds little more than what the bot has not read yet; past that it
        cannot tell, and says yes)."""
        found, whole = await self._scan_queue(request_id)
        return found is not None or not whole

    async def queued(self, request_id: str) -> dict[str, Any] | None:
        """The request first queued under `request_id` and not yet stored by the bot (the bot down
        or behind), as sent; None when none is among the queue's first SCAN_MAX entries."""
        async with self._redis():
            return (await self._scan_queue(request_id))[0]

    async def _scan_queue(self, request_id: str) -> tuple[dict[str, Any] | None, bool]:
        """The first queued request with this id, and whether the whole queue was read."""
        start, read = "-", 0
        while read < SCAN_MAX:
            rows = await self.redis.xrange(self.keys.requests, start, "+", count=500)
            for _, fields in rows:
                raw = fields.get("request") or ""
                if request_id in raw:
                    with contextlib.suppress(ValueError, AttributeError):
                        request = json.loads(raw)
                        if request.get("id") == request_id:
                            return request, True
            if len(rows) < 500:
                return None, True
            read += len(rows)
            start = f"({rows[-1][0]}"
        return None, False

    async def _locate(self, request_id: str, watch: _Watch) -> Decision | None:
        """The stored decision, if any; else make `watch` follow the stream the decision will
        be published to: the stored request's reply stream once the bot has stored it."""
        key = self.keys.request(request_id)

        async def stored(record: bool) -> str | None:
            raw = await self.redis.hget(key, "decision")
            if not raw and not record and watch.marker:  # no request stored: the last try's refusal
                raw = await self.redis.get(self.keys.invalid(request_id))
            return str(raw) if raw else None

        async with self._redis():
            decision, request = await self.redis.hmget(key, ["decision", "request"])
            _taken(request_id, request, watch.sent)
            if decision:
                return read_decision(decision)
            if request is None:
                if watch.marker and (raw := await stored(False)):
                    return read_decision(raw)
                if watch.settled:
                    return None
                target = self.keys.decisions  # every decision also goes there
            else:
                target = _reply_of(request) or self.keys.decisions
            if target not in watch.streams:
                # its newest id first, then the stored decision: one published before that id
                # is stored by then (the bot stores and publishes in one script)
                watch.streams[target] = await self._last_id(target)
                if raw := await stored(request is not None):
                    return read_decision(raw)
        if request is not None:
            watch.settled = True
            watch.streams = {target: watch.streams[target]}
        return None

    async def _positions(self, streams: list[str]) -> dict[str, str]:
        return {s: await self._last_id(s) for s in dict.fromkeys(streams)}

    async def _last_id(self, stream: str) -> str:
        async with self._redis():
            rows = await self.redis.xrevrange(stream, count=1)
        return str(rows[0][0]) if rows else "0-0"
