"""The audit stream as the stats projector reads it, through the `stats` consumer group.

Redis calls only; what each event counts for is decided in `bot.stats`. Reads block on their
own connection (its socket timeout outlasts the block); everything else uses the store's client.
Entries are read as bytes and decoded here (`store.chain.text`): an entry that is not UTF-8
(hitl never writes one) is counted like any other instead of failing every read after it.
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis
from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError

from store.chain import text
from store.connect import clock_ms, connect
from store.keys import Keys
from store.stats import STATS_GROUP

AuditRow = tuple[str, dict[str, str] | None]
"""An audit entry id and its fields (None when it was deleted while pending)."""


def _rows(raw: Any) -> list[AuditRow]:
    return [(text(i), None if f is None else {text(k): text(v) for k, v in f.items()})
            for i, f in raw or () if i is not None]


class AuditFeed:
    """Reads, reclaims and record lookups for counting audit events."""

    def __init__(self, url: str, client: aioredis.Redis, keys: Keys, *, block_ms: int) -> None:
        self.keys = keys
        self._redis = client
        self._blocking: aioredis.Redis = connect(url, socket_timeout=block_ms / 1000 + 10, retry=False)

    async def close(self) -> None:
        await self._blocking.aclose()

    async def ensure_group(self) -> None:
        """The group starts at the stream's beginning: history present at first start counts."""
        try:
            await self._redis.xgroup_create(self.keys.audit, STATS_GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def read(self, consumer: str, start: str, *, count: int, block_ms: int | None) -> list[AuditRow]:
        """New events (`>`) or this consumer's unacknowledged ones (`0`)."""
        args: list[Any] = ["XREADGROUP", "GROUP", STATS_GROUP, consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        rows = await self._blocking.execute_command(*args, "STREAMS", self.keys.audit, start, **{NEVER_DECODE: []})
        return _rows(rows[0][1]) if rows else []

    async def reclaim(self, consumer: str, idle_ms: int, *, count: int) -> list[AuditRow]:
        """Events another replica read and left unacknowledged for `idle_ms`."""
        res = await self._redis.execute_command("XAUTOCLAIM", self.keys.audit, STATS_GROUP, consumer, idle_ms,
                                                "0-0", "COUNT", count, **{NEVER_DECODE: []})
        return _rows(res[1])

    async def record_fields(self, request_ids: list[str], fields: tuple[str, ...]) -> list[list[str | None]]:
        """`fields` of each request's record, in one round trip (None where absent)."""
        async with self._redis.pipeline(transaction=False) as p:
            for rid in request_ids:
                p.hmget(self.keys.request(rid), list(fields))
            return cast(list[list[str | None]], await p.execute())

    async def ack(self, entry_ids: list[str]) -> int:
        """Acknowledge events that count for nothing here, in one command; how many were new."""
        return int(await self._redis.xack(self.keys.audit, STATS_GROUP, *entry_ids)) if entry_ids else 0

    async def now_ms(self) -> float:
        """Redis's clock, shared by every replica."""
        return await clock_ms(self._redis, self.keys.audit)
