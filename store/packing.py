"""Commands packed by hiredis's C packer instead of redis-py's Python one.

redis-py's asyncio client packs every command in Python, argument by argument: one intake
`accept.lua` call (about 35 keys and arguments) costs some 29 µs to pack there and 3 µs in
hiredis (a dependency already, for parsing replies). With a whole read batch sent in one
pipeline, packing was the largest cost left per request. Anything hiredis does not take
(None, booleans) goes to redis-py's packer, which refuses it with its usual error.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from hitl.connect import cancellable


class FastPackConnection(aioredis.Connection):
    """A TCP connection whose commands are packed by hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # 'CONFIG GET' and the like: two words
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return list(super().pack_command(*args))


def use_fast_packing(client: aioredis.Redis) -> None:
    """New connections of `client`'s pool pack with hiredis (plain TCP pools only: TLS and
    Unix-socket connections keep their own classes), and keep their caller's cancellation as
    every connection `connect` makes does (`hitl.connect.cancellable`)."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None and getattr(pool, "connection_class", None) in (aioredis.Connection,
                                                                        cancellable(aioredis.Connection)):
        pool.connection_class = cancellable(FastPackConnection)
