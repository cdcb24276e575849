"""`hitl audit archive`: copy sealed entries into an append-only PostgreSQL table.

Each batch is checked link by link before it is written, inserted with `ON CONFLICT (seq) DO
NOTHING`, read back and re-hashed inside the same transaction, and only then committed; the
Redis mark `:chain:archived` moves after the commit. A crash anywhere leaves either a
committed, verified batch or nothing, and a rerun starts after the archive's highest seq:
nothing twice, nothing lost. Redis is trimmed only through what the archive holds.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.evidence.archive_schema import MIGRATIONS
from bot.evidence.canonical import canonical, entry_hash
from bot.evidence.signing import key_id, signature_ok
from store.chain import ChainStore, parse_seal
from store.chain_models import Checkpoint, Link

BATCH = 500
LOCK = 0x6869746C  # pg advisory lock: one archiver (and one migration) at a time
_HEX64 = re.compile("[0-9a-f]{64}")
_KEY_ID = re.compile("[0-9a-f]{16}")
_SIG = re.compile("[A-Za-z0-9+/]{86}==")
"""Base64 of a 64-byte Ed25519 signature."""


class ArchiveError(Exception):
    """The archive cannot proceed; the message is one line that says why."""


@dataclass
class ArchiveResult:
    copied: int = 0
    last: Link | None = None
    checkpoints: int = 0
    """Checkpoints inserted by this run."""
    checkpoints_read: int = 0
    """Checkpoint rows this run read from Redis (only those after what earlier runs settled)."""
    trimmed: int = 0


def column(value: str) -> str:
    """An entry field for the extracted text columns (`event`, `request_id`, `actor`, `at`):
    PostgreSQL text holds no NUL and only valid UTF-8, so NUL is written as the four characters
    `\\x00` and a byte that was not UTF-8 as `\\udcXX`. Only these lookup columns change:
    `fields` holds the canonical JSON that was hashed (where both are JSON escapes)."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    try:
        return await psycopg.AsyncConnection.connect(url, connect_timeout=5)
    except psycopg.Error as e:
        raise ArchiveError(f"cannot reach the archive database: {_line(e)}") from None


async def migrate(conn: psycopg.AsyncConnection[Any], *, apply: bool) -> list[int]:
    """Apply the migrations not applied yet (only with `apply`); the versions applied."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        row = await (await conn.execute("SELECT to_regclass('hitl_audit_schema') IS NOT NULL")).fetchone()
        done: set[int] = set()
        if row and row[0]:
            done = {r[0] for r in await (await conn.execute("SELECT version FROM hitl_audit_schema")).fetchall()}
        todo = [(v, sql) for v, sql in MIGRATIONS if v not in done]
        if todo and not apply:
            raise ArchiveError("the archive schema is not installed or not current: run "
                               "`hitl audit archive --migrate --to <url of the tables' owner>` once")
        if todo and not done:
            await conn.execute("CREATE TABLE IF NOT EXISTS hitl_audit_schema (version int PRIMARY KEY, "
                               "applied_at timestamptz NOT NULL DEFAULT now())")
        for v, sql in todo:
            await conn.execute(sql)
            await conn.execute("INSERT INTO hitl_audit_schema (version) VALUES (%s)", (v,))
        return [v for v, _ in todo]


async def _archived_head(conn: psycopg.AsyncConnection[Any]) -> Link | None:
    row = await (await conn.execute(
        "SELECT seq, hash, entry_id FROM hitl_audit ORDER BY seq DESC LIMIT 1")).fetchone()
    return Link(int(row[0]), row[1], row[2]) if row else None


async def archive(chain: ChainStore, url: str, *, batch: int = BATCH, migrate_schema: bool = True,
                  after_batch: Callable[[Link], Awaitable[None]] | None = None,
                  keys: list[Ed25519PublicKey] | None = None) -> ArchiveResult:
    """Copy every sealed entry not yet archived; ArchiveError (one line) when it cannot.
    `keys`: the checkpoint signing key(s), so only real checkpoints take a seq's place."""
    conn = await connect(url)
    res = ArchiveResult()
    try:
        await migrate(conn, apply=migrate_schema)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK + 1,))
            prev = await _archived_head(conn)
        if prev is not None:
            await _check_archive_head(chain, prev)
        else:
            prev = await chain.base()
        head = await chain.head()
        while head is not None and prev.seq < head.seq:
            page = await chain.seals(prev.id, head.id, batch)
            if not page:
                break
            prev = await _copy(conn, chain, page, prev)
            res.copied += len(page)
            res.last = prev
            if after_batch is not None:
                await after_batch(prev)
        res.checkpoints, res.checkpoints_read = await _copy_checkpoints(conn, chain, keys or [])
        if res.last is None:
            res.last = await _archived_head(conn)
            if res.last is not None:
                await chain.mark_archived(res.last)
        return res
    except psycopg.Error as e:
        raise ArchiveError(f"archive database error: {_line(e)}") from None
    finally:
        await conn.close()


async def _check_archive_head(chain: ChainStore, prev: Link) -> None:
    """The archive's last row must be a link of the live chain: still in Redis with the same
    hash, or the link a trim left as the base. Anything else (a new Redis, a FLUSHALL, another
    prefix's archive) must stop the archiver before it marks the other chain's seq as archived:
    retention would then move this chain's base to a link it never had."""
    live = (await chain.links([prev.id]))[0]
    if live is not None:
        if live.hash != prev.hash:
            raise ArchiveError(f"the archive and the live chain disagree at seq {prev.seq}: "
                               "run `hitl audit verify`")
        return
    base = await chain.base()
    if base.seq == prev.seq and base.hash == prev.hash:
        return
    if base.seq > prev.seq:
        raise ArchiveError(f"Redis was trimmed through seq {base.seq} but the archive holds only through seq "
                           f"{prev.seq}: entries seq {prev.seq + 1}..{base.seq} are in neither; nothing archived")
    raise ArchiveError(f"the archive holds seq {prev.seq} (entry {prev.id}), which the live chain neither holds nor "
                       f"trimmed (its base is seq {base.seq}): the archive of another Redis or prefix? Archive each "
                       "chain to its own database; nothing archived")


async def _copy(conn: psycopg.AsyncConnection[Any], chain: ChainStore,
                page: list[tuple[str, dict[str, str]]], prev: Link) -> Link:
    """Check, insert, read back and re-check one batch, in one transaction; the new last link."""
    entries = await chain.entries([i for i, _ in page])
    rows, broken = [], None
    for (entry_id, f), fields in zip(page, entries, strict=True):
        link = parse_seal(entry_id, f)
        if link is None:
            broken = f"the seal of entry {entry_id} is damaged"
            break
        seq, h = link.seq, link.hash
        if fields is None:
            broken = f"entry seq {seq} ({entry_id}) is missing from Redis"
        elif seq != prev.seq + 1 or entry_hash(prev.hash, seq, entry_id, fields) != h:
            broken = f"the chain is broken at seq {seq}"
        if broken or fields is None:
            break
        rows.append((seq, entry_id, prev.hash, h, canonical(fields).decode(), *(
            column(fields.get(k, "")) for k in ("event", "request_id", "actor", "at"))))
        prev = Link(seq, h, entry_id)
    if rows:
        await _insert(conn, rows)
        await chain.mark_archived(prev)
    if broken:
        raise ArchiveError(f"{broken}: nothing after seq {prev.seq} archived; run `hitl audit verify`")
    return prev


async def _insert(conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]]) -> None:
    first, last = rows[0][0], rows[-1][0]
    async with conn.transaction():
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO hitl_audit (seq, entry_id, prev_hash, hash, fields, event, request_id, actor, at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (seq) DO NOTHING", rows)
            await cur.execute("SELECT seq, entry_id, prev_hash, hash, fields FROM hitl_audit "
                              "WHERE seq BETWEEN %s AND %s ORDER BY seq", (first, last))
            back = await cur.fetchall()
        expected = [(r[0], r[1], r[2], r[3]) for r in rows]
        got = [(int(b[0]), b[1], b[2], b[3]) for b in back]
        if got != expected or any(entry_hash(b[2], int(b[0]), b[1], json.loads(b[4])) != b[3] for b in back):
            raise ArchiveError(f"the archive does not read back what was written for seq {first}..{last}: "
                               "rolled back")


def _well_formed(c: Checkpoint) -> bool:
    """A row the sealer could have written (anything else would not fit the columns, or fail
    the whole run): seq and time in range, a hex hash and key id, a 64-byte signature."""
    return (0 < c.seq < 2**63 and 0 <= c.time < 2**63 and _HEX64.fullmatch(c.hash) is not None
            and _KEY_ID.fullmatch(c.key) is not None and _SIG.fullmatch(c.sig) is not None)


async def _copy_checkpoints(conn: psycopg.AsyncConnection[Any], chain: ChainStore,
                            keys: list[Ed25519PublicKey]) -> tuple[int, int]:
    """Checkpoints of what the archive holds: well-formed, at an archived seq with its hash;
    (inserted, rows read). The table keeps one per seq and is append-only, so a row anyone wrote
    into Redis ahead of the real checkpoint must not take its place: those verifying with one of
    `keys` (the signing key) go in first, a row naming one of those keys that does not verify never.

    Only rows after those an earlier run settled are read: settled is every row up to the first
    one that could still go in later (a checkpoint of entries the archive does not hold yet),
    remembered in Redis with the archive's highest checkpoint seq, so another database (or
    rows another archiver added) starts from the first row again."""
    known = {key_id(k): k for k in keys}
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT coalesce(max(seq), 0) FROM hitl_audit_checkpoints")
        top = int((await cur.fetchone() or (0,))[0])
        scanned = await chain.checkpoints_scanned()
        rows = await chain.checkpoint_rows(scanned[0] if scanned and scanned[1] == top else None)
        head = await _archived_head(conn)
        held = head.seq if head else 0
        settled = None
        for row_id, c in rows:
            if c is not None and _well_formed(c) and c.seq > held:
                break  # may go in once its entries are archived: read again next run
            settled = row_id
        cps = [c for _, c in rows if c is not None and _well_formed(c) and c.seq <= held]
        seqs = sorted({c.seq for c in cps})
        await cur.execute("SELECT seq, hash FROM hitl_audit WHERE seq = ANY(%s)", (seqs,))
        archived = {(int(seq), h) for seq, h in await cur.fetchall()}
        await cur.execute("SELECT seq FROM hitl_audit_checkpoints WHERE seq = ANY(%s)", (seqs,))
        taken = {int(r[0]) for r in await cur.fetchall()}
        real: dict[int, Checkpoint] = {}
        other: dict[int, Checkpoint] = {}
        for c in cps:
            if (c.seq, c.hash) not in archived or c.seq in taken:
                continue
            if c.key not in known:
                other.setdefault(c.seq, c)
            elif signature_ok(known[c.key], c):
                real.setdefault(c.seq, c)
        new = list({**other, **real}.values())
        await cur.executemany(
            "INSERT INTO hitl_audit_checkpoints (seq, hash, time_ms, sig, key_id) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (seq) DO NOTHING", [(c.seq, c.hash, c.time, c.sig, c.key) for c in new])
    if settled is not None:
        await chain.mark_checkpoints_scanned(settled, max([top, *(c.seq for c in new)]))
    return len(new), len(rows)


async def trim(chain: ChainStore, keep_days: float | None) -> int:
    """Drop from Redis what the archive holds (and is older than `keep_days`), never an entry
    a consumer group of the audit stream (the stats projector) has not consumed: entries removed."""
    mark = await chain.archived()
    if mark is None:
        return 0
    if keep_days:
        cutoff = int((time.time() - keep_days * 86400) * 1000)
        before = await chain.link_before(f"{cutoff}-0")
        if before is None:
            return 0
        if before.seq < mark.seq:
            mark = before
    unconsumed = await chain.unconsumed_from()  # what the stats projector has yet to count stays
    if unconsumed is not None:
        before = await chain.link_before(unconsumed)
        if before is None:
            return 0
        if before.seq < mark.seq:
            mark = before
    base = await chain.base()
    if mark.seq <= base.seq:
        return 0
    return await chain.trim_through(mark)


async def maintain_archive(chain: ChainStore, url: str, retention_days: float | None,
                           keys: list[Ed25519PublicKey] | None = None) -> None:
    """What the sealing leader runs every HITL_AUDIT_ARCHIVE_S: archive, then apply retention."""
    await archive(chain, url, migrate_schema=False, keys=keys)
    if retention_days:
        await trim(chain, retention_days)
