"""What a request keeps in Redis (issue 13, memory): nothing stored twice that can be derived,
and every reader still finds what it read before, from records written before the change too."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.evidence.canonical import chain_hashes
from bot.evidence.sealer import Sealer
from bot.evidence.signing import NO_KEY, Signer
from bot.evidence.verify import verify_live
from store.backlog import BacklogStore
from store.chain import ChainStore, packed_hash, seal_hash
from store.chain_models import GENESIS
from store.models import Choice, Decision, Request, Route, State, Status, stored_route, utcnow
from store.redis_store import GROUP, Accepted, Intake, Store
from store.transitions import vote

REPLY = "{hitl}:results:agent"
RICH = {
    "id": "rich-1", "agent": "billing", "action": "refund", "summary": "Refund $250", "kind": "approval",
    "params": {"order": "4711", "amount": 250, "note": ""}, "editable": ["amount"], "confidence": 0.0,
    "risk": {"amount": 0, "currency": "USD", "reversible": False, "tags": []},
    "context": {"conversation": ["hi", {"role": "", "text": "x"}, {"role": "agent", "text": "y"}],
                "customer": {}, "actions_attempted": [{"action": "look", "result": "", "ok": None}]},
    "options": ["a", {"value": "b", "label": "B", "style": "danger"}],
    "metadata": {"session_id": "s", "tool_calls": 0, "custom": {"nested": [1, None]}}, "reply_to": REPLY,
}


async def _entry(store: Store, req: Request) -> str:
    await store.ensure_group()
    await store.redis.xadd(store.keys.requests, {"request": req.model_dump_json()})
    res = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=1)
    return str(res[0][1][0][0])


async def _auto(store: Store, rid: str, **kw: object) -> Request:
    req = Request.model_validate({"id": rid, "agent": "billing", "action": "lookup", "summary": "Look up",
                                  "reply_to": REPLY, **kw})
    route = Route(mode="auto", tier="low")
    d = Decision(request_id=rid, status=Status.auto_approved, params=req.params, decided_at=utcnow(), route=route)
    assert await store.accept(await _entry(store, req), Accepted(req, route, d, post=False), utcnow()) == "accepted"
    return req


async def test_a_request_decided_at_intake_keeps_one_record_and_no_trail_list(store: Store) -> None:
    await _auto(store, "a1", params={"order": 1})
    raw = await store.redis.hgetall(store.keys.request("a1"))
    assert set(raw) == {"request", "state", "decision", "intake"}
    assert raw["state"] == "decided"
    assert json.loads(raw["decision"])["status"] == "auto_approved"  # `HGET decision` stays the public read
    assert not await store.redis.exists(store.keys.trail("a1"))
    events = await store.trail("a1")
    assert [e.event for e in events] == ["received", "routed", "decided", "published"]
    intake = Intake.parse(raw["intake"])
    assert intake.trail == (events[0].entry_id, events[-1].entry_id)
    rec = await store.get("a1")
    assert rec.state is State.decided and rec.version == 0 and rec.params == {"order": 1}
    assert rec.entry_id == intake.entry_id == events[0].detail["entry_id"]
    assert int(rec.created_at.timestamp() * 1000) == intake.created_ms


async def test_the_stored_request_leaves_defaults_out_and_reads_back_the_same(store: Store) -> None:
    req = Request.model_validate(RICH)
    route = Route()
    assert await store.accept(await _entry(store, req), Accepted(req, route, None, post=True), utcnow()) == "accepted"
    stored = await store.redis.hget(store.keys.request("rich-1"), "request")
    assert '"kind"' not in stored and '"role":""' not in stored and '"alternatives"' not in stored
    assert json.loads(stored)["reply_to"] == REPLY  # what the SDK reads from it
    assert Request.model_validate_json(stored) == req
    assert (await store.get("rich-1")).request == req


async def test_later_steps_extend_the_trail_in_order(store: Store) -> None:
    req = Request.model_validate({"id": "p1", "agent": "billing", "action": "refund", "summary": "Refund"})
    assert await store.accept(await _entry(store, req), Accepted(req, Route(), None, post=True), utcnow()) == "accepted"
    rec = await store.get("p1")
    assert rec.version == 0 and rec.state is State.pending
    await store.audit("p1", "posted", "system", {"channel": "#approvals"}, utcnow())
    await store.apply(vote(rec, user_id="U0A", name="a", choice=Choice.approve, now=utcnow()), utcnow())
    events = [e.event for e in await store.trail("p1")]
    assert events[:3] == ["received", "routed", "posted"]
    assert events[-2:] == ["decided", "published"]
    ids = [e.entry_id for e in await store.trail("p1")]
    assert ids == sorted(ids, key=lambda i: tuple(int(x) for x in str(i).split("-")))
    assert "decided_at" not in await store.redis.hgetall(store.keys.request("p1"))


async def test_a_trail_listed_before_the_record_comes_first(store: Store) -> None:
    """An invalid first try of an id is audited on its trail list; the valid retry's entries follow."""
    await store.audit("t1", "invalid", "system", {"error": "bad"}, utcnow())
    await _auto(store, "t1")
    assert [e.event for e in await store.trail("t1")] == ["invalid", "received", "routed", "decided", "published"]


async def test_a_record_written_before_the_change_reads_as_before(store: Store) -> None:
    """Records of earlier versions: `version`, `decided_at`, the full request JSON, every audit
    id on the trail list and no `trail` field."""
    req = Request.model_validate({"id": "old-1", "agent": "billing", "action": "lookup", "summary": "Look up"})
    route = Route(mode="auto")
    d = Decision(request_id="old-1", status=Status.auto_approved, decided_at=utcnow(), route=route)
    ids = [await store.redis.xadd(store.keys.audit, {"event": e, "request_id": "old-1", "actor": "policy",
                                                     "at": utcnow().isoformat(), "detail": "{}"})
           for e in ("received", "routed", "decided", "published")]
    await store.redis.rpush(store.keys.trail("old-1"), *ids)
    await store.redis.hset(store.keys.request("old-1"), mapping={
        "request": req.model_dump_json(exclude_none=True), "state": "decided", "version": "0",
        "created_at": "1700000000000", "entry_id": "1700000000000-0", "decision": d.model_dump_json(),
        "decided_at": "1700000000001"})
    rec = await store.get("old-1")
    assert rec.request == req and rec.decision == d and rec.entry_id == "1700000000000-0"
    assert [e.event for e in await store.trail("old-1")] == ["received", "routed", "decided", "published"]


def test_the_intake_field_reads_both_forms_of_its_range() -> None:
    same = Intake.parse("1700000000123 1699999999999-3 1700000000000-4 7")
    assert (same.created_ms, same.entry_id) == (1700000000123, "1699999999999-3")
    assert same.trail == ("1700000000000-4", "1700000000000-7")
    across = Intake.parse("1700000000123 1699999999999-3 1700000000000-4 1700000000001-0")
    assert across.trail == ("1700000000000-4", "1700000000001-0")


# ---- seals: base64 since issue 13, hex before; a chain holding both verifies ------------------

async def test_a_chain_sealed_in_hex_then_in_base64_verifies_and_still_finds_tampering(store: Store) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    chain = ChainStore(store.redis, store.keys.prefix)
    for i in range(10):
        await store.audit(f"r{i % 3}", "clicked", f"U{i}", {"choice": "approve", "i": i}, utcnow())
    rows = await store.redis.xrange(store.keys.audit)
    # the first six sealed as the sealer did before: 64 hex digits per seal and in the head
    old = chain_hashes(GENESIS, 1, rows[:6])
    for seq, ((entry_id, _), h) in enumerate(zip(rows[:6], old, strict=True), 1):
        await store.redis.xadd(chain.k.chain, {"seq": seq, "hash": h}, id=entry_id)
    await store.redis.hset(chain.k.head, mapping={"seq": 6, "hash": old[-1], "id": rows[5][0]})
    sealer = Sealer(chain, signer)
    assert await sealer.seal_all() == 4
    assert await sealer.checkpoint(force=True) is not None
    stored = [f["hash"] for _, f in await store.redis.xrange(chain.k.chain)]
    assert [len(h) for h in stored] == [64] * 6 + [43] * 4
    # the head stays in hex: a sealer of the version before (a rolling restart) chains on it and
    # signs it into a checkpoint as it always did, so new verification never calls that rewritten
    head = await store.redis.hgetall(chain.k.head)
    assert head["hash"] == chain_hashes(GENESIS, 1, rows)[-1] and int(head["seq"]) == 10
    links = await chain.links([i for i, _ in rows])
    assert [link.hash if link else None for link in links] == chain_hashes(GENESIS, 1, rows)
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert (r.problems, r.entries, r.signed_through, r.exit_code) == ([], 10, 10, 0)
    for n in (2, 8):  # an entry changed under an old seal and under a new one
        rows[n][1]["actor"] = "UEVE"
    await store.redis.delete(store.keys.audit)
    for entry_id, fields in rows:
        await store.redis.xadd(store.keys.audit, fields, id=entry_id)
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert [(p.kind, p.seq) for p in r.problems] == [("modified", 3), ("modified", 9)]


def test_seal_hashes_read_in_both_forms() -> None:
    h = "9f" * 32
    assert len(packed_hash(h)) == 43 and seal_hash(packed_hash(h)) == h
    assert seal_hash(h) == h
    assert seal_hash("not a hash") == "not a hash"  # a damaged seal is a mismatch, not a crash
    assert seal_hash("!" * 43) == "!" * 43


def test_a_stored_route_leaves_defaults_out_keeps_what_raw_readers_use_and_reads_back_the_same() -> None:
    default = Route()
    assert json.loads(stored_route(default)) == {"mode": "approve", "tier": "medium", "channel": "#approvals"}
    assert Route.model_validate_json(stored_route(default)) == default
    rich = Route.model_validate({
        "mode": "escalate", "tier": "high", "rules": ["amount"], "reasons": ["Amount over $500 (“big”)"],
        "sampled": True, "paused": True, "channel": "#approvals-high", "approvers": ["U1", "S2"], "quorum": 2,
        "timeout_s": 3600, "group": "refund", "batch_window_s": 10, "batch_max": 5,
        "grant": {"id": "g1", "by": ["U1"], "expires_at": "2026-01-05T12:00:00+00:00"}, "grant_offer_s": 3600,
        "delegates": {"U1": "U3"}, "canary": True})
    assert Route.model_validate_json(stored_route(rich)) == rich
    assert len(stored_route(rich)) < len(rich.model_dump_json())


async def test_a_pending_record_keeps_a_compact_route_that_the_backlog_and_stats_read(store: Store) -> None:
    req = Request.model_validate({"id": "c1", "agent": "billing", "action": "refund", "summary": "Refund"})
    route = Route(tier="high", rules=["amount"], timeout_s=600)
    assert await store.accept(await _entry(store, req), Accepted(req, route, None, post=True), utcnow()) == "accepted"
    raw = await store.redis.hget(store.keys.request("c1"), "route")
    assert json.loads(raw)["mode"] == "approve" and '"sampled"' not in raw
    assert (await store.get("c1")).route == route
    assert await BacklogStore(store).labels(["c1"]) == {"c1": ("refund", "high")}
