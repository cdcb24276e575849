"""The sealed audit chain: each kind of tampering is found, and where."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.evidence.canonical import canonical, entry_hash
from bot.evidence.sealer import Sealer
from bot.evidence.signing import NO_KEY, Signer
from bot.evidence.verify import Report, verify_live
from store.chain import ChainStore
from store.chain_models import GENESIS
from store.redis_store import Store

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


async def append(store: Store, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await store.audit(f"r{i % 3}", "clicked", f"U{i}", {"choice": "approve", "i": i}, NOW)


async def sealed(store: Store, chain: ChainStore, signer: Signer | None, n: int = 10) -> Sealer:
    await append(store, n)
    sealer = Sealer(chain, signer)
    assert await sealer.seal_all() == n
    return sealer


async def verify(chain: ChainStore, signer: Signer | None) -> Report:
    return await verify_live(chain, [signer.public] if signer else [], NO_KEY)


async def rebuild(store: Store, change: Any) -> None:
    """What someone with write access to Redis can do: rewrite the audit stream, ids kept."""
    rows = await store.redis.xrange(store.keys.audit)
    rows = change(rows)
    await store.redis.delete(store.keys.audit)
    for entry_id, fields in rows:
        await store.redis.xadd(store.keys.audit, fields, id=entry_id)


async def test_an_untouched_chain_verifies_and_is_signed(store: Store, chain: ChainStore, signer: Signer) -> None:
    sealer = await sealed(store, chain, signer)
    assert await sealer.checkpoint(force=True) is not None
    r = await verify(chain, signer)
    assert (r.problems, r.entries, r.signed_through, r.exit_code) == ([], 10, 10, 0)


async def test_each_hash_is_sha256_of_prev_and_jcs_of_the_entry(store: Store, chain: ChainStore) -> None:
    await sealed(store, chain, None, 2)
    rows = await store.redis.xrange(store.keys.audit)
    links = await chain.links([i for i, _ in rows])
    import hashlib
    body = canonical({"seq": 1, "id": rows[0][0], "fields": rows[0][1]})
    assert links[0] is not None and links[0].hash == hashlib.sha256(bytes.fromhex(GENESIS) + body).hexdigest()
    assert links[1] is not None and links[1].hash == entry_hash(links[0].hash, 2, rows[1][0], rows[1][1])


async def test_a_batch_hashed_in_chunks_is_one_unbroken_chain(store: Store, chain: ChainStore, signer: Signer) -> None:
    # the sealer hashes a large read in chunks (the event loop turns between them): the links
    # still chain across every chunk boundary and verify
    from bot.evidence.sealer import HASH_CHUNK

    n = 2 * HASH_CHUNK + 7
    sealer = await sealed(store, chain, signer, n)
    assert await sealer.checkpoint(force=True) is not None
    rows = await store.redis.xrange(store.keys.audit)
    links = await chain.links([i for i, _ in rows])
    for k in (HASH_CHUNK, 2 * HASH_CHUNK):
        before, after = links[k - 1], links[k]
        assert before is not None and after is not None
        assert after.hash == entry_hash(before.hash, k + 1, rows[k][0], rows[k][1])
    r = await verify(chain, signer)
    assert (r.problems, r.entries, r.signed_through) == ([], n, n)


async def test_a_deleted_entry_is_found(store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer)
    rows = await store.redis.xrange(store.keys.audit)
    await store.redis.xdel(store.keys.audit, rows[4][0])
    r = await verify(chain, signer)
    assert [(p.kind, p.seq) for p in r.problems] == [("deleted", 5)]
    assert r.exit_code == 1 and "first broken link at seq 5" in r.lines()[0]


async def test_an_entry_deleted_with_its_seal_is_a_gap(store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer)
    rows = await store.redis.xrange(store.keys.audit)
    await store.redis.xdel(store.keys.audit, rows[4][0])
    await store.redis.xdel(chain.k.chain, rows[4][0])
    r = await verify(chain, signer)
    assert [(p.kind, p.seq) for p in r.problems] == [("gap", 5)]


async def test_a_modified_entry_is_found(store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer)

    def modify(rows: list[Any]) -> list[Any]:
        rows[6][1]["actor"] = "U_SOMEONE_ELSE"
        return rows

    await rebuild(store, modify)
    r = await verify(chain, signer)
    assert [(p.kind, p.seq) for p in r.problems] == [("modified", 7)]


async def test_an_inserted_entry_is_found(store: Store, chain: ChainStore, signer: Signer) -> None:
    for i in range(10):  # ids 10 ms apart, so there is room between two entries
        await store.redis.xadd(store.keys.audit, {"event": "clicked", "actor": f"U{i}"}, id=f"{1000 + 10 * i}-0")
    await Sealer(chain, signer).seal_all()

    def insert(rows: list[Any]) -> list[Any]:
        return [*rows[:4], ("1035-0", {"event": "clicked", "actor": "U_FORGER"}), *rows[4:]]

    await rebuild(store, insert)
    r = await verify(chain, signer)
    assert [(p.kind, p.entry_id) for p in r.problems] == [("inserted", "1035-0")]


async def test_reordered_entries_are_found(store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer)

    def swap(rows: list[Any]) -> list[Any]:
        rows[2], rows[3] = (rows[2][0], rows[3][1]), (rows[3][0], rows[2][1])
        return rows

    await rebuild(store, swap)
    r = await verify(chain, signer)
    assert [(p.kind, p.seq) for p in r.problems] == [("modified", 3), ("modified", 4)]


async def test_a_tail_rewritten_with_fresh_hashes_contradicts_the_checkpoint(
        store: Store, chain: ChainStore, signer: Signer) -> None:
    sealer = await sealed(store, chain, signer)
    await sealer.checkpoint(force=True)
    # The attacker changes entry 3 and recomputes every later seal and the head, so the chain
    # on its own is consistent again; only the signed checkpoint can tell.
    rows = await store.redis.xrange(store.keys.audit)
    rows[2][1]["detail"] = json.dumps({"choice": "reject"})
    await store.redis.delete(store.keys.audit, chain.k.chain)
    prev = GENESIS
    for seq, (entry_id, fields) in enumerate(rows, 1):
        await store.redis.xadd(store.keys.audit, fields, id=entry_id)
        prev = entry_hash(prev, seq, entry_id, fields)
        await store.redis.xadd(chain.k.chain, {"seq": seq, "hash": prev}, id=entry_id)
    await store.redis.hset(chain.k.head, mapping={"seq": len(rows), "hash": prev, "id": rows[-1][0]})
    r = await verify(chain, signer)
    assert [(p.kind, p.seq) for p in r.problems] == [("rewritten", 10)]


async def test_a_deleted_tail_is_found(store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer)
    rows = await store.redis.xrange(store.keys.audit)
    await store.redis.xdel(store.keys.audit, rows[-1][0])
    await store.redis.xdel(chain.k.chain, rows[-1][0])
    r = await verify(chain, signer)
    assert [(p.kind, p.seq) for p in r.problems] == [("truncated", 10)]


async def test_a_forged_checkpoint_is_found(store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer)
    other = Signer(Ed25519PrivateKey.generate())
    cp = other.sign(10, "ab" * 32, 1)
    await store.redis.xadd(chain.k.checkpoints, {"seq": cp.seq, "hash": cp.hash, "time": cp.time,
                                                 "sig": cp.sig, "key": signer.key_id})
    r = await verify(chain, signer)
    assert [p.kind for p in r.problems] == ["bad_signature"]


async def test_without_a_key_verify_says_so_and_never_a_plain_ok(store: Store, chain: ChainStore) -> None:
    sealer = await sealed(store, chain, None)
    assert await sealer.checkpoint(force=True) is None
    r = await verify(chain, None)
    assert r.problems == [] and r.exit_code == 3
    assert any(line.startswith("NOT SIGNED") and "HITL_AUDIT_KEY_FILE" in line for line in r.lines())


async def test_many_problems_never_crash_the_walk(store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer, 30)
    rows = await store.redis.xrange(store.keys.audit)
    for entry_id, _ in rows[5:25:2]:
        await store.redis.xdel(store.keys.audit, entry_id)
    await store.redis.delete(chain.k.head)
    await store.redis.xadd(store.keys.audit, {"event": "x"})
    r = await verify(chain, signer)
    assert len(r.problems) == 10 and r.unsealed == 1


async def test_only_the_lease_holder_seals(store: Store, chain: ChainStore) -> None:
    await append(store, 5)
    a, b = Sealer(chain, None, owner="a"), Sealer(chain, None, owner="b")
    assert await a.lead() and not await b.lead()
    await a.seal_batch()
    await store.redis.delete(chain.k.lease)   # a's lease ran out; b takes over
    assert await b.lead()
    await append(store, 3, 5)
    assert await a.seal_batch() == 0          # fenced: a's token is stale
    assert await b.seal_batch() == 3
    r = await verify(chain, None)
    assert r.problems == [] and r.last_seq == 8


async def test_the_sealer_keeps_up_with_appends_in_order(store: Store, chain: ChainStore) -> None:
    sealer = Sealer(chain, None)
    for i in range(3):
        await append(store, 7, i * 7)
        await sealer.step()
    head = await chain.head()
    assert head is not None and head.seq == 21
    assert (await verify(chain, None)).problems == []



async def test_a_round_seals_in_small_reads_and_drains_a_backlog(store: Store, chain: ChainStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeping up, a round reads READ entries at a time (no burst for requests to queue behind);
    still behind after KEEP_UP_READS reads, it drains the rest in BATCHes; either way one round
    seals everything there is, in one unbroken chain."""
    from bot.evidence import sealer as module

    reads: list[int] = []
    read_after = chain.read_after

    async def counted(entry_id: str, count: int, block_ms: int | None = None) -> list[Any]:
        reads.append(count)
        return await read_after(entry_id, count, block_ms)

    monkeypatch.setattr(chain, "read_after", counted)
    sealer = Sealer(chain, None)
    await append(store, 3 * module.READ + 7)
    assert await sealer.step() == 3 * module.READ + 7 and sealer.caught_up
    assert reads == [module.READ] * 4  # three full reads, the fourth found the rest

    reads.clear()
    monkeypatch.setattr(module, "KEEP_UP_READS", 2)
    await append(store, 5 * module.READ + 3, 1000)
    assert await sealer.step() == 5 * module.READ + 3 and sealer.caught_up
    assert reads[:3] == [module.READ] * 3 and set(reads[3:]) == {module.BATCH}
    head = await chain.head()
    assert head is not None and head.seq == 8 * module.READ + 10
    assert (await verify(chain, None)).problems == []

def test_canonical_json_is_rfc8785() -> None:
    import random

    import rfc8785

    rnd = random.Random(8785)
    for i in range(500):
        s = "".join(chr(rnd.choice([rnd.randint(0, 0x7F), rnd.randint(0xA0, 0xD7FF), rnd.randint(0x10000, 0x10FFFF)]))
                    for _ in range(12))
        value = {"fields": {s: s, "é" + s: "\u2028" + s, "a": ""}, "seq": i, "id": s}
        assert canonical(value) == rfc8785.dumps(value)
    with pytest.raises(TypeError):
        canonical({"x": 1.5})


def test_the_fast_entry_encoding_is_the_canonical_one() -> None:
    from bot.evidence.canonical import entry_body

    for fields in ({"event": "a\u2028\x01\"\\", "detail": '{"x": "é😀"}', "at": ""}, {"é": "x"}, {}):
        assert entry_body(7, "1-0", fields) == canonical({"seq": 7, "id": "1-0", "fields": fields})


async def test_archive_trouble_never_stalls_sealing(store: Store, chain: ChainStore) -> None:
    async def down() -> None:
        raise ConnectionError("archive database is down")

    sealer = Sealer(chain, None, maintain=down, maintain_s=0)
    await append(store, 3)
    assert await sealer.step() == 3
    await append(store, 2, 3)
    assert await sealer.step() == 2
    assert sealer._maintaining is not None
    await sealer._maintaining   # logged, not raised


def test_the_fast_encoding_falls_back_for_odd_input() -> None:
    from bot.evidence.canonical import entry_body

    for fields in ({"a\"b": "x", "z": "y"}, {"\U0001f600": "x", "\ue000": "y"}, {"n": 5}):
        assert entry_body(1, "1-0", fields) == canonical({"seq": 1, "id": "1-0", "fields": fields})  # type: ignore[dict-item]


async def test_reordered_seals_are_found(store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer)
    seals = await store.redis.xrange(chain.k.chain)
    seals[3], seals[4] = (seals[3][0], seals[4][1]), (seals[4][0], seals[3][1])
    await store.redis.delete(chain.k.chain)
    for entry_id, fields in seals:
        await store.redis.xadd(chain.k.chain, fields, id=entry_id)
    r = await verify(chain, signer)
    assert [(p.kind, p.seq) for p in r.problems][:2] == [("gap", 4), ("order", 4)]
    assert r.exit_code == 1
