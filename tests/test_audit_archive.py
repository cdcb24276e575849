"""Archive to PostgreSQL: append-only, verified, exactly once across crashes; then trim Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import psycopg
import pytest

from bot.evidence.archive import ArchiveError, archive, migrate, trim
from bot.evidence.sealer import Sealer
from bot.evidence.signing import NO_KEY
from bot.evidence.verify import verify_live
from store.chain import ChainStore
from store.chain_models import Link
from store.redis_store import Store
from tests.audit_util import hitl

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)





async def sealed(store: Store, chain: ChainStore, n: int) -> None:
    async with store.redis.pipeline(transaction=False) as p:
        for i in range(n):
            p.xadd(store.keys.audit, {"event": "clicked", "request_id": f"r{i % 7}", "actor": f"U{i}",
                                      "at": NOW.isoformat(), "detail": "{}"})
        await p.execute()
    await Sealer(chain, None, owner="test").seal_all()


async def rows(url: str) -> list[tuple[int, str]]:
    async with await psycopg.AsyncConnection.connect(url) as c:
        return [(int(r[0]), r[1]) for r in await (await c.execute("SELECT seq, hash FROM hitl_audit ORDER BY seq")).fetchall()]


async def test_archive_copies_once_and_a_rerun_copies_nothing(store: Store, chain: ChainStore, pg_url: str) -> None:
    await sealed(store, chain, 1200)
    res = await archive(chain, pg_url, batch=500)
    assert res.copied == 1200 and res.last is not None and res.last.seq == 1200
    again = await archive(chain, pg_url, batch=500)
    assert again.copied == 0
    got = await rows(pg_url)
    head = await chain.head()
    assert [s for s, _ in got] == list(range(1, 1201)) and head is not None and got[-1][1] == head.hash
    await sealed(store, chain, 10)
    assert (await archive(chain, pg_url)).copied == 10


async def test_a_failure_between_batches_is_finished_by_a_rerun(store: Store, chain: ChainStore, pg_url: str) -> None:
    await sealed(store, chain, 1000)

    async def crash(link: Link) -> None:
        if link.seq >= 600:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        await archive(chain, pg_url, batch=300, after_batch=crash)
    assert len(await rows(pg_url)) == 600
    res = await archive(chain, pg_url, batch=300)
    assert res.copied == 400
    assert [s for s, _ in await rows(pg_url)] == list(range(1, 1001))


async def test_a_killed_archive_process_is_completed_exactly_once(
        store: Store, chain: ChainStore, pg_url: str, redis_url: str) -> None:
    await sealed(store, chain, 3000)
    async with await psycopg.AsyncConnection.connect(pg_url) as blocker:
        await migrate(blocker, apply=True)
        # An uncommitted row at seq 101 makes the archiver's second batch wait on it: the
        # process is killed inside that batch's transaction, every time.
        await blocker.execute("INSERT INTO hitl_audit (seq, entry_id, prev_hash, hash, fields, event, request_id, "
                              "actor, at) VALUES (101, 'x', '', '', '', '', '', '', '')")
        env = {**os.environ, "REDIS_URL": redis_url, "HITL_PREFIX": "hitl"}
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "audit", "archive", "--batch", "100",
                                 "--to", pg_url], env=env, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "archived through seq 100" in line
        proc.kill()
        proc.wait()
        proc.stderr.close()
        await blocker.rollback()
    assert [s for s, _ in await rows(pg_url)] == list(range(1, 101))
    res = hitl(["audit", "archive"], {"REDIS_URL": redis_url})  # neither --to nor HITL_AUDIT_ARCHIVE_URL
    assert res.returncode == 2 and "give --to postgresql://... or set HITL_AUDIT_ARCHIVE_URL" in res.stderr
    res = hitl(["audit", "archive"], {"REDIS_URL": redis_url, "HITL_AUDIT_ARCHIVE_URL": pg_url})
    assert res.returncode == 0, res.stderr
    assert "archived 2900 new entries" in res.stdout
    assert [s for s, _ in await rows(pg_url)] == list(range(1, 3001))


async def test_an_unreachable_database_fails_with_one_line_and_changes_nothing(
        store: Store, chain: ChainStore, redis_url: str) -> None:
    await sealed(store, chain, 5)
    before = await store.redis.xlen(store.keys.audit)
    res = hitl(["audit", "archive", "--to", "postgresql://nobody@127.0.0.1:1/none", "--trim-redis"],
               {"REDIS_URL": redis_url})
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "cannot reach the archive database" in res.stderr
    assert await store.redis.xlen(store.keys.audit) == before and await chain.archived() is None


async def test_without_the_schema_it_says_how_to_install_it(store: Store, chain: ChainStore, pg_url: str) -> None:
    await sealed(store, chain, 3)
    with pytest.raises(ArchiveError, match="--migrate"):
        await archive(chain, pg_url, migrate_schema=False)


async def test_the_archive_table_is_append_only(store: Store, chain: ChainStore, pg_url: str) -> None:
    await sealed(store, chain, 3)
    await archive(chain, pg_url)
    async with await psycopg.AsyncConnection.connect(pg_url) as c:
        for sql in ("UPDATE hitl_audit SET actor = 'x'", "DELETE FROM hitl_audit", "TRUNCATE hitl_audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                await c.execute(sql)
            await c.rollback()


async def test_a_broken_chain_is_not_archived(store: Store, chain: ChainStore, pg_url: str) -> None:
    await sealed(store, chain, 10)
    ids = [i for i, _ in await store.redis.xrange(store.keys.audit)]
    await store.redis.xdel(store.keys.audit, ids[6])
    with pytest.raises(ArchiveError, match="seq 7"):
        await archive(chain, pg_url)
    assert [s for s, _ in await rows(pg_url)] == list(range(1, 7))


async def test_trim_drops_only_archived_entries_and_the_chain_still_verifies(
        store: Store, chain: ChainStore, pg_url: str) -> None:
    await sealed(store, chain, 50)
    assert await trim(chain, None) == 0          # nothing archived yet: nothing trimmed
    await archive(chain, pg_url)
    await sealed(store, chain, 20)               # sealed, not archived
    assert await trim(chain, None) == 50
    assert await store.redis.xlen(store.keys.audit) == 20
    r = await verify_live(chain, [], NO_KEY)
    assert r.problems == [] and r.first_seq == 51 and r.last_seq == 70
    await archive(chain, pg_url)
    assert [s for s, _ in await rows(pg_url)] == list(range(1, 71))


async def test_retention_keeps_recent_entries(store: Store, chain: ChainStore, pg_url: str) -> None:
    await sealed(store, chain, 10)
    await archive(chain, pg_url)
    assert await trim(chain, keep_days=1) == 0   # all younger than a day
    assert await store.redis.xlen(store.keys.audit) == 10


async def test_retention_never_trims_what_the_stats_projector_has_not_counted(
        store: Store, chain: ChainStore, pg_url: str) -> None:
    """Retention trimmed what the archive held whatever a consumer group of the audit stream
    had read: a stats projector further behind than the retention lost those events for good
    (acknowledged as deleted, never counted). It now keeps from the first entry not consumed."""
    await sealed(store, chain, 50)
    ids = [i for i, _ in await store.redis.xrange(store.keys.audit)]
    await store.redis.xgroup_create(store.keys.audit, "stats-behind", id=ids[29])  # consumed 30
    await archive(chain, pg_url)
    assert await trim(chain, None) == 30
    assert [i for i, _ in await store.redis.xrange(store.keys.audit)] == ids[30:]
    await store.redis.xreadgroup("stats-behind", "c1", {store.keys.audit: ">"}, count=10)  # read, unacknowledged
    await store.redis.xack(store.keys.audit, "stats-behind", *ids[35:40])
    await archive(chain, pg_url)
    assert await trim(chain, None) == 0  # ids[30] is pending: not counted yet
    await store.redis.xack(store.keys.audit, "stats-behind", *ids[30:35])
    assert await trim(chain, None) == 10  # through the last delivered, ids[39]
    assert [i for i, _ in await store.redis.xrange(store.keys.audit)] == ids[40:]
    r = await verify_live(chain, [], NO_KEY)
    assert r.problems == [] and r.first_seq == 41
