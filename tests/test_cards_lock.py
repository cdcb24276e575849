"""Issue 10, point 6: every card ends locked, exactly once, whatever happened to Slack's answer.

The emulator's control API makes `chat.postMessage` take effect and still answer 500 (the
answer is lost, as with a 5xx after effect or a bot killed before recording the post), and
holds the retry's history search back while the test acts on the visible card."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from blocks.ids import ActionId
from bot.delivery import METADATA_EVENT
from store.models import Status
from tests.harness import TOKEN, Harness, running
from tests.util import eventually

POLICY = """
defaults: {channel: "#approvals"}
tiers:
  low: {mode: auto}
  medium: {mode: approve, timeout: 1h}
  high: {mode: approve, timeout: 1h}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(redis_url, tmp_path, POLICY) as harness:
        yield harness


async def control(h: Harness, name: str, **body: Any) -> dict[str, Any]:
    """POST to the emulator's control API (`/_emulator/<name>`)."""
    async with aiohttp.ClientSession() as s, s.post(f"{h.emu.url}/_emulator/{name}", json=body) as r:
        out: dict[str, Any] = await r.json()
        assert r.status == 200, out
        return out


def cards_of(h: Harness, rid: str) -> list[dict[str, Any]]:
    """Messages in #approvals whose metadata names request `rid`."""
    return [m for m in h.emu.messages("#approvals")
            if ((m.get("metadata") or {}).get("event_payload") or {}).get("request_id") == rid]


def has_buttons(message: dict[str, Any]) -> bool:
    return any(b.get("type") == "actions" for b in message.get("blocks") or [])


async def lost_post(h: Harness, **fields: Any) -> tuple[str, dict[str, Any]]:
    """A request whose card reached Slack while the answer was lost; retries cannot search yet."""
    await control(h, "fault", method="conversations.history", status=503, times=None)
    await control(h, "fault", method="chat.postMessage", status=500, applied=True)
    rid = await h.push(**fields)
    card = await eventually(lambda: _one(cards_of(h, rid)), what="the card the lost post left")
    await eventually(lambda: _n(h, "conversations.history", 1), what="a retry searching for it")
    return rid, card


async def post(s: aiohttp.ClientSession, h: Harness, body: dict[str, Any]) -> None:
    """chat.postMessage as the bot (over HTTP, as any Web API client)."""
    async with s.post(f"{h.emu.api_url}chat.postMessage", json=body,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert (await r.json())["ok"]


async def _one(cards: list[dict[str, Any]]) -> dict[str, Any] | None:
    return cards[0] if cards else None


async def _n(h: Harness, method: str, n: int) -> bool:
    return len(h.emu.calls_to(method)) >= n


async def locked(h: Harness, rid: str) -> dict[str, Any] | None:
    cards = cards_of(h, rid)
    return cards[0] if len(cards) == 1 and not has_buttons(cards[0]) else None


async def test_a_card_decided_before_its_lost_post_is_found_ends_locked(h: Harness) -> None:
    rid, card = await lost_post(h)
    assert has_buttons(card) and not (await h.store.get(rid)).ts
    await h.emu.click("U0ALICE", "#approvals", str(card["ts"]), ActionId.approve)
    assert (await h.client.wait(rid, timeout=10)).status is Status.approved
    await control(h, "clear_faults")
    shown = await eventually(lambda: locked(h, rid), what="the decided card locked")
    rec = await h.store.get(rid)
    assert rec.ts == shown["ts"]  # the record learnt its card
    assert len(h.emu.calls_to("chat.postMessage")) == 1, [(c.args.get("channel"), c.args.get("text"), c.status) for c in h.emu.calls_to("chat.postMessage")]
    assert "Approved" in json.dumps(shown["blocks"])


async def test_a_lost_post_is_found_however_many_messages_followed(h: Harness) -> None:
    rid, card = await lost_post(h)
    async with aiohttp.ClientSession() as s:
        for i in range(250):  # a busy channel: the card is far beyond the newest 200 messages
            await post(s, h, {"channel": "#approvals", "text": f"chatter {i}"})
    await control(h, "clear_faults")
    rec = await h.card(rid)
    assert rec.ts == card["ts"] and len(cards_of(h, rid)) == 1
    assert len([c for c in h.emu.calls_to("chat.postMessage") if c.args.get("metadata")]) == 1


async def test_a_duplicate_that_slipped_through_is_deleted(h: Harness) -> None:
    rid, card = await lost_post(h)
    # a second copy of the same card (say, from a replica whose own answer was lost as well)
    async with aiohttp.ClientSession() as s:
        await post(s, h, {"channel": "#approvals", "text": "copy", "blocks": card["blocks"],
                          "metadata": {"event_type": METADATA_EVENT, "event_payload": {"request_id": rid}}})
    assert len(cards_of(h, rid)) == 2
    await control(h, "clear_faults")
    rec = await h.card(rid)
    await eventually(lambda: _single(h, rid), what="one card left")
    assert cards_of(h, rid)[0]["ts"] == rec.ts == card["ts"]  # the first one stays
    assert [c.args["ts"] for c in h.emu.calls_to("chat.delete")] != []


async def _single(h: Harness, rid: str) -> bool:
    return len(cards_of(h, rid)) == 1


async def test_a_fresh_card_is_posted_once_and_not_redrawn(h: Harness) -> None:
    """A card that shows its record as it stands needs no chat.update: a pending record has no
    `version` field yet (0), and its post must not queue a redraw of what it just drew (one
    redundant update per card would spend chat.update's 50 a minute on nothing)."""
    rid = await h.push()
    rec = await h.card(rid)
    assert rec.version == 0
    assert await h.store.redis.zscore(h.store.keys.outbox, f"update:{rid}") is None
    assert not await h.store.redis.sismember(h.store.keys.outbox_again, f"update:{rid}")
    await h.emu.click("U0ALICE", "#approvals", str(rec.ts), ActionId.approve)  # a decision does redraw it
    assert (await h.client.wait(rid, timeout=10)).status is Status.approved
    await eventually(lambda: locked(h, rid), what="the decided card locked")
    assert [c.args.get("ts") for c in h.emu.calls_to("chat.update")] == [rec.ts]
