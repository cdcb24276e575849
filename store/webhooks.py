"""Durable webhook deliveries: one per decided request that named a `callback_url`.

The consumer group `webhooks` on `{prefix}:decisions` turns each decision into a delivery
(a hash, plus a member of a due-time set) and acknowledges the entry in the same script,
so a crash between the two cannot lose or double a delivery. Attempts are leased from the
due set (as the outbox is), so one replica at a time tries a delivery; once a receiver
accepts, the delivery is marked `delivered` before its lease is released and never sent again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from store.keys import is_request_id
from store.redis_store import Store

GROUP = "webhooks"

_ENQUEUE = """
-- KEYS: decisions, delivery hash, due set ; ARGV: group, entry_id, request_id, url, body, now_ms
if ARGV[4] ~= '' and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'url', ARGV[4], 'body', ARGV[5], 'attempts', 0, 'state', 'pending',
    'created_at', ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[3])
end
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""


@dataclass(frozen=True)
class Delivery:
    member: str
    """Its member of the due set: the request id (its decision), or `<request id>@<entry id>`
    (an interim message of `{prefix}:messages`)."""
    request_id: str
    url: str
    body: str
    attempts: int
    state: str
    created_ms: int
    last_error: str | None = None

    @property
    def agent(self) -> str:
        """The agent whose decision this is (from the body hitl wrote)."""
        try:
            return str(json.loads(self.body).get("agent") or "")
        except (ValueError, AttributeError):
            return ""


class WebhookStore:
    """The webhook queue: enqueue from the decisions stream, lease, record attempts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis: Any = store.redis
        self.keys = store.keys
        self._enqueue = self.redis.register_script(_ENQUEUE)

    @property
    def due(self) -> str:
        """Sorted set of request ids whose delivery is due, by due time."""
        return f"{self.keys.prefix}:webhooks"

    @property
    def dead(self) -> str:
        """Deliveries no receiver accepted in time, with the last error."""
        return f"{self.keys.prefix}:webhooks:dead"

    def delivery_key(self, member: str) -> str:
        """A decision's delivery (`member` is its request id), or a message's (`<id>@<entry id>`)."""
        rid, _, entry = member.partition("@")
        return f"{self.keys.request(rid)}:webhook" + (f":{entry}" if entry else "")

    async def ensure_group(self, stream: str | None = None) -> None:
        """The `webhooks` group from the stream's start, so no decision is skipped."""
        try:
            await self.redis.xgroup_create(stream or self.keys.decisions, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def read(self, consumer: str, own: bool, block_ms: int, count: int = 100, stream: str | None = None
                   ) -> list[tuple[str, str, str]]:
        """Decisions (or, from `{prefix}:messages`, interim messages) for this consumer: its own
        unacknowledged ones (`own`), else new ones."""
        stream = stream or self.keys.decisions
        got = await self.redis.xreadgroup(GROUP, consumer, {stream: "0" if own else ">"},
                                          count=count, block=None if own else block_ms)
        rows = got[0][1] if got else []
        return [(i, f.get("request_id", ""), f.get("decision") or f.get("message", "")) for i, f in rows]

    async def reclaim(self, consumer: str, idle_ms: int, count: int = 100, stream: str | None = None
                      ) -> list[tuple[str, str, str]]:
        """Decisions another consumer read and left unacknowledged for `idle_ms` (a replica that
        stopped between its read and its enqueue), taken over by `consumer` (XAUTOCLAIM); an
        entry deleted meanwhile comes back with no request id (it is only acknowledged)."""
        res = await self.redis.execute_command("XAUTOCLAIM", stream or self.keys.decisions, GROUP, consumer,
                                               idle_ms, "0-0", "COUNT", count)
        return [(i, (f or {}).get("request_id", ""), (f or {}).get("decision") or (f or {}).get("message", ""))
                for i, f in res[1] or () if i is not None]

    async def callback_urls(self, rows: list[tuple[str, str, str]]) -> list[tuple[str | None, str | None]]:
        """(callback_url, agent) for each published decision (entry id, request id, decision
        JSON) that is its request's own (`Store.own_requests`); (None, None) for the others."""
        out: list[tuple[str | None, str | None]] = []
        for data in await self.store.own_requests(rows):
            out.append((data.get("callback_url"), data.get("agent")) if data else (None, None))
        return out

    async def message_targets(self, rows: list[tuple[str, str, str]]) -> list[tuple[str | None, str | None]]:
        """(callback_url, agent) of each interim message's request (entry id, request id,
        message JSON); (None, None) where there is no record."""
        ids = [rid if is_request_id(rid) else None for _, rid, _ in rows]
        async with self.redis.pipeline(transaction=False) as p:
            for rid in ids:
                if rid is not None:
                    p.hget(self.keys.request(rid), "request")
            found = iter(await p.execute())
        out: list[tuple[str | None, str | None]] = []
        for rid in ids:
            raw = next(found) if rid is not None else None
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                data = None
            out.append((data.get("callback_url"), data.get("agent")) if isinstance(data, dict) else (None, None))
        return out

    async def enqueue(self, entry_id: str, request_id: str, url: str | None, body: str, now_ms: int,
                      stream: str | None = None) -> None:
        """Create the delivery (once per request, or per message of `{prefix}:messages`) and
        acknowledge the entry, atomically. `request_id`: the due set's member."""
        keys = [stream or self.keys.decisions, self.delivery_key(request_id), self.due]
        await self._enqueue(keys=keys, args=[GROUP, entry_id, request_id, url or "", body, now_ms])

    async def enqueue_many(self, items: list[tuple[str, str, str | None, str]], now_ms: int,
                           stream: str | None = None) -> None:
        """`enqueue` for a read batch of (entry id, request id, url, body), in one round trip:
        the script for each decision with a URL, one XACK for the others (they create nothing)."""
        if self.store.cluster:  # cluster pipelines refuse scripts: one by one
            for entry_id, request_id, url, body in items:
                await self.enqueue(entry_id, request_id, url, body, now_ms, stream)
            return
        stream = stream or self.keys.decisions
        plain = [entry_id for entry_id, _, url, _ in items if not url]
        async with self.redis.pipeline(transaction=False) as p:
            for entry_id, request_id, url, body in items:
                if url:
                    keys = [stream, self.delivery_key(request_id), self.due]
                    await self._enqueue(keys=keys, args=[GROUP, entry_id, request_id, url, body, now_ms], client=p)
            if plain:
                p.xack(stream, GROUP, *plain)
            await p.execute()

    async def get(self, member: str) -> Delivery | None:
        raw = await self.redis.hgetall(self.delivery_key(member))
        if not raw:
            return None
        return Delivery(member, member.partition("@")[0], raw["url"], raw["body"], int(raw.get("attempts", 0)), raw["state"],
                        int(raw["created_at"]), raw.get("last_error"))

    async def attempted(self, request_id: str, *, attempt: int, state: str, error: str | None,
                        status: int | None) -> int:
        """Record attempt number `attempt` and its outcome (`pending`, `delivered`, `dead`);
        returns it. Written as a value, not an increment: the client's resend after a lost
        reply writes the same again (an increment counted the attempt twice, which doubled the
        next back-off and gave up on the delivery early)."""
        key = self.delivery_key(request_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(key, mapping={"attempts": attempt, "state": state, "last_error": error or "",
                                 "last_status": "" if status is None else status})
            if state == "dead":
                p.hget(key, "url")
            res = await p.execute()
        if state == "dead":
            await self.redis.xadd(self.dead, {"request_id": request_id.partition("@")[0], "url": res[1] or "",
                                              "error": error or "", "attempts": attempt},
                                  maxlen=10000, approximate=True)
        return attempt

    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        rows = await self.redis.xrange(self.dead, count=count)
        return [dict(f) for _, f in rows]

    async def next_due_ms(self) -> int | None:
        rows = await self.redis.zrange(self.due, 0, 0, withscores=True)
        return int(rows[0][1]) if rows else None

    async def depth(self) -> tuple[int, int]:
        """(deliveries waiting for an attempt, dead-lettered deliveries)."""
        async with self.redis.pipeline(transaction=False) as p:
            p.zcard(self.due)
            p.xlen(self.dead)
            due, dead = await p.execute()
        return int(due), int(dead)
