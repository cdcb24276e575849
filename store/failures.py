"""Redis failures, named for what the caller does about them (kept apart from `store.errors`,
which `blocks` imports: this module imports the Redis library)."""

from __future__ import annotations

from redis.exceptions import ConnectionError as _ConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as _TimeoutError

Unavailable = (_ConnectionError, _TimeoutError, OSError)
"""Redis cannot be reached right now (restarting, network): wait and retry. For `except`."""
Refused = ResponseError
"""Redis answered with an error (NOGROUP after a restart, OOM, BUSY, a script error)."""
StoreFailure = RedisError
"""Any error from the Redis client, reachable or not."""
