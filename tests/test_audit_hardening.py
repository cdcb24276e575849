"""The audit evidence under attack and damage: a hand-set base, a deleted checkpoint, bytes that
are not UTF-8, damaged chain rows, a skewed clock, a trim racing verify, NUL in the archive's
columns, key rotation and odd characters in the stand-alone verifier, redaction of a pause
reason and of numbers. Real redis-server and PostgreSQL throughout."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.evidence.archive import archive, trim
from bot.evidence.canonical import entry_hash
from bot.evidence.redaction import Redactor
from bot.evidence.sealer import Sealer
from bot.evidence.signing import NO_KEY, Signer, public_pem
from bot.evidence.verify import Cadence, verify_live
from store.audit_feed import AuditFeed
from store.chain import PAGE, ChainStore
from store.models import Choice
from store.redis_store import Store
from tests.audit_util import decide, hitl

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "verify_audit_export.py"




@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client that writes bytes as they are (a foreign writer with access to Redis)."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def append(store: Store, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await store.audit(f"r{i % 3}", "clicked", f"U{i}", {"choice": "approve", "i": i}, NOW)


async def sealed(store: Store, chain: ChainStore, signer: Signer, n: int) -> Sealer:
    await append(store, n)
    sealer = Sealer(chain, signer, owner="A")
    await sealer.seal_all()
    assert await sealer.checkpoint(force=True) is not None
    return sealer


def pub(tmp_path: Path, signer: Signer, name: str = "pub") -> Path:
    p = tmp_path / f"{name}.pem"
    p.write_text(public_pem(signer.public))
    return p


def script(*args: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def env_for(redis_url: str, signer: Signer) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "HITL_PREFIX": "hitl",
            "HITL_AUDIT_KEY": base64.b64encode(signer.private.private_bytes_raw()).decode()}


# ---- the base ---------------------------------------------------------------------------------

async def test_a_base_set_by_hand_over_entries_still_in_redis_is_broken(
        store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer, 10)
    rows = await store.redis.xrange(store.keys.audit)
    await store.redis.delete(store.keys.audit)  # entry 3 changed in place, ids kept
    for k, (entry_id, fields) in enumerate(rows):
        await store.redis.xadd(store.keys.audit, {**fields, "actor": "U_FORGER"} if k == 2 else fields, id=entry_id)
    seal5 = (await chain.links([rows[4][0]]))[0]
    assert seal5 is not None  # and a "trim" through seq 5 claimed with seq 5's real seal
    await store.redis.hset(chain.k.base, mapping={"seq": 5, "hash": seal5.hash, "id": seal5.id})
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert r.exit_code == 1 and {p.kind for p in r.problems} == {"base"}, r.lines()
    assert "was moved without a trim" in r.lines()[0] and "archive mark" in "\n".join(r.lines())


async def test_a_real_trim_verifies_and_a_base_past_the_archive_does_not(
        store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer, 10)
    five = (await chain.links([(await store.redis.xrange(store.keys.audit))[4][0]]))[0]
    assert five is not None
    await chain.mark_archived(five)
    assert await trim(chain, None) == 5
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert (r.problems, r.exit_code, r.first_seq) == ([], 0, 6), r.lines()
    await store.redis.hset(chain.k.archived, mapping={"seq": 4})  # the mark says only 1..4 are archived
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert [p.kind for p in r.problems] == ["base"] and "archive mark is at seq 4" in r.problems[0].message


# ---- coverage by signatures --------------------------------------------------------------------

async def test_a_tail_rewritten_after_deleting_the_newest_checkpoint_is_not_exit_0(
        store: Store, chain: ChainStore, signer: Signer) -> None:
    sealer = await sealed(store, chain, signer, 10)    # checkpoint over 1..10
    await append(store, 10, 10)
    await sealer.seal_all()
    assert await sealer.checkpoint(force=True) is not None  # over 11..20
    cps = await store.redis.xrange(chain.k.checkpoints)
    await store.redis.xdel(chain.k.checkpoints, cps[-1][0])
    rows = await store.redis.xrange(store.keys.audit)
    links = await chain.links([i for i, _ in rows])
    prev = links[13].hash  # type: ignore[union-attr]
    await store.redis.delete(store.keys.audit, chain.k.chain)
    for seq, (entry_id, fields) in enumerate(rows, 1):  # entry 15 rewritten, seals 15..20 recomputed
        if seq == 15:
            fields = {**fields, "actor": "U_FORGER"}
        await store.redis.xadd(store.keys.audit, fields, id=entry_id)
        if seq >= 15:
            prev = entry_hash(prev, seq, entry_id, fields)
        await store.redis.xadd(chain.k.chain, {"seq": seq, "hash": prev if seq >= 15 else links[seq - 1].hash},  # type: ignore[union-attr]
                               id=entry_id)
    await store.redis.hset(chain.k.head, mapping={"seq": 20, "hash": prev, "id": rows[-1][0]})
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert r.problems == [] and r.exit_code == 3, r.lines()
    assert "NOT SIGNED: entries seq 11..20 are chained but not covered" in "\n".join(r.lines())


async def test_a_live_verify_passes_a_fresh_tail_and_not_an_overdue_one(
        store: Store, chain: ChainStore, signer: Signer) -> None:
    """On a live system the newest entries always wait for the next checkpoint: within one
    checkpoint interval that is health (exit 0, noted); past it, checkpoints stopped or were
    deleted (exit 3), as in the rewrite above."""
    sealer = await sealed(store, chain, signer, 10)
    await append(store, 5, 10)
    await sealer.seal_all()
    r = await verify_live(chain, [signer.public], NO_KEY, Cadence(60_000, 10_000))
    assert r.exit_code == 0 and not r.problems, r.lines()
    assert any("seq 11..15" in n and "wait for the next signed checkpoint" in n for n in r.notes), r.notes
    await asyncio.sleep(0.01)
    r = await verify_live(chain, [signer.public], NO_KEY, Cadence(1, 10_000, slack_ms=0))
    assert r.exit_code == 3 and "entries seq 11..15 are chained but not covered" in r.unsigned, r.lines()


async def test_a_checkpoint_by_a_key_not_given_covers_nothing_and_is_not_damage(
        store: Store, chain: ChainStore, signer: Signer) -> None:
    old = Signer(Ed25519PrivateKey.generate())
    await sealed(store, chain, old, 3)
    await chain.release("A")
    await append(store, 3, 3)
    new = Sealer(chain, signer, owner="B")  # restarted with a new key: its first round signs at once
    await new.seal_all()
    assert await new.checkpoint() is not None
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert (r.problems, r.exit_code, r.signed_through) == ([], 0, 6), r.lines()
    assert any("not a key given: not checked" in n for n in r.notes)


# ---- bytes that are not UTF-8 ------------------------------------------------------------------

async def test_an_entry_that_is_not_utf8_is_sealed_verified_and_counted(
        store: Store, chain: ChainStore, signer: Signer, raw: aioredis.Redis, redis_url: str) -> None:
    await append(store, 3)
    await raw.xadd(store.keys.audit, {b"event": b"clicked", b"actor": b"U\xff\xfe"})
    await append(store, 3, 3)
    sealer = Sealer(chain, signer)
    assert await sealer.seal_all() == 7
    await sealer.checkpoint(force=True)
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert (r.problems, r.entries, r.exit_code) == ([], 7, 0), r.lines()
    assert any("not UTF-8" in n and "seq 4 " in n for n in r.notes), r.notes
    # the same bytes written as other bytes no longer match their seal
    rows = await raw.xrange(store.keys.audit)
    await raw.delete(store.keys.audit)
    for k, (entry_id, fields) in enumerate(rows):
        await raw.xadd(store.keys.audit, {b"event": b"clicked", b"actor": b"U\xff\xfd"} if k == 3 else fields,
                       id=entry_id)
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert [p.kind for p in r.problems] == ["modified"] and r.problems[0].seq == 4
    # the stats projector reads past it too
    feed = AuditFeed(redis_url, store.redis, store.keys, block_ms=100)
    try:
        await feed.ensure_group()
        rows = await feed.read("c1", ">", count=100, block_ms=None)
    finally:
        await feed.close()
    assert len(rows) == 7 and rows[3][1] == {"event": "clicked", "actor": "U\udcff\udcfd"}


async def test_a_foreign_entry_after_the_head_is_reported_not_a_crash(
        store: Store, chain: ChainStore, signer: Signer, raw: aioredis.Redis) -> None:
    sealer = await sealed(store, chain, signer, 3)
    await raw.xadd(store.keys.audit, {b"event": b"\xc3"})
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert r.unsealed == 1 and r.problems == []
    assert await sealer.seal_batch(block_ms=100) == 1  # the leader's blocking read takes it too
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert (r.problems, r.entries, r.unsealed) == ([], 4, 0), r.lines()


async def test_an_export_with_bytes_that_are_not_utf8_verifies_with_both_verifiers(
        store: Store, chain: ChainStore, signer: Signer, raw: aioredis.Redis, redis_url: str,
        tmp_path: Path, pg_url: str) -> None:
    await raw.xadd(store.keys.audit, {b"event": b"clicked", b"request_id": b"r1", b"actor": b"U\xff",
                                      b"at": b"x", b"detail": b"{}"})
    await append(store, 2)
    sealer = Sealer(chain, signer)
    await sealer.seal_all()
    await sealer.checkpoint(force=True)
    out = tmp_path / "audit.jsonl"
    res = hitl(["audit", "export", "--out", str(out)], env_for(redis_url, signer))
    assert res.returncode == 0, res.stderr
    key = pub(tmp_path, signer)
    assert hitl(["audit", "verify", "--file", str(out), "--pubkey", str(key)], {}).returncode == 0
    res = script(out, key)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (await archive(chain, pg_url)).copied == 3
    async with await psycopg.AsyncConnection.connect(pg_url) as c:
        got = await (await c.execute("SELECT actor FROM hitl_audit WHERE seq = 1")).fetchone()
    assert got == ("U\\udcff",)


# ---- damaged chain rows ------------------------------------------------------------------------

async def test_a_damaged_checkpoint_row_is_reported_and_sealing_goes_on(
        store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer, 3)
    await store.redis.xadd(chain.k.checkpoints, {"seq": "3", "hash": "00"})  # no time, sig, key
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert [p.kind for p in r.problems] == ["malformed"] and r.lines()[0].startswith("BROKEN: checkpoint row")
    await append(store, 3, 3)
    await chain.release("A")
    fresh = Sealer(chain, signer, owner="B")
    assert await fresh.seal_all() == 3
    assert fresh._checkpoint is not None and fresh._checkpoint.seq == 3  # the good one before it


async def test_a_forged_checkpoint_does_not_hold_back_the_next_one(
        store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer, 3)
    await store.redis.xadd(chain.k.checkpoints, {"seq": 10**9, "hash": "00" * 32, "time": 2 * 10**13,
                                                 "sig": "AAAA", "key": "0" * 16})
    await append(store, 2, 3)
    await chain.release("A")
    b = Sealer(chain, signer, owner="B", checkpoint_s=3600)
    await b.seal_all()
    cp = await b.checkpoint()
    assert cp is not None and cp.seq == 5


async def test_a_damaged_seal_row_is_reported_not_a_crash(
        store: Store, chain: ChainStore, signer: Signer) -> None:
    await sealed(store, chain, signer, 3)
    rows = await store.redis.xrange(chain.k.chain)
    await store.redis.delete(chain.k.chain)
    for k, (i, f) in enumerate(rows):
        await store.redis.xadd(chain.k.chain, {"hash": f["hash"]} if k == 1 else f, id=i)  # seq dropped
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert [(p.kind, p.seq) for p in r.problems] == [("malformed", 2)] and r.entries == 3, r.lines()


# ---- clocks --------------------------------------------------------------------------------------

async def test_a_checkpoint_from_a_fast_clock_does_not_suspend_checkpoints(
        store: Store, chain: ChainStore, signer: Signer) -> None:
    now = 1_767_614_400_000
    await append(store, 3)
    a = Sealer(chain, signer, owner="A", checkpoint_s=60)
    await a.seal_all()
    assert await a.checkpoint(now + 3_600_000) is not None  # A's clock is an hour ahead
    await chain.release("A")
    b = Sealer(chain, signer, owner="B", checkpoint_s=60)
    await append(store, 3, 3)
    await b.seal_all()
    assert await b.checkpoint(now + 600_000) is not None


async def test_checkpoints_are_timed_by_redis_clock(store: Store, chain: ChainStore, signer: Signer) -> None:
    await append(store, 3)
    s = Sealer(chain, signer, owner="A", checkpoint_s=3600)
    await s.step()
    cp = await chain.last_checkpoint()
    assert cp is not None
    assert abs(cp.time - await chain.now_ms()) < 3_600_000  # Redis's TIME, whatever this process's clock
    seconds, _ = await store.redis.time()
    assert cp.time // 1000 <= int(seconds)


# ---- verify racing a trim ----------------------------------------------------------------------

async def test_verify_during_a_trim_is_not_a_false_alarm(store: Store, chain: ChainStore, signer: Signer) -> None:
    async with store.redis.pipeline(transaction=False) as p:
        for i in range(2 * PAGE + 500):
            p.xadd(store.keys.audit, {"event": "clicked", "request_id": f"r{i % 7}", "actor": f"U{i}",
                                      "at": NOW.isoformat(), "detail": "{}"})
        await p.execute()
    sealer = Sealer(chain, signer, owner="A")
    await sealer.seal_all()
    await sealer.checkpoint(force=True)
    head = await chain.head()
    assert head is not None
    await chain.mark_archived(head)
    real_pages, done = chain.pages, []

    async def pages(key: str, start: str = "-", end: str = "+") -> AsyncIterator[Any]:
        async for rows in real_pages(key, start, end):
            yield rows
            if key == chain.k.chain and not done:  # retention runs right after verify's first page
                done.append(await trim(chain, None))

    chain.pages = pages  # type: ignore[method-assign]
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert done == [2 * PAGE + 500]
    assert (r.problems, r.exit_code) == ([], 0), r.lines()[:4]


# ---- the archive -------------------------------------------------------------------------------

async def test_an_agent_name_with_nul_does_not_block_the_archive(
        store: Store, chain: ChainStore, pg_url: str) -> None:
    await decide(store, "r1", Choice.approve, agent="bill\x00ing")
    await decide(store, "r2", Choice.approve)
    await Sealer(chain, None, owner="t").seal_all()
    head = await chain.head()
    assert head is not None
    res = await archive(chain, pg_url)
    assert res.last is not None and res.last.seq == head.seq
    async with await psycopg.AsyncConnection.connect(pg_url) as c:
        rows = await (await c.execute("SELECT actor, fields FROM hitl_audit WHERE actor LIKE %s",
                                      ("%x00%",))).fetchall()
    assert rows and rows[0][0] == "bill\\x00ing" and "bill\\u0000ing" in rows[0][1]


# ---- the stand-alone verifier ------------------------------------------------------------------

def test_the_script_does_not_accept_a_fabricated_request_export(tmp_path: Path, signer: Signer) -> None:
    fields = {"event": "clicked", "request_id": "r-1", "actor": "U0CEO", "at": NOW.isoformat(),
              "detail": json.dumps({"choice": "approve"})}
    prev = "ab" * 32
    fake = {"type": "entry", "seq": 42, "id": "1767614400000-0", "prev_hash": prev,
            "hash": entry_hash(prev, 42, "1767614400000-0", fields), "fields": fields}
    header = {"type": "header", "format": "hitl-audit-export", "version": 1, "request": "r-1", "prev": None}
    f = tmp_path / "forged.jsonl"
    f.write_text(json.dumps(header) + "\n" + json.dumps(fake) + "\n")
    res = script(f, pub(tmp_path, signer))
    assert res.returncode == 3 and "NOT SIGNED" in res.stdout, res.stdout
    res = hitl(["audit", "verify", "--file", str(f), "--pubkey", str(pub(tmp_path, signer))], {})
    assert res.returncode == 3


async def test_line_separators_in_a_field_neither_break_the_export_nor_the_script(
        store: Store, chain: ChainStore, signer: Signer, redis_url: str, tmp_path: Path) -> None:
    await store.set_paused(True, "incident\u2028see\u2029ticket\u0085now", "U0ADMIN", NOW)
    await append(store, 2)
    sealer = Sealer(chain, signer)
    await sealer.seal_all()
    await sealer.checkpoint(force=True)
    out = tmp_path / "audit.jsonl"
    assert hitl(["audit", "export", "--out", str(out)], env_for(redis_url, signer)).returncode == 0
    text = out.read_text("utf-8")
    assert "\u2028" not in text and "\\u2028" in text  # escaped: the export splits only on "\n"
    key = pub(tmp_path, signer)
    assert hitl(["audit", "verify", "--file", str(out), "--pubkey", str(key)], {}).returncode == 0
    assert script(out, key).returncode == 0
    # an export written before they were escaped (the characters raw inside a JSON string)
    lines = [json.loads(x) for x in text.split("\n") if x]
    raw_out = tmp_path / "old.jsonl"
    raw_out.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf-8")
    assert "\u2028" in raw_out.read_text("utf-8")
    res = script(raw_out, key)
    assert res.returncode == 0, res.stderr[-600:]


async def test_the_script_verifies_an_export_across_a_key_rotation(
        store: Store, chain: ChainStore, redis_url: str, tmp_path: Path) -> None:
    old, new = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    await sealed(store, chain, old, 3)
    await chain.release("A")
    await append(store, 3, 3)
    s = Sealer(chain, new, owner="new")
    await s.seal_all()
    await s.checkpoint(force=True)
    await append(store, 2, 6)  # and entries the new key has not signed yet
    await s.seal_all()
    out = tmp_path / "audit.jsonl"
    assert hitl(["audit", "export", "--out", str(out)], env_for(redis_url, new)).returncode == 0
    old_pem, new_pem = pub(tmp_path, old, "old"), pub(tmp_path, new, "new")
    both = script(out, new_pem, old_pem)
    assert both.returncode == 3 and "signed through seq 6 of 8" in both.stdout, both.stdout
    await s.checkpoint(force=True)
    assert hitl(["audit", "export", "--out", str(out)], env_for(redis_url, new)).returncode == 0
    assert script(out, old_pem, new_pem).returncode == 0
    only_new = script(out, new_pem)  # the old checkpoint is not checked; the new one covers all
    assert only_new.returncode == 0 and "not checked" in only_new.stdout, only_new.stdout
    only_old = script(out, old_pem)  # covers 1..3 only
    assert only_old.returncode == 3, only_old.stdout
    forged = out.read_text().replace('"sig": "', '"sig": "AA', 1)
    out.write_text(forged)
    assert script(out, old_pem, new_pem).returncode == 1


# ---- redaction -----------------------------------------------------------------------------------

async def test_the_pause_reason_is_redacted_in_the_audit_and_kept_for_operators(store: Store) -> None:
    store.redact = Redactor(["card_number"], [r"\b(?:\d[ -]?){13,16}\b"]).detail
    reason = "customer card 4111 1111 1111 1111 leaked in #support"
    assert await store.set_paused(True, reason, "U0ADMIN", NOW)
    assert not await store.set_paused(True, reason, "U0ADMIN", NOW)  # a repeat writes nothing
    rows = await store.redis.xrange(store.keys.audit)
    assert len(rows) == 1 and "4111" not in json.dumps(rows)
    assert json.loads(rows[0][1]["detail"]) == {"reason": "customer card [redacted]leaked in #support"}
    assert (await store.control())["reason"] == reason
    assert await store.set_paused(False, None, "U0ADMIN", NOW)
    assert json.loads((await store.redis.xrange(store.keys.audit))[-1][1]["detail"]) == {"reason": None}


async def test_a_number_matching_a_pattern_is_redacted(store: Store) -> None:
    store.redact = Redactor([], [r"\b(?:\d[ -]?){13,16}\b"]).detail
    await store.audit("r1", "edited", "U0ALICE", {"before": {"account": 4111111111111111, "amount": 250,
                                                             "ok": True, "rate": 0.5},
                                                  "after": {"account": 4000000000000002.0}}, NOW)
    detail = json.loads((await store.redis.xrange(store.keys.audit))[-1][1]["detail"])
    assert detail == {"before": {"account": "[redacted]", "amount": 250, "ok": True, "rate": 0.5},
                      "after": {"account": "[redacted]"}}


async def test_a_trail_holding_an_entry_that_is_not_utf8_still_reads(store: Store, raw: aioredis.Redis) -> None:
    """`/hitl audit <id>` and the App Home read a request's trail: one entry a foreign writer left
    in bytes that are not UTF-8 is shown with those bytes escaped, the others as they are."""
    await append(store, 3)
    foreign = await raw.xadd(store.keys.audit, {b"event": b"clicked", b"request_id": b"r0", b"actor": b"U\xff",
                                                b"at": NOW.isoformat().encode(), b"detail": b"{}"})
    await raw.rpush(store.keys.trail("r0"), foreign)
    events = await store.trail("r0")
    assert [e.actor for e in events] == ["U0", "U\udcff"]
