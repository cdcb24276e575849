"""Edit forms, reviews afterwards and reject reasons, hardened after an adversarial review: an
edited draft stays out of `params` (a param may be called `draft` too); an edit put back to the
agent's value is no change; only an action that ran on its own can be reviewed afterwards; an
override tells the agent its reason code; modal text that is not Unicode is an inline error; a
number the form filled in is taken back unchanged; a request's own reject reasons show their
titles."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from blocks.batch_lines import review_line
from blocks.cards import review_card
from blocks.ids import ActionId, BlockId, param_block_id
from blocks.payloads import ButtonValue
from store.errors import NotAllowed
from store.models import (
    Change,
    Choice,
    Decision,
    Metadata,
    Record,
    Request,
    Review,
    Route,
    State,
    Status,
    Vote,
)
from store.transitions import authorize_review, vote
from tests.harness import Harness, running, start, stop
from tests.test_stale_approvals import POLICY as STALE_POLICY
from tests.util import eventually

REVIEW_POLICY = """
tiers:
  low:    {mode: auto, sample: 1.0}
  medium: {mode: approve}
  high:   {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""

PAIR_POLICY = STALE_POLICY  # every request on a tier of two approvals


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    harness = await start(redis_url)
    yield harness
    await stop(harness)


async def _top(h: Harness, user: str) -> Any:
    return await eventually(lambda: asyncio.sleep(0, h.emu.top_view(user)), what=f"{user}'s modal")


async def _open(h: Harness, rec: Record, user: str, action: str) -> Any:
    await h.click(rec, user, action)
    return await _top(h, user)


async def _notes(h: Harness, stream: str) -> list[dict[str, Any]]:
    return [json.loads(f["message"]) for _, f in await h.store.redis.xrange(stream) if "message" in f]


async def _refusals(h: Harness, rid: str) -> list[dict[str, Any]]:
    return [e.detail for e in await h.store.trail(rid) if e.event == "refused"]


# An edited draft is not a param ---------------------------------------------------------------

async def test_an_untouched_draft_leaves_a_param_named_draft_alone(h: Harness) -> None:
    """`create_post(title, draft=True)` with the post body as the request's editable `draft`:
    the reviewer fixes only the title; the agent's `draft` flag comes back as it sent it."""
    rid = await h.push(action="create_post", summary="Publish a post", params={"title": "Helo", "draft": True},
                       draft="Body of the post", editable=["title", "draft"])
    view = await _open(h, await h.card(rid), "U0ALICE", ActionId.edit)
    assert (await h.emu.submit_view("U0ALICE", view.id, {param_block_id("title"): {"value": "Hello"}})).closed
    d = await h.client.wait(rid, timeout=10)
    assert d.status is Status.approved
    assert d.params == {"title": "Hello", "draft": True}, d.params
    assert set(d.changes) == {"title"}, d.changes


async def test_an_edited_draft_is_in_changes_never_in_params(h: Harness) -> None:
    """`tool(**decision.params)` must still work after a draft edit: the edited text is
    `changes.draft.after`; a param named `draft` keeps the agent's value."""
    rid = await h.push(action="create_post", summary="Publish a post", params={"title": "Hello", "draft": True},
                       draft="Body of teh post", editable=["title", "draft"])
    view = await _open(h, await h.card(rid), "U0ALICE", ActionId.edit)
    r = await h.emu.submit_view("U0ALICE", view.id, {param_block_id("draft"): {"value": "Body of the post"}})
    assert r.closed, r.errors
    d = await h.client.wait(rid, timeout=10)
    assert d.status is Status.approved
    assert d.params == {"title": "Hello", "draft": True}, d.params
    assert set(d.changes) == {"draft"}
    assert d.changes["draft"].before == "Body of teh post" and d.changes["draft"].after == "Body of the post"

    rid = await h.push(summary="Reply to Ana", params={"to": "ana@example.com"}, draft="Hi Ana",
                       editable=["draft"])
    view = await _open(h, await h.card(rid), "U0ALICE", ActionId.edit)
    assert (await h.emu.submit_view("U0ALICE", view.id, {param_block_id("draft"): {"value": "Hello Ana"}})).closed
    d = await h.client.wait(rid, timeout=10)
    assert d.params == {"to": "ana@example.com"} and d.changes["draft"].after == "Hello Ana", d


async def test_an_edit_of_the_draft_outdates_earlier_approvals(redis_url: str, tmp_path: Path) -> None:
    """The draft is not in `params`, but the mark approvals carry covers it: Alice approved the
    agent's draft, Bob rewrote it, so her approval no longer counts towards the quorum of 2."""
    async with running(redis_url, tmp_path, PAIR_POLICY) as h:
        rid = await h.push(summary="Reply to Ana", params={"to": "ana@example.com"}, draft="Hi Ana",
                           editable=["draft"])
        rec = await h.card(rid)
        await h.click(rec, "U0ALICE", ActionId.approve)
        await eventually(lambda: _votes(h, rid, 1), what="Alice's approval")
        view = await _open(h, rec, "U0BOB", ActionId.edit)
        assert (await h.emu.submit_view("U0BOB", view.id, {param_block_id("draft"): {"value": "Hello Ana"}})).closed
        rec = await eventually(lambda: _votes(h, rid, 2), what="Bob's edit")
        assert rec.state is State.pending and rec.draft == "Hello Ana" and "draft" not in rec.params
        assert [v.user_id for v in rec.stale_approvals()] == ["U0ALICE"]

        async def redrawn() -> bool:  # the card's Approve carries the values it shows
            return rec.params_mark in json.dumps(h.message(rec)["blocks"])

        await eventually(redrawn, what="the card redrawn with Bob's draft")
        await h.click(rec, "U0ALICE", ActionId.approve)
        d = await h.client.wait(rid, timeout=10)
        assert d.status is Status.approved and d.params == {"to": "ana@example.com"}
        assert d.changes["draft"].after == "Hello Ana"


def test_a_draft_edit_an_earlier_version_wrote_into_params_is_taken_out() -> None:
    """Versions before drafts were kept apart also wrote an edited draft into `params["draft"]`:
    a request edited then and approved now is decided with the params the agent sent."""
    req = Request(id="r1", agent="blog-agent", action="create_post", summary="Publish",
                  params={"title": "Hello", "draft": True}, draft="Body", editable=["draft"])
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    record = Record(request=req, route=Route(mode="approve"), created_at=now,
                    params={"title": "Hello", "draft": "Edited body"},
                    changes={"draft": Change(before="Body", after="Edited body")})
    t = vote(record, user_id="U0ALICE", name="alice", choice=Choice.approve, now=now)
    assert t.decision is not None and t.decision.params == {"title": "Hello", "draft": True}
    assert t.decision.changes["draft"].after == "Edited body"


async def _votes(h: Harness, rid: str, n: int) -> Record | None:
    r = await h.store.get(rid)
    return r if len(r.votes) >= n else None


# An edit put back is no change ------------------------------------------------------------------

async def test_an_edit_reverted_to_the_agents_value_is_no_change(redis_url: str, tmp_path: Path) -> None:
    """Alice 100 -> 50, Bob 50 -> 100, Alice approves: the agent gets its own values and no
    changes, and the card says Approved (not "with edits: 100 -> 100")."""
    async with running(redis_url, tmp_path, PAIR_POLICY) as h:
        rid = await h.push(params={"amount": 100}, editable=["amount"], summary="Refund")
        rec = await h.card(rid)
        view = await _open(h, rec, "U0ALICE", ActionId.edit)
        assert (await h.emu.submit_view("U0ALICE", view.id, {param_block_id("amount"): {"value": "50"}})).closed

        async def edited() -> Record | None:
            r = await h.store.get(rid)
            return r if r.params["amount"] == 50 else None

        rec = await eventually(edited, what="Alice's edit")
        view = await _open(h, rec, "U0BOB", ActionId.edit)  # Bob puts the agent's 100 back
        assert (await h.emu.submit_view("U0BOB", view.id, {param_block_id("amount"): {"value": "100"}})).closed

        async def reverted() -> Record | None:
            r = await h.store.get(rid)
            return r if r.params["amount"] == 100 and len(r.votes) == 2 else None

        rec = await eventually(reverted, what="Bob's edit")
        assert rec.changes == {}
        edits = [e.detail["changes"] for e in await h.store.trail(rid) if e.event == "edited"]
        assert edits[-1] == {"amount": {"after": 100, "restored": True}}, edits

        async def redrawn() -> bool:  # the card's Approve carries the values it shows
            return rec.params_mark in json.dumps(h.message(rec)["blocks"])

        await eventually(redrawn, what="the card redrawn with 100")
        await h.click(rec, "U0ALICE", ActionId.approve)  # her approval of 50 went stale
        d = await h.client.wait(rid, timeout=10)
        assert d.status is Status.approved and d.params == {"amount": 100}
        assert d.changes == {}, d.changes

        async def locked() -> str | None:
            m = h.message(await h.store.get(rid))["blocks"]
            return json.dumps(m) if m[0]["text"]["text"].startswith("Approved") else None

        blocks = await eventually(locked, what="the locked card")
        assert "with edits" not in blocks and "100 → 100" not in blocks


# Only an action that ran on its own is reviewed afterwards -----------------------------------------

async def test_a_review_of_a_request_people_approved_is_refused(redis_url: str, tmp_path: Path) -> None:
    """"This was wrong" carrying the id of a request Alice approved (a forged button value on a
    real review card) is refused, audited and explained: no review, no override for the agent."""
    async with running(redis_url, tmp_path, REVIEW_POLICY) as h:
        srec = await h.card(await h.push(action="lookup_order", summary="Look up order 1", confidence=0.95))
        rid = await h.push(params={"amount": 250}, reply_to="agent:inbox")
        rec = await h.card(rid)
        assert rec.route.mode == "approve"
        await h.click(rec, "U0ALICE", ActionId.approve)
        assert (await h.client.wait(rid, timeout=10)).status is Status.approved
        assert srec.channel and srec.ts
        await h.emu.click("U0BOB", srec.channel, srec.ts, ActionId.review_wrong, value=ButtonValue(r=rid).pack())
        told = await h.ephemeral("U0BOB")
        assert "Only an action that ran on its own can be checked afterwards" in told, told
        assert await _refusals(h, rid) == [{"choice": "review", "reason": "not_reviewable"}]
        assert h.emu.top_view("U0BOB") is None  # no "what was wrong" modal
        assert (await h.store.get(rid)).review is None and not await _notes(h, "agent:inbox")
        assert (await h.store.get(srec.id)).review is None  # the card it came from is untouched


async def test_a_looks_right_on_a_rejected_request_is_refused(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, REVIEW_POLICY) as h:
        srec = await h.card(await h.push(action="lookup_order", summary="Look up order 1", confidence=0.95))
        rid = await h.push(params={"amount": 250})
        view = await _open(h, await h.card(rid), "U0ALICE", ActionId.reject)
        await h.emu.submit_view("U0ALICE", view.id, {BlockId.reason_code.value: {"value": "risky"}})
        assert (await h.client.wait(rid, timeout=10)).status is Status.rejected
        before = await h.store.get(rid)
        assert srec.channel and srec.ts
        await h.emu.click("U0BOB", srec.channel, srec.ts, ActionId.review_ok, value=ButtonValue(r=rid).pack())
        assert "Only an action that ran on its own" in await h.ephemeral("U0BOB")
        assert await _refusals(h, rid) == [{"choice": "review", "reason": "not_reviewable"}]
        after = await h.store.get(rid)
        assert after.review is None and after.version == before.version
        blocks = json.dumps(h.message(after)["blocks"])
        assert "Ran automatically" not in blocks and "Rejected" in blocks, blocks


def _decided(route: Route, status: Status) -> Record:
    req = Request(id="r1", agent="billing-agent", action="refund", summary="Refund")
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    return Record(request=req, route=route, state=State.decided, created_at=now,
                  decision=Decision(request_id="r1", status=status, decided_at=now, route=route))


@pytest.mark.parametrize(("route", "status", "ok"), [
    (Route(mode="auto", sampled=True), Status.auto_approved, True),
    (Route(mode="audit", sampled=True), Status.auto_approved, True),
    (Route(mode="audit"), Status.auto_approved, True),
    (Route(mode="auto"), Status.auto_approved, False),  # not sampled: a standing grant's, a canary's
    (Route(mode="approve"), Status.approved, False),
    (Route(mode="approve"), Status.rejected, False),
    (Route(mode="approve"), Status.auto_approved, False),  # on_timeout: approve
    (Route(mode="approve"), Status.expired, False),
    (Route(mode="deny"), Status.denied, False),
    (Route(mode="shadow"), Status.approved, False),
])
def test_only_an_action_that_ran_on_its_own_is_reviewable(route: Route, status: Status, ok: bool) -> None:
    """The rule every review path (a card, a batch item, "All look right") meets."""
    record = _decided(route, status)
    if ok:
        authorize_review(record, "U0BOB")
    else:
        with pytest.raises(NotAllowed) as e:
            authorize_review(record, "U0BOB")
        assert e.value.reason == "not_reviewable"


# An override says why ----------------------------------------------------------------------------

async def test_an_override_tells_the_agent_the_reason_code(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, REVIEW_POLICY) as h:
        rid = await h.push(action="lookup_order", summary="Look up order 4711", confidence=0.95,
                           reply_to="agent:inbox")
        view = await _open(h, await h.card(rid), "U0BOB", ActionId.review_wrong)
        r = await h.emu.submit_view("U0BOB", view.id, {BlockId.reason_code.value: {"value": "wrong_params"}})
        assert r.closed
        notes = await eventually(lambda: _notes(h, "agent:inbox"), what="the override")
        assert notes[0]["event"] == "override"
        assert notes[0].get("reason_code") == "wrong_params", notes[0]
        assert "text" not in notes[0]  # no details given: nothing else added


# Modal text that is not Unicode --------------------------------------------------------------------

@pytest.mark.parametrize("how", ["edit", "reject", "answer"])
async def test_modal_text_with_a_lone_surrogate_is_an_inline_error(h: Harness, how: str) -> None:
    """Half a surrogate pair cannot be stored: the form says so and stays open, instead of
    closing and the listener dying with nothing decided and nobody told."""
    if how == "edit":
        rid = await h.push(params={"to": "ana"}, editable=["to"])
        view = await _open(h, await h.card(rid), "U0ALICE", ActionId.edit)
        bid, values = param_block_id("to"), {param_block_id("to"): {"value": "bo\udc00b"}}
    elif how == "reject":
        rid = await h.push(params={"amount": 5})
        view = await _open(h, await h.card(rid), "U0ALICE", ActionId.reject)
        bid = BlockId.reason_text.value
        values = {BlockId.reason_code.value: {"value": "other"}, bid: {"value": "bad \ud83d"}}
    else:
        rid = await h.push(kind="question", summary="Which warehouse ships order 4711?")
        view = await _open(h, await h.card(rid), "U0ALICE", ActionId.answer)
        bid, values = BlockId.answer_text.value, {BlockId.answer_text.value: {"value": "north \udfff"}}
    r = await h.emu.submit_view("U0ALICE", view.id, values)
    assert not r.closed and "not valid Unicode" in r.errors[bid], r.errors
    assert (await h.store.get(rid)).state is State.pending


async def test_a_lone_surrogate_in_what_was_wrong_is_an_inline_error(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, REVIEW_POLICY) as h:
        rid = await h.push(action="lookup_order", summary="Look up order 4711", confidence=0.95)
        view = await _open(h, await h.card(rid), "U0BOB", ActionId.review_wrong)
        bid = BlockId.reason_text.value
        r = await h.emu.submit_view("U0BOB", view.id, {BlockId.reason_code.value: {"value": "other"},
                                                        bid: {"value": "\ud800 wrong"}})
        assert not r.closed and "not valid Unicode" in r.errors[bid], r.errors
        assert (await h.store.get(rid)).review is None


# A number the form filled in -------------------------------------------------------------------------

async def test_a_tiny_float_submitted_unchanged_is_accepted(h: Harness) -> None:
    """1.5e-70 is filled in as a 73-character decimal (Slack's number input takes no exponent):
    submitted untouched it is no change, not a range error."""
    rid = await h.push(params={"tolerance": 1.5e-70, "note": "x"}, editable=["tolerance", "note"])
    view = await _open(h, await h.card(rid), "U0ALICE", ActionId.edit)
    r = await h.emu.submit_view("U0ALICE", view.id, {param_block_id("note"): {"value": "y"}})
    assert r.closed, r.errors
    d = await h.client.wait(rid, timeout=10)
    assert d.params["tolerance"] == 1.5e-70 and set(d.changes) == {"note"}


async def test_a_number_too_long_to_read_gets_a_length_message(h: Harness) -> None:
    rid = await h.push(params={"tolerance": 1.5e-70}, editable=["tolerance"])
    view = await _open(h, await h.card(rid), "U0ALICE", ActionId.edit)
    bid = param_block_id("tolerance")
    r = await h.emu.submit_view("U0ALICE", view.id, {bid: {"value": "0." + "0" * 70 + "2"}})
    assert not r.closed and "at most 64 characters" in r.errors[bid] and "between" not in r.errors[bid], r.errors


# A request's own reject reasons ------------------------------------------------------------------------

async def test_a_custom_reject_reason_shows_its_title_on_the_card(h: Harness) -> None:
    rid = await h.push(params={"amount": 5}, metadata={"humanlayer": {"reject_options": [
        {"name": "too_pricey", "title": "Too expensive <for> us"}]}})
    view = await _open(h, await h.card(rid), "U0ALICE", ActionId.reject)
    assert (await h.emu.submit_view("U0ALICE", view.id, {BlockId.reason_code.value: {"value": "too_pricey"}})).closed
    assert (await h.client.wait(rid, timeout=10)).reason_code == "too_pricey"

    async def locked() -> str | None:
        m = json.dumps(h.message(await h.store.get(rid))["blocks"])
        return m if "Rejected" in m else None

    blocks = await eventually(locked, what="locked card")
    assert "reason: Too expensive &lt;for&gt; us" in blocks, blocks  # the title, escaped once


def test_a_flagged_review_shows_the_reasons_title() -> None:
    """The review card and a review batch's line name a request's own reason by its title too
    (HumanLayer calls always reach a person first, so this is the rule, not a path tested live)."""
    route = Route(mode="audit", sampled=True)
    record = _decided(route, Status.auto_approved)
    record.request.metadata = Metadata.model_validate({"humanlayer": {"reject_options": [
        {"name": "stale_data", "title": "Used <stale> data"}]}})
    by = Vote(user_id="U0BOB", name="bob", choice=Choice.reject, at=record.created_at)
    record.review = Review(verdict="wrong", by=by, reason_code="stale_data")
    for text in (json.dumps(review_card(record)["blocks"]), review_line(record)):
        assert "Used &lt;stale&gt; data" in text and "stale_data" not in text, text
    record.review = Review(verdict="wrong", by=by, reason_code="risky")  # the taxonomy's still read
    assert "Too risky" in review_line(record)


async def test_a_hand_made_answer_to_an_approval_or_approval_of_a_question_changes_nothing(
        redis_url: str, tmp_path: Path) -> None:
    """No card offers them, but a payload made by hand could: an approval is never decided as
    `answered`, a question never `approved`; the clicker is told and it is audited."""
    async with running(redis_url, tmp_path, WRONG_CHOICE_POLICY) as h:
        approval = await h.push()
        rec = await h.card(approval)
        question = await h.push(kind="question", summary="Which plan?", options=["a", "b"])
        qrec = await h.card(question)
        # a question card's option button, its value naming the approval request
        forged = ButtonValue(r=approval, o="a").pack()
        await h.emu.click("U0ALICE", qrec.channel or "", qrec.ts or "", f"{ActionId.option.value}:0", value=forged)
        await eventually(lambda: _refused(h, approval, "wrong_choice"), what="the refusal audited")
        assert (await h.store.get(approval)).state.value == "pending"
        # an approval card's Approve, its value naming the question
        forged = ButtonValue(r=question, p=qrec.params_mark).pack()
        await h.emu.click("U0ALICE", rec.channel or "", rec.ts or "", ActionId.approve.value, value=forged)
        await eventually(lambda: _refused(h, question, "wrong_choice"), what="the refusal audited")
        assert (await h.store.get(question)).state.value == "pending"


async def test_a_hand_made_choice_another_kind_of_card_offers_changes_nothing(
        redis_url: str, tmp_path: Path) -> None:
    """A handover is never `approved` (the agent would run the action it handed over), a question
    never `rejected`, a plain approval never taken over or `resolved`, by a button value made by
    hand on another card: refused before any modal opens, explained, audited."""
    async with running(redis_url, tmp_path, WRONG_CHOICE_POLICY) as h:
        approval = await h.push()
        rec = await h.card(approval)
        handover = await h.push(kind="escalation", summary="Customer disputes a charge")
        hrec = await h.card(handover)
        question = await h.push(kind="question", summary="Which plan?", options=["a", "b"])
        await h.card(question)
        assert rec.channel and rec.ts and hrec.channel and hrec.ts
        # the approval card's Approve and Reject, their values naming the handover and the question
        await h.emu.click("U0ALICE", rec.channel, rec.ts, ActionId.approve.value,
                          value=ButtonValue(r=handover, p=hrec.params_mark).pack())
        await eventually(lambda: _refused(h, handover, "wrong_choice"), what="the approval refused")
        await h.emu.click("U0BOB", rec.channel, rec.ts, ActionId.reject.value, value=ButtonValue(r=question).pack())
        await eventually(lambda: _refused(h, question, "wrong_choice"), what="the rejection refused")
        assert h.emu.top_view("U0BOB") is None  # no reject form opened
        # the handover card's Take over and Resolve, their values naming the approval
        for action in (ActionId.take_over, ActionId.resolve, ActionId.hand_back, ActionId.reply):
            await h.emu.click("U0CAROL", hrec.channel, hrec.ts, action.value, value=ButtonValue(r=approval).pack())
        await eventually(lambda: _count_refused(h, approval, "wrong_choice", 4), what="the handover choices refused")
        assert h.emu.top_view("U0CAROL") is None
        assert "does not take that answer" in json.dumps(h.emu.ephemerals("U0CAROL"))
        for rid in (approval, handover, question):
            r = await h.store.get(rid)
            assert r.state.value == "pending" and r.owner is None and not r.votes, r
        # each still takes what its own card offers
        await h.click(hrec, "U0CAROL", ActionId.take_over)
        await h.click(rec, "U0ALICE", ActionId.approve)
        assert (await h.client.wait(approval, timeout=10)).status.value == "approved"
        assert (await h.store.get(handover)).owner is not None


async def _count_refused(h: Harness, rid: str, reason: str, n: int) -> bool:
    return sum(e.event == "refused" and e.detail.get("reason") == reason for e in await h.store.trail(rid)) >= n


async def test_a_malformed_button_value_on_reject_or_edit_is_explained(redis_url: str, tmp_path: Path) -> None:
    """Reject and Edit read their button's value like Approve does: one that is not ours gets
    the clicker the 'not one I recognise' reply (it used to fail silently after the ack)."""
    async with running(redis_url, tmp_path, WRONG_CHOICE_POLICY) as h:
        rid = await h.push(params={"amount": 5}, editable=["amount"])
        rec = await h.card(rid)
        assert rec.channel and rec.ts
        for n, action in enumerate((ActionId.reject, ActionId.edit), start=1):
            await h.emu.click("U0BOB", rec.channel, rec.ts, action.value, value="not-a-value{")
            assert "isn't one I recognise" in await h.ephemeral("U0BOB", n)
        assert h.emu.top_view("U0BOB") is None and (await h.store.get(rid)).decision is None


WRONG_CHOICE_POLICY = """
defaults: {channel: "#approvals"}
tiers:
  low: {mode: approve}
  medium: {mode: approve}
  high: {mode: approve}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""


async def _refused(h: Harness, rid: str, reason: str) -> bool:
    return any(e.event == "refused" and e.detail.get("reason") == reason for e in await h.store.trail(rid))
