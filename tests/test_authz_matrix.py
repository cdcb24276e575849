"""The authorization matrix: every interactive element the app registers (`register()` in
handlers/*.py: each `app.action`, `app.view`, and the `/hitl` subcommands that change
something), and for each the people who must not act with it. Each row sends the real signed
Slack request over HTTP to the running bot (the emulator as Slack, a real Redis) and checks the
product rule (docs/commands.md, docs/architecture.md, docs/trust.md): a click, form or command
by someone not allowed is acknowledged (HTTP 200, never a 500), changes no state in Redis (the
requests, the batch, grants, trust, absences, the pause switch), tells the person why
(ephemeral, a direct message, the command's reply, or a note in the modal they work in) and is
audited: `refused`; `outsider_refused` for someone of another organisation; a late click on a
request decided already is audited `clicked` with `already_decided` (docs/architecture.md:
late clicks change nothing); a hand-made payload that names nothing real is told so and
audited nowhere.

Adding an element: add a row to ROWS (the target it acts on, an `act` that sends its request,
who acts, and what must follow); `test_every_registered_element_has_a_row` fails until every
registered id has at least one row.

One bot serves the whole module (each row makes its own requests), so the file stays fast.
"""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from blocks.ids import (
    ActionId,
    BatchActionId,
    BlockId,
    CallbackId,
    HomeActionId,
    batch_item_block_id,
)
from blocks.payloads import BatchMeta, BatchValue, ButtonValue, ModalMeta
from emulator.transport import Reply
from store.models import Record, utcnow
from store.trust import Away
from tests.harness import Harness, start, stop
from tests.redis_server import RedisServer
from tests.util import eventually

POLICY = """
defaults: {channel: "#approvals", tier: medium, approvers: [U0ALICE, U0BOB], timeout: 1h}
tiers:
  low:       {mode: auto, sample: 1.0}
  medium:    {mode: approve}
  high:      {mode: approve, quorum: 2}
  granting:  {mode: approve, grants: {duration: 1h, max_amount: 100}}
  handover:  {mode: escalate}
  delegated: {mode: approve, approvers: [U0ERIN]}
  seats:     {mode: approve, approvers: [U0GINA, U0HANK], quorum: 2}
rules:
  - {name: review_after, when: 'request.action == "lookup"', tier: low}
  - {name: grants, when: 'request.action in ["grant_source", "grant_offer"]', tier: granting}
  - {name: handover, when: 'request.action == "handover"', tier: handover}
  - {name: delegated, when: 'request.action == "delegated"', tier: delegated}
  - {name: seats, when: 'request.action == "seats"', tier: seats}
  - {name: quorum2, when: 'request.action == "wire"', tier: high}
admins: [U0ADMIN]
batching: {similar: false, window: 1s}
triggers: {first_use: {enabled: false}}
"""

NON_APPROVER, REQUESTER, OUTSIDER, ADMIN = "U0CAROL", "U0DAVE", "U0MALLORY", "U0ADMIN"
EXTRA_USERS = ("U0ERIN", "U0FRANK", "U0GINA", "U0HANK", "U0IVY")
COMMAND_CHANNEL = "C0GENERAL"


# ---- the world: one bot, targets made per row ------------------------------------------------


@dataclass
class Case:
    """What one row acts on: the requests it may not change, and where to look."""

    rids: list[str] = field(default_factory=list)
    batch: str | None = None
    grant: str | None = None
    recs: list[Record] = field(default_factory=list)

    @property
    def rec(self) -> Record:
        return self.recs[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def h(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start(appendonly=True)
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    policy = tmp_path_factory.mktemp("authz") / "policy.yml"
    policy.write_text(POLICY)
    harness = await start(redis_server.url, policy=policy)
    harness.emu.add_user(OUTSIDER, "mallory", team_id="T0OTHERCO")
    for uid in EXTRA_USERS:
        harness.emu.add_user(uid, uid[2:].lower())
    yield harness
    await stop(harness)


async def _posted(h: Harness, **fields: Any) -> Record:
    return await h.card(await h.push(**fields))


async def approval(h: Harness, **fields: Any) -> Case:
    rec = await _posted(h, **{"requested_by": REQUESTER, "params": {"to": "ana", "amount": 20},
                                 "editable": ["to"], **fields})
    return Case([rec.id], recs=[rec])


async def _quorum2(h: Harness) -> Case:
    rec = await _posted(h, requested_by=REQUESTER, summary="Wire $9000", action="wire")
    return Case([rec.id], recs=[rec])


async def offering_grant(h: Harness) -> Case:
    return await approval(h, action="grant_offer", summary="Refund $20", params={"to": "ana"},
                          risk={"amount": 20, "currency": "USD"})


async def decided(h: Harness) -> Case:
    """A request Alice approved (watched), and a card still open whose button names it."""
    case = await approval(h)
    await h.click(case.rec, "U0ALICE", ActionId.approve)
    await h.decided(case.rec.id)
    other = await approval(h)
    return Case(case.rids, recs=[other.rec, case.rec])


async def voted_once(h: Harness) -> Case:
    """A quorum-2 request Alice approved already."""
    case = await _quorum2(h)
    await h.click(case.rec, "U0ALICE", ActionId.approve)

    async def voted() -> bool:
        return bool((await h.store.get(case.rec.id)).votes)

    await eventually(voted, what="Alice's vote")
    case.recs = [await h.store.get(case.rec.id)]
    return case


async def question(h: Harness) -> Case:
    rec = await _posted(h, kind="question", summary="Ship partial?", options=["yes", "no"],
                        requested_by=REQUESTER)
    return Case([rec.id], recs=[rec])


async def handover(h: Harness) -> Case:
    rec = await _posted(h, kind="escalation", action="handover", summary="Customer disputes refund",
                        requested_by=REQUESTER)
    return Case([rec.id], recs=[rec])


async def owned_handover(h: Harness) -> Case:
    case = await handover(h)
    await h.click(case.rec, "U0ALICE", ActionId.take_over)

    async def owned() -> bool:
        return (await h.store.get(case.rec.id)).owner is not None

    await eventually(owned, what="taken over")
    return case


async def reviewable(h: Harness) -> Case:
    rid = await h.push(action="lookup", summary="Look up order 4711", requested_by=REQUESTER)
    await h.client.wait(rid, timeout=10)
    rec = await h.card(rid)
    return Case([rid], recs=[rec])


async def _batch(h: Harness, n: int = 2, **fields: Any) -> Case:
    key = f"b-{utcnow().timestamp()}"
    rids = [await h.push(summary=f"Refund ${10 + i}", batch_key=key, requested_by=REQUESTER,
                         params={"to": "ana"}, editable=["to"], **fields)
            for i in range(n)]

    async def carded() -> list[Record] | None:
        if not all([await h.store.exists(r) for r in rids]):
            return None
        recs = [await h.store.get(r) for r in rids]
        return recs if all(r.ts and r.batch for r in recs) and len({r.batch for r in recs}) == 1 else None

    recs = list(await eventually(carded, 15, "a batch card"))
    return Case(rids, batch=recs[0].batch, recs=recs)


async def batch(h: Harness) -> Case:
    return await _batch(h)


async def review_batch(h: Harness) -> Case:
    case = await _batch(h, action="lookup")
    for rid in case.rids:
        await h.client.wait(rid, timeout=10)
    return case


async def delegation_over(h: Harness) -> Case:
    """U0ERIN's request; U0FRANK stood in for her while she was away, and she is back."""
    now = utcnow()
    if "U0ERIN" not in await h.store.trust.absences():
        await h.store.trust.set_away(Away(user="U0ERIN", delegate="U0FRANK", until=now + timedelta(days=1),
                                          since=now), "U0ERIN", now)
        await h.store.trust.back("U0ERIN", utcnow())
    return await approval(h, action="delegated")


async def seat_taken(h: Harness) -> Case:
    """A quorum-2 request U0GINA approved herself; then she went away, U0IVY standing in."""
    case = await approval(h, action="seats")
    await h.click(case.rec, "U0GINA", ActionId.approve)

    async def voted() -> bool:
        return bool((await h.store.get(case.rec.id)).votes)

    await eventually(voted, what="Gina's vote")
    now = utcnow()
    await h.store.trust.set_away(Away(user="U0GINA", delegate="U0IVY", until=now + timedelta(days=1), since=now),
                                 "U0GINA", now)
    return case


_GRANT: dict[str, str] = {}


async def grant(h: Harness) -> Case:
    """A standing grant U0ALICE made (once for the module: it covers similar requests)."""
    if not _GRANT:
        rec = await _posted(h, action="grant_source", summary="Refund $30", params={"to": "bo"},
                            risk={"amount": 30, "currency": "USD"})
        await h.click(rec, "U0ALICE", ActionId.approve_grant)
        _GRANT["id"] = (await h.grants(1))[0].id
        _GRANT["rid"] = rec.id
    return Case([_GRANT["rid"]], grant=_GRANT["id"])


async def nothing(h: Harness) -> Case:
    return Case()


# ---- what a row sends ----------------------------------------------------------------------

Act = Callable[[Harness, Case, str], Awaitable[Reply | None]]


def click(action_id: str, value: Callable[[Case], str] | None = None) -> Act:
    async def act(h: Harness, case: Case, user: str) -> Reply:
        rec = case.rec
        assert rec.channel and rec.ts
        return await h.emu.click(user, rec.channel, rec.ts, action_id, value=value(case) if value else None)
    return act


def item(choice: str, action_id: str = BatchActionId.item) -> Act:
    async def act(h: Harness, case: Case, user: str) -> Reply:
        rec = case.rec
        assert rec.channel and rec.ts and rec.batch
        return await h.emu.click(user, rec.channel, rec.ts, action_id, value=choice,
                                 block_id=batch_item_block_id(rec.batch, rec.id))
    return act


def command(text: str | Callable[[Case], str]) -> Act:
    async def act(h: Harness, case: Case, user: str) -> Reply:
        return await h.emu.slash_command(user, COMMAND_CHANNEL, "/hitl", text(case) if callable(text) else text)
    return act


async def _view(h: Harness, user: str, callback: str) -> Any:
    async def opened() -> Any:
        v = h.emu.top_view(user)
        return v if v is not None and v.callback_id == callback else None

    return await eventually(opened, what=f"{callback} open for {user}")


REASON = {BlockId.reason_code.value: {"value": "other"}, BlockId.reason_text.value: {"value": "no"}}


def modal(opener: str, open_act: Act, callback: str, values: dict[str, dict[str, Any]], *,
          meta: Callable[[Case, Any], str] | None = None, target: Callable[[Harness], Awaitable[Case]] | None = None) -> Act:
    """`opener` (who may) opens the modal; the row's person submits it: a form someone opened
    while they could act (a stale one), or one whose private_metadata was made by hand (`meta`:
    the view's new metadata, e.g. naming another request; `target`: the request it opens on)."""
    async def act(h: Harness, case: Case, user: str) -> Reply:
        source = await target(h) if target else case
        await open_act(h, source, opener)
        view = await _view(h, opener, callback)
        if meta is not None:
            view.spec["private_metadata"] = meta(case, view)
        if user != opener:  # hand-made: the row's person sends this form
            h.emu.ws.views.stacks[opener].remove(view.id)
            h.emu.ws.views.stacks.setdefault(user, []).append(view.id)
            view.user_id = user
        result = await h.emu.submit_view(user, view.id, values)
        view.open = False
        assert result.reply is not None, result.problem
        return result.reply
    return act


def other_request(case: Case, view: Any) -> str:
    old = ModalMeta.unpack(view.spec["private_metadata"])
    return ModalMeta(r=case.rec.id, c=old.c, t=old.t, p=case.rec.params_mark).pack()


def home_click(action_id: str, value: Callable[[Case], str] | None = None) -> Act:
    """A click on the person's own Home tab, on a control drawn there for someone else
    (a stale Home, or a hand-made payload)."""
    async def act(h: Harness, case: Case, user: str) -> Reply:
        await h.emu.open_home(user)
        home = await eventually(lambda: _async(h.emu.home(user)), what=f"{user}'s Home")
        spec = dict(home.spec)
        button = {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": "x"},
                  "value": value(case) if value else "x"}
        spec["blocks"] = [*home.blocks, {"type": "actions", "block_id": "authz", "elements": [button]}]
        home.spec = spec
        return await h.emu.click_home(user, action_id, block_id="authz")
    return act


async def _async(v: Any) -> Any:
    return v


def step(action_id: str, value: Callable[[Case], str] | None = None) -> Act:
    """A step of the one-by-one review modal opened from the batch card by an approver (U0BOB)
    and sent by the row's person (a modal opened while they could, or made by hand; `value`: a
    hand-made one). Someone who may decide no item gets no modal from the card itself."""
    async def act(h: Harness, case: Case, user: str) -> Reply:
        await click(BatchActionId.one_by_one)(h, case, "U0BOB")
        view = await _view(h, "U0BOB", CallbackId.one_by_one_modal)
        if user != "U0BOB":
            h.emu.ws.views.stacks["U0BOB"].remove(view.id)
            h.emu.ws.views.stacks.setdefault(user, []).append(view.id)
            view.user_id = user
        return await h.emu.click_view(user, view.id, action_id, value=value(case) if value else None)
    return act


async def _batch_and_other(h: Harness) -> Case:
    """A batch card, and a request of no batch only U0ERIN decides (watched)."""
    b = await batch(h)
    target = await approval(h, action="delegated")
    return Case(target.rids, batch=b.batch, recs=[b.rec, target.rec])


async def _batch_and_mine(h: Harness) -> Case:
    """A batch card, and a request of no batch that the clicker (U0BOB) does approve: a step
    naming it is still not a step of this batch (watched)."""
    b = await batch(h)
    target = await approval(h)
    return Case(target.rids, batch=b.batch, recs=[b.rec, target.rec])


async def _batch_and_batch(h: Harness) -> Case:
    """A batch card, and another batch (watched) whose id a button of the first is made to carry."""
    clicked = await batch(h)
    other = await batch(h)
    return Case(other.rids, batch=other.batch, recs=[clicked.rec, *other.recs])


def other_in_batch_meta(case: Case) -> str:
    assert case.batch
    return BatchMeta(b=case.batch, r=case.recs[1].id, c=case.rec.channel, t=case.rec.ts,
                     p=case.recs[1].params_mark).pack()


# ---- the rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    element: str
    who: str
    user: str
    target: Callable[[Harness], Awaitable[Case]]
    act: Act
    audit: str | None = "refused"
    """The audit event each watched request gets (None: none; `system`: a system `refused`)."""
    reason: str | None = None
    told: str = "ephemeral"
    """How the person learns why: ephemeral, dm, reply (the command's), modal."""
    words: str = ""
    xfail: str = ""
    """A hole this row found and no commit has fixed yet (the row must fail until then)."""

    @property
    def id(self) -> str:
        return f"{self.element}-{self.who}"


def forged(case: Case) -> str:
    """A button value naming a request the person may not decide (the row's target)."""
    return ButtonValue(r=case.rec.id, p=case.rec.params_mark).pack()


async def _with_other(h: Harness) -> Case:
    """The row's target (watched) plus an unrelated card whose button is pressed with it."""
    target = await approval(h, action="delegated")  # only U0ERIN decides it
    other = await approval(h)
    return Case(target.rids, recs=[other.rec, *target.recs])


async def _review_and_pending(h: Harness) -> Case:
    """A review card whose button is pressed naming a request still pending (watched)."""
    target = await approval(h)
    other = await reviewable(h)
    return Case(target.rids, recs=[other.rec, *target.recs])


def forged_other(case: Case) -> str:
    return ButtonValue(r=case.recs[1].id, p=case.recs[1].params_mark).pack()


def other_request_2(case: Case, view: Any) -> str:
    old = ModalMeta.unpack(view.spec["private_metadata"])
    return ModalMeta(r=case.recs[1].id, c=old.c, t=old.t, p=case.recs[1].params_mark).pack()


A, NA = ActionId, NON_APPROVER
ROWS: list[Row] = [
    # single approval cards
    Row(A.approve, "non_approver", NA, approval, click(A.approve), reason="not_an_approver"),
    Row(A.approve, "requester", REQUESTER, approval, click(A.approve), reason="self_approval"),
    Row(A.approve, "outsider", OUTSIDER, approval, click(A.approve), audit="outsider_refused", reason=None),
    Row(A.approve, "decided", "U0BOB", decided, click(A.approve, forged_other), audit="clicked",
        reason="already_decided"),
    Row(A.approve, "stand_in_after_absence", "U0FRANK", delegation_over, click(A.approve), reason="delegation_over"),
    Row(A.approve, "seat_taken", "U0IVY", seat_taken, click(A.approve), reason="approver_voted"),
    Row(A.approve, "already_voted", "U0ALICE", voted_once, click(A.approve), reason="already_voted"),
    Row(A.approve, "forged_other_request", "U0BOB", _with_other, click(A.approve, forged_other),
        reason="not_an_approver"),
    Row(A.reject, "non_approver", NA, approval, click(A.reject), reason="not_an_approver"),
    Row(A.reject, "outsider", OUTSIDER, approval, click(A.reject), audit="outsider_refused"),
    Row(A.edit, "requester", REQUESTER, approval, click(A.edit), reason="self_approval"),
    Row(A.edit, "non_approver", NA, approval, click(A.edit), reason="not_an_approver"),
    Row(CallbackId.reject_modal, "forged_other_request", "U0BOB", _with_other,
        modal("U0BOB", click(A.reject), CallbackId.reject_modal, REASON, meta=other_request_2), reason="not_an_approver"),
    Row(CallbackId.reject_modal, "decided_since_opened", "U0BOB", decided,
        modal("U0BOB", click(A.reject), CallbackId.reject_modal, REASON, meta=other_request_2),
        audit="clicked", reason="already_decided"),
    Row(CallbackId.reject_modal, "outsider", OUTSIDER, approval,
        modal("U0BOB", click(A.reject), CallbackId.reject_modal, REASON), audit="outsider_refused"),
    Row(CallbackId.edit_modal, "forged_other_request", "U0BOB", _with_other,
        modal("U0BOB", click(A.edit), CallbackId.edit_modal, {}, meta=other_request_2), reason="not_an_approver"),
    Row(A.approve_grant, "non_approver", NA, offering_grant, click(A.approve_grant), reason="not_an_approver"),
    Row(A.approve_grant, "requester", REQUESTER, offering_grant, click(A.approve_grant), reason="self_approval"),
    # review afterwards
    Row(A.review_ok, "non_approver", NA, reviewable, click(A.review_ok), reason="not_an_approver"),
    Row(A.review_ok, "requester", REQUESTER, reviewable, click(A.review_ok), reason="self_approval"),
    Row(A.review_ok, "forged_pending_request", "U0BOB", _review_and_pending, click(A.review_ok, forged_other),
        reason="not_reviewable"),
    Row(A.review_ok, "outsider", OUTSIDER, reviewable, click(A.review_ok), audit="outsider_refused"),
    Row(A.review_wrong, "non_approver", NA, reviewable, click(A.review_wrong), reason="not_an_approver"),
    Row(CallbackId.review_wrong_modal, "forged_other_request", "U0BOB", approval,
        modal("U0BOB", click(A.review_wrong), CallbackId.review_wrong_modal, REASON, meta=other_request,
              target=reviewable), reason="not_reviewable"),
    # questions
    Row(f"{A.option}:0", "non_approver", NA, question, click(f"{A.option}:0"), reason="not_an_approver"),
    Row(f"{A.option}:0", "requester", REQUESTER, question, click(f"{A.option}:0"), reason="self_approval"),
    Row(A.answer, "non_approver", NA, question, click(A.answer), reason="not_an_approver"),
    Row(CallbackId.answer_modal, "forged_other_request", "U0BOB", _with_other,
        modal("U0BOB", click(A.answer), CallbackId.answer_modal, {BlockId.answer_text.value: {"value": "yes"}},
              meta=other_request_2, target=question), reason="wrong_choice"),
    # handovers
    Row(A.take_over, "non_approver", NA, handover, click(A.take_over), reason="not_an_approver"),
    Row(A.take_over, "requester", REQUESTER, handover, click(A.take_over), reason="self_approval"),
    Row(A.reply, "non_approver", NA, handover, click(A.reply), reason="not_an_approver"),
    Row(A.resolve, "not_the_owner", "U0BOB", owned_handover, click(A.resolve), reason="owned"),
    Row(A.hand_back, "non_approver", NA, handover, click(A.hand_back), reason="not_an_approver"),
    Row(CallbackId.reply_modal, "forged_other_request", "U0BOB", _with_other,
        modal("U0BOB", click(A.reply), CallbackId.reply_modal, {BlockId.reply_text.value: {"value": "hi"}},
              meta=other_request_2, target=handover), reason="wrong_choice"),
    Row(CallbackId.resolve_modal, "not_the_owner", "U0BOB", owned_handover,
        modal("U0ALICE", click(A.resolve), CallbackId.resolve_modal,
              {BlockId.resolution_text.value: {"value": "done"}}), reason="owned"),
    Row(CallbackId.hand_back_modal, "forged_other_request", "U0BOB", _with_other,
        modal("U0BOB", click(A.hand_back), CallbackId.hand_back_modal,
              {BlockId.instructions_text.value: {"value": "go on"}}, meta=other_request_2, target=handover),
        reason="wrong_choice"),
    # batch cards
    Row(BatchActionId.item, "approve_non_approver", NA, batch, item("approve"), reason="not_an_approver"),
    Row(BatchActionId.item, "reject_non_approver", NA, batch, item("reject"), reason="not_an_approver"),
    Row(BatchActionId.item, "edit_requester", REQUESTER, batch, item("edit"), reason="self_approval"),
    Row(BatchActionId.approve_all, "non_approver", NA, batch, click(BatchActionId.approve_all),
        reason="not_an_approver"),
    Row(BatchActionId.approve_all, "requester", REQUESTER, batch, click(BatchActionId.approve_all),
        reason="self_approval"),
    Row(BatchActionId.approve_all, "outsider", OUTSIDER, batch, click(BatchActionId.approve_all),
        audit="system_outsider"),
    Row(BatchActionId.approve_all, "forged_other_batch", "U0BOB", batch,
        click(BatchActionId.approve_all, lambda c: BatchValue(b="nope", n=2, i=2, h="x").pack()),
        audit=None, words="nothing was changed"),
    Row(BatchActionId.reject_all, "non_approver", NA, batch, click(BatchActionId.reject_all),
        reason="not_an_approver", words="not rejected"),
    Row(BatchActionId.reject_all, "outsider", OUTSIDER, batch, click(BatchActionId.reject_all),
        audit="system_outsider"),
    Row(CallbackId.reject_all_modal, "non_approver", NA, batch,
        modal("U0BOB", click(BatchActionId.reject_all), CallbackId.reject_all_modal, REASON),
        reason="not_an_approver"),
    Row(BatchActionId.one_by_one, "non_approver", NA, batch, click(BatchActionId.one_by_one),
        reason="not_an_approver"),
    Row(BatchActionId.one_by_one, "forged_other_batch", "U0BOB", _batch_and_batch,
        click(BatchActionId.one_by_one, lambda c: BatchValue(b=c.batch or "").pack()), audit="system",
        reason="not_allowed"),
    Row(BatchActionId.step_approve, "non_approver", NA, batch, step(BatchActionId.step_approve),
        reason="not_an_approver", told="modal"),
    Row(BatchActionId.step_approve, "forged_other_request", "U0BOB", _batch_and_other,
        step(BatchActionId.step_approve, other_in_batch_meta), audit=None, told="modal"),
    Row(BatchActionId.step_approve, "forged_request_outside_batch", "U0BOB", _batch_and_mine,
        step(BatchActionId.step_approve, other_in_batch_meta), audit=None, told="modal"),
    Row(BatchActionId.step_reject, "non_approver", NA, batch, step(BatchActionId.step_reject),
        reason="not_an_approver", told="modal"),
    Row(BatchActionId.step_edit, "requester", REQUESTER, batch, step(BatchActionId.step_edit),
        reason="self_approval", told="modal"),
    Row(BatchActionId.review_item, "non_approver", NA, review_batch, item("ok", BatchActionId.review_item),
        reason="not_an_approver"),
    Row(BatchActionId.review_all, "requester", REQUESTER, review_batch, click(BatchActionId.review_all),
        reason="self_approval"),
    # the App Home
    Row(HomeActionId.pause, "non_admin", NA, nothing, home_click(HomeActionId.pause), audit="system",
        reason="not_admin", told="dm"),
    Row(HomeActionId.resume, "non_admin", NA, nothing, home_click(HomeActionId.resume), audit="system",
        reason="not_admin", told="dm"),
    Row(CallbackId.pause_modal, "non_admin", NA, nothing,
        modal(ADMIN, home_click(HomeActionId.pause), CallbackId.pause_modal,
              {BlockId.reason_text.value: {"value": "stop"}}),
        audit="system", reason="not_admin", told="dm"),
    Row(HomeActionId.revoke_grant, "non_granter", NA, grant, home_click(HomeActionId.revoke_grant,
                                                                         lambda c: c.grant or ""),
        reason="not_granter", told="dm"),
    # /hitl subcommands that change something
    Row("/hitl pause", "non_admin", NA, nothing, command("pause now"), audit="system", reason="not_admin",
        told="reply"),
    Row("/hitl resume", "non_admin", NA, nothing, command("resume"), audit="system", reason="not_admin",
        told="reply"),
    Row("/hitl trust reset", "non_admin", NA, nothing, command("trust reset billing-agent/refund"),
        audit="system", reason="not_admin", told="reply"),
    Row("/hitl trust pin", "non_admin", NA, nothing, command("trust pin billing-agent/refund"),
        audit="system", reason="not_admin", told="reply"),
    Row("/hitl trust unpin", "non_admin", NA, nothing, command("trust unpin billing-agent/refund"),
        audit="system", reason="not_admin", told="reply"),
    Row("/hitl grants revoke", "non_granter", NA, grant, command(lambda c: f"grants revoke {c.grant}"),
        reason="not_granter", told="reply"),
    Row("/hitl pause", "outsider", OUTSIDER, nothing, command("pause now"), audit="system_outsider",
        told="reply"),
    # /hitl subcommands that read what only some may see: answered as if the request did not exist
    Row("/hitl audit", "not_allowed", NA, approval, command(lambda c: f"audit {c.rec.id}"), audit="system",
        reason="not_allowed", told="reply", words="I have no request"),
]


# ---- the checks ----------------------------------------------------------------------------


async def snapshot(h: Harness, case: Case) -> dict[str, Any]:
    """Everything a refused action must leave as it was."""
    s = h.store
    records = {}
    for rid in case.rids:
        r = await s.get(rid)
        records[rid] = r.model_dump(mode="json", include={"state", "version", "params", "changes", "votes",
                                                         "decision", "review", "owner", "messages",
                                                         "extra_approvers"})
    return {
        "records": records,
        "batch": (await s.get_batch(case.batch)).model_dump(mode="json") if case.batch else None,
        "grants": sorted(g.model_dump_json() for g in await s.trust.grants()),
        "trust": sorted(repr(t) for t in await s.trust.states()),
        "absences": {k: repr(v) for k, v in (await s.trust.absences()).items()},
        "control": await s.control(),
    }


def _told(h: Harness, user: str) -> int:
    im = "D" + user[1:]  # the emulator's DM channel with `user`
    dms = [c for c in h.emu.calls_to("chat.postMessage") if c.args.get("channel") in (user, im)]
    return len(h.emu.ephemerals(user)) + len(dms)



async def _audits(h: Harness, case: Case, row: Row, user: str) -> list[Any]:
    if row.audit in ("system", "system_outsider"):
        event = "refused" if row.audit == "system" else "outsider_refused"
        return [e for e in await h.store.audit_entries(100_000) if e.event == event and e.actor == user]
    found = []
    for rid in case.rids:
        found += [e for e in await h.store.trail(rid) if e.actor == user and _refusal(e, row)]
    return found


def _refusal(e: Any, row: Row) -> bool:
    if row.audit == "clicked":
        return bool(e.event == "clicked" and e.detail.get("outcome") == "already_decided")
    return bool(e.event == row.audit)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("row", [
    pytest.param(r, marks=pytest.mark.xfail(strict=True, reason=r.xfail)) if r.xfail else r for r in ROWS
], ids=[r.id for r in ROWS])
async def test_refused(h: Harness, row: Row) -> None:
    case = await row.target(h)
    user = row.user
    await h.emu.open_home(user) if row.told == "dm" else None
    before, told, audits = await snapshot(h, case), _told(h, user), len(await _audits(h, case, row, user))
    sent = len(h.emu.sent)
    reply = await row.act(h, case, user)
    # every request Slack sent for this row was acknowledged, none with a 500
    assert all(r.status == 200 for r in h.emu.sent[sent:]), [(r.kind, r.status, r.body) for r in h.emu.sent[sent:]]

    # told why
    if row.told == "reply":
        assert reply is not None
        text = reply.body
        if row.words:
            assert row.words in text, text
        else:
            assert "admins" in text or "granted" in text or "another organisation" in text, text
    elif row.told == "modal":
        async def noted() -> str | None:
            v = h.emu.top_view(user)
            body = json.dumps(v.blocks) if v is not None else ""
            return body if any(w in body for w in (":no_entry_sign:", "cannot", "not one of", "recognise")) else None
        await eventually(noted, 5, f"a note in {user}'s modal")
    else:
        async def heard() -> bool:
            return _told(h, user) > told
        await eventually(heard, 5, f"{row.id}: {user} told why ({row.told})")
        if row.words:
            assert row.words in json.dumps(h.emu.ephemerals(user)[-1:])

    # audited
    if row.audit is not None:
        async def audited() -> list[Any] | None:
            found = await _audits(h, case, row, user)
            return found if len(found) > audits else None
        entries = await eventually(audited, 5, f"{row.id}: a {row.audit} audit entry")
        if row.reason and row.audit != "clicked":
            reasons = {e.detail.get("reason") for e in entries}
            assert row.reason in reasons, reasons

    # nothing changed
    assert await snapshot(h, case) == before


# ---- every registered element has a row ----------------------------------------------------

HANDLERS = Path(__file__).resolve().parent.parent / "handlers"
SUBCOMMANDS_THAT_CHANGE = {"/hitl pause", "/hitl resume", "/hitl trust reset", "/hitl trust pin",
                           "/hitl trust unpin", "/hitl grants revoke"}
"""`/hitl away` changes only the asker's own absence; the other subcommands only read."""
READ_ONLY = {ActionId.show_context.value, BatchActionId.open_queue.value,
             BatchActionId.step_reason.value, BatchActionId.step_skip.value, "/hitl"}
"""Elements that change nothing themselves (they open a view or read); what they lead to has rows."""


def registered() -> set[str]:
    """Every id `register()` in handlers/*.py hands to app.action / app.view / app.command."""
    names: dict[str, str] = {}
    for enum in (ActionId, BatchActionId, CallbackId, HomeActionId):
        for member in enum:
            names[f"{enum.__name__}.{member.name}"] = member.value
    found: set[str] = set()
    for path in HANDLERS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not (isinstance(fn, ast.FunctionDef) and fn.name == "register"):
                continue
            for call in ast.walk(fn):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr in ("action", "view", "command", "options")):
                    continue
                arg = call.args[0]
                text = ast.unparse(arg)
                if isinstance(arg, ast.Constant):
                    found.add(str(arg.value))
                elif text.endswith(".value") and text[:-6] in names:
                    found.add(names[text[:-6]])
                elif text == "OPTION_ACTION":
                    found.add(f"{ActionId.option.value}:0")
                elif text in ("step.value", "callback.value"):
                    continue  # loops over ids listed below
                else:
                    raise AssertionError(f"{path.name}: register() uses {text}; teach this test to read it")
    found |= {BatchActionId.step_approve.value, BatchActionId.step_reject.value, BatchActionId.step_edit.value,
              BatchActionId.step_skip.value, CallbackId.reply_modal.value, CallbackId.resolve_modal.value,
              CallbackId.hand_back_modal.value}
    return found


def test_every_registered_element_has_a_row() -> None:
    covered = {str(r.element) for r in ROWS}
    missing = registered() - covered - READ_ONLY
    assert not missing, f"no authorization row for {sorted(missing)}"
    assert covered >= SUBCOMMANDS_THAT_CHANGE
