"""Scripts whose writes the bot acts on outside Redis, waited for on replicas (`WAIT`).

With `HITL_REDIS_WAIT_REPLICAS`, such a script and a `WAIT n` go down one pipeline (WAIT covers
the writes of its own connection): what a person or an agent is told afterwards is on that
many replicas, so a failover cannot lose it (docs/redis.md)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("hitl.store")

WAIT_TIMEOUT_MS = 1000


async def run_waited(redis: Any, script: Any, name: str, keys: list[str], args: list[Any],
                     replicas: int) -> Any:
    """`script(keys, args)`, then WAIT for `replicas` (0: no wait); its result."""
    if not replicas:
        return await script(keys=keys, args=args)
    async with redis.pipeline(transaction=False) as p:
        await script(keys=keys, args=args, client=p)
        p.execute_command("WAIT", replicas, WAIT_TIMEOUT_MS)
        result, acked = await p.execute()
    if int(acked) < replicas:
        log.warning("%s reached %s of %d replicas within %d ms; a failover now could lose it",
                    name, acked, replicas, WAIT_TIMEOUT_MS)
    return result
