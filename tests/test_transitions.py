"""The pure state machine: who may act on a request, and what each choice and timed event
writes (fields, audit, decision, interim message, schedule)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from store.errors import AlreadyDecided, NotAllowed
from store.models import AgentMessage, Choice, Record, Request, Route, State, Status, Vote
from store.transitions import (
    TIMEOUT_CODE,
    authorize,
    escalate,
    expire,
    grant,
    not_voted,
    remind,
    vote,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make(route: Route | None = None, **fields: Any) -> Record:
    base: dict[str, Any] = {"id": "r1", "agent": "support-bot", "action": "handover",
                            "summary": "Customer wants a person", "kind": "escalation"}
    req = Request.model_validate(base | fields)
    return Record(request=req, route=route or Route(mode="escalate"), created_at=NOW,
                  params=dict(req.params))


def apply(record: Record, t: Any) -> Record:
    """What Store.apply would store, read back as a record (every field value is JSON)."""
    data = record.model_dump() | {k: json.loads(v) for k, v in t.fields.items()}
    data["version"] = record.version + 1
    if t.decision is not None:
        data |= {"decision": t.decision, "state": State.decided}
    return Record.model_validate(data)


def who(user: str, choice: Choice) -> dict[str, Any]:
    return {"user_id": user, "name": user.lower(), "choice": choice, "now": NOW}


def test_take_over_assigns_the_owner_and_tells_the_agent() -> None:
    record = make()
    t = vote(record, **who("U0ALICE", Choice.take_over))
    assert t.decision is None and t.update_card
    assert Vote.model_validate_json(t.fields["owner"]).user_id == "U0ALICE"
    assert ("taken_over", "U0ALICE", {"name": "u0alice"}) in t.audit
    assert t.message is not None
    msg = AgentMessage.model_validate_json(t.message)
    assert msg.event == "taken_over" and msg.request_id == "r1" and msg.by.user_id == "U0ALICE"
    owned = apply(record, t)
    assert owned.owner is not None and owned.owner.user_id == "U0ALICE"
    with pytest.raises(NotAllowed) as e:
        authorize(owned, "U0BOB", Choice.take_over)
    assert e.value.reason == "owned" and "u0alice" in e.value.message
    for choice in (Choice.reply, Choice.resolve, Choice.hand_back, Choice.approve):
        with pytest.raises(NotAllowed):
            authorize(owned, "U0BOB", choice)
    with pytest.raises(NotAllowed) as e:
        authorize(owned, "U0ALICE", Choice.take_over)
    assert e.value.reason == "already_owner"


def test_the_owner_replies_as_often_as_needed_then_resolves() -> None:
    record = apply(make(), vote(make(), **who("U0ALICE", Choice.take_over)))
    for text in ("Checking the order", "Refund sent"):
        authorize(record, "U0ALICE", Choice.reply)
        t = vote(record, **who("U0ALICE", Choice.reply), answer=text)
        assert t.decision is None
        assert AgentMessage.model_validate_json(t.message or "").text == text
        record = apply(record, t)
    assert [m.text for m in record.messages] == [None, "Checking the order", "Refund sent"]
    authorize(record, "U0ALICE", Choice.resolve)
    t = vote(record, **who("U0ALICE", Choice.resolve), reason="Refunded $40")
    assert t.decision is not None and t.decision.status is Status.resolved
    assert t.decision.reason == "Refunded $40"
    assert [v.choice for v in t.decision.decided_by] == [
        Choice.take_over, Choice.reply, Choice.reply, Choice.resolve]


def test_reply_without_taking_over_makes_the_replier_the_owner() -> None:
    record = make()
    t = vote(record, **who("U0BOB", Choice.reply), answer="On it")
    assert Vote.model_validate_json(t.fields["owner"]).user_id == "U0BOB"


def test_hand_back_is_answered_with_the_instructions() -> None:
    t = vote(make(), **who("U0ALICE", Choice.hand_back), answer="Offer a 10% voucher")
    assert t.decision is not None and t.decision.status is Status.answered
    assert t.decision.answer == "Offer a 10% voucher" and t.message is None


def test_requester_never_acts_on_their_own_case() -> None:
    record = make(requested_by="U0REQ")
    for choice in (Choice.take_over, Choice.reply, Choice.resolve, Choice.hand_back,
                   Choice.answer, Choice.approve):
        with pytest.raises(NotAllowed) as e:
            authorize(record, "U0REQ", choice)
        assert e.value.reason == "self_approval"


def test_escalation_widens_who_may_decide() -> None:
    record = make(route=Route(mode="approve", approvers=["U0ALICE"]), kind="approval")
    with pytest.raises(NotAllowed):
        authorize(record, "U0HEAD", Choice.approve)
    t = escalate(record, now=NOW, level=1, targets=["#leads", "U0HEAD"], approvers=["U0HEAD"],
                 seconds=0.2, next_due_ms=123)
    assert ("escalate:r1", 123) in t.schedule and t.update_card
    audit = dict((e, d) for e, _, d in t.audit)["escalated"]
    assert audit == {"seconds": 0.2, "level": 1, "targets": ["#leads", "U0HEAD"]}
    widened = apply(record, t)
    assert widened.escalation_level == 1 and widened.escalated_to == ["#leads", "U0HEAD"]
    assert widened.time_to_escalate_s == 0.2
    authorize(widened, "U0HEAD", Choice.approve)
    with pytest.raises(NotAllowed):
        authorize(widened, "U0BOB", Choice.approve)
    again = apply(widened, escalate(widened, now=NOW, level=2, targets=["U0HEAD"],
                                    approvers=["U0HEAD"], seconds=0.5, next_due_ms=None))
    assert again.escalation_level == 2 and again.escalated_to == ["#leads", "U0HEAD"]
    assert again.time_to_escalate_s == 0.2  # the first notification's


def test_level_zero_records_the_time_to_escalate_without_touching_the_card() -> None:
    t = escalate(make(), now=NOW, level=0, targets=["C1"], approvers=[], seconds=0.04,
                 next_due_ms=None)
    assert not t.update_card and "escalation_level" not in t.fields
    assert t.fields["time_to_escalate_s"] == "0.040"


def test_voting_twice_is_refused_but_replies_are_not() -> None:
    record = make(route=Route(quorum=2), kind="approval")
    record = apply(record, vote(record, **who("U0ALICE", Choice.approve)))
    with pytest.raises(NotAllowed) as e:
        authorize(record, "U0ALICE", Choice.reject)
    assert e.value.reason == "already_voted"


PAIR = Route(quorum=2, approvers=["U0ALICE", "U0CAROL"])


def _refusal(record: Record, user: str, stands_in: list[str] | None = None) -> str:
    with pytest.raises(NotAllowed) as e:
        authorize(record, user, Choice.approve, groups=frozenset(stands_in or ()), stands_in=stands_in or ())
    return e.value.reason


def test_an_approver_and_their_stand_in_share_one_seat() -> None:
    record = make(route=PAIR, kind="approval")
    assert authorize(record, "U0BOB", Choice.approve, groups=frozenset({"U0ALICE"}), stands_in=["U0ALICE"]) == "U0ALICE"
    t = vote(record, **who("U0BOB", Choice.approve), seat="U0ALICE")
    assert t.decision is None
    bob = apply(record, t)
    assert [(v.user_id, v.seat, v.holder) for v in bob.votes] == [("U0BOB", "U0ALICE", "U0ALICE")]
    assert _refusal(bob, "U0ALICE") == "delegate_voted"
    assert _refusal(bob, "U0DAVE", ["U0ALICE"]) == "seat_taken"  # another of the stand-ins
    assert authorize(bob, "U0CAROL", Choice.approve) is None
    t = vote(bob, **who("U0CAROL", Choice.approve))
    assert t.decision is not None and t.decision.status is Status.approved
    # agents read plain votes: the seat stays on the record
    assert [v.model_dump() for v in t.decision.decided_by] == [
        {"user_id": u, "name": u.lower(), "choice": Choice.approve, "at": NOW} for u in ("U0BOB", "U0CAROL")]
    assert "seat" not in t.decision.model_dump_json()
    alice = apply(record, vote(record, **who("U0ALICE", Choice.approve)))
    assert _refusal(alice, "U0BOB", ["U0ALICE"]) == "approver_voted"
    # a stand-in for both approvers away takes one seat still free: never two with one vote
    both = frozenset(PAIR.approvers)
    assert authorize(alice, "U0BOB", Choice.approve, groups=both, stands_in=PAIR.approvers) == "U0CAROL"
    assert authorize(record, "U0BOB", Choice.approve, groups=both, stands_in=PAIR.approvers) == "U0ALICE"
    bob = apply(record, vote(record, **who("U0BOB", Choice.approve), seat="U0ALICE"))
    assert bob.state is State.pending
    with pytest.raises(NotAllowed) as e:
        authorize(bob, "U0BOB", Choice.approve, groups=both, stands_in=PAIR.approvers)
    assert e.value.reason == "already_voted"


def test_nobody_fills_the_requesters_seat() -> None:
    """Alice asked for it and is away: Bob, standing in for her, may not approve or edit it (in
    her name), nor take her seat; standing in for Carol too, he takes Carol's. Rejecting stays
    open to him, as to Alice; reminders name nobody for her seat."""
    record = make(route=PAIR, kind="approval", requested_by="U0ALICE")
    for choice in (Choice.approve, Choice.edit):
        with pytest.raises(NotAllowed) as e:
            authorize(record, "U0BOB", choice, groups=frozenset({"U0ALICE"}), stands_in=["U0ALICE"])
        assert e.value.reason == "requester_seat"
    both = frozenset(PAIR.approvers)
    assert authorize(record, "U0BOB", Choice.approve, groups=both, stands_in=PAIR.approvers) == "U0CAROL"
    assert authorize(record, "U0BOB", Choice.reject, groups=frozenset({"U0ALICE"}), stands_in=["U0ALICE"]) == "U0ALICE"
    assert not_voted(record) == ["U0CAROL"]


def test_a_vote_recorded_without_a_seat_is_its_voters_own() -> None:
    """Records written before seats were kept: a stand-in's vote counts as their own seat."""
    record = make(route=PAIR, kind="approval")
    old = record.model_dump() | {"votes": [{"user_id": "U0BOB", "name": "bob", "choice": "approve", "at": NOW}]}
    bob = Record.model_validate(old)
    assert bob.votes[0].seat is None and bob.votes[0].holder == "U0BOB"
    assert authorize(bob, "U0ALICE", Choice.approve) is None
    assert vote(bob, **who("U0ALICE", Choice.approve)).decision is not None


def test_a_stand_in_a_level_brought_in_takes_the_targets_seat() -> None:
    """A level notifies Dave (the card does not name him), away, Bob standing in: Bob's vote takes
    Dave's seat, so the two are one vote of the quorum, whichever votes first; Alice is the
    second seat. A later level naming Bob himself gives him a seat of his own."""
    record = make(route=PAIR, kind="approval")
    t = grant(record, approvers=["U0DAVE", "U0BOB"], seats_of={"U0BOB": ["U0DAVE"]})
    assert t is not None
    record = apply(record, t)
    assert record.extra_approvers == ["U0DAVE", "U0BOB"] and record.extra_seats == {"U0BOB": ["U0DAVE"]}
    assert grant(record, approvers=["U0DAVE", "U0BOB"], seats_of={"U0BOB": ["U0DAVE"]}) is None
    assert authorize(record, "U0BOB", Choice.approve) == "U0DAVE"
    assert authorize(record, "U0DAVE", Choice.approve) is None
    bob = apply(record, vote(record, **who("U0BOB", Choice.approve), seat="U0DAVE"))
    assert _refusal(bob, "U0DAVE") == "delegate_voted"
    dave = apply(record, vote(record, **who("U0DAVE", Choice.approve)))
    assert _refusal(dave, "U0BOB") == "approver_voted"
    assert vote(bob, **who("U0ALICE", Choice.approve)).decision is not None
    # the next level names Bob himself: his own seat from then on, Dave's stays Dave's
    t = escalate(record, now=NOW, level=2, targets=["U0BOB"], approvers=["U0BOB"], seconds=1.0, next_due_ms=None)
    later = apply(record, t)
    assert later.extra_seats == {} and authorize(later, "U0BOB", Choice.approve) is None
    # nor does a stand-in who is an approver the card names take anyone's seat
    alice = apply(make(route=PAIR, kind="approval"),
                  grant(make(route=PAIR, kind="approval"), approvers=["U0DAVE"], seats_of={"U0ALICE": ["U0DAVE"]}))
    assert authorize(alice, "U0ALICE", Choice.approve) is None


def test_people_a_level_brought_in_before_seats_were_kept_hold_their_own() -> None:
    """A record written before `extra_seats` was kept reads as before: everyone a level brought
    in holds their own seat, also when a later level finds the same stand-in again."""
    record = Record.model_validate(make(route=PAIR, kind="approval").model_dump()
                                   | {"extra_approvers": ["U0DAVE", "U0BOB"]})
    assert record.extra_seats == {} and authorize(record, "U0BOB", Choice.approve) is None
    again = grant(record, approvers=["U0DAVE", "U0BOB"], seats_of={"U0BOB": ["U0DAVE"]})
    assert again is None


def test_expire_and_timeout_approval() -> None:
    record = make(kind="approval", route=Route())
    t = expire(record, now=NOW + timedelta(hours=4), reason="No decision in 4h")
    assert t.decision is not None and t.decision.status is Status.expired
    assert t.decision.reason_code == TIMEOUT_CODE and t.update_card and t.final
    assert t.audit == [("expired", "system", {"status": "expired", "reason": "No decision in 4h"})]
    t = expire(record, now=NOW, status=Status.auto_approved, reason="low tier passes")
    assert t.decision is not None and t.decision.approved
    with pytest.raises(AlreadyDecided):
        expire(apply(record, t), now=NOW, reason="again")


def test_remind_counts_and_schedules_the_next() -> None:
    record = make()
    t = remind(record, now=NOW, mentioned=["U0ALICE"], next_due_ms=99)
    assert t.fields == {"reminders": "1"} and not t.update_card
    assert t.schedule == [("remind:r1", 99)]
    assert apply(record, t).reminders == 1


def test_an_option_must_be_one_of_the_question() -> None:
    record = make(kind="question", options=["yes", "no"], route=Route())
    t = vote(record, **who("U0ALICE", Choice.answer), option="no")
    assert t.decision is not None and t.decision.option == "no"
    with pytest.raises(NotAllowed) as e:
        vote(record, **who("U0ALICE", Choice.answer), option="maybe")
    assert e.value.reason == "bad_option"
