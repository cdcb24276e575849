"""Data the previous version left in Redis reads as it meant after an upgrade (found by a review
of the changes that introduced the new forms): trust records of agents whose names hold `%`,
drafts edited when an edited draft was also written into `params`, and approvals of those."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from store.models import Ballot, Change, Choice, Record, Request, Route, params_mark
from store.redis_store import Store
from store.transitions import Transition, vote
from store.trust import member, split_member

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


async def test_a_trust_record_of_an_agent_with_percent_keeps_its_key(store: Store) -> None:
    old = "50%off-bot/refund"  # what the previous version wrote: agent/action, unescaped
    await store.redis.hset(store.trust.k.action(old), mapping={
        "state": "trusted", "pinned": "1", "clean": "9", "approvals": "9", "outcomes": "9"})
    await store.redis.sadd(store.trust.k.index, old)
    state = await store.trust.state("50%off-bot", "refund")
    assert state.pinned and state.trusted  # what intake routes on: still pinned
    assert member("50%off-bot", "refund") == old and member("billing", "refund") == "billing/refund"


def test_members_are_distinct_and_read_back_for_every_odd_agent_name() -> None:
    names = ["a", "a/b", "a%b", "a%2Fb", "a%25b", "%", "/", "%2F", "%25", "a%2fb", "50%off"]
    members = {member(n, "x/y"): n for n in names}
    assert len(members) == len(names)  # no two agents share a record
    for m, n in members.items():
        assert split_member(m) == (n, "x/y")
    assert member("billing", "refund/all") != member("billing/refund", "all")


def _old_edited(quorum: int, votes: list[Ballot] | None = None) -> Record:
    """A pending request whose draft the previous version edited: it wrote the edited draft into
    `params["draft"]` as well as `changes["draft"]`."""
    req = Request(id="r1", agent="mail-bot", action="send_email", summary="Reply to Ana",
                  params={"to": "ana@example.com"}, draft="Hi Ana", editable=["draft"])
    return Record(request=req, route=Route(tier="medium", quorum=quorum), created_at=NOW,
                  params={"to": "ana@example.com", "draft": "Hello Ana"},
                  changes={"draft": Change(before="Hi Ana", after="Hello Ana")}, votes=votes or [], version=3)


def _applied(rec: Record, t: Transition) -> Record:
    upd: dict[str, Any] = {k: json.loads(t.fields[k]) for k in ("params", "changes", "votes") if k in t.fields}
    return Record.model_validate({**rec.model_dump(mode="json"), **upd, "version": rec.version + 1})


def test_a_draft_edited_before_the_upgrade_never_reaches_the_agent_as_a_param() -> None:
    t = vote(_old_edited(quorum=1), user_id="U2", name="b", choice=Choice.approve, now=NOW)
    assert t.decision is not None and t.decision.params == {"to": "ana@example.com"}
    assert t.decision.changes["draft"].after == "Hello Ana"


def test_a_draft_put_back_after_the_upgrade_never_reaches_the_agent_as_a_param() -> None:
    rec = _applied(rec := _old_edited(quorum=2), vote(rec, user_id="U1", name="a", choice=Choice.edit, now=NOW,
                                                      edits={"draft": "Hi Ana"}))
    assert rec.params == {"to": "ana@example.com"} and "draft" not in rec.changes
    t = vote(rec, user_id="U2", name="b", choice=Choice.approve, now=NOW)
    assert t.decision is not None and t.decision.params == {"to": "ana@example.com"}


def test_an_approval_given_before_the_upgrade_still_counts() -> None:
    old_mark = params_mark({"to": "ana@example.com", "draft": "Hello Ana"})  # the previous version's mark
    rec = _old_edited(quorum=2, votes=[Ballot(user_id="U1", name="a", choice=Choice.approve, at=NOW, p=old_mark)])
    assert vote(rec, user_id="U2", name="b", choice=Choice.approve, now=NOW).decision is not None
