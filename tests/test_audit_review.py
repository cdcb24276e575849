"""Attacks on the audit trail as evidence that the other evidence tests did not cover."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import psycopg
import pytest

from blocks.stats import audit_line
from bot.evidence.archive import ArchiveError, archive, trim
from bot.evidence.sealer import Sealer
from bot.evidence.signing import NO_KEY, Signer
from bot.evidence.verify import verify_live
from store.chain import ChainStore
from store.chain_models import Link
from store.models import AuditEvent, Choice
from store.redis_store import Store
from tests.audit_util import decide, hitl
from tests.harness import Harness, running
from tests.pg_server import PostgresServer
from tests.test_audit_archive import rows, sealed
from tests.util import eventually


async def test_an_archive_of_another_chain_is_refused_not_marked_as_this_ones(
        store: Store, chain: ChainStore, pg_url: str) -> None:
    """The archive held seq 1..20 of a chain Redis no longer has (a new Redis, a FLUSHALL, a
    wrong URL); the live chain is at seq 5. The archiver used to copy nothing, say nothing and
    set the archive mark to the archive's seq 20, so retention then moved the live chain's base
    to a link of the other chain: `verify` called the intact live chain broken, and nothing of
    it was ever archived. It now refuses with one line that says why, and nothing moves."""
    await sealed(store, chain, 20)
    await archive(chain, pg_url)
    await store.redis.flushdb()
    await sealed(store, chain, 5)
    with pytest.raises(ArchiveError, match="seq 20"):
        await archive(chain, pg_url)
    assert await chain.archived() is None
    assert await trim(chain, None) == 0
    r = await verify_live(chain, [], NO_KEY)
    assert r.problems == [] and r.first_seq == 1 and r.last_seq == 5
    assert [s for s, _ in await rows(pg_url)] == list(range(1, 21))


async def test_redis_trimmed_past_the_archive_is_named_as_such(store: Store, chain: ChainStore, pg_url: str) -> None:
    """Redis trimmed through seq 25 (after an archive run to another database) while this
    archive holds 1..20: the entries 21..25 are in neither, said as such (it used to blame a
    chain "broken at seq 26")."""
    await sealed(store, chain, 20)
    await archive(chain, pg_url)
    await sealed(store, chain, 10)
    link = (await chain.links([(await chain.xrange(store.keys.audit))[24][0]]))[0]
    assert link is not None and link.seq == 25
    await chain.trim_through(link)
    with pytest.raises(ArchiveError, match=r"trimmed through seq 25 .* seq 21\.\.25 are in neither"):
        await archive(chain, pg_url)
    assert [s for s, _ in await rows(pg_url)] == list(range(1, 21))


POLICY = ('defaults:\n  channel: "#approvals"\ntiers:\n  low: {mode: auto}\n  medium: {mode: approve}\n'
          '  high: {mode: approve}\n')


async def test_a_policy_changed_while_the_bot_was_down_is_audited_at_start(redis_url: str, tmp_path: Path) -> None:
    """Changing the policy file and restarting (a deploy, a ConfigMap and a rollout restart)
    put the new policy in force with no `policy_changed` entry: only a reload while running was
    audited, so the trail could not say under which rules the requests after a deploy were
    routed. The policy in force is now audited when intake starts, once per change (a restart
    on the same file, or a second replica, adds nothing)."""
    async with running(redis_url, tmp_path, POLICY) as h:
        first = h.bot.policy.digest
        assert [e.detail["digest"] for e in await _routed_then_policies(h)] == [first]
    async with running(redis_url, tmp_path, POLICY) as h:  # same file: nothing new
        assert [e.detail["digest"] for e in await _routed_then_policies(h)] == [first]
    async with running(redis_url, tmp_path, POLICY.replace("low: {mode: auto}", "low: {mode: approve}")) as h:
        second = h.bot.policy.digest
        changed = await _routed_then_policies(h)
        assert second != first and [e.detail["digest"] for e in changed] == [first, second]
        assert changed[0].detail["previous"] is None and changed[1].detail["previous"] == first


async def _routed_then_policies(h: Harness) -> list[AuditEvent]:
    """The `policy_changed` entries once intake routed a request (it audits the policy before)."""
    rid = await h.push()
    await eventually(lambda: h.store.exists(rid), what="the request routed")
    return [e for e in await h.store.audit_entries() if e.event == "policy_changed"]


async def _checkpoints(url: str) -> list[tuple[int, str]]:
    async with await psycopg.AsyncConnection.connect(url) as c:
        return [(int(r[0]), r[1]) for r in await (await c.execute(
            "SELECT seq, sig FROM hitl_audit_checkpoints ORDER BY seq")).fetchall()]


async def test_a_forged_or_damaged_checkpoint_row_never_takes_a_real_ones_place_in_the_archive(
        store: Store, chain: ChainStore, signer: Signer, pg_url: str) -> None:
    """Checkpoints were archived as Redis held them, first come first kept (primary key seq,
    ON CONFLICT DO NOTHING), unchecked: a row XADDed to {prefix}:chain:checkpoints ahead of the
    real one took its seq in the append-only archive for good, and a row with a field too long
    for its column (a 65-character hash) failed every archive run, so retention stopped too.
    The archive now keeps only checkpoints of the chain it holds (their seq and hash match an
    archived entry), well-formed, real ones (verified with the signing key) before the rest."""
    sealer = Sealer(chain, signer, owner="test")
    await sealed(store, chain, 10)
    head = await chain.head()
    assert head is not None and head.seq == 10
    cps = store.keys.prefix + ":chain:checkpoints"
    await store.redis.xadd(cps, {"seq": 3, "hash": "a" * 65, "time": 1, "sig": "x", "key": signer.key_id})
    await store.redis.xadd(cps, {"seq": 10, "hash": head.hash, "time": 1, "sig": "Zm9yZ2Vk", "key": signer.key_id})
    await store.redis.xadd(cps, {"seq": 10, "hash": head.hash, "time": 1, "sig": "Zm9yZ2Vk", "key": "0" * 16})
    await sealer.lead()
    real = await sealer.checkpoint(force=True)
    assert real is not None and real.seq == 10
    res = await archive(chain, pg_url, keys=[signer.public])
    assert res.copied == 10
    assert await _checkpoints(pg_url) == [(10, real.sig)]
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert {p.kind for p in r.problems} == {"bad_signature"}  # the forged rows stay reported in Redis


async def test_an_audit_lookup_of_a_name_that_is_no_request_id_is_empty_not_an_error(
        store: Store, redis_url: str) -> None:
    """`/hitl audit r1:notices` and `hitl audit export --request r1:notices` looked the name up
    as a request: `{prefix}:req:r1:notices` is a set (escalation notices sent), so HGET failed
    with WRONGTYPE: a traceback from the command line, an error instead of "no request" in
    Slack. A name outside the request id alphabet names no request: it has no trail."""
    await decide(store, "r1", Choice.approve)
    await store.note_notice("r1", "1:U0BOB")
    assert await store.trail("r1:notices") == []
    assert [e.event for e in await store.trail("r1")][:2] == ["received", "routed"]
    done = hitl(["audit", "export", "--request", "r1:notices"], {"REDIS_URL": redis_url, "HITL_PREFIX": "hitl"})
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["type"] for x in done.stdout.splitlines()] == ["header"]


async def test_line_separators_in_a_decision_never_split_a_feedback_record(
        store: Store, redis_url: str, tmp_path: Path) -> None:
    """The feedback export wrote U+2028, U+2029 and U+0085 from a reviewer's reason or an
    agent's params as they are: a record broke in two for every reader that splits lines on
    more than "\\n" (str.splitlines, as our own tests read it; JavaScript tools). It now writes
    them as JSON escapes, as the audit export does; the values read back unchanged."""
    odd = "no\u2028way\u2029at\u0085all"
    await decide(store, "r1", Choice.reject, params={"note": odd}, reason_code="other", reason=odd)
    out = tmp_path / "fb.jsonl"
    done = hitl(["feedback", "export", "--out", str(out)], {"REDIS_URL": redis_url, "HITL_PREFIX": "hitl"})
    assert done.returncode == 0, done.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[1])
    assert rec["reason"] == odd and rec["params"] == {"note": odd}


async def test_a_trim_that_lost_the_race_never_moves_the_base_back(store: Store, chain: ChainStore, pg_url: str) -> None:
    """Two trims at once (the CLI's `--trim-redis` beside the leader's retention, or an old
    leader's archive run still going after a new leader's): one read the base, the other trimmed
    through seq 30, then the first trimmed through seq 20. The script set the base to seq 20
    without looking, so `verify` found seq 21..30 missing and called the chain broken. A trim
    now never moves the base back."""
    await sealed(store, chain, 50)
    await archive(chain, pg_url)
    ids = [i for i, _ in await chain.xrange(store.keys.audit)]
    at20, at30 = await chain.links([ids[19], ids[29]])
    assert at20 is not None and at30 is not None
    assert await chain.trim_through(at30) == 30
    assert await chain.trim_through(at20) == 0
    assert await chain.base() == at30
    r = await verify_live(chain, [], NO_KEY)
    assert r.problems == [] and r.first_seq == 31 and r.last_seq == 50


async def test_api_keys_created_and_revoked_are_audited_without_the_secret(store: Store, redis_url: str) -> None:
    """`hitl keys create` and `hitl keys revoke` wrote no audit entry, although a key grants
    submit and cancel rights as its agents: nobody could tell from the trail when a key came
    to exist or who ended it. Each is now one system entry by `cli` (never the secret)."""
    env = {"REDIS_URL": redis_url, "HITL_PREFIX": "hitl"}
    made = hitl(["keys", "create", "--agent", "billing-bot", "--agent", "ops-bot", "--name", "ci"], env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    key_id = key.split("_")[1]
    assert hitl(["keys", "revoke", key_id], env).returncode == 0
    assert hitl(["keys", "revoke", key_id], env).returncode == 0  # revoked already: nothing new
    entries = [e for e in await store.audit_entries() if e.event.startswith("api_key_")]
    assert [(e.event, e.actor, e.request_id) for e in entries] == [
        ("api_key_created", "cli", ""), ("api_key_revoked", "cli", "")]
    for e in entries:
        assert e.detail["key_id"] == key_id and e.detail["agents"] == ["billing-bot", "ops-bot"]
        assert e.detail["name"] == "ci"
    raw = json.dumps(await store.redis.xrange(store.keys.audit))
    assert key.split("_", 2)[2] not in raw


async def test_an_archive_run_copies_only_the_checkpoints_it_has_not_seen(
        store: Store, chain: ChainStore, signer: Signer, pg_url: str, pg: PostgresServer) -> None:
    """Every archive run read every checkpoint Redis holds and sent each to PostgreSQL again
    (about 525,000 a year at one a minute, every minute). A run now reads only the rows after
    those an earlier run settled, and inserts only new ones; a checkpoint of entries the archive
    does not hold yet is read again next run (then it goes in); another database gets them all."""
    async def signed(n: int) -> None:
        await sealed(store, chain, n)
        sealer = Sealer(chain, signer, owner="test")
        await sealer.lead()
        assert await sealer.checkpoint(force=True) is not None

    for _ in range(3):
        await signed(5)
    first = await archive(chain, pg_url, keys=[signer.public])
    assert (first.checkpoints, first.checkpoints_read) == (3, 3)

    async def meanwhile(link: Link) -> None:  # sealed and signed while the run copies: not archived yet
        if link.seq == 20:
            await signed(5)

    await signed(5)
    second = await archive(chain, pg_url, keys=[signer.public], after_batch=meanwhile)
    assert (second.checkpoints, second.checkpoints_read) == (1, 2)
    third = await archive(chain, pg_url, keys=[signer.public])
    assert (third.copied, third.checkpoints, third.checkpoints_read) == (5, 1, 1)
    assert [s for s, _ in await _checkpoints(pg_url)] == [5, 10, 15, 20, 25]
    other = pg_url.rsplit("/", 1)[0] + "/other_" + pg_url.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(pg.url(), autocommit=True) as c:
        await c.execute(f"CREATE DATABASE {other.rsplit('/', 1)[1]}")
    fresh = await archive(chain, other, keys=[signer.public])
    assert (fresh.copied, fresh.checkpoints) == (25, 5)


async def test_a_chain_head_moved_under_the_sealer_is_reported_and_sealing_goes_on(
        store: Store, chain: ChainStore, signer: Signer, caplog: pytest.LogCaptureFixture) -> None:
    """The chain head moved while the sealer's fencing token was still valid: only a write to
    Redis outside hitl explains it. The sealer logged "another replica leads" and carried on
    from the moved head; moved back without deleting seals, every round then failed (its seals
    came before the stream's last) and sealing stopped. It now logs an ERROR, audits
    `chain_tampered` with what it found, reports it (`/hitl stats`, the App Home, /metrics) and
    goes on from the last seal stored; `verify` flags a head behind the last seal."""
    caplog.set_level(logging.ERROR, "hitl.sealer")
    sealer = Sealer(chain, signer, owner="leader")
    for i in range(10):
        await store.redis.xadd(store.keys.audit, {"event": "clicked", "request_id": f"r{i}", "actor": "U1",
                                                  "at": "2026-01-05T12:00:00+00:00", "detail": "{}"})
    assert await sealer.seal_all() == 10
    at5 = (await chain.links([(await chain.xrange(store.keys.audit))[4][0]]))[0]
    assert at5 is not None
    await store.redis.hset(chain.k.head, mapping={"seq": at5.seq, "hash": at5.hash, "id": at5.id})
    r = await verify_live(chain, [signer.public], NO_KEY)
    assert [(p.kind, p.seq) for p in r.problems] == [("head", 5)]
    await store.redis.xadd(store.keys.audit, {"event": "clicked", "request_id": "r10", "actor": "U1",
                                              "at": "2026-01-05T12:00:00+00:00", "detail": "{}"})
    for _ in range(3):
        await sealer.step()
    assert await chain.unsealed() == 0
    head = await chain.head()
    assert head is not None and head.seq == 12  # r10 and the chain_tampered entry, after seq 10
    alarms = [e for e in await store.audit_entries() if e.event == "chain_tampered"]
    assert len(alarms) == 1 and alarms[0].actor == "system"
    assert alarms[0].detail["found"]["seq"] == 5 and alarms[0].detail["expected"]["seq"] == 10
    assert any(rec.levelno == logging.ERROR and "head moved" in rec.getMessage() for rec in caplog.records)
    status = await chain.status()
    assert status is not None and "head moved" in status.alarm
    assert "TAMPERED" in audit_line(status, status.updated_at)
    assert (await verify_live(chain, [signer.public], NO_KEY)).problems == []
