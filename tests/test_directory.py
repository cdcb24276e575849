"""Slack membership through the emulator: user groups (cache, refresh, bound) and channels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.directory import SlackDirectory
from bot.gateway import Gateway
from emulator import Emulator
from handlers.slack_errors import SlackFailure
from tests.util import eventually

TOKEN = "xoxb-test"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    e = Emulator(signing_secret="s", request_url=None, bot_token=TOKEN)
    await e.start()
    yield e
    await e.stop()


def _calls(emu: Emulator) -> int:
    return len(emu.calls_to("usergroups.users.list"))


async def test_cached_then_refreshed_in_the_background(emu: Emulator) -> None:
    d = SlackDirectory(Gateway(AsyncWebClient(token=TOKEN, base_url=emu.api_url)), ttl_s=0.2, max_stale_s=60)
    assert await d.members("S0MANAGERS") == {"U0ALICE", "U0BOB"}
    assert await d.members("S0MANAGERS") == {"U0ALICE", "U0BOB"} and _calls(emu) == 1  # cached
    emu.add_usergroup("managers", ["U0ALICE"], group_id="S0MANAGERS")  # Bob leaves the group
    await asyncio.sleep(0.3)
    assert "U0BOB" in await d.members("S0MANAGERS")  # stale answer served once, refresh started

    async def refreshed() -> bool:
        return await d.members("S0MANAGERS") == {"U0ALICE"}

    await eventually(refreshed, 5, "the refreshed membership")


async def test_a_very_old_answer_is_fetched_afresh(emu: Emulator) -> None:
    d = SlackDirectory(Gateway(AsyncWebClient(token=TOKEN, base_url=emu.api_url)), ttl_s=0.05, max_stale_s=0.2)
    assert "U0BOB" in await d.members("S0MANAGERS")
    emu.add_usergroup("managers", ["U0ALICE"], group_id="S0MANAGERS")
    await asyncio.sleep(0.3)
    assert await d.members("S0MANAGERS") == {"U0ALICE"}  # no stale answer after a long quiet spell


async def test_an_unknown_group_has_no_members(emu: Emulator) -> None:
    d = SlackDirectory(Gateway(AsyncWebClient(token=TOKEN, base_url=emu.api_url)))
    assert await d.members("S0NOSUCH") == frozenset()


async def test_channel_members_every_page_cached_shared_and_never_stale_on_failure(emu: Emulator) -> None:
    crowd = [f"U1{i:07d}" for i in range(1500)]  # two pages of conversations.members
    emu.add_channel("finance", "C0FINANCE", is_private=True, members=crowd)
    d = SlackDirectory(Gateway(AsyncWebClient(token=TOKEN, base_url=emu.api_url)))
    first, second = await asyncio.gather(d.channel_members("C0FINANCE"), d.channel_members("C0FINANCE"))
    assert crowd[0] in first and crowd[-1] in first and "U0ALICE" not in first and second == first
    assert await d.channel_members("C0FINANCE") == first  # cached
    assert len(emu.calls_to("conversations.members")) == 2  # two pages, listed once for all three asks
    assert await d.channel_members("#finance") == first  # by name too

    fresh = SlackDirectory(Gateway(AsyncWebClient(token=TOKEN, base_url=emu.api_url)), ttl_s=0)
    assert crowd[-1] in await fresh.channel_members("C0FINANCE")
    emu.inject("conversations.members", error="internal_error", times=None)
    with pytest.raises(SlackFailure):  # Slack cannot say: no earlier answer stands in
        await fresh.channel_members("C0FINANCE")
