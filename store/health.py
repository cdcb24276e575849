"""What a Redis says about itself, for `hitl doctor`: version, persistence, eviction, the group.

Read-only: INFO, CONFIG GET (refused by some managed services: then `None`), XINFO and
XPENDING. Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from store.connect import node_of
from store.keys import Keys
from store.redis_store import GROUP, Store

ProbeError = RedisError
"""What a probe raises when Redis refuses or does not answer (besides `OSError`)."""


def probe_store(url: str, prefix: str) -> Store:
    """A store for one look at Redis: no retries (a Redis that does not answer is the finding)."""
    return Store.from_url(url, prefix=prefix, retry=Retry(NoBackoff(), 0),
                          socket_connect_timeout=3, max_connections=2)


@dataclass(frozen=True)
class ServerFacts:
    """The settings that decide whether approvals survive a restart and memory pressure."""

    version: str
    mode: str  # standalone, cluster, sentinel
    aof_enabled: bool
    rdb_save: str | None  # CONFIG GET save: "" is off, None when CONFIG is refused
    aof_fsync: str | None
    maxmemory_policy: str
    maxmemory: int  # bytes, 0 is no limit
    used_memory: int
    last_bgsave_ok: bool
    last_aof_write_ok: bool

    @property
    def persistent(self) -> bool | None:
        """Whether anything is kept on disk (None: cannot tell, CONFIG is refused and AOF off)."""
        if self.aof_enabled:
            return True
        if self.rdb_save is None:
            return None
        return bool(self.rdb_save.strip())


@dataclass(frozen=True)
class GroupFacts:
    """The requests stream's consumer group, as the bot replicas share it."""

    stream_exists: bool
    group_exists: bool
    length: int = 0
    pending: int = 0
    lag: int | None = None  # entries not yet delivered to any replica (Redis 7+)
    consumers: dict[str, int] = field(default_factory=dict)  # name -> pending entries
    oldest_pending_idle_ms: int = 0


async def _config(redis: aioredis.Redis, name: str, **target: Any) -> str | None:
    try:
        got: dict[Any, Any] = await redis.config_get(name, **target)
    except ResponseError:
        return None  # CONFIG is renamed or refused (many managed services)
    value = got.get(name, got.get(name.encode()))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def server_facts(redis: aioredis.Redis, key: str | None = None) -> ServerFacts:
    """INFO server, persistence and memory, and the `save` and `appendfsync` settings: on a
    Redis Cluster, those of the master serving `key`'s slot (where hitl's keys live), not of
    whichever node redis-py sends keyless commands to."""
    target = await node_of(redis, key) if key is not None else {}
    info: dict[str, Any] = await redis.info("everything", **target)
    return ServerFacts(
        version=str(info.get("redis_version", "?")),
        mode=str(info.get("redis_mode", "standalone")),
        aof_enabled=str(info.get("aof_enabled", "0")) == "1",
        rdb_save=await _config(redis, "save", **target),
        aof_fsync=await _config(redis, "appendfsync", **target),
        maxmemory_policy=str(info.get("maxmemory_policy", "?")),
        maxmemory=int(info.get("maxmemory", 0) or 0),
        used_memory=int(info.get("used_memory", 0) or 0),
        last_bgsave_ok=str(info.get("rdb_last_bgsave_status", "ok")) == "ok",
        last_aof_write_ok=str(info.get("aof_last_write_status", "ok")) == "ok",
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def group_facts(redis: aioredis.Redis, keys: Keys) -> GroupFacts:
    """The group on `{prefix}:requests`: pending entries per consumer and the oldest's idle time."""
    if not await redis.exists(keys.requests):
        return GroupFacts(stream_exists=False, group_exists=False)
    length = int(await redis.xlen(keys.requests))
    groups = await redis.xinfo_groups(keys.requests)
    mine = next((g for g in groups if _text(g.get("name")) == GROUP), None)
    if mine is None:
        return GroupFacts(stream_exists=True, group_exists=False, length=length)
    summary = await redis.xpending(keys.requests, GROUP)
    pending = int(summary.get("pending", 0) or 0)
    consumers = {_text(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}
    idle = 0
    if pending:
        oldest = await redis.xpending_range(keys.requests, GROUP, min="-", max="+", count=1)
        idle = int(oldest[0]["time_since_delivered"]) if oldest else 0
    lag = mine.get("lag")
    return GroupFacts(stream_exists=True, group_exists=True, length=length, pending=pending,
                      lag=int(lag) if lag is not None else None, consumers=consumers,
                      oldest_pending_idle_ms=idle)
