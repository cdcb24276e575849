"""No entry can stop intake (issue 10, points 1, 2, 4, 5): each poison class is dead-lettered
with a reason, and a valid request pushed right after it still gets its record."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bot.intake import Intake
from bot.routing import SingleChannelRouter
from store.models import Choice, Request, Route, State, Status, utcnow
from store.redis_store import GROUP, Entry, Store
from store.transitions import vote
from tests.util import eventually, started

ROUTER = SingleChannelRouter()
GOOD = {"agent": "billing", "action": "refund", "summary": "Refund $250"}


@pytest.fixture
async def intake(store: Store, redis_url: str) -> AsyncIterator[Intake]:
    async with started(Intake(store, lambda: ROUTER, redis_url=redis_url, consumer="c1", claim_idle_s=0.2,
                              max_deliveries=3)) as i:
        yield i


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client that returns bytes: dead letters may hold bytes that are not UTF-8."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    await client.aclose()


def _nested(depth: int) -> str:
    """A request nested `depth` levels (the request object and params are two of them)."""
    inner = "[" * (depth - 2) + "1" + "]" * (depth - 2)
    return json.dumps({**GOOD, "params": {"x": 0}}).replace('{"x": 0}', '{"x": ' + inner + "}")


def _text(value: object) -> bytes:
    return (value if isinstance(value, str) else json.dumps(value)).encode()


POISON: list[tuple[str, dict[bytes, bytes], str]] = [
    ("non-utf8", {b"request": b'\xff\xfe{"agent": "a"}'}, "not UTF-8 text (byte 0"),
    ("non-utf8 field name", {b"\xff": b"x"}, "no 'request' field (fields: \\xff)"),
    ("depth 33", {b"request": _text(_nested(33))}, "nested more than 32 levels"),
    ("depth 32 is fine but has an unknown field", {b"request": _text(_nested(32)).replace(b'"agent"', b'"agnt"')},
     "agent: Field required"),
    ("depth 200", {b"request": _text(_nested(200))}, "nested more than 32 levels"),
    ("depth 255", {b"request": _text(_nested(255))}, "nested more than 32 levels"),
    ("depth 1000", {b"request": _text(_nested(1000))}, "nested more than 32 levels"),
    ("depth 30000", {b"request": _text(_nested(30000))},
     "nested more than 32 levels"),
    ("integer of 5000 digits", {b"request": _text({**GOOD, "params": {"n": 0}}).replace(b"0}", b"9" * 5000 + b"}")},
     "has 5000 digits"),
    ("integer past 1e15", {b"request": _text({**GOOD, "params": {"n": 10**15 + 1}})}, "1000000000000001 is out of range"),
    ("NaN", {b"request": _text({**GOOD, "params": {"n": float("nan")}})}, "NaN is not a number JSON allows"),
    ("Infinity", {b"request": _text({**GOOD, "confidence": float("inf")})}, "Infinity is not a number"),
    ("-Infinity", {b"request": _text({**GOOD, "params": {"n": float("-inf")}})}, "-Infinity is not a number"),
    ("float overflowing to inf", {b"request": _text(GOOD).replace(b"}", b', "params": {"n": 1e400}}')},
     "inf is not a finite number"),
    ("huge float", {b"request": _text({**GOOD, "risk": {"amount": 1e30}})}, "1e+30 is out of range"),
    ("oversized", {b"request": _text({**GOOD, "summary": "x" * 70_000})}, "the limit is 65536"),
    ("missing field", {b"payload": _text(GOOD)}, "no 'request' field (fields: payload)"),
    ("wrong field type", {b"request": _text({**GOOD, "summary": 5})}, "summary: Input should be a valid string"),
    ("not an object", {b"request": b"5"}, "must be a JSON object, not int"),
    ("many fields", {b"request": _text(GOOD), **{f"f{i}".encode(): b"v" for i in range(5000)}},
     "entry has 5001 fields"),
    ("id with a colon", {b"request": _text({**GOOD, "id": "x:trail"})}, "id: String should match pattern"),
    ("id too long", {b"request": _text({**GOOD, "id": "a" * 129})}, "id: String should have at most 128"),
    ("id with half a surrogate pair", {b"request": _text({**GOOD, "id": "p\ud800"})},
     "holds \\ud800, half of a surrogate pair"),
    ("summary with half a surrogate pair", {b"request": _text({**GOOD, "summary": "x\udfff"})},
     "holds \\udfff, half of a surrogate pair"),
    ("reply_to with half a surrogate pair", {b"request": _text({**GOOD, "reply_to": "ag:\udc00"})},
     "half of a surrogate pair"),
]


@pytest.mark.parametrize(("case", "fields", "error"), POISON, ids=[c[0] for c in POISON])
async def test_a_poison_entry_is_dead_lettered_and_intake_goes_on(
    store: Store, intake: Intake, raw: aioredis.Redis, case: str, fields: dict[bytes, bytes], error: str
) -> None:
    entry_id = (await raw.xadd(store.keys.requests, fields)).decode()  # type: ignore[arg-type]
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "after"})})
    rec = await eventually(lambda: _record(store, "after"), what="the valid request after the poison")
    assert rec.state is State.pending
    [(_, dead)] = await raw.xrange(store.keys.dead)
    assert error in dead[b"error"].decode(), dead[b"error"]
    assert dead[b"entry_id"].decode() == entry_id
    if len(fields) <= 32 and sum(len(v) for v in fields.values()) < 128 * 1024:
        for name, value in fields.items():  # the raw entry is kept byte for byte
            assert dead[name] == value
    else:
        assert b"truncated" in dead
    assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0


async def _record(store: Store, rid: str):  # type: ignore[no-untyped-def]
    return await store.get(rid) if await store.exists(rid) else None


@pytest.mark.parametrize("order", ["x first", "x:trail first"])
async def test_an_id_naming_another_requests_key_is_refused(store: Store, intake: Intake, order: str) -> None:
    """Issue 2: `x:trail` was a valid id and the name of x's trail; now it is not an id at all,
    and x is untouched whichever arrives first."""
    ids = ["x", "x:trail"] if order == "x first" else ["x:trail", "x"]
    for rid in ids:
        await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": rid})})
    rec = await eventually(lambda: _record(store, "x"), what="record x")
    [(_, dead)] = await eventually(lambda: store.redis.xrange(store.keys.dead), what="dead letter")
    assert "id: String should match pattern" in dead["error"]
    assert rec.state is State.pending
    assert [e.event for e in await store.trail("x")] == ["received", "routed"]
    assert await store.pending_ids() == ["x"] and await store.outbox_depth() == 1
    assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0


async def test_an_agent_that_sent_an_unusable_id_still_gets_its_answer(store: Store, intake: Intake) -> None:
    """Nobody waits for ever: the invalid decision names the id the agent sent (its keys do not)."""
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "x:trail", "reply_to": "ag:in"})})
    [(_, reply)] = await eventually(lambda: store.redis.xrange("ag:in"), what="answer on reply_to")
    assert reply["request_id"] == "x:trail" and json.loads(reply["decision"])["status"] == "invalid"
    assert not await store.redis.exists(store.keys.invalid("x:trail"))
    assert not [k for k in await store.redis.keys("*x:trail*")]


@pytest.mark.cluster_too
async def test_intake_trims_what_it_has_acknowledged(store: Store, redis_url: str) -> None:
    """Issue 9: the requests stream does not grow for ever."""
    for n in range(20):
        await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": f"t{n}"})})
    async with started(Intake(store, lambda: ROUTER, redis_url=redis_url, consumer="c1", trim_every_s=0.05)):
        await eventually(lambda: store.exists("t19"), what="all accepted")
        await eventually(lambda: _shorter(store, 2), what="the stream trimmed")
        assert await store.pending_count() == 20


async def _shorter(store: Store, n: int) -> bool:
    return int(await store.redis.xlen(store.keys.requests)) < n


@pytest.mark.parametrize("suffix", [".trail", "-trail", "_trail", ".items", "-invalid", ".dead"])
async def test_ids_shaped_like_derived_keys_are_separate_requests(
    store: Store, intake: Intake, suffix: str
) -> None:
    """Issue 2: `X` and an id shaped like one of X's derived keys are two requests, in either order."""
    for first, second in (("x", "x" + suffix), ("y" + suffix, "y")):
        await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": first})})
        await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": second})})
        for rid in (first, second):
            rec = await eventually(lambda rid=rid: _record(store, rid), what=f"record {rid}")  # type: ignore[misc]
            assert rec.state is State.pending and rec.request.id == rid
            assert [e.event for e in await store.trail(rid)] == ["received", "routed"]
    assert not await store.redis.xlen(store.keys.dead)
    assert await store.pending_count() == 4


async def test_an_invalid_entry_reusing_a_live_id_publishes_nothing(store: Store, intake: Intake) -> None:
    """Issue 4: the dead letter of a bad entry must not decide a live request."""
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "live", "reply_to": "ag:in"})})
    await eventually(lambda: _record(store, "live"), what="live record")
    await store.redis.xadd(store.keys.requests, {"request": json.dumps(
        {"agent": "a", "action": "b", "id": "live", "confidence": 7, "summary": "s", "reply_to": "ag:in"})})
    await eventually(lambda: store.redis.xlen(store.keys.dead), what="dead letter")
    assert await store.redis.xlen(store.keys.decisions) == 0
    assert await store.redis.xlen("ag:in") == 0
    assert not await store.redis.exists(store.keys.invalid("live"))
    assert (await store.get("live")).state is State.pending
    assert "invalid" in [e.event for e in await store.trail("live")]


async def test_a_valid_retry_after_an_invalid_try_wins(store: Store, intake: Intake) -> None:
    """Issue 4: the 7-day invalid marker no longer answers once the id has a record."""
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "retry", "confidence": 7})})
    await eventually(lambda: store.redis.exists(store.keys.invalid("retry")), what="invalid marker")
    assert (await intake_client_decision(store, "retry")) == Status.invalid
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "retry"})})
    rec = await eventually(lambda: _record(store, "retry"), what="retry accepted")
    assert rec.state is State.pending
    assert not await store.redis.exists(store.keys.invalid("retry"))
    assert await intake_client_decision(store, "retry") is None


async def intake_client_decision(store: Store, rid: str) -> Status | None:
    """What the agent's `decision(id)` reads: the record's decision, else the invalid marker."""
    from bot.client import HitlClient

    client = HitlClient(store.redis, store.redis, prefix=store.keys.prefix)
    d = await client.decision(rid)
    return d.status if d else None


async def test_a_reply_to_naming_a_hash_is_invalid_at_intake(store: Store, intake: Intake) -> None:
    """Issue 3: a reply_to that exists and is not a stream is refused before anything is written."""
    await store.redis.hset("agent:box", "k", "v")
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "h1", "reply_to": "agent:box"})})
    [(_, dead)] = await eventually(lambda: store.redis.xrange(store.keys.dead), what="dead letter")
    assert "reply_to 'agent:box' is an existing hash key, not a stream" in dead["error"]
    assert not await store.exists("h1")
    assert await store.redis.hgetall("agent:box") == {"k": "v"}
    assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0


class _Breaks(SingleChannelRouter):
    """A router with a bug that only one request meets."""

    def route(self, request: Request, *, first_use: bool = False, paused: bool = False) -> Route:
        if request.summary == "boom":
            raise RuntimeError("a bug met on this request")
        return super().route(request, first_use=first_use, paused=paused)


class _DeadLetterFailsOnce(Store):
    """A store whose first dead letter is refused (as Redis could refuse a write)."""

    failed = False

    async def dead_letter(self, entry: Entry, error: str, *args: Any, **kw: Any) -> str:
        if not self.failed:
            self.failed = True
            raise ResponseError("OOM command not allowed when used memory > 'maxmemory'")
        return await super().dead_letter(entry, error, *args, **kw)


async def test_a_bug_met_on_one_entry_dead_letters_it_at_once(store: Store, redis_url: str) -> None:
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "b", "summary": "boom"})})
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "after"})})
    async with started(Intake(store, lambda: _Breaks(), redis_url=redis_url, consumer="c1")) as i:
        await eventually(lambda: _record(store, "after"), what="the request after the bad one")
        [(_, dead)] = await eventually(lambda: store.redis.xrange(store.keys.dead), what="dead letter")
        assert dead["error"] == "internal error while processing: RuntimeError: a bug met on this request"
        assert i.running


async def test_when_even_the_dead_letter_fails_the_bytes_are_kept_as_base64(redis_url: str) -> None:
    store = _DeadLetterFailsOnce.from_url(redis_url)
    i = Intake(store, lambda: ROUTER, redis_url=redis_url, consumer="c1")
    raw = {b"request": b"\xff not json", b"other": b"\x00\x01"}
    try:
        await store.redis.xadd(store.keys.requests, raw)  # type: ignore[arg-type]
        await store.ensure_group()
        [entry] = await i.stream.read("c1", ">")
        await i._process([entry])
        [(_, dead)] = await store.redis.xrange(store.keys.dead)
        assert dead["error"].startswith("request is not UTF-8 text (byte 0") and "the dead letter failed: " \
            "ResponseError: OOM" in dead["error"]
        pairs = json.loads(base64.b64decode(dead["raw_base64"]))
        assert {base64.b64decode(k): base64.b64decode(v) for k, v in pairs} == raw
        assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0
    finally:
        await i.close()
        await store.close()


@pytest.mark.parametrize(("case", "fields"), [
    ("an integer past 1e15", {"params": {"snowflake": 1234567890123456789}}),
    ("NaN", {"params": {"n": float("nan")}}),
    ("nesting 40 deep", {"params": json.loads(_nested(40))["params"]}),
    ("70 KB", {"summary": "x" * 70_000}),
    ("half a surrogate pair", {"summary": "x\ud800"}),
])
async def test_an_entry_refused_for_its_bounds_still_answers_its_agent(store: Store, intake: Intake,
                                                                       case: str, fields: dict[str, Any]) -> None:
    """The dead letter reads the id and reply_to of an entry the bounds refused (it used to parse
    it with the same bounds, find nothing, and leave the agent waiting for ever)."""
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "oob", "reply_to": "ag:oob",
                                                                        **fields})})
    [(_, reply)] = await eventually(lambda: store.redis.xrange("ag:oob"), what=f"the answer to {case}")
    decision = json.loads(reply["decision"])
    assert reply["request_id"] == "oob" and decision["status"] == "invalid"
    assert decision["reason"].startswith(("request is out of bounds", "request is "))
    assert await store.redis.exists(store.keys.invalid("oob"))


async def test_a_batch_holding_an_unanswerable_entry_is_accepted_around_it(store: Store, redis_url: str) -> None:
    """An id that cannot even be echoed back (half a surrogate pair) used to make the dead letter
    itself raise: intake stopped for everyone, re-reading the entry for ever. Now the entries
    before and after it are accepted, it is dead-lettered under its entry id, and nothing stays
    pending."""
    # pushed before intake starts, so its first read takes all three
    await store.ensure_group()
    for body in ({**GOOD, "id": "ok0", "reply_to": "ag:0"}, {**GOOD, "id": "p\ud800", "reply_to": "ag:p\ud800"},
                 {**GOOD, "id": "ok1", "reply_to": "ag:1"}):
        await store.redis.xadd(store.keys.requests, {"request": json.dumps(body)})
    async with started(Intake(store, lambda: ROUTER, redis_url=redis_url, consumer="c1", claim_idle_s=0.2,
                              max_deliveries=3)) as i:
        await eventually(lambda: _record(store, "ok1"), what="the request after it")
        assert await _record(store, "ok0") is not None and i.running
        [(_, dead)] = await eventually(lambda: store.redis.xrange(store.keys.dead), what="its dead letter")
        assert "surrogate" in dead["error"]
        assert await store.redis.xlen("ag:0") == 0 and await store.redis.xlen("ag:1") == 0
        assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0


async def test_a_malformed_retry_read_in_one_batch_with_its_valid_first_try_answers_nothing(
        store: Store, redis_url: str) -> None:
    """Entries of one read are handled in stream order: the valid X is stored before the malformed
    retry of X is dead-lettered, which then finds X live and publishes nothing (it used to publish
    `invalid` for X while X went on to a card)."""
    await store.ensure_group()
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "X", "reply_to": "ag:x"})})
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "X", "reply_to": "ag:x",
                                                                        "confidence": 7})})
    async with started(Intake(store, lambda: ROUTER, redis_url=redis_url, consumer="c1", claim_idle_s=0.2,
                              max_deliveries=3)):
        await eventually(lambda: store.redis.xlen(store.keys.dead), what="the retry's dead letter")
        assert (await store.get("X")).state is State.pending
        assert await store.redis.xlen("ag:x") == 0 and await store.redis.xlen(store.keys.decisions) == 0
        assert not await store.redis.exists(store.keys.invalid("X"))


async def test_an_id_another_agent_holds_is_refused_and_answered_on_its_own_stream(store: Store, intake: Intake) -> None:
    """The same id is the same request only for the same agent and action: another agent's entry
    under a live id used to be acknowledged as a 'duplicate' and dropped, its body kept nowhere
    and its agent told nothing (reading the id, it found the first agent's decision)."""
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "shared", "reply_to": "ag:a"})})
    await eventually(lambda: _record(store, "shared"), what="the first agent's request")
    other = {"agent": "ops", "action": "drop_table", "summary": "Drop the orders table", "id": "shared",
             "reply_to": "ag:b"}
    await store.redis.xadd(store.keys.requests, {"request": json.dumps(other)})
    [(_, reply)] = await eventually(lambda: store.redis.xrange("ag:b"), what="the second agent's answer")
    decision = json.loads(reply["decision"])
    assert reply["request_id"] == "shared" and decision["status"] == "invalid"
    assert "id 'shared' is taken by another request (billing: refund)" in decision["reason"]
    [(_, dead)] = await store.redis.xrange(store.keys.dead)
    assert dead["error"] == decision["reason"] and json.loads(dead["request"]) == other
    # the first agent's request is untouched, and nothing answers it
    rec = await store.get("shared")
    assert rec.state is State.pending and rec.request.agent == "billing"
    assert await store.redis.xlen("ag:a") == 0 and await store.redis.xlen(store.keys.decisions) == 0
    assert not await store.redis.exists(store.keys.invalid("shared"))
    assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0


async def test_another_agent_naming_the_holders_reply_stream_gets_nothing_there(store: Store, intake: Intake) -> None:
    """The refusal never lands where the id's holder reads: it would take it for its own answer."""
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "held", "reply_to": "ag:a"})})
    await eventually(lambda: _record(store, "held"), what="the holder's request")
    await store.redis.xadd(store.keys.requests, {"request": json.dumps(
        {"agent": "ops", "action": "refund", "summary": "s", "id": "held", "reply_to": "ag:a"})})
    [(_, dead)] = await eventually(lambda: store.redis.xrange(store.keys.dead), what="the dead letter")
    assert "is taken by another request" in dead["error"]
    assert await store.redis.xlen("ag:a") == 0 and await store.redis.xlen(store.keys.decisions) == 0
    assert (await store.get("held")).state is State.pending


async def test_an_entry_sending_request_twice_is_refused_and_keeps_both(store: Store, intake: Intake,
                                                                         raw: aioredis.Redis) -> None:
    """Redis keeps every pair of an entry, names repeated or not; intake used to read the entry
    as a dict, accept the last `request` and drop the first without a trace (its dead letter,
    too, kept only the last one)."""
    first, second = json.dumps({**GOOD, "id": "one"}).encode(), json.dumps({**GOOD, "id": "two"}).encode()
    entry_id = (await raw.execute_command("XADD", store.keys.requests, "*", "request", first,
                                          "request", second, "note", "x")).decode()
    await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "after"})})
    await eventually(lambda: _record(store, "after"), what="the valid request after it")
    raw.set_response_callback("XRANGE", lambda r, **_: r)  # every pair as stored, repeated names too
    [(_, dead)] = await raw.xrange(store.keys.dead)
    pairs = dict(zip(dead[::2], dead[1::2], strict=True))
    assert pairs[b"error"] == b"entry has 2 'request' fields; send one", pairs[b"error"]
    assert pairs[b"entry_id"].decode() == entry_id
    assert [v for k, v in zip(dead[::2], dead[1::2], strict=True) if k == b"request"] == [first, second]
    assert not await store.exists("one") and not await store.exists("two")
    assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0


async def test_an_entrys_own_error_and_entry_id_fields_never_stand_for_the_bots(store: Store, intake: Intake) -> None:
    """A dead letter holds the entry's own fields next to the bot's `error`, `entry_id` and `at`;
    the entry's came last, so a reader of the dead letter (the REST API's submit, an operator's
    script: a field name read once) took an agent's `error` for the reason and its `entry_id` for
    the entry's, which let one entry answer for another's refusal."""
    from store.api_requests import ApiStore

    victim = await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "v", "confidence": 7})})
    forged = await store.redis.xadd(store.keys.requests, {"request": "{not json", "error": "all fine, ignore",
                                                          "entry_id": victim, "at": "never"})
    await eventually(lambda: _dead_count(store, 2), what="both dead letters")
    api = ApiStore(store)
    assert "confidence" in (await api.dead_reason(str(victim)) or "")
    assert (await api.dead_reason(str(forged)) or "").startswith("request is not valid JSON")
    for _, dead in await store.redis.xrange(store.keys.dead):
        assert dead["error"] != "all fine, ignore" and dead["at"] != "never"


async def _dead_count(store: Store, n: int) -> bool:
    return int(await store.redis.xlen(store.keys.dead)) >= n


async def test_someone_elses_malformed_entry_under_my_id_is_not_my_answer(store: Store, redis_url: str) -> None:
    """A malformed entry naming id X waits in the queue; an agent then asks under X and waits. The
    bot refuses the first entry and publishes that refusal under X: the agent's client must pass
    over it (it refuses another entry, `entry_id`) and wait for its own request, which people decide."""
    from hitl import AsyncClient

    bad = await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, "id": "X-1", "confidence": 5})})

    async def blocked_in_xread() -> bool:
        return any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in await store.redis.client_list())

    async with AsyncClient.from_url(redis_url, prefix=store.keys.prefix, agent="billing") as client:
        asking = asyncio.create_task(client.ask(**{k: v for k, v in GOOD.items() if k != "agent"}, id="X-1",
                                                timeout=20))
        await eventually(blocked_in_xread, what="the agent waiting on its streams")
        async with started(Intake(store, lambda: ROUTER, redis_url=redis_url, consumer="c1")):
            await eventually(lambda: store.exists("X-1"), what="the agent's own request stored")
            published = await store.redis.xrange(store.keys.decisions)
            assert [(f["request_id"], json.loads(f["decision"])["status"], f["entry_id"]) for _, f in published] == [
                ("X-1", "invalid", bad)]
            rec = await store.get("X-1")
            assert rec.state == State.pending
            await asyncio.sleep(0.2)  # time for the client to read what was published (and wrongly return)
            assert not asking.done()
            await store.apply(vote(rec, user_id="U0ALICE", name="alice", choice=Choice.approve, now=utcnow()), utcnow())
            assert (await asking).status == Status.approved
