"""Nobody approves values they never saw (quorum 2, signed clicks, the emulator, a real Redis).

Cards, edit forms and batch menus carry the `params_mark` of the values they show; an approval
or an edit from one drawn before someone else's edit is refused (`stale`), audited, and the card
redrawn. An edit that changes the values leaves earlier approvals stale: they no longer count,
and their voters may approve the new values."""

from __future__ import annotations

from pathlib import Path

from blocks.ids import ActionId, param_block_id
from blocks.payloads import ButtonValue
from store.models import Record, State, Status
from tests.harness import Harness, running
from tests.util import eventually

POLICY = """
defaults: {tier: pair}
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve}
  pair: {mode: approve, quorum: 2}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""


async def _votes(h: Harness, rid: str, n: int) -> Record:
    async def enough() -> Record | None:
        rec = await h.store.get(rid)
        return rec if len(rec.votes) >= n else None

    return await eventually(enough, what=f"{n} votes on {rid}")


async def _refusals(h: Harness, rid: str) -> list[dict[str, object]]:
    return [e.detail for e in await h.store.audit_entries() if e.request_id == rid and e.event == "refused"]


async def _edit(h: Harness, rec: Record, user: str) -> str:
    """Open the Edit form as `user`; its view id."""
    await h.click(rec, user, ActionId.edit)
    view = await eventually(lambda: _top(h, user), what=f"{user}'s edit form")
    return str(view.id)


async def _top(h: Harness, user: str):  # type: ignore[no-untyped-def]
    return h.emu.top_view(user)


async def test_a_form_opened_before_another_edit_is_refused(redis_url: str, tmp_path: Path) -> None:
    """Alice's form shows 100; Bob edits to 50; Alice submits her form unchanged: it would undo
    Bob's edit and approve 100 in his name. Refused: Bob's 50 stands, one approval of it."""
    async with running(redis_url, tmp_path, POLICY) as h:
        rid = await h.push(params={"amount": 100, "to": "ana"}, editable=["amount"], summary="Refund")
        rec = await h.card(rid)
        alice = await _edit(h, rec, "U0ALICE")
        bob = await _edit(h, rec, "U0BOB")
        assert (await h.emu.submit_view("U0BOB", bob, {param_block_id("amount"): {"value": "50"}})).closed
        await _votes(h, rid, 1)
        await h.emu.submit_view("U0ALICE", alice, {param_block_id("amount"): {"value": "100"}})
        assert "edited this request after your card or form showed it" in await h.ephemeral("U0ALICE")
        after = await h.store.get(rid)
        assert after.state is State.pending and after.params["amount"] == 50
        assert [v.user_id for v in after.votes] == ["U0BOB"]
        assert {"choice": "edit", "reason": "stale"} in await _refusals(h, rid)


async def test_an_edit_after_an_approval_needs_that_approval_again(redis_url: str, tmp_path: Path) -> None:
    """Alice approves 100; Bob edits to 99999: Alice's approval was of 100, so it counts no
    more (the card says so) and the request waits; Alice approves 99999, and only then it is
    approved, naming the two people who approved 99999."""
    async with running(redis_url, tmp_path, POLICY) as h:
        rid = await h.push(params={"amount": 100, "to": "ana"}, editable=["amount"], summary="Refund")
        rec = await h.card(rid)
        await h.click(rec, "U0ALICE", ActionId.approve)
        await _votes(h, rid, 1)
        bob = await _edit(h, rec, "U0BOB")
        assert (await h.emu.submit_view("U0BOB", bob, {param_block_id("amount"): {"value": "99999"}})).closed
        mid = await _votes(h, rid, 2)
        assert mid.state is State.pending and [v.user_id for v in mid.approvals()] == ["U0BOB"]
        assert [v.user_id for v in mid.stale_approvals()] == ["U0ALICE"]
        await eventually(lambda: _card_says(h, mid, "no longer counted"), what="the card saying so")
        await h.click(await h.store.get(rid), "U0ALICE", ActionId.approve)
        d = await h.client.wait(rid, timeout=10)
        assert d.status is Status.approved and d.params["amount"] == 99999
        assert [(v.user_id, v.choice.value) for v in d.decided_by] == [("U0BOB", "edit"), ("U0ALICE", "approve")]


async def _card_says(h: Harness, rec: Record, words: str) -> bool:
    import json

    return words in json.dumps(h.message(rec))


async def test_an_approval_from_a_card_drawn_before_an_edit_is_refused(redis_url: str, tmp_path: Path) -> None:
    """Slack has not redrawn Carol's card after Bob's edit (its updates fail): her Approve names
    the values it showed, so it is refused, not counted for values she never saw."""
    async with running(redis_url, tmp_path, POLICY) as h:
        rid = await h.push(params={"amount": 100, "to": "ana"}, editable=["amount"], summary="Refund")
        rec = await h.card(rid)
        await _stale_approve_refused(h, rec, "7")


BATCHED = POLICY.replace("batching: {enabled: false}", "batching: {window: 30s, max_items: 40}")


async def test_approve_all_leaves_out_an_item_edited_since_the_card_was_drawn(redis_url: str,
                                                                             tmp_path: Path) -> None:
    """The bulk button names each drawn item's values: an item Bob edited after the card was
    drawn (the card not redrawn yet) is refused as stale, the others get Carol's approval."""
    from blocks.ids import BatchActionId
    from tests.test_batch import _cards_showing, _item

    async with running(redis_url, tmp_path, BATCHED) as h:
        ids = [await h.push(summary=f"Refund {i}", params={"amount": 100 + i}, editable=["amount"],
                            batch_key="edits") for i in range(3)]
        await _cards_showing(h, ids)
        first = await h.store.get(ids[0])
        assert first.channel and first.ts
        h.emu.inject("chat.update", status=500, times=1000)  # Carol's card keeps the values it drew
        await _item(h, first, "U0BOB", "edit")
        view = await eventually(lambda: _top(h, "U0BOB"), what="Bob's edit form")
        assert (await h.emu.submit_view("U0BOB", view.id, {param_block_id("amount"): {"value": "1"}})).closed
        await _votes(h, ids[0], 1)
        await h.emu.click("U0CAROL", first.channel, first.ts, BatchActionId.approve_all)
        await h.ephemeral("U0CAROL")
        edited, *others = [await h.store.get(rid) for rid in ids]
        assert [v.user_id for v in edited.votes] == ["U0BOB"]
        assert {"choice": "approve", "reason": "stale"} in await _refusals(h, ids[0])
        assert all([v.user_id for v in r.votes] == ["U0CAROL"] for r in others)


async def test_a_form_submitted_unchanged_keeps_the_approvals_before_it(redis_url: str, tmp_path: Path) -> None:
    """Bob opens Edit on a draft Alice approved and submits it untouched: nothing changed, so
    her approval stands and his makes the quorum (the draft, kept on the request until someone
    edits it, used to read as changed and left her approval stale)."""
    async with running(redis_url, tmp_path, POLICY) as h:
        rid = await h.push(summary="Reply to customer", draft="Hello Ana, refund done.", editable=["draft"])
        rec = await h.card(rid)
        await h.click(rec, "U0ALICE", ActionId.approve)
        await _votes(h, rid, 1)
        bob = await _edit(h, rec, "U0BOB")
        assert (await h.emu.submit_view("U0BOB", bob, {})).closed  # the form as shown
        d = await h.client.wait(rid, timeout=10)
        assert d.status is Status.approved and d.changes == {} and "draft" not in d.params
        assert "edited" not in [e.event for e in await h.store.trail(rid)]



HANDOVER = POLICY.replace("pair: {mode: approve, quorum: 2}", "pair: {mode: escalate, quorum: 2}")


async def test_an_approval_from_a_handover_card_drawn_before_an_edit_is_refused(redis_url: str,
                                                                                tmp_path: Path) -> None:
    """The same on the handover card of an approval routed `escalate` ("Approve action"): its
    button names the values it showed, so Carol's click on the card drawn before Bob's edit is
    refused, not counted for values she never saw."""
    async with running(redis_url, tmp_path, HANDOVER) as h:
        rid = await h.push(params={"amount": 100, "to": "ana"}, editable=["amount"], summary="Refund")
        rec = await h.card(rid)
        assert rec.route.mode.value == "escalate" and "Handover needed" in await _card_text(h, rec)
        await _stale_approve_refused(h, rec, "99999")


async def _card_text(h: Harness, rec: Record) -> str:
    import json

    return json.dumps(h.message(rec))


async def _stale_approve_refused(h: Harness, rec: Record, amount: str) -> None:
    """Card redraws fail (Carol's card keeps showing the old amount), Bob edits it to `amount`,
    and Carol's Approve from her card is refused as stale: only Bob's vote stands."""
    h.emu.inject("chat.update", status=500, times=1000)
    bob = await _edit(h, rec, "U0BOB")
    assert (await h.emu.submit_view("U0BOB", bob, {param_block_id("amount"): {"value": amount}})).closed
    await _votes(h, rec.id, 1)
    await h.click(rec, "U0CAROL", ActionId.approve)
    assert "edited this request after your card or form showed it" in await h.ephemeral("U0CAROL")
    after = await h.store.get(rec.id)
    assert after.state is State.pending and [v.user_id for v in after.votes] == ["U0BOB"]
    assert {"choice": "approve", "reason": "stale"} in await _refusals(h, rec.id)


async def test_approve_all_on_a_batch_too_long_for_a_list_of_marks_still_leaves_out_an_edited_item(
        redis_url: str, tmp_path: Path) -> None:
    """Old data: a batch from before `max_items` was capped holds 1,200 settled items beside the 3
    waiting ones, so the card covers 1,204 items, too many to carry a mark for each in the button
    as a comma list. The check must hold all the same: the item Bob edited after the card was
    drawn is not approved by Carol's Approve all, and she is told why."""
    import json

    from blocks.ids import BatchActionId
    from store.models import utcnow
    from tests.test_batch import _cards_showing, _item

    async with running(redis_url, tmp_path, BATCHED) as h:
        ids = [await h.push(summary=f"Refund {i}", params={"amount": 100 + i}, editable=["amount"],
                            batch_key="old") for i in range(4)]
        await _cards_showing(h, ids)
        first = await h.store.get(ids[0])
        assert first.batch and first.channel and first.ts
        for user in ("U0ALICE", "U0BOB"):
            await _item(h, first, user, "approve")
        await h.client.wait(ids[0], timeout=10)
        # 1,200 more settled items, as a batch grown before the cap left them: copies of the first
        settled = await h.store.redis.hgetall(h.store.keys.request(ids[0]))
        request = json.loads(settled["request"])
        old = [f"old-{i}" for i in range(1200)]
        async with h.store.redis.pipeline(transaction=False) as p:
            for rid in old:
                p.hset(h.store.keys.request(rid), mapping={**settled, "request": json.dumps({**request, "id": rid})})
            p.rpush(h.store.keys.batch_items(first.batch), *old)
            await p.execute()
        await h.store.enqueue(f"batch:{first.batch}", int(utcnow().timestamp() * 1000))
        h.bot.delivery.kick()
        await eventually(lambda: _card_says(h, first, "Batch of 1204"), what="the card covering 1,204 items")
        h.emu.inject("chat.update", status=500, times=1000)  # Carol's card keeps the values it drew
        await _item(h, await h.store.get(ids[1]), "U0BOB", "edit")
        view = await eventually(lambda: _top(h, "U0BOB"), what="Bob's edit form")
        assert (await h.emu.submit_view("U0BOB", view.id, {param_block_id("amount"): {"value": "1"}})).closed
        await _votes(h, ids[1], 1)
        await h.emu.click("U0CAROL", first.channel, first.ts, BatchActionId.approve_all)
        assert "edited this request after your card or form showed it" in await h.ephemeral("U0CAROL")
        edited, *others = [await h.store.get(rid) for rid in ids[1:]]
        assert [v.user_id for v in edited.votes] == ["U0BOB"]
        assert {"choice": "approve", "reason": "stale"} in await _refusals(h, ids[1])
        assert all([v.user_id for v in r.votes] == ["U0CAROL"] for r in others)


async def test_an_approve_button_without_a_fingerprint_is_refused_as_stale(redis_url: str, tmp_path: Path) -> None:
    """A card drawn by an older version: its Approve carries no `params_mark`. Bob edited the
    amount since; Alice's click would approve 99999 she never saw. Refused as stale (told,
    audited), her card redrawn with the values and a fingerprint; from it she approves."""
    async with running(redis_url, tmp_path, POLICY) as h:
        rid = await h.push(params={"amount": 100, "to": "ana"}, editable=["amount"], summary="Refund")
        rec = await h.card(rid)
        assert rec.channel and rec.ts
        bob = await _edit(h, rec, "U0BOB")
        await h.emu.submit_view("U0BOB", bob, {param_block_id("amount"): {"value": "99999"}})
        await _votes(h, rid, 1)
        updates = len(h.emu.calls_to("chat.update"))
        old = ButtonValue(r=rid).pack()
        await h.emu.click("U0ALICE", rec.channel, rec.ts, ActionId.approve, value=old)
        assert "changed" in await h.ephemeral("U0ALICE")
        assert {"choice": "approve", "reason": "stale"} in await _refusals(h, rid)
        assert [v.user_id for v in (await h.store.get(rid)).votes] == ["U0BOB"]

        async def redrawn() -> bool:
            return len(h.emu.calls_to("chat.update")) > updates

        await eventually(redrawn, what="the card redrawn")
        await h.click(rec, "U0ALICE", ActionId.approve)  # the card as it stands: the fingerprint of 99999
        await h.decided(rid)
        assert (await h.store.get(rid)).decision.status is Status.approved  # type: ignore[union-attr]


def _button_value(message: dict[str, object], action_id: str) -> str:
    for block in message["blocks"]:  # type: ignore[attr-defined]
        for element in block.get("elements", []):
            if element.get("action_id") == action_id:
                return str(element["value"])
    raise AssertionError(f"no {action_id} button")


async def test_approve_and_allow_similar_from_a_card_drawn_before_an_edit_is_refused(
        redis_url: str, tmp_path: Path) -> None:
    """"Approve and allow similar" carries the values' fingerprint like Approve, but the click
    ignored it: Alice's click on the card as drawn (amount 100) approved Bob's 90 she never saw,
    and voted a standing grant for it. Refused as stale now; a button with no fingerprint too."""
    async with running(redis_url, tmp_path, POLICY) as h:
        rid = await h.push(params={"amount": 100, "to": "ana"}, editable=["amount"], summary="Refund")
        rec = await h.card(rid)
        assert rec.channel and rec.ts
        drawn = _button_value(h.message(rec), ActionId.approve_grant)
        await h.emu.submit_view("U0BOB", await _edit(h, rec, "U0BOB"), {param_block_id("amount"): {"value": "90"}})
        await _votes(h, rid, 1)
        for value in (drawn, ButtonValue(r=rid).pack()):
            await h.emu.click("U0ALICE", rec.channel, rec.ts, ActionId.approve_grant, value=value)
            assert "changed" in await h.ephemeral("U0ALICE")
        assert [v.user_id for v in (await h.store.get(rid)).votes] == ["U0BOB"]
        assert (await _refusals(h, rid)).count({"choice": "approve", "reason": "stale"}) == 2
