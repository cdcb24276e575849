"""Helpers for the HTTP API tests: a bot harness with the API's settings, keys, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from store.api_keys import ApiKeys
from store.models import utcnow
from store.trust import member
from tests.harness import Harness, start, stop

WEBHOOK_SECRET = "whsec-test-secret"
LOOKUP = {"agent": "support-bot", "action": "lookup_order", "summary": "Look up order 4711", "confidence": 0.95}
REFUND = {"agent": "billing-bot", "action": "refund", "summary": "Refund $250 to Ana", "params": {"amount": 250}}


@asynccontextmanager
async def api_harness(redis_url: str, **overrides: Any) -> AsyncIterator[Harness]:
    settings: dict[str, Any] = {"webhook_hosts": "127.0.0.1", "webhook_secret": WEBHOOK_SECRET,
                                "webhook_retry_s": 0.02, "webhook_give_up_s": 30.0,
                                "api_rate": 1000.0, "api_burst": 1000.0}
    settings.update(overrides)
    h = await start(redis_url, **settings)
    await trusted(h, LOOKUP["agent"], LOOKUP["action"])  # no longer a new action: it routes auto
    try:
        yield h
    finally:
        await stop(h)


async def trusted(h: Harness, agent: str, action: str) -> None:
    """Mark an action as trusted (people approved it enough times), as if earned."""
    m = member(agent, action)
    await h.store.redis.hset(h.store.trust.k.action(m), mapping={"state": "trusted", "clean": 5})
    await h.store.redis.sadd(h.store.trust.k.index, m)


async def new_key(h: Harness, *agents: str) -> str:
    key, _ = await ApiKeys(h.store.redis, h.store.keys.prefix).create(list(agents), utcnow())
    return key


class Api:
    """A tiny HTTP client for the bot's API (tests only)."""

    def __init__(self, h: Harness, key: str | None) -> None:
        self.base = f"http://127.0.0.1:{h.bot.port}"
        self.key = key
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    def headers(self, key: str | None = None) -> dict[str, str]:
        k = key if key is not None else self.key
        return {"Authorization": f"Bearer {k}"} if k else {}

    async def call(self, method: str, path: str, *, json: Any = None, data: Any = None,
                   key: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        hdrs = {**self.headers(key), **(headers or {})}
        async with self.session.request(method, self.base + path, json=json, data=data, headers=hdrs) as r:
            body = await r.read()
            import json as _json

            parsed = _json.loads(body) if body else None
            return r.status, parsed, r.headers
