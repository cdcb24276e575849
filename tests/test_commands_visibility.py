"""Need to know: `/hitl queue`, `/hitl audit` and the App Home show a request only to people
who may see it (docs/commands.md): hitl admins, those who may decide it, its requester, those
who acted on it, and, when it names no approvers, the members of the channel its card went to.
A private channel's request never reaches anyone else through hitl."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.commands import audit_message
from blocks.ids import ActionId
from blocks.payloads import ButtonValue
from tests.harness import Harness, start, stop
from tests.test_commands import hitl, words
from tests.test_home import home_of
from tests.util import eventually

POLICY = """
admins: ["U0ADMIN"]
defaults: {channel: "#approvals", tier: medium}
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve}
  finance: {mode: approve, channel: "#finance-approvals", approvers: ["S0FINANCE"], quorum: 2}
  open_finance: {mode: approve, channel: "#finance-approvals"}
rules:
  - {name: finance, when: 'request.action == "wire"', tier: finance}
  - {name: open_finance, when: 'request.action == "pay_invoice"', tier: open_finance}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""
FIONA, ERIN, CAROL, DAVE, ADMIN = "U0FIONA", "U0ERIN", "U0CAROL", "U0DAVE", "U0ADMIN"
"""Fiona: in the finance group and channel; Erin: in the channel only; Carol: in neither;
Dave: asks for the wire; the admin is in neither."""

WIRE = {"id": "wire-1", "action": "wire", "summary": "Wire $90,000 to Acme Holdings",
        "params": {"iban": "DE89370400440532013000"}, "requested_by": DAVE}
INVOICE = {"id": "inv-1", "action": "pay_invoice", "summary": "Pay invoice 7731 of Initech"}
PUBLIC = {"id": "pub-1", "summary": "Refund $40 to Ana"}


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    harness = await start(redis_url, policy=path)
    harness.emu.add_user(FIONA, "fiona")
    harness.emu.add_user(ERIN, "erin")
    harness.emu.add_channel("finance-approvals", "C0FINANCE", is_private=True, members=[FIONA, ERIN])
    harness.emu.add_usergroup("finance", [FIONA], "S0FINANCE")
    yield harness
    await stop(harness)


def hidden(text: str, *records: dict[str, str]) -> bool:
    return not any(r["id"] in text or r["summary"] in text for r in records)


async def refusals(h: Harness, user: str, command: str = "audit") -> list[dict[str, str]]:
    """The system `refused` entries of `user`'s `/hitl <command>` (or click: `choice`)."""
    return [e.detail for e in await h.store.audit_entries(100_000) if e.event == "refused" and e.actor == user
            and command in (e.detail.get("command"), e.detail.get("choice"))]


async def test_a_private_channels_request_is_seen_only_by_those_who_need_to(h: Harness) -> None:
    for r in (WIRE, INVOICE, PUBLIC):
        await h.card(await h.push(**r))

    # Carol is in neither the finance group nor its channel: the public request only, and a count
    queue = words(await hitl(h, "queue", user=CAROL))
    assert "Refund $40 to Ana" in queue and hidden(queue, WIRE, INVOICE), queue
    assert "Waiting for a person: 3" in queue and "2 more waiting that you cannot see" in queue
    audit = await hitl(h, "audit wire-1", user=CAROL)
    assert audit["blocks"] == audit_message("wire-1", [])["blocks"]  # as for an id that does not exist
    assert audit["text"] == audit_message("wire-1", [])["text"]
    assert WIRE["summary"] not in words(audit) and "DE89" not in words(audit)
    assert "*received*" in words(await hitl(h, "audit pub-1", user=CAROL))
    assert await refusals(h, CAROL) == [{"command": "audit", "reason": "not_allowed", "request": "wire-1",
                                         "channel": "C0GENERAL"}]

    # Fiona may decide the wire (its user group) and sits in the channel: she sees all three
    queue = words(await hitl(h, "queue", user=FIONA))
    assert all(r["summary"] in queue for r in (WIRE, INVOICE, PUBLIC)) and "cannot see" not in queue
    assert "*received*" in words(await hitl(h, "audit wire-1", user=FIONA))

    # an admin sees everything, as before
    queue = words(await hitl(h, "queue", user=ADMIN))
    assert all(r["summary"] in queue for r in (WIRE, INVOICE, PUBLIC)) and "cannot see" not in queue
    assert "*received*" in words(await hitl(h, "audit inv-1", user=ADMIN))

    # the requester sees their own request (not the open invoice of a channel they are not in)
    queue = words(await hitl(h, "queue", user=DAVE))
    assert WIRE["summary"] in queue and hidden(queue, INVOICE) and "1 more waiting that you cannot see" in queue
    assert "*received*" in words(await hitl(h, "audit wire-1", user=DAVE))

    # no approvers named: the members of its channel see it (Erin), others do not
    queue = words(await hitl(h, "queue", user=ERIN))
    assert INVOICE["summary"] in queue and hidden(queue, WIRE) and "1 more waiting that you cannot see" in queue
    assert "*received*" in words(await hitl(h, "audit inv-1", user=ERIN))
    assert words(await hitl(h, "audit inv-1", user=CAROL)) == words(audit_message("inv-1", []))
    assert not await refusals(h, ERIN) and not await refusals(h, ADMIN)


async def test_who_acted_on_a_request_still_sees_its_trail(h: Harness) -> None:
    rec = await h.card(await h.push(**INVOICE))
    await h.click(rec, ERIN, ActionId.approve)
    await h.decided("inv-1")
    h.emu.ws.channel("C0FINANCE").members.discard(ERIN)  # she left the channel since
    # her vote is read from the record: she still sees the trail of what she decided
    assert "*clicked* by <@U0ERIN>" in words(await hitl(h, "audit inv-1", user=ERIN))


async def test_when_slack_cannot_say_who_is_in_the_channel_the_request_stays_hidden(h: Harness) -> None:
    await h.card(await h.push(**INVOICE))
    h.emu.inject("conversations.members", error="internal_error", times=None)
    queue = words(await hitl(h, "queue", user=ERIN))
    assert hidden(queue, INVOICE) and "1 more waiting that you cannot see" in queue, queue
    assert words(await hitl(h, "audit inv-1", user=ERIN)) == words(audit_message("inv-1", []))
    assert await refusals(h, ERIN)
    assert INVOICE["summary"] in words(await hitl(h, "queue", user=ADMIN))  # admins need no lookup
async def test_the_home_lists_an_open_request_only_to_its_channels_members(h: Harness) -> None:
    await h.card(await h.push(**INVOICE))
    assert INVOICE["summary"] in await home_of(h, ERIN)
    carol = await home_of(h, CAROL)
    assert INVOICE["summary"] not in carol and "Waiting for you: 0" in carol


async def test_full_context_of_another_request_is_not_opened_by_a_hand_made_button(h: Harness) -> None:
    """"Show full context" on a public handover card, its value made by hand to name the private
    wire: refused as for a request that does not exist (the card's own context still opens)."""
    wire = await h.card(await h.push(**WIRE))
    public = await h.card(await h.push(id="hand-1", kind="escalation", summary="Customer asks for a person"))
    assert public.channel and public.ts
    forged = ButtonValue(r=wire.id, p=wire.params_mark).pack()
    await h.emu.click(CAROL, public.channel, public.ts, ActionId.show_context, value=forged)
    told = await h.ephemeral(CAROL)
    assert "Acme" not in told and "DE89" not in told and h.emu.top_view(CAROL) is None, told
    assert await refusals(h, CAROL, "show_context") == [
        {"choice": "show_context", "reason": "not_allowed", "request": "wire-1", "channel": public.channel}]
    await h.click(public, CAROL, ActionId.show_context)  # the card she sees: its context opens
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view(CAROL)), what="context modal")
    assert "Customer asks for a person" in json.dumps(view.blocks)
