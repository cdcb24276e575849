"""Socket Mode: with SLACK_APP_TOKEN the bot takes Slack's traffic over a WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from blocks.ids import ActionId, BlockId
from bot.client import HitlClient
from emulator import Emulator
from store.models import Status
from tests.harness import SECRET, TOKEN, Harness, start_bot
from tests.util import eventually

APP_TOKEN = "xapp-1-test"


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    emu = Emulator(signing_secret=SECRET, request_url=None, bot_token=TOKEN, app_token=APP_TOKEN)
    await emu.start()
    bot = await start_bot(redis_url, emu, slack_app_token=APP_TOKEN, slack_signing_secret=None)
    harness = Harness(redis_url, emu, bot, HitlClient.from_url(redis_url, name="agent"), [bot])
    await eventually(lambda: asyncio.sleep(0, emu.socket_mode.connected), what="socket connected")
    yield harness
    await harness.client.close()
    await bot.stop()
    await emu.stop()


async def test_clicks_and_modals_arrive_over_the_socket(h: Harness) -> None:
    rid = await h.push(params={"amount": 250}, editable=["amount"])
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.reject)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0ALICE")), what="reject modal")
    # "other" needs details: the bot's own check, answered with response_action in the ack
    bad = await h.emu.submit_view("U0ALICE", view.id, {BlockId.reason_code.value: {"value": "other"}})
    assert not bad.closed and BlockId.reason_text.value in bad.errors
    ok = await h.emu.submit_view("U0ALICE", view.id, {BlockId.reason_code.value: {"value": "other"},
                                                      BlockId.reason_text.value: {"value": "Wrong customer"}})
    assert ok.closed
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.rejected and decision.reason == "Wrong customer"
    kinds = [e["type"] for e in h.emu.socket_mode.envelopes]
    assert kinds == ["interactive"] * 3 and all(r.status == 200 for r in h.emu.sent)


async def test_no_http_endpoint_for_slack_in_socket_mode(h: Harness) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{h.bot.port}/slack/events", data=b"x") as r:
        assert r.status == 404
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{h.bot.port}/healthz") as r:
        assert r.status == 200


async def test_a_wrong_app_token_is_refused(redis_url: str) -> None:
    emu = Emulator(signing_secret=SECRET, request_url=None, bot_token=TOKEN, app_token=APP_TOKEN)
    await emu.start()
    try:
        async with aiohttp.ClientSession() as s, s.post(
                emu.api_url + "apps.connections.open", headers={"Authorization": "Bearer xapp-wrong"}) as r:
            assert (await r.json())["error"] == "invalid_auth"
    finally:
        await emu.stop()
