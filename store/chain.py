"""Persistence of the audit chain: seals, head, base, checkpoints, the sealing lease.

Keys (all under the prefix): `{prefix}:chain` is a stream whose entry ids are the audit
entries' ids, each with `seq` and `hash`; `:chain:head` the last sealed link; `:chain:base`
the link before the first entry still in Redis (moved by a trim); `:chain:checkpoints` the
signed checkpoints; `:chain:lease`/`:chain:fence` the leader lease and its fencing token;
`:chain:status` the leader's last report; `:chain:archived` the last link verified in the archive
(and how far the archiver has read the checkpoints).

A seal's `hash` is stored as 43 characters of unpadded base64 since issue 13 (one seal per
audit entry: 22 bytes less each than 64 hex digits); seals written before hold 64 hex digits,
and the length tells the two apart. Every hash leaves this module as lowercase hex.

Stream reads here are decoded by the client as UTF-8 (in C: the sealer's and verify's hot
path); a read that meets bytes that are not UTF-8 is sent again for raw bytes, decoded here
(`text`) with those bytes kept as lone surrogates (`surrogateescape`). A foreign writer's entry
that is not UTF-8 is then sealed and verified like any other (its canonical form escapes those
surrogates, see `bot.evidence.canonical`) instead of failing every read of the stream. Rows of
the chain's own keys are parsed defensively: a damaged seal or checkpoint comes back as None
(and is reported by verify), never as an exception in the sealer.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any

from redis.client import NEVER_DECODE

from store.chain_models import GENESIS, ChainStatus, Checkpoint, Link
from store.connect import clock_ms

Row = tuple[str, dict[str, str]]
"""A stream entry: its id and fields, decoded by `text`."""

PAGE = 1000

_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""

# KEYS: fence, head, chain; ARGV: token, expected head id ('' = none), "id,seq,hash;" for each link
# (one argument: encoding thousands of separate arguments costs more than the XADDs themselves;
# hashes packed in base64), the last link's hash in hex (the head keeps hex: one key, and a
# replica of the version before, during a rolling restart, chains and signs it as it always did)
_SEAL = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end
local head = redis.call('HGET', KEYS[2], 'id') or ''
if head ~= ARGV[2] then return 'moved' end
local id, seq, h
for a, b, c in string.gmatch(ARGV[3], '([^,;]+),([^,;]+),([^,;]+);') do
  redis.call('XADD', KEYS[3], a, 'seq', b, 'hash', c)
  id, seq, h = a, b, c
end
redis.call('HSET', KEYS[2], 'id', id, 'seq', seq, 'hash', ARGV[4])
return 'ok'
"""

# KEYS: fence, head; ARGV: token, expected head id ('' = none), seq, hash, id: the leader puts the
# head back on the last seal after a write outside hitl moved it
_REPAIR = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end
if (redis.call('HGET', KEYS[2], 'id') or '') ~= ARGV[2] then return 'moved' end
redis.call('HSET', KEYS[2], 'seq', ARGV[3], 'hash', ARGV[4], 'id', ARGV[5])
return 'ok'
"""

# KEYS: fence, checkpoints; ARGV: token, seq, hash, time, sig, key
_CHECKPOINT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end
redis.call('XADD', KEYS[2], '*', 'seq', ARGV[2], 'hash', ARGV[3], 'time', ARGV[4], 'sig', ARGV[5], 'key', ARGV[6])
return 'ok'
"""

# KEYS: base, audit, chain; ARGV: seq, hash, id, minid (first id kept). A trim that lost a race
# with another (it read the base before the other moved it further) does nothing: the base never
# moves back, or verify would find the entries between missing.
_TRIM = """
if (tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') or 0) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'hash', ARGV[2], 'id', ARGV[3])
local a = redis.call('XTRIM', KEYS[2], 'MINID', ARGV[4])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[4])
return a
"""


def packed_hash(hex_hash: str) -> str:
    """A SHA-256 hex digest as a seal stores it: unpadded base64 (43 characters)."""
    return base64.b64encode(bytes.fromhex(hex_hash)).decode().rstrip("=")


def seal_hash(stored: str) -> str:
    """A seal's stored hash as lowercase hex: 64 hex digits (seals before issue 13) as they
    are, 43 characters of base64 decoded. Anything else comes back unchanged, so a damaged
    seal is reported as a hash that does not match, never as a crash."""
    if len(stored) != 43:
        return stored
    try:
        return base64.b64decode(stored + "=", validate=True).hex()
    except (binascii.Error, ValueError):
        return stored


def text(b: bytes | str) -> str:
    """Bytes read from Redis as text: UTF-8, any byte that is not kept as a lone surrogate
    (U+DC80..U+DCFF, Python's `surrogateescape`), so nothing read here can raise and no two
    different byte strings decode alike."""
    return b if isinstance(b, str) else b.decode("utf-8", "surrogateescape")


def _rows(raw: Any) -> list[Row]:
    """Stream entries read as bytes (the verify and sealer hot path: decoded inline)."""
    return [(i.decode("utf-8", "surrogateescape"),
             {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape") for k, v in f.items()})
            for i, f in raw or () if i is not None]


def _hash(raw: Any) -> dict[str, str]:
    return {text(k): text(v) for k, v in (raw or {}).items()}


def parse_seal(entry_id: str, fields: dict[str, str]) -> Link | None:
    """The link a seal stream entry records; None when the row is damaged (no usable seq or hash)."""
    try:
        seq = int(fields["seq"])
        h = fields["hash"]
    except (KeyError, ValueError, TypeError):
        return None
    return Link(seq, seal_hash(h), entry_id) if seq > 0 and h else None


def seal_link(entry_id: str, fields: dict[str, str]) -> Link:
    """The link a seal stream entry records (ValueError on a damaged row: see `parse_seal`)."""
    link = parse_seal(entry_id, fields)
    if link is None:
        raise ValueError(f"the seal of entry {entry_id} is damaged: {fields!r}")
    return link


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def id_order(entry_id: str) -> tuple[int, int]:
    """A stream id as what orders it: (milliseconds, sequence)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _older(a: str, b: str) -> bool:
    """Whether stream id `a` comes before `b`."""
    return id_order(a) < id_order(b)


def next_id(entry_id: str) -> str:
    """The smallest stream id after `entry_id`."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


class ChainKeys:
    """The chain's keys, from the prefix (the audit stream itself is `{prefix}:audit`)."""

    def __init__(self, prefix: str) -> None:
        c = f"{prefix}:chain"
        self.chain, self.head, self.base, self.checkpoints = c, f"{c}:head", f"{c}:base", f"{c}:checkpoints"
        self.lease, self.fence, self.status, self.archived = (
            f"{c}:lease", f"{c}:fence", f"{c}:status", f"{c}:archived")


class ChainStore:
    """Reads the audit stream in order and keeps its chain; every write is fenced."""

    def __init__(self, client: Any, prefix: str = "hitl") -> None:
        self.redis: Any = client
        self.prefix = prefix
        self.audit_key = f"{prefix}:audit"
        self.k = ChainKeys(prefix)
        self._lease = client.register_script(_LEASE)
        self._seal = client.register_script(_SEAL)
        self._checkpoint = client.register_script(_CHECKPOINT)
        self._trim = client.register_script(_TRIM)
        self._repair = client.register_script(_REPAIR)

    # ---- leadership ----------------------------------------------------------------
    async def lease(self, owner: str, ttl_ms: int) -> int:
        """Take or renew the sealing lease: the fencing token while we hold it, 0 otherwise."""
        return int(await self._lease(keys=[self.k.lease, self.k.fence], args=[owner, ttl_ms]))

    async def release(self, owner: str) -> None:
        if await self.redis.get(self.k.lease) == owner:
            await self.redis.delete(self.k.lease)

    # ---- sealing -------------------------------------------------------------------
    async def _raw(self, *args: Any) -> Any:
        """A command whose reply comes back as bytes (see `text`)."""
        return await self.redis.execute_command(*args, **{NEVER_DECODE: []})

    async def _read(self, *args: Any) -> list[Row]:
        """Stream entries, decoded by the client; read again as bytes when some are not UTF-8
        (the failed read's connection is dropped by the client, so nothing is left half-read)."""
        try:
            return list(await self.redis.execute_command(*args))
        except UnicodeDecodeError:
            return _rows(await self._raw(*args))

    async def xrange(self, key: str, lo: str = "-", hi: str = "+", count: int | None = None) -> list[Row]:
        return await self._read("XRANGE", key, lo, hi, *(("COUNT", count) if count else ()))

    async def xrevrange(self, key: str, hi: str = "+", lo: str = "-", count: int | None = None) -> list[Row]:
        return await self._read("XREVRANGE", key, hi, lo, *(("COUNT", count) if count else ()))

    async def now_ms(self) -> int:
        """Redis's clock, shared by every replica (a replica's own clock may be off)."""
        return int(await clock_ms(self.redis, self.k.head))

    async def head(self) -> Link | None:
        return _link(_hash(await self._raw("HGETALL", self.k.head)))

    async def base(self) -> Link:
        """The link before the first entry kept in Redis (genesis until a trim)."""
        return _link(_hash(await self._raw("HGETALL", self.k.base))) or Link(0, GENESIS, "0-0")

    async def read_after(self, entry_id: str, count: int, block_ms: int | None = None) -> list[Row]:
        """Audit entries after `entry_id`, oldest first (waiting up to `block_ms` for one)."""
        if block_ms is None:
            return await self.xrange(self.audit_key, f"({entry_id}", "+", count=count)
        try:
            res = await self.redis.xread({self.audit_key: entry_id}, count=count, block=block_ms)
        except UnicodeDecodeError:  # the entries are there: read them as bytes, without waiting
            return _rows(await self._raw("XRANGE", self.audit_key, f"({entry_id}", "+", "COUNT", count))
        return list(res[0][1]) if res else []

    async def seal(self, token: int, expected: str, first_seq: int, ids: list[str], hashes: list[str]) -> str:
        """Store the seals of `ids` (numbered from `first_seq`) after head `expected`: `ok`,
        `fenced` (this replica lost the lease) or `moved` (the head is not where it was)."""
        blob = "".join([f"{i},{s},{packed_hash(h)};"
                        for s, i, h in zip(range(first_seq, first_seq + len(ids)), ids, hashes, strict=True)])
        return str(await self._seal(keys=[self.k.fence, self.k.head, self.k.chain],
                                    args=[token, expected, blob, hashes[-1] if hashes else ""]))

    async def last_seal(self) -> Link | None:
        """The newest seal stored (None: none, or a damaged row)."""
        rows = await self.xrevrange(self.k.chain, count=1)
        return parse_seal(*rows[0]) if rows else None

    async def repair_head(self, token: int, expected: str, link: Link) -> bool:
        """Set the head to `link` if this leader still holds the fence and the head is `expected`."""
        return str(await self._repair(keys=[self.k.fence, self.k.head],
                                      args=[token, expected, link.seq, link.hash, link.id])) == "ok"

    async def alarm(self, event: str, detail: dict[str, Any], at: str) -> str:
        """A system audit entry written by the chain's keeper (actor `system`): its id."""
        return _str(await self.redis.xadd(self.audit_key, {
            "event": event, "request_id": "", "actor": "system", "at": at,
            "detail": json.dumps(detail, sort_keys=True)}))

    async def add_checkpoint(self, token: int, cp: Checkpoint) -> bool:
        res = await self._checkpoint(keys=[self.k.fence, self.k.checkpoints],
                                     args=[token, cp.seq, cp.hash, cp.time, cp.sig, cp.key])
        return bool(res == "ok")

    async def checkpoint_rows(self, after: str | None = None) -> list[tuple[str, Checkpoint | None]]:
        """Every row of the checkpoints stream (after stream id `after`), oldest first (None: a damaged row)."""
        lo = f"({after}" if after else "-"
        return [(i, parse_checkpoint(f)) for i, f in await self.xrange(self.k.checkpoints, lo)]

    async def checkpoints(self) -> list[Checkpoint]:
        """The well-formed checkpoints, oldest first (damaged rows are left out: verify reports them)."""
        return [c for _, c in await self.checkpoint_rows() if c is not None]

    async def last_checkpoint(self) -> Checkpoint | None:
        """The newest well-formed checkpoint (a damaged newer row is passed over)."""
        hi = "+"
        while rows := await self.xrevrange(self.k.checkpoints, hi, "-", count=100):
            for _, f in rows:
                if (cp := parse_checkpoint(f)) is not None:
                    return cp
            hi = f"({rows[-1][0]}"
        return None

    # ---- reading -------------------------------------------------------------------
    async def pages(self, key: str, start: str = "-", end: str = "+") -> AsyncIterator[list[Row]]:
        """A stream's entries in `[start, end]`, a page at a time."""
        lo = start
        while True:
            rows = await self.xrange(key, lo, end, count=PAGE)
            if not rows:
                return
            yield rows
            if len(rows) < PAGE:
                return
            lo = f"({rows[-1][0]}"

    async def _each(self, key: str, ids: list[str]) -> list[list[Row]]:
        try:
            async with self.redis.pipeline(transaction=False) as p:
                for i in ids:
                    p.xrange(key, i, i)
                return [list(r) for r in await p.execute()]
        except UnicodeDecodeError:
            async with self.redis.pipeline(transaction=False) as p:
                for i in ids:
                    p.execute_command("XRANGE", key, i, i, **{NEVER_DECODE: []})
                return [_rows(r) for r in await p.execute()]

    async def links(self, ids: list[str]) -> list[Link | None]:
        """The seal of each audit entry id (None: not sealed, or a damaged seal)."""
        return [parse_seal(*r[0]) if r else None for r in await self._each(self.k.chain, ids)]

    async def entries(self, ids: list[str]) -> list[dict[str, str] | None]:
        return [r[0][1] if r else None for r in await self._each(self.audit_key, ids)]

    async def seals(self, after: str, through: str, count: int) -> list[Row]:
        """Seals after entry id `after` up to `through` (inclusive), oldest first."""
        return await self.xrange(self.k.chain, next_id(after), through, count=count)

    async def link_before(self, entry_id: str) -> Link | None:
        """The last well-formed seal strictly before `entry_id` (the prev link of a range)."""
        rows = await self.xrevrange(self.k.chain, f"({entry_id}", "-", count=1)
        if not rows:
            return None
        return parse_seal(*rows[0])

    async def unconsumed_from(self) -> str | None:
        """The first audit entry some consumer group of the audit stream has not consumed yet
        (its oldest pending entry, or the one after its last delivered); None without groups.
        Retention never trims it or what follows: the stats projector counts from there."""
        first: str | None = None
        for g in await self.redis.xinfo_groups(self.audit_key):
            name, last = _str(g.get("name")), _str(g.get("last-delivered-id")) or "0-0"
            keep = next_id(last)
            if int(g.get("pending") or 0) > 0:
                summary = await self.redis.xpending(self.audit_key, name)
                oldest = _str(summary.get("min"))
                if oldest and _older(oldest, keep):
                    keep = oldest
            if first is None or _older(keep, first):
                first = keep
        return first

    async def unsealed(self) -> int:
        head = await self.head()
        if head is None:
            return int(await self.redis.xlen(self.audit_key))
        return len(await self._raw("XRANGE", self.audit_key, f"({head.id}", "+", "COUNT", 100000))

    # ---- status, archive mark, trim ------------------------------------------------
    async def set_status(self, status: ChainStatus, ttl_s: int = 3600) -> None:
        fields = {"sealed_seq": status.sealed_seq, "signing": int(status.signing), "reason": status.reason,
                  "checkpoint_seq": "" if status.checkpoint_seq is None else status.checkpoint_seq,
                  "checkpoint_at": "" if status.checkpoint_at is None else status.checkpoint_at,
                  "updated_at": status.updated_at, "unsealed": status.unsealed, "alarm": status.alarm}
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.k.status, mapping=fields)
            p.expire(self.k.status, ttl_s)
            await p.execute()

    async def status(self) -> ChainStatus | None:
        f = await self.redis.hgetall(self.k.status)
        if not f:
            return None
        return ChainStatus(sealed_seq=int(f.get("sealed_seq") or 0), signing=f.get("signing") == "1",
                           reason=f.get("reason", ""),
                           checkpoint_seq=int(f["checkpoint_seq"]) if f.get("checkpoint_seq") else None,
                           checkpoint_at=int(f["checkpoint_at"]) if f.get("checkpoint_at") else None,
                           updated_at=int(f.get("updated_at") or 0), unsealed=int(f.get("unsealed") or 0),
                           alarm=f.get("alarm", ""))

    async def mark_archived(self, link: Link) -> None:
        await self.redis.hset(self.k.archived, mapping={"seq": link.seq, "hash": link.hash, "id": link.id})

    async def archived(self) -> Link | None:
        return _link(_hash(await self._raw("HGETALL", self.k.archived)))

    async def checkpoints_scanned(self) -> tuple[str, int] | None:
        """How far the archiver settled the checkpoints stream: (the last stream id settled, the
        archive's highest checkpoint seq then); None before the first run."""
        at, top = await self.redis.hmget(self.k.archived, ["checkpoints_id", "checkpoints_top"])
        try:
            return (_str(at), int(top)) if at else None
        except (TypeError, ValueError):
            return None

    async def mark_checkpoints_scanned(self, stream_id: str, top: int) -> None:
        await self.redis.hset(self.k.archived, mapping={"checkpoints_id": stream_id, "checkpoints_top": top})

    async def trim_through(self, link: Link) -> int:
        """Drop audit entries and seals up to `link` (inclusive), moving the base there first:
        one script, so verify always knows where the kept chain starts. Nothing when the base
        is already at or past `link` (another trim got there first): 0."""
        return int(await self._trim(keys=[self.k.base, self.audit_key, self.k.chain],
                                    args=[link.seq, link.hash, link.id, next_id(link.id)]))


def _link(f: dict[str, str]) -> Link | None:
    if not f or "seq" not in f or "id" not in f:
        return None
    return parse_seal(f["id"], f)


def parse_checkpoint(f: dict[str, str]) -> Checkpoint | None:
    """A checkpoint row; None when a field is missing or not of its type."""
    try:
        return Checkpoint(seq=int(f["seq"]), hash=f["hash"], time=int(f["time"]), sig=f["sig"], key=f["key"])
    except (KeyError, ValueError, TypeError):
        return None
