"""Redis clients from `REDIS_URL` (one server, a Redis Cluster, a Sentinel master): the one
implementation lives in the agent SDK (`hitl.connect`), which the bot's store shares."""

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

__all__ = ["BadRedisUrl", "Target", "check_prefix", "connect", "hash_tag", "parse", "reconnecting", "same_slot"]
