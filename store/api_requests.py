"""What the HTTP API reads and writes besides records: queue entries it submits, the fate of
an entry (accepted or dead-lettered), the decisions feed, and the HumanLayer call mapping.

The API never writes a record itself: it adds the request to `{prefix}:requests` exactly as
an agent would, and intake does the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from store.keys import is_request_id
from store.models import Decision
from store.redis_store import Store

DEAD_SCAN = 500
"""Newest dead letters searched for an entry the API submitted (intake dead-letters at once)."""

QUEUED_TTL_S = 7 * 24 * 3600
"""How long the API remembers what it queued under an id (as long as an `invalid` marker)."""

_SUBMIT_NEW = """
-- KEYS: the request's record, the requests stream, the id's queued marker
-- ARGV: the request JSON, its agent, the marker's TTL in seconds
-- Add the request to the queue unless a record of its id exists: the queue entry's id, or
-- false for an id already taken (the caller reads that record). In the same step the marker
-- notes the entry as the agent's newest under this id (`a:<agent>`) and whose it is
-- (`q:<entry>`): intake's refusal of it is kept there too (dead.lua: `r:`/`x:<entry>`).
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local entry = redis.call('XADD', KEYS[2], '*', 'request', ARGV[1])
redis.call('HSET', KEYS[3], 'a:' .. ARGV[2], entry, 'q:' .. entry, ARGV[2])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
return entry
"""


@dataclass(frozen=True)
class Queued:
    """What the API queued under one id: each agent's newest entry, and intake's refusals."""

    entries: dict[str, str]
    """agent -> its newest queue entry id under this request id."""
    refused: dict[str, tuple[str, str]]
    """entry id -> (intake's error, its `invalid` decision JSON or "")."""


@dataclass(frozen=True)
class Message:
    """An entry of `{prefix}:messages`: an interim message and where it stands among decisions."""

    id: str
    request_id: str
    message: str
    """The message JSON, as the agent's reply stream got it."""
    after: str
    """The newest decision's stream id when the message was added ("0-0": none yet)."""


def _message(entry_id: str, fields: dict[str, str]) -> Message:
    return Message(entry_id, fields.get("request_id", ""), fields.get("message", ""), fields.get("after") or "0-0")


class ApiStore:
    """Queue submission and lookups for the HTTP API, on the bot's `Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis: Any = store.redis
        self.keys = store.keys
        self._submit_new = self.redis.register_script(_SUBMIT_NEW)

    async def submit(self, raw: str) -> str:
        """Add a request (JSON text) to the queue, as `XADD {prefix}:requests * request <JSON>`."""
        return str(await self.redis.xadd(self.keys.requests, {"request": raw}))

    async def submit_new(self, request_id: str, raw: str, agent: str) -> str | None:
        """`submit` unless request `request_id` has a record already (None then), in one round
        trip: the queue gets the same entry an agent's XADD makes, and no entry for a known id.
        The entry is noted as `agent`'s under that id (`queued`) in the same step."""
        entry = await self._submit_new(keys=[self.keys.request(request_id), self.keys.requests,
                                             self.keys.queued(request_id)], args=[raw, agent, QUEUED_TTL_S])
        return str(entry) if entry else None

    async def queued(self, request_id: str) -> Queued | None:
        """What the API queued under `request_id` (None: nothing, or forgotten)."""
        raw = await self.redis.hgetall(self.keys.queued(request_id))
        if not raw:
            return None
        entries = {k[2:]: v for k, v in raw.items() if k.startswith("a:")}
        refused = {k[2:]: (v, raw.get("x:" + k[2:], "")) for k, v in raw.items() if k.startswith("r:")}
        return Queued(entries, refused)

    async def in_queue(self, entry_id: str) -> bool:
        """Whether queue entry `entry_id` is still in the requests stream (intake trims only
        entries it has acknowledged)."""
        return bool(await self.redis.xrange(self.keys.requests, entry_id, entry_id, count=1))

    async def dead_reason(self, entry_id: str) -> str | None:
        """The dead-letter `error` of a queue entry, if intake refused it."""
        rows = await self.redis.xrevrange(self.keys.dead, count=DEAD_SCAN)
        for _, fields in rows:
            if fields.get("entry_id") == entry_id:
                return str(fields.get("error", ""))
        return None

    async def invalid_decision(self, request_id: str) -> Decision | None:
        """The `invalid` decision of an id that never became a request (kept 7 days)."""
        raw = await self.redis.get(self.keys.invalid(request_id))
        return Decision.model_validate_json(raw) if raw else None

    async def decisions_after(self, last_id: str, count: int = 500) -> list[tuple[str, str, str]]:
        """Decisions published after stream id `last_id`: (entry id, request id, decision JSON)."""
        rows = await self.redis.xrange(self.keys.decisions, f"({last_id}", "+", count=count)
        return [(i, f.get("request_id", ""), f.get("decision", "")) for i, f in rows if f.get("decision")]

    async def messages_from(self, first_id: str, count: int = 500) -> list[Message]:
        """Interim messages from stream id `first_id` on (inclusive; `(<id>` for exclusive)."""
        rows = await self.redis.xrange(self.keys.messages, first_id, "+", count=count)
        return [_message(i, f) for i, f in rows if f.get("message")]

    async def feeds_after(self, last_decision: str, last_audit: str, last_message: str, block_ms: int,
                          count: int = 500) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]],
                                                     list[Message]]:
        """New decisions (entry id, request id, decision JSON), audit events (entry id, request
        id, event) and interim messages after the given ids, waiting up to `block_ms` for the first."""
        k = self.keys
        got = await self.redis.xread({k.decisions: last_decision, k.audit: last_audit, k.messages: last_message},
                                     count=count, block=block_ms)
        decisions: list[tuple[str, str, str]] = []
        audits: list[tuple[str, str, str]] = []
        messages: list[Message] = []
        for stream, rows in got or []:
            if stream == k.decisions:
                decisions += [(i, f.get("request_id", ""), f.get("decision", "")) for i, f in rows
                              if f.get("decision")]
            elif stream == k.messages:
                messages += [_message(i, f) for i, f in rows if f.get("message")]
            else:
                audits += [(i, f.get("request_id", ""), f.get("event", "")) for i, f in rows]
        return decisions, audits, messages

    async def last_ids(self) -> tuple[str, str, str]:
        """The newest entry ids of the decisions, audit and messages streams ("0-0" when empty):
        where a reader that wants only new entries starts (`$` would skip those added between reads)."""
        async with self.redis.pipeline(transaction=False) as p:
            for key in (self.keys.decisions, self.keys.audit, self.keys.messages):
                p.xrevrange(key, count=1)
            d, a, m = await p.execute()
        return (str(d[0][0]) if d else "0-0"), (str(a[0][0]) if a else "0-0"), (str(m[0][0]) if m else "0-0")

    async def message_owners(self, messages: list[Message]) -> list[str | None]:
        """The agent of each message's request (None where there is no record), in one round trip."""
        ids = [m.request_id if is_request_id(m.request_id) else None for m in messages]
        async with self.redis.pipeline(transaction=False) as p:
            for rid in ids:
                if rid is not None:
                    p.hget(self.keys.request(rid), "request")
            found = iter(await p.execute())
        out: list[str | None] = []
        for rid in ids:
            raw = next(found) if rid is not None else None
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                data = None
            out.append(str(data.get("agent")) if isinstance(data, dict) and data.get("agent") else None)
        return out

    async def owners_of(self, rows: list[tuple[str, str, str]]) -> list[str | None]:
        """The agent each published decision (entry id, request id, decision JSON) is for, where
        it is its request's own (`Store.own_requests`), in one round trip."""
        return [r.get("agent") if r else None for r in await self.store.own_requests(rows)]

    # ---- HumanLayer compatibility: the SDK's call, kept beside the hitl request -----------

    def _call(self, request_id: str) -> str:
        return f"{self.keys.request(request_id)}:humanlayer"

    async def save_call(self, request_id: str, call: dict[str, Any], agent: str) -> bool:
        """Keep the SDK's call (its own ids and spec) for its hitl request; False if one was kept."""
        return bool(await self.redis.hsetnx(self._call(request_id), "call",
                                            json.dumps({"call": call, "agent": agent})))

    async def get_call(self, request_id: str) -> tuple[dict[str, Any], str] | None:
        """The SDK's call and the agent it was submitted as, or None."""
        raw = await self.redis.hget(self._call(request_id), "call")
        if not raw:
            return None
        data = json.loads(raw)
        return data["call"], data["agent"]

    async def forget_call(self, request_id: str) -> None:
        """Drop a kept call whose request never became a record (nothing half-stored)."""
        await self.redis.delete(self._call(request_id))
