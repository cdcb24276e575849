"""`hitl audit verify --archive`: the archived rows re-hashed and linked up to the live chain.

Without the archive, verify takes Redis's word for the trimmed part: anyone with write access
to Redis could delete the oldest entries with their seals, set the base and the archive mark
to a later link, and verify said "trimmed (see the archive)" and exit 0."""

from __future__ import annotations

import base64

import psycopg
from cryptography.hazmat.primitives import serialization

from bot.evidence.archive import archive, trim
from bot.evidence.sealer import Sealer
from bot.evidence.signing import NO_KEY, Signer
from bot.evidence.verify import Report, verify_live
from bot.evidence.verify_archive import verify_archive
from store.chain import ChainStore
from store.redis_store import Store
from tests.audit_util import hitl
from tests.test_audit_archive import sealed


async def _signed(store: Store, chain: ChainStore, signer: Signer, n: int) -> None:
    await sealed(store, chain, n)
    s = Sealer(chain, signer, owner="test")
    await s.lead()
    assert await s.checkpoint(force=True) is not None


async def _trimmed(store: Store, chain: ChainStore, signer: Signer, url: str) -> None:
    """seq 1..30 archived (checkpoints at 15 and 30) and trimmed from Redis; 31..40 live."""
    await _signed(store, chain, signer, 15)
    await _signed(store, chain, signer, 15)
    await archive(chain, url, keys=[signer.public])
    await _signed(store, chain, signer, 10)
    assert await trim(chain, None) == 30


async def _verify(chain: ChainStore, signer: Signer, url: str) -> Report:
    r = await verify_live(chain, [signer.public], NO_KEY)
    await verify_archive(url, chain, r, [signer.public])
    return r


async def _owner(url: str, *sql: str) -> None:
    """What the tables' owner (or anyone with the database's superuser) can still do."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        for table in ("hitl_audit", "hitl_audit_checkpoints"):
            await c.execute(f"ALTER TABLE {table} DISABLE TRIGGER hitl_audit_append_only")
        for s in sql:
            await c.execute(s)


def _key_env(signer: Signer, redis_url: str) -> dict[str, str]:
    seed = signer.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())
    return {"REDIS_URL": redis_url, "HITL_PREFIX": "hitl", "HITL_AUDIT_KEY": base64.b64encode(seed).decode()}


async def test_an_intact_archive_and_live_chain_verify_as_one(
        store: Store, chain: ChainStore, signer: Signer, pg_url: str, redis_url: str) -> None:
    await _trimmed(store, chain, signer, pg_url)
    r = await _verify(chain, signer, pg_url)
    assert r.problems == [] and r.first_seq == 1 and r.last_seq == 40 and r.exit_code == 0
    done = hitl(["audit", "verify", "--archive", pg_url], _key_env(signer, redis_url))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "archive: 30 entries (seq 1..30) re-hashed" in done.stdout
    away = hitl(["audit", "verify", "--archive", "postgresql://nobody@127.0.0.1:1/none"], _key_env(signer, redis_url))
    assert away.returncode == 2 and away.stderr.count("\n") == 1 and "cannot reach" in away.stderr


async def test_a_redis_base_moved_past_the_archive_is_broken(
        store: Store, chain: ChainStore, signer: Signer, pg_url: str, redis_url: str) -> None:
    """The attack: seq 31..35 deleted from Redis with their seals, the base and the archive mark
    set to seq 35. Redis alone looks trimmed; the archive ends at 30."""
    await _trimmed(store, chain, signer, pg_url)
    ids = [i for i, _ in await chain.xrange(store.keys.audit)]
    at35 = (await chain.links([ids[4]]))[0]
    assert at35 is not None and at35.seq == 35
    await store.redis.xdel(store.keys.audit, *ids[:5])
    await store.redis.xdel(chain.k.chain, *ids[:5])
    await store.redis.hset(chain.k.base, mapping={"seq": at35.seq, "hash": at35.hash, "id": at35.id})
    await chain.mark_archived(at35)
    assert (await verify_live(chain, [signer.public], NO_KEY)).problems == []  # the hole
    r = await _verify(chain, signer, pg_url)
    assert [(p.kind, p.seq) for p in r.problems] == [("gap", 31)]
    assert "seq 31..35 are in neither" in r.problems[0].message
    done = hitl(["audit", "verify", "--archive", pg_url], _key_env(signer, redis_url))
    assert done.returncode == 1 and "BROKEN: first broken link at seq 31" in done.stdout


async def test_a_base_that_is_not_the_archived_link_is_broken(
        store: Store, chain: ChainStore, signer: Signer, pg_url: str) -> None:
    await _trimmed(store, chain, signer, pg_url)
    base = await chain.base()
    await store.redis.hset(chain.k.base, "hash", "0" * 63 + "1")
    r = await _verify(chain, signer, pg_url)
    assert ("base", base.seq) in [(p.kind, p.seq) for p in r.problems]


async def test_a_deleted_archived_row_is_a_gap(store: Store, chain: ChainStore, signer: Signer, pg_url: str) -> None:
    await _trimmed(store, chain, signer, pg_url)
    await _owner(pg_url, "DELETE FROM hitl_audit WHERE seq = 10")
    r = await _verify(chain, signer, pg_url)
    assert [(p.kind, p.seq) for p in r.problems] == [("gap", 10)] and r.exit_code == 1


async def test_an_altered_archived_row_or_checkpoint_is_found(
        store: Store, chain: ChainStore, signer: Signer, pg_url: str) -> None:
    await _trimmed(store, chain, signer, pg_url)
    await _owner(pg_url, "UPDATE hitl_audit SET fields = replace(fields, '\"U5\"', '\"U9\"') WHERE seq = 6",
                 "UPDATE hitl_audit_checkpoints SET time_ms = time_ms + 1 WHERE seq = 15")
    r = await _verify(chain, signer, pg_url)
    assert [(p.kind, p.seq) for p in r.problems] == [("modified", 6), ("bad_signature", 15)]


async def test_archived_rows_deleted_at_the_tail_leave_a_gap_before_the_live_chain(
        store: Store, chain: ChainStore, signer: Signer, pg_url: str) -> None:
    """The archive's newest rows deleted: every row left links to the one before, but the
    archive no longer reaches the live chain's base, nor the checkpoint signed at seq 30."""
    await _trimmed(store, chain, signer, pg_url)
    await _owner(pg_url, "DELETE FROM hitl_audit WHERE seq >= 26")
    r = await _verify(chain, signer, pg_url)
    assert [(p.kind, p.seq) for p in r.problems] == [("gap", 26), ("truncated", 30)]
    assert "seq 26..30 are in neither" in r.problems[0].message
