"""Graduated autonomy end to end: a new action waits for people, trust is earned and lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.ids import ActionId, BlockId
from store.models import Mode, State, Status
from store.trust import TrustState
from tests.harness import Harness, start, stop
from tests.util import eventually

POLICY = """
defaults: {tier: low}
tiers:
  low:    {mode: auto, sample: 0}
  medium: {mode: approve}
  high:   {mode: approve}
admins: ["U0ADMIN"]
batching: {enabled: false}
"""

REVIEWED = """
defaults: {tier: low}
tiers:
  low:    {mode: auto, sample: 1.0}
  medium: {mode: approve}
  high:   {mode: approve}
admins: ["U0ADMIN", "U0OWNER"]
batching: {enabled: false}
trust: {after: 2}
"""


async def _harness(redis_url: str, tmp_path: Path, text: str) -> Harness:
    policy = tmp_path / "policy.yml"
    policy.write_text(text)
    h = await start(redis_url, policy=policy)
    h.emu.add_user("U0OWNER", "owner", "Olga Owner")
    return h


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await _harness(redis_url, tmp_path, POLICY)
    yield harness
    await stop(harness)


async def _counted(h: Harness, agent: str, action: str, outcomes: int) -> TrustState:
    """The action's trust once `outcomes` decisions are counted (counted just after each click)."""

    async def done() -> TrustState | None:
        s = await h.store.trust.state(agent, action)
        return s if s.outcomes >= outcomes else None

    return await eventually(done, what=f"{outcomes} outcomes of {agent}/{action}")  # type: ignore[no-any-return]


async def _all_stored(h: Harness, ids: list[str]) -> bool:
    return all(await asyncio.gather(*(h.store.exists(i) for i in ids)))


async def test_a_new_action_waits_for_people_until_the_fifth_approval(h: Harness) -> None:
    limit = asyncio.Semaphore(32)  # the agent client's pool; all 300 are queued before most are read

    async def push(i: int) -> str:
        async with limit:
            return await h.push(agent="refund-bot", action="refund", summary=f"Refund order {i}", id=f"r-{i}")

    ids = list(await asyncio.gather(*(push(i) for i in range(300))))
    await eventually(lambda: _all_stored(h, ids), timeout=60, what="300 requests stored")
    records = await h.store.get_many(ids)
    # every one of them waits for a person, even those that arrived while the first waited
    assert len(records) == 300
    assert all(r.route.mode is Mode.approve and r.state is State.pending for r in records)
    assert all("first_use" in r.route.rules for r in records)
    assert "0 of 5 approvals" in " ".join(records[0].route.reasons)
    people = ["U0ALICE", "U0BOB", "U0CAROL", "U0DAVE", "U0ALICE"]
    for n, rid in enumerate(ids[:5], 1):
        rec = await h.card(rid, timeout=30)
        await h.click(rec, people[n - 1], ActionId.approve)
        await h.decided(rid)
        state = await _counted(h, "refund-bot", "refund", n)
        assert state.trusted is (n == 5)
    # the other 295 still wait for a person: nothing decided them behind people's backs
    rest = await h.store.get_many(ids[5:])
    assert all(r.state is State.pending for r in rest)
    # now the policy applies as written: the low tier acts alone
    rid = await h.push(agent="refund-bot", action="refund", summary="Refund order 301")
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.auto_approved and decision.route is not None
    assert "first_use" not in decision.route.rules
    # another agent's same action is new on its own
    other = await h.push(agent="other-bot", action="refund", summary="Refund order 302")
    rec = await h.card(other, timeout=30)
    assert rec.route.mode is Mode.approve
    trail = [e.event for e in await h.store.trail(ids[4])]
    assert "trust_changed" in trail


async def test_a_rejection_restarts_the_count_of_a_new_action(h: Harness) -> None:
    first = await h.push(agent="mail-bot", action="send", summary="Mail 1")
    rec = await h.card(first)
    await h.click(rec, "U0CAROL", ActionId.approve)
    await h.decided(first)
    await _counted(h, "mail-bot", "send", 1)
    second = await h.push(agent="mail-bot", action="send", summary="Mail 2")
    rec = await h.card(second)
    await h.click(rec, "U0CAROL", ActionId.reject)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0CAROL")), what="reject modal")
    await h.emu.submit_view("U0CAROL", view.id, {BlockId.reason_code.value: {"value": "wrong_action"}})
    await h.decided(second)
    state = await _counted(h, "mail-bot", "send", 2)
    assert state.clean == 0 and state.approvals == 1 and state.disagreements == 1 and not state.trusted


async def test_one_override_demotes_and_tells_the_admins_once(redis_url: str, tmp_path: Path) -> None:
    h = await _harness(redis_url, tmp_path, REVIEWED)
    try:
        for i in range(2):
            rid = await h.push(agent="crm-bot", action="tag", summary=f"Tag {i}")
            rec = await h.card(rid)
            assert rec.route.mode is Mode.approve
            await h.click(rec, "U0CAROL", ActionId.approve)
            await h.decided(rid)
        assert (await _counted(h, "crm-bot", "tag", 2)).trusted
        rid = await h.push(agent="crm-bot", action="tag", summary="Tag 3", reply_to="agent:inbox")
        decision = await h.client.wait(rid, timeout=10)
        assert decision.status is Status.auto_approved  # trusted: the policy as written (sampled)
        rec = await h.card(rid)
        await h.click(rec, "U0BOB", ActionId.review_wrong)
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="modal")
        await h.emu.submit_view("U0BOB", view.id, {BlockId.reason_code.value: {"value": "wrong_action"}})

        async def demoted() -> bool:
            return not (await h.store.trust.state("crm-bot", "tag")).trusted

        await eventually(demoted, what="demotion")
        for admin in ("U0ADMIN", "U0OWNER"):
            notes = await eventually(lambda a=admin: asyncio.sleep(0, h.emu.messages(a)), what="notice")
            assert len(notes) == 1 and "is new again" in json.dumps(notes[0]["blocks"])
        state = await h.store.trust.state("crm-bot", "tag")
        assert state.overrides == 1 and state.clean == 0 and state.changed_by == "U0BOB"
        events = [(e.event, e.detail) for e in await h.store.trail(rid)]
        assert any(ev == "trust_changed" and d["to"] == "new" for ev, d in events)
        again = await h.push(agent="crm-bot", action="tag", summary="Tag 4")
        rec = await h.card(again)
        assert rec.route.mode is Mode.approve and "first_use" in rec.route.rules
    finally:
        await stop(h)


async def test_trust_command_lists_resets_and_pins(h: Harness) -> None:
    rid = await h.push(agent="crm-bot", action="tag", summary="Tag 1")
    rec = await h.card(rid)
    await h.click(rec, "U0CAROL", ActionId.approve)
    await h.decided(rid)
    await _counted(h, "crm-bot", "tag", 1)
    reply = await h.emu.slash_command("U0CAROL", "C0GENERAL", "/hitl", "trust")
    text = json.dumps(reply.json())
    assert "crm-bot / tag" in text and "new (1 of 5 approvals)" in text and "override rate 0%" in text
    refused = await h.emu.slash_command("U0CAROL", "C0GENERAL", "/hitl", "trust reset crm-bot/tag")
    assert "Only hitl admins" in json.dumps(refused.json())
    await h.emu.slash_command("U0ADMIN", "C0GENERAL", "/hitl", "trust pin crm-bot/tag")
    state = await h.store.trust.state("crm-bot", "tag")
    assert state.pinned
    for i in range(5):  # pinned: no automatic promotion however many approvals
        rid = await h.push(agent="crm-bot", action="tag", summary=f"Tag {i + 2}")
        rec = await h.card(rid)
        await h.click(rec, "U0CAROL", ActionId.approve)
        await h.decided(rid)
        await _counted(h, "crm-bot", "tag", i + 2)
    assert not (await h.store.trust.state("crm-bot", "tag")).trusted
    reply = await h.emu.slash_command("U0ADMIN", "C0GENERAL", "/hitl", "trust reset tag")
    assert "new again" in json.dumps(reply.json())
    state = await h.store.trust.state("crm-bot", "tag")
    assert state.clean == 0 and not state.pinned and state.changed_by == "U0ADMIN"
    kinds = [e.event for e in await h.store.audit_entries()]
    assert "trust_pin" in kinds and "trust_reset" in kinds


SHADOW = """
defaults: {tier: low}
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve}
rules:
  - {name: shadow_emails, when: 'request.action == "send_email"', mode: shadow}
admins: ["U0ADMIN"]
batching: {enabled: false}
trust: {after: 1}
"""


async def test_a_shadow_disagreement_demotes(redis_url: str, tmp_path: Path) -> None:
    h = await _harness(redis_url, tmp_path, SHADOW)
    try:
        first = await h.card(await h.push(agent="mail-bot", action="send_email", summary="Email Ana"))
        await h.click(first, "U0ALICE", ActionId.approve)
        await h.decided(first.id)
        assert (await _counted(h, "mail-bot", "send_email", 1)).trusted
        second = await h.card(await h.push(agent="mail-bot", action="send_email", summary="Email Bo"))
        assert second.route.mode is Mode.shadow
        await h.click(second, "U0ALICE", ActionId.reject)
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0ALICE")), what="reject modal")
        await h.emu.submit_view("U0ALICE", view.id, {BlockId.reason_code.value: {"value": "wrong_action"}})
        state = await _counted(h, "mail-bot", "send_email", 2)
        assert not state.trusted and state.overrides == 1
        notes = await eventually(lambda: asyncio.sleep(0, h.emu.messages("U0ADMIN")), what="notice")
        assert "disagreed in shadow mode" in json.dumps(notes[0]["blocks"])
    finally:
        await stop(h)
