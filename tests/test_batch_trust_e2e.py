"""Standing grants and delegation on batch cards, end to end: signed clicks on the emulator's
batch cards, a real Redis (issue 17, points 2 and 3)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from blocks.batch import GRANT
from blocks.ids import BatchActionId, batch_item_block_id
from store.models import Record, State, Status
from tests.harness import Harness, running
from tests.util import eventually, shown_request_ids

POLICY = """
defaults: {tier: medium}
tiers:
  low:     {mode: auto}
  medium:  {mode: approve, grants: {duration: 1h, max_amount: 100, same: [to]}}
  high:    {mode: approve, quorum: 2, grants: {duration: 30m, max_amount: 100}}
  locked:  {mode: approve, grants: false}
  finance: {mode: approve, approvers: [U0ALICE]}
rules:
  - {name: two_people, when: 'request.action == "wire"', tier: high}
  - {name: no_grants, when: 'request.action == "delete"', tier: locked}
  - {name: approvers, when: 'request.action == "invoice"', tier: finance}
batching: {window: 30s, max_items: 40}
triggers:
  first_use: {enabled: false}
"""


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(redis_url, tmp_path, POLICY) as harness:
        yield harness


async def _batch(h: Harness, n: int, key: str, **fields: Any) -> list[Record]:
    """`n` requests on one batch card, once the card shows them all."""
    ids = []
    for i in range(n):
        data = {"summary": f"{key} #{i}", **fields}
        if callable(fields.get("params")):
            data["params"] = fields["params"](i)
        ids.append(await h.push(batch_key=key, **data))

    async def shown() -> list[Record] | None:
        msgs = h.emu.messages("#approvals")
        seen = set().union(*(shown_request_ids(m) for m in msgs)) if msgs else set()
        recs = await h.store.get_many(ids)
        ok = set(ids) <= seen and all(r.ts and r.batch for r in recs) and len({r.ts for r in recs}) == 1
        return recs if ok else None

    return list(await eventually(shown, 30, f"{n} items on one batch card"))


def _card(h: Harness, rec: Record) -> dict[str, Any]:
    return next(m for m in h.emu.messages("#approvals") if m["ts"] == rec.ts)


def _menu(h: Harness, rec: Record) -> list[str]:
    assert rec.batch
    block = next(b for b in _card(h, rec)["blocks"] if b.get("block_id") == batch_item_block_id(rec.batch, rec.id))
    return [o["value"].partition("|")[0] for o in block["accessory"]["options"]]  # the choice, not its values' mark


async def _choose(h: Harness, rec: Record, user: str, choice: str) -> None:
    assert rec.batch and rec.channel and rec.ts
    await h.emu.click(user, rec.channel, rec.ts, BatchActionId.item, value=choice,
                      block_id=batch_item_block_id(rec.batch, rec.id))






async def test_a_batch_item_grants_like_a_single_card(h: Harness) -> None:
    recs = await _batch(h, 3, "refunds", risk={"amount": 40}, params=lambda i: {"to": ["ana", "eve", "bob"][i]})
    assert GRANT in _menu(h, recs[0])
    await _choose(h, recs[0], "U0BOB", GRANT)
    assert "approved on their own until" in await h.ephemeral("U0BOB")
    assert (await h.client.wait(recs[0].id, timeout=10)).status is Status.approved
    [grant] = await h.grants(1)
    # the grant is made on that item: its agent, action and `same` parameters, the amount ceiling
    assert grant.by == ["U0BOB"] and grant.request_id == recs[0].id
    assert grant.bounds.params == {"to": ["ana"]} and grant.bounds.amount_max == 100
    assert "grant_created" in [e.event for e in await h.store.trail(recs[0].id)]
    # the other items are untouched: a grant covers requests to come, not the ones on the card
    assert all(r.state is State.pending for r in await h.store.get_many([recs[1].id, recs[2].id]))
    d = await h.client.wait(await h.push(summary="Refund Ana again", params={"to": "ana"}, risk={"amount": 60}),
                            timeout=10)
    assert d.status is Status.auto_approved and d.route and d.route.grant and d.route.grant.id == grant.id
    assert d.route.grant.by == ["U0BOB"]
    # outside its bounds: a person again
    rid = await h.push(summary="Refund Eve", params={"to": "eve"}, risk={"amount": 60})

    async def stored() -> Record | None:
        return await h.store.get(rid) if await h.store.exists(rid) else None

    rec = await eventually(stored, what="stored")
    assert rec.state is State.pending and rec.route.grant is None


async def test_no_batch_grant_where_the_tier_says_no_or_for_someone_not_allowed(h: Harness) -> None:
    locked = await _batch(h, 2, "deletes", action="delete")
    assert GRANT not in _menu(h, locked[0]) and "approve" in _menu(h, locked[0])
    # over the amount limit for grants: not offered either
    big = await _batch(h, 2, "big", risk={"amount": 150})
    assert GRANT not in _menu(h, big[0])
    # only people allowed to approve: the finance tier names Alice
    inv = await _batch(h, 2, "invoices", action="invoice", risk={"amount": 10})
    assert GRANT in _menu(h, inv[0])
    await _choose(h, inv[0], "U0CAROL", GRANT)
    assert "not one of the approvers" in await h.ephemeral("U0CAROL")
    assert (await h.store.get(inv[0].id)).state is State.pending and not await h.store.trust.grants()


async def test_a_quorum_two_batch_grant_needs_two_people(h: Harness) -> None:
    recs = await _batch(h, 2, "wires", action="wire", risk={"amount": 30})
    assert GRANT in _menu(h, recs[0])
    await _choose(h, recs[0], "U0ALICE", GRANT)
    assert "1 of 2 so far" in await h.ephemeral("U0ALICE")
    assert not await h.store.trust.grants() and (await h.store.get(recs[0].id)).state is State.pending
    await _choose(h, recs[0], "U0BOB", GRANT)
    [grant] = await h.grants(1)
    assert grant.by == ["U0ALICE", "U0BOB"]
    assert (await h.client.wait(recs[0].id, timeout=10)).status is Status.approved
    d = await h.client.wait(await h.push(action="wire", summary="Wire $25", risk={"amount": 25}), timeout=10)
    assert d.status is Status.auto_approved and d.route and d.route.grant and d.route.grant.by == grant.by


async def test_a_batch_card_names_the_stand_in_while_the_approver_is_away(h: Harness) -> None:
    recs = await _batch(h, 2, "invoices", action="invoice", risk={"amount": 10})
    assert "is away" not in json.dumps(_card(h, recs[0])["blocks"])
    await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away until 2099-12-24 to <@U0BOB|bob>")

    async def says(present: bool) -> bool:
        return ("<@U0BOB> decides for them" in json.dumps(_card(h, recs[0])["blocks"])) is present

    await eventually(lambda: says(True), what="batch card naming the stand-in")
    await _choose(h, recs[0], "U0BOB", "approve")
    d = await h.client.wait(recs[0].id, timeout=10)
    assert d.status is Status.approved and d.decided_by[0].user_id == "U0BOB"
    delegated = [e for e in await h.store.trail(recs[0].id) if e.event == "delegated"]
    assert [(e.actor, e.detail["for"]) for e in delegated] == [("U0BOB", ["U0ALICE"])]
    await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away off")
    await eventually(lambda: says(False), what="batch card no longer naming the stand-in")
    await _choose(h, recs[1], "U0BOB", "approve")
    assert "absence is over" in await h.ephemeral("U0BOB")
    assert (await h.store.get(recs[1].id)).state is State.pending


async def test_a_grant_the_policy_withdrew_since_the_card_was_drawn_changes_nothing(
        h: Harness, tmp_path: Path) -> None:
    recs = await _batch(h, 2, "refunds", risk={"amount": 40}, params={"to": "ana"})
    assert GRANT in _menu(h, recs[0])
    # the owner turns grants off for the tier; the card still shows the choice until redrawn
    (tmp_path / "policy.yml").write_text(POLICY.replace(
        "medium:  {mode: approve, grants: {duration: 1h, max_amount: 100, same: [to]}}",
        "medium:  {mode: approve, grants: false}"))
    assert await h.bot.reload_policy()
    await _choose(h, recs[0], "U0BOB", GRANT)
    assert "offers no standing grant" in await h.ephemeral("U0BOB")
    rec = await h.store.get(recs[0].id)
    assert rec.state is State.pending and rec.votes == [] and not await h.store.trust.grants()
    refused = [e for e in await h.store.trail(recs[0].id) if e.event == "refused"]
    assert refused[-1].detail == {"choice": "approve_grant", "reason": "no_grant"}
    await _choose(h, recs[0], "U0BOB", "approve")  # a plain approval still works
    assert (await h.client.wait(recs[0].id, timeout=10)).status is Status.approved
