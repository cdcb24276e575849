"""The requests stream as intake reads it: raw bytes, never decoded while reading.

An agent may XADD anything, including bytes that are not UTF-8. A decoding client would fail
inside the read itself, before any entry can be handled, and the same entry would come back
on every read. This reader has its own connection that returns bytes; intake decodes each
field itself and dead-letters what it cannot use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from store.connect import connect

GROUP = "hitl"
PENDING_SCAN = 1000
"""How many unacknowledged entries a withdrawal looks through for its request; past that it waits."""

RawFields = dict[bytes, bytes]
_Rows = list[tuple[bytes, list[bytes] | None]]


@dataclass(frozen=True)
class Entry:
    """One raw entry of the requests stream."""

    id: str
    fields: RawFields
    pairs: tuple[tuple[bytes, bytes], ...] | None = None
    """Every (name, value) pair as stored, when a name repeats (Redis keeps them all; `fields`
    holds the last value of each name); None when no name repeats."""

    def field(self, name: str) -> bytes | None:
        return self.fields.get(name.encode())

    def names(self) -> list[str]:
        """The entry's field names, readable even when they are not UTF-8."""
        return sorted(n.decode("utf-8", "backslashreplace") for n in self.fields)

    def count(self, name: str) -> int:
        """How many times the entry holds field `name`."""
        key = name.encode()
        if self.pairs is None:
            return int(key in self.fields)
        return sum(1 for n, _ in self.pairs if n == key)

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (name, value) pair in stored order, repeated names included."""
        return list(self.pairs) if self.pairs is not None else list(self.fields.items())


def _entry(entry_id: bytes, flat: list[bytes]) -> Entry:
    pairs = tuple(zip(flat[::2], flat[1::2], strict=True))
    fields = dict(pairs)
    return Entry(entry_id.decode(), fields, pairs if len(fields) < len(pairs) else None)


def _entries(rows: _Rows) -> list[Entry]:
    # entries deleted while pending come back without fields: nothing to handle
    return [_entry(i, f) for i, f in rows if f]


def _raw(response: object, **_: object) -> object:
    """A reply as Redis sent it: redis-py's own parsing makes each entry a dict, which keeps one
    value of a field name sent twice and loses the other."""
    return response


def _rows(response: object) -> _Rows:
    """The entries of an XREADGROUP reply for one stream (RESP2: [[name, rows]]; RESP3: {name: rows})."""
    if not response:
        return []
    if isinstance(response, dict):
        return cast(_Rows, next(iter(response.values())))
    return cast(_Rows, cast(list[list[object]], response)[0][1])


class RequestStream:
    """Blocking reads, reclaims and delivery counts of the requests stream for one group."""

    def __init__(self, url: str, key: str, *, block_ms: int) -> None:
        self.key = key
        # XREADGROUP BLOCK needs a socket timeout that outlasts the block.
        # `connect` serves every REDIS_URL form (single, cluster, Sentinel); bytes, never decoded here.
        self._redis: aioredis.Redis = connect(url, socket_timeout=block_ms / 1000 + 10, retry=False,
                                              decode_responses=False)
        for command in ("XREADGROUP", "XAUTOCLAIM"):  # entries as stored, every pair of each
            self._redis.set_response_callback(command, _raw)

    async def close(self) -> None:
        await self._redis.aclose()

    async def read(self, consumer: str, start: str, *, count: int = 100, block_ms: int | None = None) -> list[Entry]:
        """Entries for `consumer`: new ones (`>`), or its own unacknowledged ones (`0`)."""
        rows = _rows(await self._redis.xreadgroup(GROUP, consumer, {self.key: start}, count=count, block=block_ms))
        if not rows:
            return []
        gone = [i for i, f in rows if not f]
        if gone:  # deleted while pending (XDEL): nothing to handle, and it must not hold back trimming
            await self._redis.xack(self.key, GROUP, *gone)
        return _entries(rows)

    async def reclaim(self, consumer: str, idle_ms: int, *, count: int = 100) -> list[Entry]:
        """Take over entries other consumers left idle for `idle_ms`."""
        res = await self._redis.xautoclaim(self.key, GROUP, consumer, idle_ms, "0-0", count=count)
        return _entries(cast(_Rows, res[1]))

    async def deliveries(self, entries: list[Entry]) -> list[int]:
        """How many times each entry has been delivered (1 when no longer pending)."""
        async with self._redis.pipeline(transaction=False) as p:
            for e in entries:
                p.xpending_range(self.key, GROUP, e.id, e.id, 1)
            infos = await p.execute()
        return [int(info[0]["times_delivered"]) if info else 1 for info in infos]

    async def request_pending(self, request_id: str, before: str, *, scan: int = PENDING_SCAN) -> bool:
        """Whether an entry before `before` that requests `request_id` is still unacknowledged in
        the group (read by some consumer, not yet stored nor refused); True too when more than
        `scan` entries are unacknowledged before it (it may be among those not looked at)."""
        rows = await self._redis.xpending_range(self.key, GROUP, "-", f"({before}", scan)
        if not rows:
            return False
        if len(rows) >= scan:
            return True
        async with self._redis.pipeline(transaction=False) as p:
            for row in rows:
                p.xrange(self.key, row["message_id"], row["message_id"])
            found = await p.execute()
        return any(_requests(entry_id, fields, request_id) for rows_ in found for entry_id, fields in rows_)


def _requests(entry_id: bytes, fields: dict[bytes, bytes], request_id: str) -> bool:
    """Whether the raw entry is a request for `request_id` (its `id`, else its entry id)."""
    raw = fields.get(b"request")
    if raw is None:
        return False
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    if not isinstance(data, dict):
        return False
    sent = data.get("id")
    return bool(sent == request_id if sent is not None else entry_id.decode() == request_id)
