"""User group membership through the emulator's usergroups.users.list: cache, refresh, bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.directory import SlackDirectory
from bot.gateway import Gateway
from emulator import Emulator
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
