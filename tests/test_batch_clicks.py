"""What a batch card tells people and what a click on it means when the card no longer matches
the items: every item settled since it was drawn (its lock redraw refused), decided elsewhere
while a modal was open, a second click by the same person; and cards whose items mix agents,
actions or tiers under one batch_key (found by an adversarial review)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from blocks.ids import BatchActionId
from blocks.payloads import BatchValue
from store.models import State
from tests.harness import Harness, running
from tests.test_batch import POLICY, _cards_showing, _item
from tests.util import eventually


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(redis_url, tmp_path, POLICY) as harness:
        yield harness


def _card(h: Harness, ts: str) -> dict[str, Any]:
    return next(m for m in h.emu.messages("#approvals") if m["ts"] == ts)


def _has_buttons(message: dict[str, Any]) -> bool:
    return any(b.get("type") == "actions" for b in message.get("blocks") or [])


async def _settled_behind_an_open_card(h: Harness) -> tuple[list[str], str]:
    """Two items on a batch card, both decided, the last redraw (the lock) refused by Slack:
    the card still offers its bulk buttons. The items and the card's ts."""
    ids = [await h.push(summary=f"Refund {i}", batch_key="stuck") for i in range(2)]
    await _cards_showing(h, ids)
    first = await h.store.get(ids[0])
    assert first.ts
    await _item(h, first, "U0ALICE", "approve")
    await eventually(lambda: asyncio.sleep(0, "*Approved* by" in json.dumps(_card(h, first.ts or "")["blocks"])),
                     what="the first item shown approved")
    updates = len(h.emu.calls_to("chat.update"))
    # a proxy's page: refused for good, every redraw from here until the lock's is refused (a
    # redraw still on its way for the first item must not take the only refusal and let the lock in)
    h.emu.inject("chat.update", status=403, body="<html>Forbidden</html>", times=1000)
    await _item(h, await h.store.get(ids[1]), "U0ALICE", "approve")
    await h.decided(ids[1])

    async def refused() -> bool:
        queued = await h.store.redis.zrange(h.store.keys.outbox, 0, -1)
        return len(h.emu.calls_to("chat.update")) > updates and not any(m.startswith(b"batch:") for m in queued)

    await eventually(refused, what="the lock redraw refused")
    h.emu.faults.clear()  # Slack takes redraws again: only a click can bring the lock now
    assert _has_buttons(_card(h, first.ts))
    return ids, first.ts


async def test_approve_all_on_a_card_whose_items_are_all_settled_locks_it(h: Harness) -> None:
    _, ts = await _settled_behind_an_open_card(h)
    await h.emu.click("U0BOB", "#approvals", ts, BatchActionId.approve_all)
    assert "already been settled" in await h.ephemeral("U0BOB")
    await eventually(lambda: asyncio.sleep(0, not _has_buttons(_card(h, ts))), what="the card locked")
    assert "All decided" in json.dumps(_card(h, ts)["blocks"])


async def test_reject_all_on_a_card_whose_items_are_all_settled_locks_it(h: Harness) -> None:
    ids, ts = await _settled_behind_an_open_card(h)
    await h.emu.click("U0BOB", "#approvals", ts, BatchActionId.reject_all)
    assert "already been settled" in await h.ephemeral("U0BOB")
    assert h.emu.top_view("U0BOB") is None  # no form to reject nothing
    await eventually(lambda: asyncio.sleep(0, not _has_buttons(_card(h, ts))), what="the card locked")
    assert all(r.state is State.decided and r.decision and r.decision.status.value == "approved"
               for r in await h.store.get_many(ids))



async def test_reject_all_says_which_of_the_items_in_its_form_were_settled_meanwhile(h: Harness) -> None:
    ids = [await h.push(summary=f"Refund {i}", batch_key="form") for i in range(2)]
    await _cards_showing(h, ids)
    rec = await h.store.get(ids[0])
    assert rec.ts
    await h.emu.click("U0BOB", "#approvals", rec.ts, BatchActionId.reject_all)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="reject-all modal")
    assert "Rejecting 2 requests" in json.dumps(view.blocks)
    await _item(h, rec, "U0ALICE", "approve")  # decided on the card while Bob fills in the form
    await h.decided(ids[0])
    assert (await h.emu.submit_view("U0BOB", view.id, {"hitl.reason_code": {"value": "risky"}})).closed
    reply = await h.ephemeral("U0BOB")
    assert "Rejected 1 of the 2 you saw" in reply and "1 had already been settled" in reply
    assert (await h.store.get(ids[0])).decision.status.value == "approved"  # type: ignore[union-attr]


async def test_a_batch_key_shared_by_agents_names_each_items_action_on_its_line(h: Harness) -> None:
    """One `batch_key`, two agents, two actions: each line says what approving it runs (the
    lead's totals do not say which item is which), and the one that cannot be undone says so."""
    ids = [await h.push(agent="crm", action="archive_account", summary="Clean up account 42", batch_key="tidy"),
           await h.push(agent="janitor", action="delete_account", summary="Clean up account 43", batch_key="tidy",
                        risk={"reversible": False})]
    [msg] = await _cards_showing(h, ids)
    lines = {b["block_id"].rsplit(":", 1)[1]: b["text"]["text"] for b in msg["blocks"]
             if str(b.get("block_id", "")).startswith("hitl.batch:")}
    assert "archive_account" in lines[ids[0]] and "crm" in lines[ids[0]]
    assert "delete_account" in lines[ids[1]] and "janitor" in lines[ids[1]]
    assert "undone" in lines[ids[1]] and "undone" not in lines[ids[0]]


async def test_a_batch_mixing_tiers_says_which_need_two_approvers_and_names_every_tier(h: Harness) -> None:
    ids = [await h.push(summary="Refund $100", risk={"amount": 100, "currency": "USD"}, batch_key="mixed"),
           await h.push(summary="Refund $900", risk={"amount": 900, "currency": "USD"}, batch_key="mixed")]
    [msg] = await _cards_showing(h, ids)
    assert [r.route.tier for r in await h.store.get_many(ids)] == ["medium", "high"]
    text = json.dumps(msg["blocks"])
    assert "Each needs 2" not in text and "1 of these needs 2 different approvers" in text
    footer = msg["blocks"][-1]["elements"][0]["text"].lower()
    # items of one millisecond list in id order, so either tier may come first
    assert "medium" in footer and "high" in footer and "tiers" in footer


async def test_a_second_approve_all_by_the_same_person_does_not_blame_someone_else(h: Harness) -> None:
    ids = [await h.push(summary=f"Refund {i}", batch_key="twice") for i in range(2)]
    await _cards_showing(h, ids)
    rec = await h.store.get(ids[0])
    assert rec.ts
    h.bots[0].delivery.stop()  # the card stays as drawn: the second click meets the same buttons
    await asyncio.sleep(0)
    await h.emu.click("U0ALICE", "#approvals", rec.ts, BatchActionId.approve_all)
    assert "Approved 2 of the 2 you saw" in await h.ephemeral("U0ALICE")
    await h.emu.click("U0ALICE", "#approvals", rec.ts, BatchActionId.approve_all)
    reply = await h.ephemeral("U0ALICE", 2)
    assert "2 had already been settled" in reply and "someone else" not in reply


async def test_a_batch_lock_redraw_refused_for_good_is_audited_once_on_its_items(h: Harness) -> None:
    """The card's lock is refused (a proxy's 403 page): it is not retried, and each item on the
    card says so in its trail once, however many redraws Slack refuses the same way."""
    ids, ts = await _settled_behind_an_open_card(h)

    async def refusals() -> list[int] | None:
        n = [sum(1 for e in await h.store.trail(rid) if e.event == "update_refused") for rid in ids]
        return n if all(n) else None

    assert await eventually(refusals, what="the refusal audited on each item") == [1, 1]
    assert (await h.store.trail(ids[0]))[-1].detail.get("error") == "http_403"
    h.emu.inject("chat.update", status=403, body="<html>Forbidden</html>")  # the click's catch-up: refused again
    updates = len(h.emu.calls_to("chat.update"))
    await h.emu.click("U0BOB", "#approvals", ts, BatchActionId.approve_all)
    assert "already been settled" in await h.ephemeral("U0BOB")
    await eventually(lambda: asyncio.sleep(0, len(h.emu.calls_to("chat.update")) > updates), what="the redraw")

    async def given_up() -> bool:
        queued = await h.store.redis.zrange(h.store.keys.outbox, 0, -1)
        return not any(m.startswith(b"batch:") for m in queued)

    await eventually(given_up, what="the refused redraw given up")
    assert await refusals() == [1, 1]


async def _refused(h: Harness, rid: str, user: str) -> list[str]:
    return [str(e.detail.get("reason")) for e in await h.store.trail(rid) if e.event == "refused" and e.actor == user]


PEOPLE = """
defaults: {channel: "#approvals", approvers: [U0ALICE, U0BOB]}
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve}
  carol: {mode: approve, approvers: [U0CAROL]}
rules:
  - {name: carol, when: 'request.params.to == "carol"', tier: carol}
batching: {window: 30s, max_items: 40}
triggers:
  first_use: {enabled: false}
"""
"""Items of one batch decided by different people: Carol decides only those sent to her."""


async def test_reject_all_by_someone_who_may_decide_no_item_opens_no_form(redis_url: str, tmp_path: Path) -> None:
    """Dave decides none of them: the click is refused at once (told why, audited), not after
    he fills in a form he could never send."""
    async with running(redis_url, tmp_path, PEOPLE) as h:
        ids = [await h.push(summary=f"Refund {i}", batch_key="theirs") for i in range(2)]
        await _cards_showing(h, ids)
        rec = await h.store.get(ids[0])
        assert rec.ts
        await h.emu.click("U0DAVE", "#approvals", rec.ts, BatchActionId.reject_all)
        assert "Rejected 0 of the 2 you saw" in await h.ephemeral("U0DAVE")
        assert h.emu.top_view("U0DAVE") is None
        assert [await _refused(h, rid, "U0DAVE") for rid in ids] == [["not_an_approver"], ["not_an_approver"]]
        assert all(r.state is State.pending for r in await h.store.get_many(ids))


async def test_reject_all_lists_only_the_items_the_person_may_decide_and_rejects_only_those(
        redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, PEOPLE) as h:
        ids = [await h.push(summary="Refund 0", batch_key="some"),
               await h.push(summary="Refund 1", batch_key="some", params={"to": "carol"})]
        await _cards_showing(h, ids)
        rec = await h.store.get(ids[0])
        assert rec.ts
        await h.emu.click("U0CAROL", "#approvals", rec.ts, BatchActionId.reject_all)
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0CAROL")), what="reject-all modal")
        text = json.dumps(view.blocks)
        assert "Rejecting 1 request:" in text and "Refund 1" in text and "Refund 0" not in text
        assert "1 other on the card is not yours to decide" in text
        assert await _refused(h, ids[0], "U0CAROL") == ["not_an_approver"]
        assert (await h.emu.submit_view("U0CAROL", view.id, {"hitl.reason_code": {"value": "risky"}})).closed
        assert "Rejected 1 of the 1 you saw" in await h.ephemeral("U0CAROL")
        theirs, mine = await h.store.get_many(ids)
        assert mine.decision and mine.decision.status.value == "rejected"
        assert theirs.state is State.pending and await _refused(h, ids[0], "U0CAROL") == ["not_an_approver"]


QUEUES = """
defaults: {channel: "#approvals", tier: medium}
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve}
  finance: {mode: approve, channel: "#finance-approvals"}
rules:
  - {name: finance, when: 'request.action == "wire"', tier: finance}
batching: {enabled: false}
triggers: {first_use: {enabled: false}}
"""
"""Two channels whose cards wait for their posting slots: #approvals (public) and
#finance-approvals (private: Fiona only)."""


async def test_open_queue_lists_only_the_queue_of_the_clicked_digest(redis_url: str, tmp_path: Path) -> None:
    """The digest's "Open the queue" in #approvals, its value made by hand to name the private
    finance channel: refused (told, audited), nothing of that channel shown; the card's own
    value still opens its own queue."""
    async with running(redis_url, tmp_path, QUEUES, rate_limits=True, post_rate=0.5, post_burst=1.0,
                       backlog_at=2) as h:
        h.emu.add_user("U0FIONA", "fiona")
        h.emu.add_channel("finance-approvals", "C0FINANCE", is_private=True, members=["U0FIONA"])
        for i in range(3):
            await h.push(action="wire", summary=f"Wire $9{i},000 to Acme Holdings")
            await h.push(action=f"refund_{i}", summary=f"Refund {i}")

        async def digest() -> dict[str, Any] | None:
            return next((m for m in h.emu.messages("#approvals") if "Approval backlog" in json.dumps(m["blocks"])),
                        None)

        card = await eventually(digest, 20, "the backlog digest")
        forged = BatchValue(b="#finance-approvals").pack()
        await h.emu.click("U0CAROL", "#approvals", card["ts"], BatchActionId.open_queue, value=forged)
        answered = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0CAROL") or h.emu.ephemerals("U0CAROL")),
                                    what="an answer to Carol")
        assert h.emu.top_view("U0CAROL") is None, json.dumps(answered.blocks)
        assert "Acme" not in json.dumps(answered), answered
        refused = [e.detail for e in await h.store.audit_entries(100_000)
                   if e.event == "refused" and e.actor == "U0CAROL"]
        assert refused == [{"choice": "open_queue", "reason": "not_allowed", "queue": "#finance-approvals",
                            "channel": h.emu.ws.channel("#approvals").id}]
        await h.emu.click("U0CAROL", "#approvals", card["ts"], BatchActionId.open_queue)
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0CAROL")), what="queue modal")
        assert "Acme" not in json.dumps(view.blocks) and "requests waiting in #approvals" in json.dumps(view.blocks)


BOOKS = """
defaults: {channel: "#approvals", approvers: [U0ALICE, U0BOB]}
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve}
  finance: {mode: approve, channel: "#finance-approvals", approvers: [U0FIONA]}
rules:
  - {name: finance, when: 'request.action == "wire"', tier: finance}
batching: {window: 30s, max_items: 40}
triggers: {first_use: {enabled: false}}
"""
"""Batches in #approvals (Alice and Bob decide) and in the private #finance-approvals (Fiona)."""


async def _answer(h: Harness, user: str) -> Any:
    """The modal opened for `user`, or the ephemerals they were sent, whichever comes first."""
    return await eventually(lambda: asyncio.sleep(0, h.emu.top_view(user) or h.emu.ephemerals(user)),
                            what=f"an answer to {user}")


async def test_one_by_one_opens_only_the_batch_of_the_clicked_card(redis_url: str, tmp_path: Path) -> None:
    """"Review one by one" on Bob's card, its value made by hand to name the private finance
    batch: refused (told, audited), no modal showing the wire."""
    async with running(redis_url, tmp_path, BOOKS) as h:
        h.emu.add_user("U0FIONA", "fiona")
        h.emu.add_channel("finance-approvals", "C0FINANCE", is_private=True, members=["U0FIONA"])
        wires = [await h.push(action="wire", summary=f"Wire $9{i},000 to Acme Holdings", batch_key="wires")
                 for i in range(2)]
        refunds = [await h.push(summary=f"Refund {i}", batch_key="refunds") for i in range(2)]
        await _cards_showing(h, wires, "#finance-approvals")
        await _cards_showing(h, refunds)
        wire, refund = await h.store.get(wires[0]), await h.store.get(refunds[0])
        assert wire.batch and refund.ts
        forged = BatchValue(b=wire.batch).pack()
        await h.emu.click("U0BOB", "#approvals", refund.ts, BatchActionId.one_by_one, value=forged)
        answer = await _answer(h, "U0BOB")
        assert h.emu.top_view("U0BOB") is None, json.dumps(answer.blocks)
        assert "Acme" not in json.dumps(answer)
        refused = [e.detail for e in await h.store.audit_entries(100_000)
                   if e.event == "refused" and e.actor == "U0BOB"]
        assert refused == [{"choice": "one_by_one", "reason": "not_allowed", "batch": wire.batch,
                            "channel": h.emu.ws.channel("#approvals").id}]
        await h.emu.click("U0BOB", "#approvals", refund.ts, BatchActionId.one_by_one)  # its own: opens
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="one-by-one modal")
        assert "Refund" in json.dumps(view.blocks)


async def test_one_by_one_by_someone_who_may_decide_no_item_opens_no_modal(redis_url: str, tmp_path: Path) -> None:
    """Dave decides none of the items: told why at once, each item's trail has the refusal."""
    async with running(redis_url, tmp_path, BOOKS) as h:
        ids = [await h.push(summary=f"Refund {i}", batch_key="theirs") for i in range(2)]
        await _cards_showing(h, ids)
        rec = await h.store.get(ids[0])
        assert rec.ts
        await h.emu.click("U0DAVE", "#approvals", rec.ts, BatchActionId.one_by_one)
        answer = await _answer(h, "U0DAVE")
        assert h.emu.top_view("U0DAVE") is None, json.dumps(answer.blocks)
        assert "not one of" in json.dumps(answer) or "approver" in json.dumps(answer), answer
        assert [await _refused(h, rid, "U0DAVE") for rid in ids] == [["not_an_approver"], ["not_an_approver"]]
        assert all(r.state is State.pending for r in await h.store.get_many(ids))
