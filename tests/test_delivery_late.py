"""Slack calls whose outcome was unknown, carried out late, and refused redraws: every card still
ends as one card, locked (found by an adversarial review).

The bot's Web API timeout is shortened to 2 s here (`bot.gateway.TIMEOUT_S`; a late call is then
looked at again 4 s on), and the emulator answers a call after 3 s, carrying it out then: the bot
gave up on it, Slack did not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from blocks.ids import ActionId
from bot import gateway
from tests.harness import Harness, running
from tests.test_cards_lock import POLICY
from tests.util import eventually

QUORUM = POLICY.replace("medium: {mode: approve, timeout: 1h}", "medium: {mode: approve, timeout: 1h, quorum: 2}")
BATCHED = POLICY.replace("batching: {enabled: false}", "batching: {enabled: true, window: 1s}")
LATE_S = 3.0  # the emulator's answer (and effect) this long after the call: past the bot's 2 s


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "TIMEOUT_S", 2.0)


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(redis_url, tmp_path, POLICY) as harness:
        yield harness


def cards_of(h: Harness, key: str, value: str) -> list[dict[str, Any]]:
    return [m for m in h.emu.messages("#approvals")
            if ((m.get("metadata") or {}).get("event_payload") or {}).get(key) == value]


def has_buttons(message: dict[str, Any]) -> bool:
    return any(b.get("type") == "actions" for b in message.get("blocks") or [])


async def calls(h: Harness, method: str, n: int) -> bool:
    return len(h.emu.calls_to(method)) >= n


async def test_a_post_carried_out_after_the_bot_gave_up_leaves_one_card(h: Harness) -> None:
    h.emu.inject("chat.postMessage", delay=LATE_S)
    rid = await h.push()
    rec = await h.card(rid)  # the retry's card: the first attempt had not landed when it searched
    await eventually(lambda: _n(cards_of(h, "request_id", rid), 2), what="the late first attempt landing")

    async def one() -> list[dict[str, Any]] | None:  # the recheck deletes the copy, keeps the recorded card
        cards = cards_of(h, "request_id", rid)
        return cards if len(cards) == 1 else None
    [card] = await eventually(one, 10, "one card left")
    assert card["ts"] == rec.ts
    assert not await h.store.redis.hexists(h.store.keys.request(rid), "post_recheck")
    await h.click(rec, "U0ALICE", ActionId.approve)
    await h.decided(rid)
    await eventually(lambda: _locked(h, "request_id", rid), what="the card locked")


async def test_a_batch_post_carried_out_late_leaves_one_card(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, BATCHED) as h:
        h.emu.inject("chat.postMessage", delay=LATE_S)
        rid = await h.push(batch_key="late")
        rec = await h.card(rid)
        assert rec.batch
        await eventually(lambda: _n(cards_of(h, "batch_id", rec.batch or ""), 2), what="the late attempt landing")

        async def one() -> list[dict[str, Any]] | None:
            cards = cards_of(h, "batch_id", rec.batch or "")
            return cards if len(cards) == 1 else None
        [card] = await eventually(one, 10, "one batch card left")
        assert card["ts"] == rec.ts


async def test_a_redraw_carried_out_late_does_not_unlock_the_decided_card(redis_url: str, tmp_path: Path) -> None:
    """The first vote's redraw times out (2 s), is retried (2.5 s), the second vote locks the
    card, then Slack applies the first redraw (4 s): the card is drawn once more (6.5 s)."""
    async with running(redis_url, tmp_path, QUORUM) as h:
        rid = await h.push()
        rec = await h.card(rid)
        h.emu.inject("chat.update", delay=4.0)
        await h.click(rec, "U0ALICE", ActionId.approve)
        await eventually(lambda: calls(h, "chat.update", 1), what="the redraw retried after the timeout")
        await h.click(rec, "U0BOB", ActionId.approve)
        await h.decided(rid)
        await eventually(lambda: calls(h, "chat.update", 3), what="the late redraw applied")
        retried, lock, late = h.emu.calls_to("chat.update")[:3]
        assert has_buttons(retried.args) and not has_buttons(lock.args) and has_buttons(late.args)
        await eventually(lambda: calls(h, "chat.update", 4), what="the card drawn once more")
        await eventually(lambda: _locked(h, "request_id", rid), what="the card locked again")
        assert len(cards_of(h, "request_id", rid)) == 1


async def test_a_refused_redraw_does_not_stop_the_card_from_locking(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, QUORUM) as h:
        rid = await h.push()
        rec = await h.card(rid)
        h.emu.inject("chat.update", status=403, body="<html>Forbidden</html>")  # a proxy's page: refused for good
        await h.click(rec, "U0ALICE", ActionId.approve)
        await eventually(lambda: calls(h, "chat.update", 1), what="the redraw refused")
        assert not (await h.store.get(rid)).undeliverable  # the card is in Slack, people click it
        await eventually(lambda: _trail_has(h, rid, "update_refused"), what="the refusal audited")
        await h.click(rec, "U0BOB", ActionId.approve)
        await h.decided(rid)
        await eventually(lambda: _locked(h, "request_id", rid), what="the decided card locked")
        assert not (await h.store.get(rid)).undeliverable


async def _n(cards: list[dict[str, Any]], n: int) -> bool:
    return len(cards) >= n


async def _locked(h: Harness, key: str, value: str) -> bool:
    cards = cards_of(h, key, value)
    return len(cards) == 1 and not has_buttons(cards[0])


async def _trail_has(h: Harness, rid: str, event: str) -> bool:
    return any(e.event == event for e in await h.store.trail(rid))


async def test_the_late_redraw_is_settled_whichever_replica_retries_it(redis_url: str, tmp_path: Path) -> None:
    """The card is drawn once more after a redraw timed out, even when another replica makes
    the retry: the settling is queued in Redis when the redraw fails, not kept in process."""
    async with running(redis_url, tmp_path, QUORUM) as h:
        rid = await h.push()
        rec = await h.card(rid)
        h.emu.inject("chat.update", delay=LATE_S)
        await h.click(rec, "U0ALICE", ActionId.approve)
        settle = f"settle:update:{rid}"
        await eventually(lambda: _queued(h, settle), what="the settling queued as the redraw failed")


async def _queued(h: Harness, member: str) -> bool:
    return await h.store.redis.zscore(h.store.keys.outbox, member) is not None


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox's back-off after a transient failure, shortened (0.5 s doubling in the product)."""
    from bot import delivery

    monkeypatch.setattr(delivery, "backoff_s", lambda attempt: 0.05)


@pytest.mark.usefixtures("quick_retries")
async def test_a_lock_redraw_that_fails_for_a_while_is_retried_until_the_card_locks(h: Harness) -> None:
    rid = await h.push()
    rec = await h.card(rid)
    h.emu.inject("chat.update", status=500, times=2)
    h.emu.inject("chat.update", status=503, times=1)
    await h.click(rec, "U0ALICE", ActionId.approve)
    await h.decided(rid)
    await eventually(lambda: _locked(h, "request_id", rid), what="the decided card locked")
    assert len(h.emu.calls_to("chat.update")) >= 4  # three failed, then the lock
    assert not any(e.event == "update_refused" for e in await h.store.trail(rid))


@pytest.mark.usefixtures("quick_retries")
async def test_a_batch_lock_redraw_that_fails_for_a_while_is_retried_until_the_card_locks(
        redis_url: str, tmp_path: Path) -> None:
    from tests.test_batch import _cards_showing, _item

    async with running(redis_url, tmp_path, BATCHED) as h:
        ids = [await h.push(summary=f"Refund {i}", batch_key="flaky") for i in range(2)]
        await _cards_showing(h, ids)
        first, second = await h.store.get_many(ids)
        assert first.batch
        await _item(h, first, "U0ALICE", "approve")
        await h.decided(ids[0])
        await eventually(lambda: _card_of(h, first.batch or "", "*Approved* by"), what="the first item drawn approved")
        h.emu.inject("chat.update", status=500, times=2)
        h.emu.inject("chat.update", status=503, times=1)
        updates = len(h.emu.calls_to("chat.update"))
        await _item(h, second, "U0ALICE", "approve")  # the last item: this redraw is the card's lock
        await h.decided(ids[1])
        await eventually(lambda: _locked(h, "batch_id", first.batch or ""), what="the batch card locked")
        assert len(h.emu.calls_to("chat.update")) >= updates + 4
        assert "All decided" in str(cards_of(h, "batch_id", first.batch)[0]["blocks"])


async def _card_of(h: Harness, batch: str, words: str) -> bool:
    return any(words in str(c["blocks"]) for c in cards_of(h, "batch_id", batch))
