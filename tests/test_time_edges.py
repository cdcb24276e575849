"""Time edge cases against a real Redis and the Slack emulator, on the scheduler's injected
clock: who a reminder names once part of a quorum voted, ..."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.policy import PolicyEngine
from emulator import Emulator
from store.models import Choice, from_epoch
from store.redis_store import Store
from store.transitions import vote
from store.trust import Away
from tests.test_scheduler import TOKEN, World, step

QUORUM = PolicyEngine.from_yaml("""
defaults: {channel: "#approvals", approvers: ["U0ALICE", "U0CAROL"]}
tiers:
  low: {mode: auto}
  medium:
    mode: approve
    quorum: 2
    timeout: 100s
    reminder: {at: 0.2, repeat: true}
  high: {mode: approve}
triggers: {first_use: {enabled: false}}
""")


@pytest.fixture
async def w(store: Store) -> AsyncIterator[World]:
    emu = Emulator(signing_secret="s", request_url=None, bot_token=TOKEN)
    await emu.start()
    yield World(store, emu, AsyncWebClient(token=TOKEN, base_url=emu.api_url), engine=QUORUM)
    await emu.stop()


async def test_a_reminder_after_one_vote_of_two_names_only_who_has_not_voted(w: World) -> None:
    """Quorum 2, Alice approved: the reminder is for Carol; Alice is not told to decide again
    (she could not: her seat is taken)."""
    rec = await w.request()
    now = from_epoch(w.clock())
    await w.store.apply(vote(rec, user_id="U0ALICE", name="alice", choice=Choice.approve, now=now), now)
    await step(w, 21)
    [reminder] = w.thread(rec)
    assert "<@U0CAROL>" in reminder and "U0ALICE" not in reminder
    [(_, detail)] = await w.events(rec.id)
    assert detail["mentioned"] == ["U0CAROL"]


async def test_a_reminder_names_who_stands_in_for_an_approver_away(w: World) -> None:
    """Alice is away, Bob decides for her (the card says so): the reminder mentions Bob, not
    Alice; once she is back it mentions her again. A stand-in who asked for the request cannot
    decide it, so then Alice herself is reminded."""
    now = from_epoch(w.clock())
    await w.store.trust.set_away(Away(user="U0ALICE", delegate="U0BOB", until=now + timedelta(days=2), since=now))
    rec = await w.request()
    own = await w.request(requested_by="U0BOB")
    await step(w, 21)
    [reminder] = w.thread(rec)
    assert "<@U0BOB> <@U0CAROL>" in reminder and "U0ALICE" not in reminder
    assert "<@U0ALICE> <@U0CAROL>" in w.thread(own)[0]
    await w.store.trust.back("U0ALICE", from_epoch(w.clock()))
    await step(w, 41)
    assert "<@U0ALICE> <@U0CAROL>" in w.thread(rec)[1]
