"""Redis clients from `REDIS_URL` (one server, a Redis Cluster, a Sentinel master): the one
implementation lives in the agent SDK (`hitl.connect`), which the bot's store shares."""

from __future__ import annotations

from typing import Any, cast

from hitl.connect import (
    BadRedisUrl,
    Target,
    check_prefix,
    connect,
    hash_tag,
    parse,
    reconnecting,
    same_slot,
)
from redis.asyncio.cluster import RedisCluster

__all__ = ["BadRedisUrl", "Target", "check_prefix", "clock_ms", "connect", "hash_tag", "node_of", "parse",
           "reconnecting", "same_slot"]


async def node_of(redis: Any, key: str) -> dict[str, Any]:
    """Keyword arguments sending a keyless command (TIME, INFO, CONFIG GET) to the server that
    holds `key`: on a Redis Cluster its slot's master (redis-py would pick a default node, maybe
    another machine with another clock and other settings); nothing elsewhere."""
    if not isinstance(redis, RedisCluster):
        return {}
    await redis.initialize()  # the slots map (a no-op once known)
    return {"target_nodes": redis.get_node_from_key(key)}


async def clock_ms(redis: Any, key: str) -> float:
    """Redis's clock in milliseconds, read on the server holding `key` (hitl's keys share one
    slot on a cluster, so every replica reads the same clock as the scripts that run there)."""
    seconds, micros = cast(tuple[int, int], await redis.time(**await node_of(redis, key)))
    return int(seconds) * 1000 + int(micros) / 1000
