"""End-to-end harness: the real bot over HTTP, the emulator as Slack, a real redis-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.app import Bot, build_app
from bot.client import HitlClient
from bot.config import load_settings
from emulator import Emulator
from store.models import Record
from store.redis_store import Store
from store.trust import Grant
from tests.redis_server import free_port
from tests.util import eventually

SECRET = "test-signing-secret"
TOKEN = "xoxb-test-token"


@dataclass
class Harness:
    redis_url: str
    emu: Emulator
    bot: Bot
    client: HitlClient
    bots: list[Bot] = field(default_factory=list)

    @property
    def store(self) -> Store:
        return self.bot.store

    async def push(self, **fields: Any) -> str:
        data = {"agent": "billing-agent", "action": "refund", "summary": "Refund $250 to Ana"}
        data.update(fields)
        return await self.client.request(**data)

    async def push_raw(self, request: Any) -> str:
        raw = request if isinstance(request, str) else json.dumps(request)
        return str(await self.store.redis.xadd(self.store.keys.requests, {"request": raw}))

    async def card(self, request_id: str, timeout: float = 10.0) -> Record:
        """The record once its card is posted."""

        async def posted() -> Record | None:
            if not await self.store.exists(request_id):
                return None
            rec = await self.store.get(request_id)
            return rec if rec.ts else None

        return await eventually(posted, timeout, f"card of {request_id}")

    def message(self, rec: Record) -> dict[str, Any]:
        assert rec.channel and rec.ts
        for m in self.emu.messages(rec.channel):
            if m["ts"] == rec.ts:
                return m
        raise AssertionError(f"no message {rec.ts} in {rec.channel}")

    async def click(self, rec: Record, user: str, action_id: str) -> Any:
        assert rec.channel and rec.ts
        return await self.emu.click(user, rec.channel, rec.ts, action_id)

    async def ephemeral(self, user: str, n: int = 1) -> str:
        """The newest ephemeral message to `user` (as JSON text), once there are `n` of them."""
        async def found() -> str | None:
            msgs = self.emu.ephemerals(user)
            return json.dumps(msgs[-1]) if len(msgs) >= n else None

        return str(await eventually(found, what=f"ephemeral {n} to {user}"))

    async def grants(self, n: int) -> list[Grant]:
        """The standing grants, once there are at least `n`."""
        async def found() -> list[Grant] | None:
            gs = await self.store.trust.grants()
            return gs if len(gs) >= n else None

        return list(await eventually(found, what=f"{n} grants"))

    async def decided(self, request_id: str, timeout: float = 10.0) -> Record:
        async def done() -> Record | None:
            rec = await self.store.get(request_id)
            return rec if rec.decision else None

        return await eventually(done, timeout, f"decision of {request_id}")


async def start_bot(redis_url: str, emu: Emulator, **overrides: Any) -> Bot:
    settings = load_settings(
        slack_bot_token=TOKEN, slack_signing_secret=overrides.pop("slack_signing_secret", SECRET),
        slack_api_url=emu.api_url,
        redis_url=redis_url, port=overrides.pop("port", 0), host="127.0.0.1",
        consumer=overrides.pop("consumer", "test"), claim_idle_s=overrides.pop("claim_idle_s", 30.0),
        # the emulator does not rate-limit unless a test asks; pacing has its own tests
        post_rate=overrides.pop("post_rate", 100.0), post_burst=overrides.pop("post_burst", 100.0),
        # the sealer and stats run as this test's tasks (the companion process has its own tests)
        housekeeping=overrides.pop("housekeeping", "inline"),
        **overrides,
    )
    bot = build_app(settings)
    await bot.start()
    # as a readiness probe would: a test that asks /healthz at once must not race intake's first
    # round trips (the wait ends early when Redis is away on purpose)
    for _ in range(250):
        if bot.intake.running:
            break
        await asyncio.sleep(0.02)
    return bot


async def start(redis_url: str, *, rate_limits: bool = False, strict_limits: bool = False,
                **overrides: Any) -> Harness:
    port = free_port()
    emu = Emulator(signing_secret=SECRET, request_url=f"http://127.0.0.1:{port}/slack/events", bot_token=TOKEN,
                   rate_limits=rate_limits, strict_limits=strict_limits)
    await emu.start()
    bot = await start_bot(redis_url, emu, port=port, **overrides)
    client = HitlClient.from_url(redis_url, prefix=bot.settings.prefix, name="test-agent")
    return Harness(redis_url, emu, bot, client, [bot])


async def stop(h: Harness) -> None:
    await h.client.close()
    for b in h.bots:
        await b.stop()
    await h.emu.stop()


@asynccontextmanager
async def running(redis_url: str, tmp_path: Path, policy: str, **overrides: Any) -> AsyncIterator[Harness]:
    """A harness whose bot runs `policy` (the YAML text, written under `tmp_path`), stopped on exit."""
    path = tmp_path / "policy.yml"
    path.write_text(policy)
    h = await start(redis_url, policy=path, **overrides)
    try:
        yield h
    finally:
        await stop(h)
