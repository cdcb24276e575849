"""Every script is all-or-nothing (issue 10, point 3) and every retried write is idempotent
(point 9): each script is driven into each failure it guards, against a real redis-server."""

from __future__ import annotations

import json

import pytest

from store.errors import AlreadyDecided, Conflict, NotFound
from store.models import Choice, Decision, Request, Review, Route, State, Status, Vote, utcnow
from store.redis_store import GROUP, Accepted, Entry, Store
from store.transitions import vote


def _request(rid: str = "r1", **kw: object) -> Request:
    data: dict[str, object] = {"id": rid, "agent": "billing", "action": "refund", "summary": "Refund $250"}
    data.update(kw)
    return Request.model_validate(data)


async def _read(store: Store, fields: dict[str, str]) -> Entry:
    await store.ensure_group()
    await store.redis.xadd(store.keys.requests, fields)  # type: ignore[arg-type]
    res = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=1)
    i, f = res[0][1][0]
    return Entry(i, {k.encode(): v.encode() for k, v in f.items()})


async def _pending(store: Store) -> int:
    return int((await store.redis.xpending(store.keys.requests, GROUP))["pending"])


async def _accepted(store: Store, req: Request, decision: Decision | None = None) -> str:
    entry = await _read(store, {"request": req.model_dump_json()})
    route = Route(mode="auto") if decision else Route()
    return await store.accept(entry.id, Accepted(req, route, decision, post=decision is None), utcnow())


# ---- accept ---------------------------------------------------------------------------------

async def test_accept_refuses_a_reply_key_that_is_not_a_stream_and_writes_nothing(store: Store) -> None:
    await store.redis.hset("agent:box", "k", "v")
    req = _request(reply_to="agent:box")
    d = Decision(request_id="r1", status=Status.auto_approved, decided_at=utcnow())
    assert await _accepted(store, req, d) == "reply_type:hash"
    assert not await store.exists("r1")
    assert await store.audit_entries() == []
    assert await _pending(store) == 1  # not acknowledged: intake dead-letters it next
    assert await store.redis.xlen(store.keys.decisions) == 0


async def test_accept_redelivered_and_duplicate_write_nothing_more(store: Store) -> None:
    entry = await _read(store, {"request": _request().model_dump_json()})
    acc = Accepted(_request(), Route(), None, post=True)
    assert await store.accept(entry.id, acc, utcnow()) == "accepted"
    before = len(await store.audit_entries())
    assert await store.accept(entry.id, acc, utcnow()) == "redelivered"
    assert len(await store.audit_entries()) == before
    assert await _accepted(store, _request(summary="again")) == "duplicate"
    assert await _pending(store) == 0
    assert (await store.get("r1")).request.summary == "Refund $250"


async def test_accept_clears_the_invalid_marker_of_an_earlier_try(store: Store) -> None:
    await store.redis.set(store.keys.invalid("r1"), "{}")
    assert await _accepted(store, _request()) == "accepted"
    assert not await store.redis.exists(store.keys.invalid("r1"))


# ---- dead letters ---------------------------------------------------------------------------

def _invalid(rid: str) -> Decision:
    return Decision(request_id=rid, status=Status.invalid, reason="bad", decided_at=utcnow())


async def test_dead_letter_to_a_hash_reply_still_dead_letters_and_acks(store: Store) -> None:
    await store.redis.hset("agent:box", "k", "v")
    entry = await _read(store, {"request": "{"})
    verdict = await store.dead_letter(entry, "bad", utcnow(), request_id="x1", decision=_invalid("x1"),
                                      reply_to="agent:box")
    assert verdict == "dead"
    assert await _pending(store) == 0 and await store.redis.xlen(store.keys.dead) == 1
    assert await store.redis.xlen(store.keys.decisions) == 1
    published = [e for e in await store.trail("x1") if e.event == "published"]
    assert published[0].detail["reply_failed"] == "agent:box is a hash, not a stream"
    assert await store.redis.hgetall("agent:box") == {"k": "v"}


async def test_dead_letter_of_a_live_id_publishes_nothing(store: Store) -> None:
    await _accepted(store, _request("live"))
    entry = await _read(store, {"request": "{"})
    verdict = await store.dead_letter(entry, "bad", utcnow(), request_id="live", decision=_invalid("live"),
                                      reply_to="agent:in")
    assert verdict == "dead_live"
    assert await store.redis.xlen(store.keys.decisions) == 0 and not await store.redis.exists("agent:in")
    assert not await store.redis.exists(store.keys.invalid("live"))


async def test_dead_letters_are_capped_by_length_and_age(store: Store) -> None:
    await store.redis.xadd(store.keys.dead, {"x": "1"}, id="1-0")  # a dead letter from 1970
    entry = await _read(store, {"request": "bad"})
    await store.dead_letter(entry, "bad", utcnow(), request_id=entry.id, decision=None, reply_to=None)
    assert "1-0" in [i for i, _ in await store.redis.xrange(store.keys.dead)]  # no age limit given
    entry = await _read(store, {"request": "bad again"})
    await store.dead_letter(entry, "bad", utcnow(), request_id=entry.id, decision=None, reply_to=None,
                            max_age_s=30 * 86400)
    ids = [i for i, _ in await store.redis.xrange(store.keys.dead)]
    assert "1-0" not in ids and len(ids) == 2
    # by length, approximately: Redis trims whole nodes of 100 entries
    for i in range(250):
        entry = await _read(store, {"request": f"more {i}"})
        await store.dead_letter(entry, "bad", utcnow(), request_id=entry.id, decision=None, reply_to=None,
                                max_len=100)
    assert 100 <= await store.redis.xlen(store.keys.dead) < 252


async def test_a_dead_letter_keeps_at_most_32_fields(store: Store) -> None:
    entry = await _read(store, {f"f{i}": "v" for i in range(5000)})
    await store.dead_letter(entry, "bad", utcnow(), request_id=entry.id, decision=None, reply_to=None)
    [(_, dead)] = await store.redis.xrange(store.keys.dead)
    assert dead["truncated"] == "5000 fields, 32 kept" and dead["error"] == "bad"


# ---- apply and review -----------------------------------------------------------------------

async def test_a_reply_key_turned_into_a_hash_does_not_stop_the_decision(store: Store) -> None:
    """Issue 3: Approve still decides, publishes to {prefix}:decisions and queues the card
    update; the failure to reach reply_to is audited."""
    assert await _accepted(store, _request(reply_to="agent:box")) == "accepted"
    await store.redis.hset("agent:box", "k", "v")  # after intake
    rec = await store.get("r1")
    rec = await store.apply(vote(rec, user_id="U0A", name="a", choice=Choice.approve, now=utcnow()), utcnow())
    assert rec.state is State.decided and rec.decision is not None and rec.decision.status is Status.approved
    [(_, published)] = await store.redis.xrange(store.keys.decisions)
    assert json.loads(published["decision"])["status"] == "approved"
    events = {e.event: e.detail for e in await store.trail("r1")}
    assert events["published"]["reply_failed"] == "agent:box is a hash, not a stream"
    assert events["published"]["streams"] == [store.keys.decisions]
    assert "update:r1" in await store.redis.zrange(store.keys.outbox, 0, -1)
    assert await store.redis.hgetall("agent:box") == {"k": "v"}


async def test_apply_guards_write_nothing(store: Store) -> None:
    assert await _accepted(store, _request()) == "accepted"
    rec = await store.get("r1")
    t = vote(rec, user_id="U0A", name="a", choice=Choice.approve, now=utcnow())
    await store.redis.hset(store.keys.request("r1"), "version", 7)  # someone else changed it
    n = len(await store.audit_entries())
    with pytest.raises(Conflict):
        await store.apply(t, utcnow())
    assert len(await store.audit_entries()) == n and (await store.get("r1")).state is State.pending
    await store.redis.hset(store.keys.request("r1"), "version", 0)
    await store.apply(t, utcnow())
    with pytest.raises(AlreadyDecided):
        await store.apply(t, utcnow())
    await store.redis.delete(store.keys.request("r1"))
    with pytest.raises(NotFound):
        await store.apply(t, utcnow())


async def test_review_with_a_hash_reply_key_records_the_verdict(store: Store) -> None:
    d = Decision(request_id="r1", status=Status.auto_approved, decided_at=utcnow())
    assert await _accepted(store, _request(reply_to="agent:box"), d) == "accepted"
    await store.redis.delete("agent:box")
    await store.redis.hset("agent:box", "k", "v")
    rec = await store.get("r1")
    review = Review(verdict="wrong", reason_code="other",
                    by=Vote(user_id="U0A", name="a", choice=Choice.reject, at=utcnow()))
    await store.review(rec, review, json.dumps({"event": "override"}), utcnow())
    assert (await store.get("r1")).review is not None
    [overridden] = [e for e in await store.trail("r1") if e.event == "overridden"]
    # the agent was not told (its reply key is no stream): the trail says so, as for decisions
    assert overridden.detail == {"reason_code": "other", "delivered": False,
                                 "reply_failed": "agent:box is a hash, not a stream"}


async def test_an_override_of_a_request_that_named_no_reply_stream_says_nobody_was_told(store: Store) -> None:
    d = Decision(request_id="r2", status=Status.auto_approved, decided_at=utcnow())
    assert await _accepted(store, _request("r2"), d) == "accepted"
    review = Review(verdict="wrong", reason_code="other",
                    by=Vote(user_id="U0A", name="a", choice=Choice.reject, at=utcnow()))
    await store.review(await store.get("r2"), review, json.dumps({"event": "override"}), utcnow())
    [overridden] = [e for e in await store.trail("r2") if e.event == "overridden"]
    assert overridden.detail == {"reason_code": "other", "delivered": False,
                                 "reply_failed": "the request named no reply_to"}
    ok = Decision(request_id="r3", status=Status.auto_approved, decided_at=utcnow())
    assert await _accepted(store, _request("r3", reply_to="agent:in"), ok) == "accepted"
    await store.review(await store.get("r3"), review, json.dumps({"event": "override"}), utcnow())
    [told] = [e for e in await store.trail("r3") if e.event == "overridden"]
    assert told.detail == {"reason_code": "other", "delivered": True}
    assert [f["message_for"] for _, f in await store.redis.xrange("agent:in") if "message_for" in f] == ["r3"]


# ---- idempotent retries, trimming -----------------------------------------------------------

async def test_a_retried_audit_adds_nothing(store: Store) -> None:
    first = await store.audit("r1", "refused", "U0A", {"why": "x"}, utcnow(), key="k1")
    again = await store.audit("r1", "refused", "U0A", {"why": "x"}, utcnow(), key="k1")
    assert first == again
    assert len(await store.audit_entries()) == 1 and len(await store.trail("r1")) == 1
    await store.audit("r1", "refused", "U0A", {"why": "x"}, utcnow())  # a new call: a new entry
    assert len(await store.trail("r1")) == 2
    s1 = await store.audit_system("policy_changed", "system", {}, utcnow(), key="s1")
    assert s1 == await store.audit_system("policy_changed", "system", {}, utcnow(), key="s1")
    assert len(await store.audit_entries()) == 3


async def test_set_paused_is_idempotent(store: Store) -> None:
    assert await store.set_paused(True, "incident", "U0A", utcnow())
    assert not await store.set_paused(True, "incident", "U0A", utcnow())  # a retry
    assert await store.set_paused(True, "new reason", "U0A", utcnow())
    assert await store.set_paused(False, None, "U0A", utcnow())
    assert not await store.set_paused(False, None, "U0A", utcnow())
    assert [e.event for e in await store.audit_entries()] == ["paused", "paused", "resumed"]
    assert (await store.control()).get("paused") is None


async def test_trim_keeps_every_unread_and_unacknowledged_entry(store: Store) -> None:
    await store.ensure_group()
    ids = [await store.redis.xadd(store.keys.requests, {"request": str(i)}) for i in range(10)]
    rows = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=6)
    read = [i for i, _ in rows[0][1]]
    await store.redis.xack(store.keys.requests, GROUP, *read[:2], *read[3:])  # ids[2] stays pending
    assert await store.trim_requests() == 2
    left = [i for i, _ in await store.redis.xrange(store.keys.requests)]
    assert left == ids[2:]
    await store.redis.xack(store.keys.requests, GROUP, read[2])
    await store.trim_requests()
    assert [i for i, _ in await store.redis.xrange(store.keys.requests)] == ids[5:]  # last read kept, unread kept
    rest = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"})
    assert [i for i, _ in rest[0][1]] == ids[6:]


async def test_an_entry_deleted_while_pending_does_not_hold_back_trimming(store: Store, redis_url: str) -> None:
    from store.stream import RequestStream

    await store.ensure_group()
    first = await store.redis.xadd(store.keys.requests, {"request": "1"})
    await store.redis.xadd(store.keys.requests, {"request": "2"})
    stream = RequestStream(redis_url, store.keys.requests, block_ms=100)
    try:
        assert len(await stream.read("t", ">")) == 2
        await store.redis.xdel(store.keys.requests, first)
        [entry] = await stream.read("t", "0")  # the deleted one is acknowledged, not returned
        assert entry.field("request") == b"2"
        assert await _pending(store) == 1
    finally:
        await stream.close()
