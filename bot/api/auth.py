"""API key authentication and the per-key rate limit (one door for every API route).

A missing or wrong key is 401 and counted (per key id, see store.api_keys); a key used for
an agent it is not scoped to is 403; past the key's rate, 429 with `Retry-After`. The key
itself is never logged: only its 12-digit id.
"""

from __future__ import annotations

import logging
import math
import time

from aiohttp import web

from bot.api.errors import ApiError
from store.api_keys import ApiKey, ApiKeys

log = logging.getLogger("hitl.api")


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Auth:
    """Who is calling, and whether they may call now."""

    def __init__(self, keys: ApiKeys, rate: float, burst: float) -> None:
        self.keys = keys
        self.rate = rate
        self.burst = burst

    async def __call__(self, request: web.Request) -> ApiKey:
        """The caller's key, or ApiError 401 (counted) / 429 (with Retry-After)."""
        key, bucket, wait_ms = await self.keys.admit(bearer(request), int(time.time() * 1000), self.rate, self.burst)
        if key is None:
            await self.keys.note_failure(bucket)
            log.info("api: authentication failed (%s) on %s %s", bucket, request.method, request.path)
            raise ApiError(401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>",
                           headers={"WWW-Authenticate": 'Bearer realm="hitl"'})
        if wait_ms > 0:
            raise ApiError(429, "rate_limited", f"too many requests for key {key.id}; retry later",
                           headers={"Retry-After": str(max(1, math.ceil(wait_ms / 1000)))})
        return key

    async def still_valid(self, key: ApiKey) -> None:
        """ApiError 401 if `key` was revoked since its call was admitted (revocation is
        immediate: a call that waited for a decision hands over nothing after it)."""
        if not await self.keys.active(key.id):
            log.info("api: key %s was revoked during its call", key.id)
            raise ApiError(401, "unauthorized", "this API key was revoked",
                           headers={"WWW-Authenticate": 'Bearer realm="hitl"'})


def require_agent(key: ApiKey, agent: str) -> None:
    """403 unless the key is scoped to `agent`."""
    if agent not in key.agents:
        raise ApiError(403, "forbidden", f"this API key may not act for agent {agent!r}")
