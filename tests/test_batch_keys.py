"""Every key a script touches arrives in KEYS (issue 10, point 9), batches included.

`join_batch.lua` cannot name the open batch's item records itself: the store reads them
first and the script checks that read still holds (optimistic, like a record's version),
asking for a new read when another join changed the batch. These tests drive that check,
concurrent joins against a real redis-server, and prove with a Redis ACL that the batch
scripts touch no key they were not given.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from store.models import Choice, Record, Request, Route, State, utcnow
from store.redis_store import GROUP, Accepted, Store
from store.transitions import vote

NOW_MS = 1_700_000_000_000


def _request(rid: str) -> Request:
    return Request.model_validate({"id": rid, "agent": "billing", "action": "refund", "summary": f"Refund {rid}"})


async def _accepted(store: Store, rid: str, group: str = "g") -> Record:
    await store.ensure_group()
    req = _request(rid)
    await store.redis.xadd(store.keys.requests, {"request": req.model_dump_json()})
    res = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=1)
    entry = str(res[0][1][0][0])
    route = Route(group=group, batch_window_s=600, batch_max=5)
    assert await store.accept(entry, Accepted(req, route, None, post=True), utcnow()) == "accepted"
    return await store.get(rid)


async def _decide(store: Store, rid: str) -> None:
    rec = await store.get(rid)
    await store.apply(vote(rec, user_id="U0A", name="a", choice=Choice.reject, now=utcnow()), utcnow())
    assert (await store.get(rid)).state is State.decided


async def _items(store: Store, bid: str) -> list[str]:
    return [str(i) for i in await store.redis.lrange(store.keys.batch_items(bid), 0, -1)]


async def _open(store: Store, rec: Record) -> str | None:
    assert rec.route.group
    value = await store.redis.get(store.keys.open_batch(rec.route.channel, rec.route.group))
    return str(value) if value else None


def _reads_meet(store: Store, parties: int) -> list[tuple[str, list[str]]]:
    """Make the first `parties` reads of the open batch wait for each other, so every join
    decides from the same read: all but one must find it changed. Returns the reads made."""
    reads: list[tuple[str, list[str]]] = []
    everyone = asyncio.Event()
    read = store._open_batch

    async def meeting(record: Record) -> tuple[str, list[str]]:
        seen = await read(record)
        reads.append(seen)
        if len(reads) >= parties:
            everyone.set()
        await everyone.wait()
        return seen

    store._open_batch = meeting  # type: ignore[method-assign]
    return reads


# ---- no script builds a key ----------------------------------------------------------------

KEY_SUFFIX = re.compile(r"""\.\.\s*['"]:""")
"""A key name built in Lua: `something .. ':kind...'` (values such as `'update:' .. id` end
with the colon instead)."""
KNOWN: dict[str, int] = {}
"""Scripts still deriving `<outbox>:again` from KEYS (outside this change); the count must
fall to 0 as they are fixed, never grow."""


def test_no_lua_script_builds_a_key_name() -> None:
    lua = resources.files("store") / "lua"
    found: dict[str, int] = {}
    for f in lua.iterdir():
        if not f.name.endswith(".lua"):
            continue
        text = f.read_text()
        for kind in (":req:", ":batch:", ":trail:"):
            assert kind not in text, f"{f.name} names a {kind} key itself; pass it in KEYS"
        code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
        hits = len(KEY_SUFFIX.findall(code))
        if hits:
            found[f.name] = hits
    assert found == KNOWN


# ---- the batch scripts touch only their KEYS (a Redis ACL refuses any other key) -------------

def _glob(key: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", key)


@pytest.fixture
async def keys_only(redis_url: str, store: Store) -> AsyncIterator[Store]:
    """A store whose scripts run as a Redis user allowed exactly the keys in KEYS of that call."""
    user = f"keysonly-{uuid.uuid4().hex[:8]}"
    admin = store.redis
    await admin.execute_command("ACL", "SETUSER", user, "reset", "on", "nopass", "+@all", "~*")
    limited = Store(aioredis.Redis.from_url(redis_url, username=user, password="x", decode_responses=True))
    run = limited._run

    async def only_its_keys(name: str, keys: list[str], args: list[Any]) -> Any:
        await admin.execute_command("ACL", "SETUSER", user, "resetkeys", *(f"~{_glob(k)}" for k in keys))
        try:
            return await run(name, keys, args)
        finally:
            await admin.execute_command("ACL", "SETUSER", user, "~*")

    limited._run = only_its_keys  # type: ignore[method-assign]
    try:
        yield limited
    finally:
        await limited.close()
        await admin.execute_command("ACL", "DELUSER", user)


async def test_the_acl_refuses_a_key_the_script_was_not_given(store: Store, keys_only: Store) -> None:
    """The check itself can fail: a script reading a key it was not given is refused."""
    await _accepted(store, "r0")
    rec = store.keys.request("r0")
    keys_only._scripts["peek"] = keys_only.redis.register_script("return redis.call('HGET', ARGV[1], 'state')")
    assert await keys_only._run("peek", [rec], [rec]) == "pending"
    with pytest.raises(ResponseError, match="can't access"):
        await keys_only._run("peek", [store.keys.audit], [rec])


async def test_join_and_batch_shown_run_with_only_their_keys(store: Store, keys_only: Store) -> None:
    recs = [await _accepted(store, f"r{i}") for i in range(3)]
    bid = await keys_only.join_batch(recs[0], "b1", NOW_MS)
    assert bid == "b1"
    assert await keys_only.join_batch(recs[1], "b2", NOW_MS) == "b1"  # reads r0's record
    await _decide(store, "r0")
    assert await keys_only.join_batch(recs[2], "b3", NOW_MS) == "b1"  # r1 still pending
    assert await keys_only.join_batch(recs[2], "b4", NOW_MS) == "b1"  # once
    await _decide(store, "r1")
    await _decide(store, "r2")
    late = await _accepted(store, "r3")
    assert await keys_only.join_batch(late, "b5", NOW_MS) == "b5"  # all settled: a new card
    batch = await store.get_batch("b1")
    assert batch.items == ["r0", "r1", "r2"]
    assert await keys_only.batch_shown(batch, "C1", "1.1", utcnow(), "d1") == 3
    assert await keys_only.batch_shown(batch, "C1", "1.1", utcnow(), "d1") == 0  # once each
    for rid in batch.items:
        assert (await store.get(rid)).ts == "1.1"
        assert [e.event for e in await store.trail(rid)].count("posted") == 1


# ---- concurrent joins --------------------------------------------------------------------

async def test_two_concurrent_first_joins_land_once_on_one_batch(store: Store) -> None:
    """Both read "no batch open"; one opens it, the other finds that read changed, reads
    again and joins the new batch: one card, each request on it once."""
    a, b = await _accepted(store, "ra"), await _accepted(store, "rb")
    reads = _reads_meet(store, 2)
    got = await asyncio.gather(store.join_batch(a, "new-a", NOW_MS), store.join_batch(b, "new-b", NOW_MS))
    assert got[0] == got[1] and got[0] in {"new-a", "new-b"}
    assert sorted(await _items(store, got[0])) == ["ra", "rb"]
    assert len(reads) == 3 and reads[:2] == [("", []), ("", [])]  # one retry
    other = ({"new-a", "new-b"} - {got[0]}).pop()
    assert not await store.redis.exists(store.keys.batch(other), store.keys.batch_items(other))
    for rid in ("ra", "rb"):
        assert (await store.get(rid)).batch == got[0]


async def test_two_concurrent_joins_to_a_settled_batch_retry_onto_one_new_batch(store: Store) -> None:
    """The open batch's only item is decided: both joins read that, one opens a new batch,
    the other's read no longer holds and it lands on that same new batch."""
    first = await _accepted(store, "r0")
    assert await store.join_batch(first, "old", NOW_MS) == "old"
    await _decide(store, "r0")
    a, b = await _accepted(store, "ra"), await _accepted(store, "rb")
    reads = _reads_meet(store, 2)
    got = await asyncio.gather(store.join_batch(a, "new-a", NOW_MS), store.join_batch(b, "new-b", NOW_MS))
    assert got[0] == got[1] and got[0] in {"new-a", "new-b"}
    assert sorted(await _items(store, got[0])) == ["ra", "rb"]
    assert await _items(store, "old") == ["r0"]
    assert await _open(store, a) == got[0]
    assert len(reads) == 3 and reads[2] == (got[0], ["ra" if got[0] == "new-a" else "rb"])


async def test_concurrent_joins_to_an_open_batch_land_once_each_without_rereading(store: Store) -> None:
    """Joins only append, and the items read still keep the batch open: no join has to read
    again, however many land meanwhile; the same request joining twice lands once."""
    first = await _accepted(store, "r0")
    assert await store.join_batch(first, "open", NOW_MS) == "open"
    recs = [await _accepted(store, f"r{i}") for i in range(1, 4)]
    reads = _reads_meet(store, 4)
    got = await asyncio.gather(*(store.join_batch(r, f"new{r.id}", NOW_MS) for r in [*recs, recs[0]]))
    assert set(got) == {"open"}
    assert sorted(await _items(store, "open")) == ["r0", "r1", "r2", "r3"]
    assert len(reads) == 4


async def test_many_concurrent_joins_fill_batches_each_request_once(store: Store) -> None:
    """Twelve joins at once into batches of 5: every request on exactly one batch, and no
    batch over its size."""
    recs = [await _accepted(store, f"r{i:02}") for i in range(12)]
    got = await asyncio.gather(*(store.join_batch(r, f"b{r.id}", NOW_MS) for r in recs))
    batches = {bid: await _items(store, bid) for bid in set(got)}
    placed = sorted(rid for items in batches.values() for rid in items)
    assert placed == sorted(r.id for r in recs)
    for rec, bid in zip(recs, got, strict=True):
        assert rec.id in batches[bid] and (await store.get(rec.id)).batch == bid
    assert all(len(items) <= 5 for items in batches.values())


# ---- a read that went stale before the script ran ------------------------------------------

async def test_a_join_whose_read_went_stale_writes_nothing(store: Store) -> None:
    r0, r1, late = await _accepted(store, "r0"), await _accepted(store, "r1"), await _accepted(store, "late")
    assert await store.join_batch(r0, "b1", NOW_MS) == "b1"
    before = await store.redis.dump(store.keys.batch_items("b1"))

    async def nothing_written() -> None:
        assert (await store.get("late")).batch is None
        assert await store.redis.dump(store.keys.batch_items("b1")) == before
        assert not await store.redis.exists(store.keys.batch("bx"), store.keys.batch_items("bx"))
        assert await _open(store, late) == "b1"

    # read before b1 opened; read of another batch; read of items b1 never had
    for seen in [("", []), ("b0", ["r0"]), ("b1", ["zz"]), ("b1", ["r0", "r1"])]:
        assert await store._join_batch(late, "bx", NOW_MS, seen) is None, seen
        await nothing_written()
    # b1's only item read is decided, and r1 joined since: r1 may keep b1 open, read again
    assert await store.join_batch(r1, "b2", NOW_MS) == "b1"
    await _decide(store, "r0")
    before = await store.redis.dump(store.keys.batch_items("b1"))
    assert await store._join_batch(late, "bx", NOW_MS, ("b1", ["r0"])) is None
    await nothing_written()
    # the read again sees r1 pending: late joins b1
    assert await store.join_batch(late, "bx", NOW_MS) == "b1"
    assert await _items(store, "b1") == ["r0", "r1", "late"]


async def test_a_grown_batch_still_open_by_the_items_read_takes_the_join(store: Store) -> None:
    r0, r1, late = await _accepted(store, "r0"), await _accepted(store, "r1"), await _accepted(store, "late")
    assert await store.join_batch(r0, "b1", NOW_MS) == "b1"
    assert await store.join_batch(r1, "b2", NOW_MS) == "b1"
    assert await store._join_batch(late, "bx", NOW_MS, ("b1", ["r0"])) == "b1"  # r0 pending
    assert await _items(store, "b1") == ["r0", "r1", "late"]


async def test_a_grown_batch_now_full_opens_a_new_one(store: Store) -> None:
    recs = [await _accepted(store, f"r{i}") for i in range(6)]
    for r in recs[:4]:
        assert await store.join_batch(r, "b1", NOW_MS) == "b1"
    seen = await store._open_batch(recs[5])
    assert await store.join_batch(recs[4], "b2", NOW_MS) == "b1"  # the fifth fills b1
    assert await store._join_batch(recs[5], "b3", NOW_MS, seen) == "b3"
    assert await _open(store, recs[5]) == "b3"
    assert len(await _items(store, "b1")) == 5


async def test_a_join_whose_reads_keep_going_stale_opens_a_new_batch(store: Store) -> None:
    """Bounded: after `join_attempts` stale reads the request opens its own batch (shown,
    once), never loops forever."""
    r0, late = await _accepted(store, "r0"), await _accepted(store, "late")
    assert await store.join_batch(r0, "b1", NOW_MS) == "b1"
    reads = 0

    async def stale(record: Record) -> tuple[str, list[str]]:
        nonlocal reads
        reads += 1
        return "gone", []

    store._open_batch = stale  # type: ignore[method-assign]
    store.join_attempts = 3
    assert await store.join_batch(late, "bnew", NOW_MS) == "bnew"
    assert reads == 3
    assert await _items(store, "bnew") == ["late"] and await _open(store, late) == "bnew"
    assert await _items(store, "b1") == ["r0"]
    assert await store.join_batch(late, "again", NOW_MS) == "bnew"  # and once
    assert reads == 4


# ---- the same on a Redis Cluster ------------------------------------------------------------

@pytest.mark.cluster
async def test_batches_on_a_cluster(cluster_url: str) -> None:
    store = Store.from_url(cluster_url, prefix="{hitl}")
    try:
        recs = [await _accepted(store, f"r{i}") for i in range(4)]
        reads = _reads_meet(store, 2)
        first = await asyncio.gather(store.join_batch(recs[0], "ca", NOW_MS), store.join_batch(recs[1], "cb", NOW_MS))
        assert first[0] == first[1] and len(reads) == 3
        rest = await asyncio.gather(*(store.join_batch(r, f"n{r.id}", NOW_MS) for r in recs[2:]))
        assert set(rest) == {first[0]}
        batch = await store.get_batch(first[0])
        assert sorted(batch.items) == ["r0", "r1", "r2", "r3"]
        assert await store.batch_shown(batch, "C1", "2.2", utcnow()) == 4
        assert all(r.ts == "2.2" for r in await store.get_many(batch.items))
    finally:
        await store.close()
