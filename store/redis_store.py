"""`Store`: the product's Redis persistence. Values cross its edge as models, never raw bytes.

Every multi-step change is one Lua script (see `store/lua/`) that checks first and then
writes, so replicas sharing one Redis never decide twice and a retried call changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from store.accept import Accepted, accept_call, decision_stats
from store.audit_feed import AuditFeed
from store.chain import ChainStore, id_order
from store.connect import check_prefix, connect, hash_tag, same_slot
from store.durable import WAIT_TIMEOUT_MS, run_waited
from store.errors import AlreadyDecided, Conflict, NotFound
from store.failures import StoreFailure, Unavailable
from store.keys import Keys, is_request_id
from store.models import (
    RECORD_EXTRAS,
    AuditEvent,
    Batch,
    Decision,
    Intake,
    Record,
    Request,
    Review,
    Route,
    from_epoch,
)
from store.packing import use_fast_packing
from store.slack_once import SlackClaims
from store.stats import StatsStore
from store.stream import GROUP, Entry
from store.transitions import Transition
from store.trust import TrustStore

__all__ = ["GROUP", "Accepted", "Entry", "Intake", "Store"]

DEAD_FIELDS_MAX = 32
"""Raw fields kept in a dead letter (an entry may have thousands; a Lua call takes ~8,000 args)."""
DEAD_BYTES_MAX = 128 * 1024
"""Raw bytes kept in a dead letter; past this the entry is cut, marked `truncated`."""

DURABLE = frozenset({"accept", "dead", "apply", "review", "mark_posted", "batch_shown", "control"})
TRUST_RECOUNT_MS = 60_000
"""A decision's or review's trust count not done this long after it (the replica died, Redis
failed) is done by the scheduler (`trust:<id>`)."""
"""State changes that the bot acts on outside Redis (Slack, the agent), waited for when
`wait_replicas` is set; the rest (leases, pacing, the outbox) is re-derived after a failover."""
log = logging.getLogger("hitl.store")


def _script(name: str) -> str:
    lua = resources.files("store") / "lua"
    return "\n".join((lua / f).read_text() for f in ("_prelude.lua", "_stats.lua", f"{name}.lua"))


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class Store:
    """Redis persistence for requests, decisions, the outbox and the audit trail."""

    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str = "hitl", *,
                 wait_replicas: int = 0) -> None:
        # redis-py's response types are unions for every decode mode (bytes | str); this
        # client decodes, so values are cast to str where they are turned into models. A
        # RedisCluster client answers the same commands (typed here as the plain client).
        self.redis: aioredis.Redis = cast(aioredis.Redis, client)
        if not isinstance(client, RedisCluster):
            use_fast_packing(client)
        self.keys = Keys(prefix)
        self.stats = StatsStore(client, self.keys)
        """The stats counters and report, on this store's client."""
        self.chain = ChainStore(client, prefix)
        """The sealed audit chain: seals, checkpoints, the sealer's lease and status."""
        """The stats counters and report, on this store's client."""
        self.redact: Callable[[dict[str, Any]], dict[str, Any]] = lambda detail: detail
        """Applied to every audit detail before it is written (and sealed): the policy's `redact:`."""
        self.cluster = isinstance(client, RedisCluster)
        if wait_replicas and self.cluster:
            raise ValueError("WAIT is not available on a Redis Cluster client (it must follow the write "
                             "on the same connection)")
        self.wait_replicas = wait_replicas
        self.trust = TrustStore(client, self.keys, wait_replicas=wait_replicas)
        self.slack_claims = SlackClaims(client, self.keys)
        """Slack requests already handled (handlers.once)."""
        """Autonomy per action, grants, delegation, calibration and canaries (store/trust.py)."""
        self._scripts = {
            name: client.register_script(_script(name))
            for name in (
                "accept",
                "dead",
                "apply",
                "audit",
                "outbox_claim",
                "outbox_done",
                "outbox_add",
                "mark_posted",
                "post_recheck",
                "pace",
                "join_batch",
                "batch_shown",
                "batch_round",
                "review",
                "control",
                "policy",
                "trim_requests",
                "undeliverable",
            )
        }

    @classmethod
    def from_url(cls, url: str, prefix: str = "hitl", *, wait_replicas: int = 0, **kwargs: Any) -> Store:
        """A store on its own connections to a server, a Redis Cluster or a Sentinel master
        (see `store.connect`); a cluster needs a hash-tagged prefix such as `{hitl}`.
        `wait_replicas`: each state change returns once that many replicas have it (or after
        WAIT_TIMEOUT_MS, logged), so nothing the bot acted on is lost by a failover."""
        check_prefix(url, prefix)
        return cls(connect(url, **kwargs), prefix, wait_replicas=wait_replicas)

    def reply_to_problem(self, reply_to: str) -> str | None:
        """Why the bot cannot write a decision to `reply_to` in the same step as the state
        change (None: it can). On a cluster the stream must share the prefix's slot."""
        if self.cluster and not same_slot(reply_to, self.keys.requests):
            return (f"reply_to {reply_to!r} is in another Redis Cluster slot than the bot's keys; "
                    f"use {self.keys.results_prefix}<name>, or a stream of your own whose first "
                    f"{{...}} is {{{hash_tag(self.keys.prefix)}}} (such as agent:{{{hash_tag(self.keys.prefix)}}}:inbox)")
        return None

    async def close(self) -> None:
        await self.redis.aclose()

    async def clear(self) -> int:
        """Delete every key of this prefix (the demo starts empty); others' keys are never touched."""
        keys = [k async for k in self.redis.scan_iter(f"{self.keys.prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await self.redis.delete(*keys[i:i + 1000])
        return len(keys)

    def audit_feed(self, url: str, *, block_ms: int) -> AuditFeed:
        """The audit stream as the stats projector reads it (blocking reads on their own connection)."""
        return AuditFeed(url, self.redis, self.keys, block_ms=block_ms)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    def _decisions(self, route: Route) -> str:
        """Where a decision is published: a canary's goes to a stream no agent reads."""
        return self.trust.k.canary_decisions if route.canary else self.keys.decisions

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await run_waited(self.redis, self._scripts[name], name, keys, args,
                                self.wait_replicas if name in DURABLE else 0)

    # ---- intake ---------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the consumer group (from the stream's start, so earlier entries count)."""
        try:
            await self.redis.xgroup_create(self.keys.requests, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def accept(self, entry_id: str, acc: Accepted, now: datetime) -> str:
        """Store a valid request and ack its entry in one step: accepted, duplicate, redelivered,
        or (nothing written) `paused:<0|1>` / `first_use:<0|1>` when it was routed on a stale
        copy of the switch or the seen actions, `reply_type:<type>` when reply_to is unusable."""
        [verdict] = await self.accept_many([(entry_id, acc)], now)
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    async def accept_many(self, items: list[tuple[str, Accepted]], now: datetime) -> list[str | Exception]:
        """`accept` for a whole read batch in one round trip: one script call per entry (each
        entry's effects and its XACK atomic), so an entry that fails fails alone: its verdict
        is the exception. A connection failure raises for the batch (nothing acknowledged
        is lost: every call is guarded by its XACK). With `wait_replicas`, one WAIT after the
        batch covers every accept in it; on a Redis Cluster (whose pipelines refuse scripts)
        the calls go side by side instead."""
        calls: list[tuple[list[str], list[Any]] | Exception] = []
        for entry_id, acc in items:
            try:
                calls.append(accept_call(self.keys, entry_id, acc, now, decisions=self._decisions(acc.route),
                                         redact=self.redact))
            except Exception as e:  # this entry's arguments could not be built: it fails alone
                calls.append(e)
        sent = [c for c in calls if not isinstance(c, Exception)]
        res = await self._send_accepts(sent) if sent else []
        answers = iter(res)
        out: list[str | Exception] = []
        for c in calls:
            r = c if isinstance(c, Exception) else next(answers)
            out.append(r if isinstance(r, Exception) else str(r))
        return out

    async def _send_accepts(self, sent: list[tuple[list[str], list[Any]]]) -> list[Any]:
        script = self._scripts["accept"]
        if self.cluster:  # redis-py's cluster pipelines refuse scripts: send them side by side
            each = await asyncio.gather(*(script(keys=k, args=a) for k, a in sent), return_exceptions=True)
            for r in each:  # unreachable (or cancelled) fails the batch, as a pipeline would
                if isinstance(r, BaseException) and (isinstance(r, Unavailable) or not isinstance(r, Exception)):
                    raise r
            return list(each)
        res: list[Any] = []
        acked: Any = None
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as p:
                for keys, args in sent:
                    p.evalsha(script.sha, len(keys), *keys, *args)
                if self.wait_replicas:  # WAIT covers the writes of its own connection: the whole batch
                    p.execute_command("WAIT", self.wait_replicas, WAIT_TIMEOUT_MS)
                res = await p.execute(raise_on_error=False)
            if self.wait_replicas:
                acked = res.pop()
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in res):
                await self.redis.script_load(script.script)  # Redis restarted: load, then send again
                continue
            break
        if self.wait_replicas and (isinstance(acked, Exception) or int(acked) < self.wait_replicas):
            log.warning("accept reached %s of %d replicas within %d ms (%d requests); a failover now could "
                        "lose them", acked, self.wait_replicas, WAIT_TIMEOUT_MS, len(sent))
        return res

    async def dead_letter(
        self,
        entry: Entry,
        error: str,
        now: datetime,
        *,
        request_id: str,
        decision: Decision | None,
        reply_to: str | None,
        max_len: int = 10_000,
        max_age_s: float | None = None,
        taken: bool = False,
        event: str = "invalid",
    ) -> str:
        """Move an unusable entry to the dead-letter stream, tell its agent, ack it, audit `event`.

        The dead letters keep at most `max_len` entries, none older than `max_age_s`. An id
        that has a live record gets no `invalid` decision ('dead_live'): that id is decided
        by its record. `taken`: the entry is another agent's (or action's) under that live id;
        its `invalid` decision goes to its own `reply_to` alone (never the holder's: the caller
        leaves that out), not to the decisions stream, and no marker is left."""
        k = self.keys
        min_id = f"{max(0, _ms(now) - int(max_age_s * 1000))}-0" if max_age_s else ""
        args: list[Any] = [
            GROUP,
            entry.id,
            self.redact({"error": error})["error"],
            now.isoformat(),
            request_id,
            decision.model_dump_json() if decision else "",
            "1" if reply_to else "0",
            max_len,
            min_id,
            decision.request_id if decision else request_id,
            "1" if taken else "",
            event,
            *dead_fields(entry),
        ]
        keys = [
            k.requests,
            k.dead,
            k.audit,
            k.trail(request_id),
            k.decisions,
            reply_to or k.decisions,
            k.invalid(request_id),
            k.request(request_id),
            k.queued(request_id),
        ]
        return str(await self._run("dead", keys, args))

    async def ack(self, entry_id: str) -> None:
        """Acknowledge a queue entry whose effect is stored already (a withdrawal applied by an
        earlier delivery of the same entry, or sent again)."""
        await self.redis.xack(self.keys.requests, GROUP, entry_id)

    async def queue_lag(self) -> int:
        """Entries of the requests stream not yet read or not yet acknowledged by intake."""
        if not await self.redis.exists(self.keys.requests):
            return 0
        for g in await self.redis.xinfo_groups(self.keys.requests):
            if g["name"] == GROUP:
                return int(g.get("lag") or 0) + int(g.get("pending") or 0)
        return 0

    async def dead_count(self) -> int:
        """Entries in the dead-letter stream."""
        return int(await self.redis.xlen(self.keys.dead))

    async def trim_requests(self) -> int:
        """Drop acknowledged entries from the requests stream (never an unread or pending one)."""
        return int(await self._run("trim_requests", [self.keys.requests], []))

    async def action_seen(self, action: str) -> bool:
        return bool(await self.redis.sismember(self.keys.actions_seen, action))

    # ---- records ----------------------------------------------------------------------

    def trail_key(self, request_id: str) -> str:
        return self.keys.trail(request_id)

    async def exists(self, request_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.request(request_id)))

    async def secret(self, name: str) -> bytes:
        """This deployment's random key `name` (made by the first replica to ask, then kept):
        what the bot vouches for with it, no agent can forge, for agents cannot read the bot's
        keys (docs/redis.md, ACLs)."""
        return (await self.secrets([name]))[name]

    async def secrets(self, names: list[str]) -> dict[str, bytes]:
        """`secret` of each of `names`, in one round trip."""
        async with self.redis.pipeline(transaction=False) as p:
            for name in names:
                p.set(self.keys.secret(name), secrets.token_hex(32), nx=True)
                p.get(self.keys.secret(name))
            found = await p.execute()
        out = {}
        for name, value in zip(names, found[1::2], strict=True):
            if not value:  # only an eviction between the two commands: the next call makes another
                raise StoreFailure(f"{self.keys.secret(name)} could not be read back")
            out[name] = str(value).encode()
        return out

    async def get(self, request_id: str) -> Record:
        """The stored record, or NotFound."""
        return (await self.get_posting(request_id))[0]

    async def get_posting(self, request_id: str) -> tuple[Record, str | None]:
        """The stored record (or NotFound) and the note of an unfinished post attempt of its
        card (`note_post_attempt`), in one read: a card's post needs both before its slot."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.keys.request(request_id)))
        if not raw:
            raise NotFound(request_id)
        return _record(raw), raw.get("post_attempt")

    async def apply(self, t: Transition, now: datetime, *, count_trust: bool = False,
                    ack: str | None = None) -> Record:
        """Write a transition if the record is still pending at the version it was computed from.
        `ack`: a queue entry (a withdrawal) acknowledged in the same step as the write.

        `count_trust`: a decision by people whose trust count (`handlers.trust`) must happen:
        `trust:<id>` is scheduled with it, `TRUST_RECOUNT_MS` on, and taken off once counted,
        so a replica that dies (or a Redis error) before counting cannot lose the count."""
        k, rec = self.keys, t.record
        reply = rec.request.reply_to or ""
        args: list[Any] = [rec.id, rec.version, _ms(now), now.isoformat(), len(t.fields)]
        for name, value in t.fields.items():
            args += [name, value]
        args += [
            t.decision.model_dump_json() if t.decision else "",
            "1" if reply else "0",
            f"update:{rec.id}" if t.update_card else "",
        ]
        deadlines = [f"{kind}:{rec.id}" for kind in DEADLINE_KINDS] if t.final else []
        schedule = list(t.schedule)
        if count_trust and t.decision is not None:
            schedule.append((f"trust:{rec.id}", _ms(now) + TRUST_RECOUNT_MS))
        args += [len(deadlines), *deadlines, len(schedule)]
        args += [x for member, due in schedule for x in (member, due)]
        args += [len(t.audit)]
        for event, actor, detail in t.audit:
            args += [event, actor, json.dumps(self.redact(detail), default=str)]
        args.append(t.message or "")
        stats, total_key, hour_key, expire = decision_stats(self.keys, t, _ms(now))
        # last: this call's token, so the client's retry after a lost reply finds its own write
        args += [stats, expire, GROUP if ack else "", ack or "", uuid.uuid4().hex[:16]]
        keys = [
            k.request(rec.id),
            k.trail(rec.id),
            k.audit,
            k.pending,
            k.outbox,
            self._decisions(rec.route),
            reply or self._decisions(rec.route),
            k.deadlines,
            k.outbox_again,
            total_key,
            hour_key,
            k.requests,
        ]
        if t.message and not rec.route.canary:
            keys.append(k.messages)
        res = await self._run("apply", keys, args)
        status = res[0]
        if status == "ok":
            return _after(t, int(res[1]))
        if status == "missing":
            raise NotFound(rec.id)
        if status == "decided":
            raise AlreadyDecided(await self.get(rec.id))
        raise Conflict(f"request {rec.id} changed (version {res[1]}, expected {rec.version})")

    async def review(self, record: Record, review: Review, message: str, now: datetime) -> None:
        """Record a person's verdict on an action that ran on its own (once); AlreadyDecided
        carries the record when someone reviewed it first."""
        k, reply = self.keys, record.request.reply_to or ""
        keys = [k.request(record.id), k.trail(record.id), k.audit, k.outbox, reply or k.decisions,
                k.outbox_again, k.deadlines]
        if not record.route.canary:
            keys += [k.decisions, k.messages]
        args = [record.id, json.dumps(self.redact(review.model_dump(mode="json"))), review.verdict, _ms(now), now.isoformat(),
                "1" if reply else "0", message, _ms(now) + TRUST_RECOUNT_MS]
        res = await self._run("review", keys, args)
        if res[0] == "missing":
            raise NotFound(record.id)
        if res[0] == "reviewed":
            raise AlreadyDecided(await self.get(record.id))
        if res[0] == "pending":
            raise Conflict(f"request {record.id} is still waiting for a decision")

    async def trust_counted(self, request_id: str) -> None:
        """The trust count of a decision or review by people is done: no recount is due."""
        await self.redis.zrem(self.keys.deadlines, f"trust:{request_id}")

    async def audit(
        self, request_id: str, event: str, actor: str, detail: dict[str, Any], now: datetime,
        *, key: str | None = None,
    ) -> str:
        """Append one audit entry outside a transition (refusals, post failures); its id.

        Once per idempotency `key` (a fresh one per call by default): the client's retry of a
        call whose reply was lost adds nothing."""
        k = self.keys
        args = [event, request_id, actor, now.isoformat(), json.dumps(self.redact(detail), default=str), "1"]
        keys = [k.audit, k.trail(request_id), k.audit_once(key or uuid.uuid4().hex)]
        return str(await self._run("audit", keys, args))

    async def audit_system(self, event: str, actor: str, detail: dict[str, Any], now: datetime,
                           *, key: str | None = None) -> str:
        """An audit entry about the system itself (policy changed, paused), not one request;
        once per idempotency `key`, like `audit`."""
        k = self.keys
        once = k.audit_once(key or uuid.uuid4().hex)
        args = [event, "", actor, now.isoformat(), json.dumps(self.redact(detail), default=str), "0"]
        return str(await self._run("audit", [k.audit, once, once], args))

    async def policy_in_force(self, digest: str, source: str, now: datetime) -> str:
        """Audit `policy_changed` unless the policy last audited as in force has this `digest`:
        the id of the entry written ('' when none was needed). Every replica calls it when it
        starts and on each reload, so a change made while the bot was down is audited too, and
        one change is one entry whichever replicas see it."""
        args = [digest, source, now.isoformat(),
                json.dumps(self.redact({"source": source, "digest": digest}), default=str)]
        return str(await self._run("policy", [self.keys.policy, self.keys.audit], args))

    async def trail(self, request_id: str) -> list[AuditEvent]:
        """Every audit entry of one request, oldest first: the run intake wrote (its id range in
        the record's `intake` field) and those listed on `{prefix}:trail:<id>` by every other step.
        A name outside the id alphabet (typed in `/hitl audit`) has none: it is not looked up
        (`<id>:notices` names another key of a request, of another type)."""
        if not is_request_id(request_id):
            return []
        async with self.redis.pipeline(transaction=False) as p:
            p.hget(self.keys.request(request_id), "intake")
            p.lrange(self.keys.trail(request_id), 0, -1)
            intake, ids = await p.execute()
        span = Intake.parse(str(intake)).trail if intake else None
        try:
            async with self.redis.pipeline(transaction=False) as p:
                if span:
                    p.xrange(self.keys.audit, *span)
                for i in ids:
                    p.xrange(self.keys.audit, i, i)
                rows = await p.execute()
        except UnicodeDecodeError:  # an entry that is not UTF-8 (only a foreign writer makes one)
            rows = [await self.chain.xrange(self.keys.audit, *span)] if span else []
            rows += [await self.chain.xrange(self.keys.audit, i, i) for i in ids]
        found = [row for r in rows for row in r]  # the range holds only this request's entries
        return [_audit(i, f) for i, f in sorted(found, key=lambda row: id_order(row[0]))]

    async def audit_entries(self, count: int = 1000) -> list[AuditEvent]:
        rows = cast(list[tuple[str, dict[str, str]]], await self.redis.xrange(self.keys.audit, count=count))
        return [_audit(i, f) for i, f in rows]

    # ---- outbox -----------------------------------------------------------------------

    async def claim_due(
        self, key: str, now_ms: int, lease_ms: int, limit: int = 20
    ) -> tuple[int, list[str]]:
        """Lease due members of a due-time sorted set (outbox, deadlines): each fires once."""
        until = now_ms + lease_ms
        members = await self._run("outbox_claim", [key], [now_ms, until, limit])
        return until, [str(m) for m in members]

    async def finish_due(
        self, key: str, member: str, lease: int, retry_at_ms: int | None = None
    ) -> bool:
        """Remove (or reschedule) a leased member; if it was queued again meanwhile, run it again."""
        args = [member, lease, "" if retry_at_ms is None else retry_at_ms, int(time.time() * 1000)]
        return bool(await self._run("outbox_done", [key, f"{key}:again"], args))

    async def claim_outbox(
        self, now_ms: int, lease_ms: int, limit: int = 20
    ) -> tuple[int, list[str]]:
        """Lease due outbox operations; returns the lease end and the members."""
        return await self.claim_due(self.keys.outbox, now_ms, lease_ms, limit)

    async def finish_outbox(self, member: str, lease: int, retry_at_ms: int | None = None) -> bool:
        """Remove (or reschedule) a leased operation unless it was queued again meanwhile."""
        return await self.finish_due(self.keys.outbox, member, lease, retry_at_ms)

    # ---- pacing and batches -----------------------------------------------------------

    async def pace(self, bucket: str, member: str, now_ms: int, rate: float, burst: float,
                   *, reserve: bool = True) -> int:
        """Milliseconds until `member` may make its paced Slack call (0: now), by reservation.

        The bucket is shared by every replica; a member told to wait holds a slot and gets 0
        when it asks again at that slot. Without `reserve`, a member that must wait holds no
        slot (it gives way to those that do) and is told when a token will be free."""
        keys = [self.keys.rate(bucket), self.keys.rate(bucket) + ":slots"]
        return int(await self._run("pace", keys, [member, now_ms, rate, burst, "", "1" if reserve else "0"]))

    async def block(self, bucket: str, now_ms: int, until_ms: int) -> None:
        """Close a bucket until `until_ms` (a 429's Retry-After), dropping its reservations."""
        keys = [self.keys.rate(bucket), self.keys.rate(bucket) + ":slots"]
        await self._run("pace", keys, ["", now_ms, 1, 1, until_ms, "1"])

    join_attempts = 5
    """Reads of the open batch a join makes while other joins keep changing it; the last attempt
    opens a new batch (always correct: the request is shown, on a card of its own group)."""

    async def join_batch(self, record: Record, new_id: str, now_ms: int) -> str:
        """The batch card a grouped request is shown on: the open one of its group while one of
        its items still waits for a person, else a new one (`new_id`).

        The open batch's items are read here and their keys passed to the script, which
        decides only if that read still holds (else the batch is read again: another join
        landed meanwhile); after `join_attempts` reads the request opens a new batch."""
        for attempt in range(1, self.join_attempts + 1):
            seen = await self._open_batch(record)
            bid = await self._join_batch(record, new_id, now_ms, seen, force_new=attempt >= self.join_attempts)
            if bid is not None:
                if attempt == self.join_attempts and bid == new_id:
                    log.info("join_batch: the open batch of group %s kept changing; %s opened %s", record.route.group,
                             record.id, bid)
                return bid
        raise AssertionError("unreachable: the last attempt opens a new batch")

    async def _open_batch(self, record: Record) -> tuple[str, list[str]]:
        """The open batch of the record's (channel, group) and its item ids ('', [] when none)."""
        assert record.route.group is not None
        bid = str(await self.redis.get(self.keys.open_batch(record.route.channel, record.route.group)) or "")
        if not bid:
            return "", []
        return bid, [str(i) for i in await self.redis.lrange(self.keys.batch_items(bid), 0, -1)]

    async def _join_batch(self, record: Record, new_id: str, now_ms: int, seen: tuple[str, list[str]],
                          *, force_new: bool = False) -> str | None:
        """One join, given the open batch read (`seen`); None when it changed since (read again).
        `force_new` skips the open batch: the request opens a new one."""
        route = record.route
        assert route.group is not None
        bid, items = seen
        keys = [self.keys.open_batch(route.channel, route.group), self.keys.request(record.id),
                self.keys.batch(new_id), self.keys.batch_items(new_id)]
        if bid:
            keys += [self.keys.batch_items(bid), *(self.keys.request(i) for i in items)]
        args = [new_id, record.id, route.channel, route.group, now_ms, route.batch_window_s * 1000,
                route.batch_max, "1" if route.group.startswith("review:") else "0", bid,
                "1" if force_new else "0", *items]
        result = await self._run("join_batch", keys, args)
        return None if isinstance(result, list) else str(result)

    async def claim_batch_reminder(self, batch_id: str, request_id: str, now_ms: int, gap_ms: int) -> bool:
        """Whether `request_id` posts its batch card's reminder this round (store/lua/batch_round.lua):
        the card gets one reminder, not one per item."""
        ttl_s = max(60, 2 * gap_ms // 1000)
        held, _, _ = await self.claim_batch_round(batch_id, "reminded", request_id, now_ms, gap_ms, ttl_s)
        return held

    async def claim_batch_round(self, batch_id: str, name: str, request_id: str, now_ms: int, gap_ms: int,
                                ttl_s: int) -> tuple[bool, str | None, str | None]:
        """One round `name` of a batch card's timed event (store/lua/batch_round.lua): whether
        `request_id` sends it, whether it was sent (its data, None while it is not) and who sends it."""
        res = await self._run("batch_round", [self.keys.batch_round(batch_id, name)],
                              ["claim", request_id, now_ms, max(1, gap_ms), max(1, ttl_s)])
        done = str(res[1]) or None
        return bool(int(res[0])), done, (str(res[2]) if len(res) > 2 else request_id)

    async def take_batch_round(self, batch_id: str, name: str, request_id: str, holder: str, ttl_s: int) -> bool:
        """The round passes from `holder` (which no longer owes it: decided meanwhile) to
        `request_id`, unless it was sent or another item took it first."""
        return bool(await self._run("batch_round", [self.keys.batch_round(batch_id, name)],
                                    ["take", request_id, max(1, ttl_s), holder]))

    async def batch_round_done(self, batch_id: str, name: str, request_id: str, data: str) -> bool:
        """The round was sent by `request_id`, which holds it; `data` is what the card's other
        items record with theirs."""
        return bool(await self._run("batch_round", [self.keys.batch_round(batch_id, name)],
                                    ["done", request_id, data]))

    async def get_batch(self, batch_id: str) -> Batch:
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(self.keys.batch(batch_id))
            p.lrange(self.keys.batch_items(batch_id), 0, -1)
            raw, items = await p.execute()
        if not raw:
            raise NotFound(batch_id)
        posted = raw.get("posted_at")
        return Batch(id=batch_id, group=raw["group"], channel=raw["channel"], items=items,
                     rendered=raw.get("rendered"),
                     ts=raw.get("ts"), created_at=from_epoch(int(raw["created_at"]) / 1000),
                     posted_at=from_epoch(int(posted) / 1000) if posted else None)

    async def own_requests(self, rows: list[tuple[str, str, str]]) -> list[dict[str, Any] | None]:
        """For each published decision (entry id, request id, decision JSON): the stored request
        of the record that holds that very decision, in one round trip; None where there is no
        record or the decision is not its own (an `invalid` published for an earlier, refused
        entry that used the same id). Feeds and webhooks deliver only a request's own answer.

        A refused entry's `invalid` is published under the id its agent sent, even one outside
        the id alphabet, which no record has: it is not looked up (`<id>:notices` would name
        another key of a request, of another type)."""
        ids = [rid if is_request_id(rid) else None for _, rid, _ in rows]
        async with self.redis.pipeline(transaction=False) as p:
            for rid in ids:
                if rid is not None:
                    p.hmget(self.keys.request(rid), "request", "decision")
            found = iter(await p.execute())
        out: list[dict[str, Any] | None] = []
        for (_, _, decision), rid in zip(rows, ids, strict=True):
            raw, stored = next(found) if rid is not None else (None, None)
            out.append(_stored_request(rid, raw) if raw and stored == decision else None)
        return out

    async def get_many(self, request_ids: list[str]) -> list[Record]:
        """Records in the given order (missing ones left out), in one round trip."""
        async with self.redis.pipeline(transaction=False) as p:
            for rid in request_ids:
                p.hgetall(self.keys.request(rid))
            rows = await p.execute()
        return [_record(r) for r in rows if r]

    async def batch_shown(self, batch: Batch, channel: str, ts: str, now: datetime, rendered: str = "") -> int:
        """Record the batch card's place and what it shows; mark its items posted (once each)."""
        args = [batch.id, channel, ts, _ms(now), now.isoformat(), rendered, *batch.items]
        keys = [self.keys.batch(batch.id), self.keys.audit]
        for rid in batch.items:
            keys += [self.keys.request(rid), self.keys.trail(rid)]
        return int(await self._run("batch_shown", keys, args))

    async def hold_recheck(self, key: str, note: str, member: str, due_ms: int) -> None:
        """Keep an unfinished post attempt's `note` on `key` (a record or batch) and queue
        `member` (`recheck:...`) at `due_ms` to look for a late copy of its card."""
        await self._run("post_recheck", [key, self.keys.outbox], [note, member, due_ms])

    async def recheck_note(self, key: str) -> tuple[str | None, str | None]:
        """The card's ts and the note `hold_recheck` kept on `key`."""
        ts, note = await self.redis.hmget(key, ["ts", "post_recheck"])
        return (str(ts) if ts is not None else None), (str(note) if note is not None else None)

    async def forget_rendered(self, batch_id: str) -> None:
        """The batch card's next run redraws it even if Slack should show the same already."""
        await self.redis.hdel(self.keys.batch(batch_id), "rendered")

    async def drop_recheck(self, key: str) -> None:
        await self.redis.hdel(key, "post_recheck")

    async def note_batch_attempt(self, batch_id: str, now: datetime) -> str | None:
        """Remember a batch post is under way; the first unfinished attempt, if any."""
        key = self.keys.batch(batch_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hget(key, "post_attempt")
            p.hsetnx(key, "post_attempt", json.dumps({"at": now.timestamp()}))
            prev, _ = await p.execute()
        return prev

    # ---- control ----------------------------------------------------------------------

    async def set_paused(self, paused: bool, reason: str | None, actor: str, now: datetime) -> bool:
        """Pause or resume automation for every replica (survives restarts), audited; False
        (nothing written) when it is already so, which makes a retried call harmless."""
        audited = self.redact({"reason": reason})["reason"] if reason else ""
        args = ["1" if paused else "", reason or "", actor, now.isoformat(), audited or ""]
        return bool(await self._run("control", [self.keys.control, self.keys.audit], args))

    async def control(self) -> dict[str, str]:
        """The shared switches: `paused` ("1" when paused), `reason`, `by`, `at`."""
        return cast(dict[str, str], await self.redis.hgetall(self.keys.control))

    async def enqueue(self, member: str, due_ms: int) -> None:
        """Queue an outbox operation; one leased now is not run twice at once but once more after."""
        await self._run("outbox_add", [self.keys.outbox, self.keys.outbox_again], [member, due_ms])

    async def enqueue_many(self, members: list[str], due_ms: int) -> None:
        """`enqueue` for many operations in one round trip."""
        script = self._scripts["outbox_add"]
        keys = [self.keys.outbox, self.keys.outbox_again]
        if self.cluster:  # redis-py's cluster pipelines refuse scripts: send them side by side
            await asyncio.gather(*(script(keys=keys, args=[m, due_ms]) for m in members))
            return
        async with self.redis.pipeline(transaction=False) as p:
            for member in members:
                await script(keys=[self.keys.outbox, self.keys.outbox_again], args=[member, due_ms], client=p)
            await p.execute()

    async def next_outbox_due(self) -> int | None:
        return await self.next_due(self.keys.outbox)

    async def next_due(self, key: str) -> int | None:
        """The earliest due time (epoch ms) in a due-time sorted set (outbox, deadlines)."""
        rows = await self.redis.zrange(key, 0, 0, withscores=True)
        return int(rows[0][1]) if rows else None

    async def enqueue_once(self, member: str, due_ms: int) -> None:
        """Queue an outbox operation unless it is already queued (its due time is kept)."""
        await self.redis.zadd(self.keys.outbox, {member: due_ms}, nx=True)

    async def note_post_attempt(self, request_id: str, now: datetime, channel: str) -> str | None:
        """Remember a post is under way; returns the first unfinished attempt if there was one (kept
        until the post is recorded, so a lost card is searched for from its very first attempt)."""
        key = self.keys.request(request_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hget(key, "post_attempt")
            p.hsetnx(key, "post_attempt", json.dumps({"at": now.timestamp(), "channel": channel}))
            prev, _ = await p.execute()
        return prev

    async def mark_posted(
        self,
        request_id: str,
        member: str,
        lease: int,
        channel: str,
        ts: str,
        now: datetime,
        version: int,
    ) -> tuple[str, str | None]:
        """Store the card's channel and ts; ('posted', ts), ('exists', earlier ts) or ('missing', None)."""
        k = self.keys
        keys = [k.request(request_id), self.trail_key(request_id), k.audit, k.outbox, k.outbox_again]
        res = await self._run(
            "mark_posted",
            keys,
            [request_id, member, lease, channel, ts, now.isoformat(), _ms(now), version],
        )
        return str(res[0]), (str(res[1]) if len(res) > 1 else None)

    async def notices_sent(self, request_id: str, *, key: str | None = None) -> set[str]:
        """Notices of escalation levels already sent for a request (`<level>:<target>`), or
        under `key` (a batch card's level round: `Keys.batch_round(...) + ":notices"`)."""
        key = key or f"{self.keys.request(request_id)}:notices"
        return {str(x) for x in await self.redis.smembers(key)}

    async def note_notice(self, request_id: str, notice: str, *, key: str | None = None) -> None:
        """Remember a notice went out, so a retried level does not send it twice (kept a week)."""
        key = key or f"{self.keys.request(request_id)}:notices"
        async with self.redis.pipeline(transaction=True) as p:
            p.sadd(key, notice)
            p.expire(key, 7 * 86400)
            await p.execute()

    async def mark_undeliverable(self, request_id: str, member: str, lease: int, error: str, now: datetime) -> None:
        """Slack refused this request's card for good: noted and audited once, operation finished."""
        k = self.keys
        keys = [k.request(request_id), self.trail_key(request_id), k.audit, k.undeliverable, k.outbox,
                k.outbox_again]
        await self._run("undeliverable", keys, [request_id, member, lease, error, now.isoformat(), _ms(now)])

    async def undeliverable(self, limit: int = 1000) -> list[Record]:
        """Pending requests whose card Slack refused for good, oldest first."""
        ids = [str(x) for x in await self.redis.zrange(self.keys.undeliverable, 0, limit - 1)]
        return [r for r in await self.get_many(ids) if r.state.value == "pending"]

    async def outbox_depth(self) -> int:
        return int(await self.redis.zcard(self.keys.outbox))

    async def pending_ids(self, limit: int = 100) -> list[str]:
        return [str(x) for x in await self.redis.zrange(self.keys.pending, 0, limit - 1)]

    async def pending_count(self) -> int:
        return int(await self.redis.zcard(self.keys.pending))


def dead_fields(entry: Entry) -> list[bytes]:
    """The entry's raw field pairs as a dead letter keeps them: at most DEAD_FIELDS_MAX fields
    and DEAD_BYTES_MAX bytes; a cut entry says so in `truncated`."""
    out: list[bytes] = []
    size, kept = 0, 0
    items = entry.items()  # a name sent twice is kept twice, as sent
    for name, value in items:
        if kept == DEAD_FIELDS_MAX or size + len(name) + len(value) > DEAD_BYTES_MAX:
            out += [b"truncated", f"{len(items)} fields, {kept} kept".encode()]
            break
        out += [name, value]
        size, kept = size + len(name) + len(value), kept + 1
    return out


DEADLINE_KINDS = ("remind", "escalate", "expire")
"""Timed events a request may have, at most one member `<kind>:<id>` each; a final
transition removes them all."""


def _record(raw: dict[str, str]) -> Record:
    decision = Decision.model_validate_json(raw["decision"]) if raw.get("decision") else None
    request = Request.model_validate_json(raw["request"])
    # stored once: a record decided at intake keeps its route only in the decision, and a
    # record's params are the request's until a reviewer's edit writes them
    route = Route.model_validate_json(raw["route"]) if raw.get("route") else (
        decision.route if decision and decision.route else Route())
    intake = Intake.parse(raw["intake"]) if raw.get("intake") else None
    created_ms = intake.created_ms if intake else int(raw["created_at"])
    return Record(
        request=request,
        route=route,
        state=raw.get("state", "pending"),
        version=int(raw.get("version", 0)),
        params=json.loads(raw["params"]) if raw.get("params") else request.params,
        changes=json.loads(raw.get("changes") or "{}"),
        votes=json.loads(raw.get("votes") or "[]"),
        decision=decision,
        channel=raw.get("channel"),
        ts=raw.get("ts"),
        created_at=from_epoch(created_ms / 1000),
        posted_at=from_epoch(int(raw["posted_at"]) / 1000) if raw.get("posted_at") else None,
        entry_id=intake.entry_id if intake else raw.get("entry_id"),
        batch=raw.get("batch"),
        **{name: raw[name] for name in RECORD_EXTRAS if raw.get(name)},
    )


_JSON_FIELDS = frozenset({"params", "changes", "votes"})


def _after(t: Transition, version: int) -> Record:
    """The record as apply.lua left it, without reading it again: the script wrote the
    transition's fields (and the decision) onto the record at the version it was computed
    from. Fields other scripts write without a version bump (channel, ts, posted_at, batch)
    are as they were read before the transition."""
    data = t.record.model_dump()
    for name, value in t.fields.items():
        if name in Record.model_fields:
            data[name] = json.loads(value) if name in _JSON_FIELDS else value
    data["version"] = version
    if t.decision is not None:
        data["state"], data["decision"] = "decided", t.decision
    return Record.model_validate(data)


def _audit(entry_id: str, f: dict[str, str]) -> AuditEvent:
    return AuditEvent(
        event=f.get("event", ""),
        request_id=f.get("request_id", ""),
        actor=f.get("actor", ""),
        at=datetime.fromisoformat(f["at"]) if f.get("at") else from_epoch(time.time()),
        detail=json.loads(f.get("detail") or "{}"),
        entry_id=entry_id,
    )


def _stored_request(rid: str | None, raw: str) -> dict[str, Any] | None:
    """A record's stored request as data; None (logged) when it is not a JSON object, which
    only another program writing hitl's keys makes: the feeds reading it go on."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        log.warning("the stored request of %s is not a JSON object; its decision goes to nobody's feed", rid)
        return None
    return data
