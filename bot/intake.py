"""Intake: read requests through the consumer group, validate, route, store, acknowledge.

On start the consumer first re-reads its own pending entries, then new ones. Entries left
pending by a dead consumer are reclaimed with XAUTOCLAIM once idle; an entry delivered too
many times goes to the dead-letter stream. Nothing is acknowledged before its effects are
stored: the accept and dead-letter scripts do both in one step.

No entry can stop intake: entries are read as raw bytes (store.stream), each field is decoded
and parsed within bounds (bot.entries), and any failure while handling one entry dead-letters
that entry with a reason and moves on to the next. A `cancel` entry (an agent withdrawing its
request) is handled by bot.withdrawals, in stream order with the requests around it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from pydantic import ValidationError

from bot import autonomy
from bot.entries import Invalid, clip, describe, entry_json, salvage, unicode_text, usable_text
from bot.routing import Router, immediate_decision, needs_card
from bot.timing import honour_user_request, plan, tier_of
from bot.withdrawals import Withdrawals, is_withdrawal
from store.accept import Accepted, TrustCheck
from store.failures import Refused, StoreFailure, Unavailable
from store.keys import is_request_id
from store.models import Decision, Request, Status, utcnow
from store.redis_store import Store
from store.stream import Entry, RequestStream
from store.trust import TrustState, member

log = logging.getLogger("hitl.intake")

BLOCK_MS = 2000
CONCURRENCY = 16  # entries of one read routed at once (trust lookups are Redis round trips)
MAX_SEEN = 100_000  # actions remembered as seen in process (a cache of {prefix}:actions)
MAX_TRUST = 10_000  # actions whose trust hash is kept in process (checked by accept.lua at each use)
TRIM_EVERY_S = 10.0  # how often acknowledged entries are trimmed from the requests stream


class Intake:
    """The consumer-group reader; `run()` until `stop()`."""

    def __init__(
        self,
        store: Store,
        router: Callable[[], Router],
        *,
        redis_url: str,
        consumer: str,
        claim_idle_s: float = 30.0,
        max_deliveries: int = 5,
        on_accepted: Callable[[], None] = lambda: None,
        dead_max_len: int = 10_000,
        dead_max_age_s: float | None = 30 * 86400,
        trim_every_s: float = TRIM_EVERY_S,
        prepare: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.consumer = consumer
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.max_deliveries = max_deliveries
        self.on_accepted = on_accepted
        self.dead_max_len = dead_max_len
        self.dead_max_age_s = dead_max_age_s
        self.trim_every_s = trim_every_s
        self.prepare = prepare
        """What routing needs read from Redis first (the hints' key), awaited at each start."""
        self._paused = False
        """This replica's copy of the pause switch; accept.lua refuses a route made on a stale one."""
        self._seen: set[str] = set()
        """Actions known to be in {prefix}:actions (the set only grows, so this never lies)."""
        self._trust: dict[str, tuple[TrustState, dict[str, str]]] = {}
        """Agent/action -> its trust as last read; accept.lua refuses a route made on a stale one."""
        self.stream = RequestStream(redis_url, store.keys.requests, block_ms=BLOCK_MS)
        self.withdrawals = Withdrawals(store, self.stream, on_applied=lambda: self.on_accepted(),
                                       dead_max_len=dead_max_len, dead_max_age_s=dead_max_age_s)
        """`cancel` entries; on_accepted after one is applied: delivery locks the card."""
        self._stopping = asyncio.Event()
        self._failures: dict[str, int] = {}
        self.running = False
        self.stopped_by: str | None = None
        """Why intake is not running (Redis unreachable, or refusing: read-only, out of memory),
        for /healthz; None while it runs."""
        self.processed = 0

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        await self.stream.close()

    async def run(self) -> None:
        """Process entries until stopped; survives Redis restarts by re-reading its pending entries."""
        while not self._stopping.is_set():
            try:
                await self.store.ensure_group()
                self.running, self.stopped_by = True, None  # what it reads next is a round trip, before any entry
                if self.prepare is not None:
                    await self.prepare()
                await self._drain_own_pending()
                await self._loop()
            except Unavailable as e:
                self.running, self.stopped_by = False, f"Redis unavailable: {_first_line(e)}"
                log.warning("intake: Redis unavailable (%s); retrying in 1s", e)
                await self._sleep(1.0)
            except Refused as e:  # a state of the server (read-only after a failover, out of memory,
                # min-replicas, NOGROUP after a restart): not a bug, one line per attempt
                self.running, self.stopped_by = False, f"Redis refused: {_first_line(e)}"
                log.warning("intake: Redis refused a command (%s: %s); retrying in 1s", type(e).__name__,
                            _first_line(e))
                await self._sleep(1.0)
            except Exception as e:  # a bug must not leave intake dead while /healthz says it runs
                self.running, self.stopped_by = False, f"unexpected failure: {type(e).__name__}"
                log.exception("intake: unexpected failure; restarting in 1s")
                await self._sleep(1.0)
        self.running = False

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _drain_own_pending(self) -> None:
        start = "0"
        while not self._stopping.is_set():  # one pass: an entry left pending (a withdrawal waiting for
            # its request, a refusal by Redis) is retried by reclaim once idle, not re-read at once
            entries = await self.stream.read(self.consumer, start)
            if not entries:
                return
            start = entries[-1].id
            # re-read after a restart: an entry that crashed us every time must not loop forever
            await self._process(await self._without_poison(entries))

    async def _loop(self) -> None:
        last_claim = last_trim = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if loop.time() - last_claim >= min(self.claim_idle_ms / 2000, 5.0):
                last_claim = loop.time()
                await self.reclaim()
            if loop.time() - last_trim >= self.trim_every_s:
                last_trim = loop.time()
                await self.store.trim_requests()
            entries = await self._read_or_stop(min(BLOCK_MS, max(self.claim_idle_ms // 2, 100)))
            if entries:
                await self._process(entries)

    async def _read_or_stop(self, block_ms: int) -> list[Entry]:
        """A blocking read that `stop()` interrupts; entries it had taken stay pending for us."""
        read = asyncio.ensure_future(self.stream.read(self.consumer, ">", block_ms=block_ms))
        stopped = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not read.done():
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)
            return []
        return read.result()

    async def reclaim(self) -> int:
        """Take over entries another consumer left idle; dead-letter those delivered too often."""
        entries = await self.stream.reclaim(self.consumer, self.claim_idle_ms)
        if not entries:
            return 0
        log.info("intake: reclaimed %d idle entries", len(entries))
        await self._process(await self._without_poison(entries))
        return len(entries)

    async def _without_poison(self, entries: list[Entry]) -> list[Entry]:
        """Dead-letter entries delivered more than `max_deliveries` times; the rest to process."""
        keep = []
        for e, n in zip(entries, await self.stream.deliveries(entries), strict=True):
            if n > self.max_deliveries:
                try:
                    if is_withdrawal(e):  # no request: refused as a withdrawal, on its request's trail
                        await self.withdrawals.give_up(e, n)
                    else:
                        await self._dead(e, f"delivered {n} times without being processed "
                                            "(a consumer crashed on it each time)")
                except Unavailable:
                    raise
                except Exception:  # stays pending (reclaimed later): the others go on meanwhile
                    log.exception("intake: poison entry %s could not be dead-lettered", e.id)
            else:
                keep.append(e)
        return keep

    async def _process(self, entries: list[Entry]) -> None:
        """Handle one read batch: parse and route each entry in process, accept them all in one
        pipeline (one script call per entry: its effects and its XACK atomic), then act on each
        verdict. Whatever goes wrong with one entry is its own problem, never the batch's."""
        router = self.router()
        asks_first_use = _asks_first_use(router)
        todo: list[tuple[Entry, Request]] = []
        for entry in entries:
            try:
                if not is_withdrawal(entry):
                    todo.append((entry, self.parse(entry)))
                    continue
                step = self.withdrawals.handle(entry)  # after the requests before it, as for an invalid entry
            except Invalid as e:
                step = self._dead(entry, str(e))
            except Exception as e:  # a bug met on this entry: it must not stop the batch
                step = self._failed_step(entry, e)
            # in stream order: the valid entries before this one are stored first, so a malformed
            # retry of an id sent just before it finds that request and answers nothing for it
            await self._accept_all(router, asks_first_use, todo)
            todo = []
            await self._guarded(entry, step)
        await self._accept_all(router, asks_first_use, todo)

    async def _failed_step(self, entry: Entry, e: BaseException) -> str:
        await self._failed(entry, e)
        return "failed"

    async def _accept_all(self, router: Router, asks_first_use: bool, todo: list[tuple[Entry, Request]]) -> None:
        for _ in range(10):  # routed on a stale pause switch or seen-actions copy: route again
            if not todo:
                return
            todo = await self._accept(router, asks_first_use, todo)
        for entry, _ in todo:  # the switch flipped under us ten times running: reclaimed later
            self._failures.pop(entry.id, None)

    async def _accept(self, router: Router, asks_first_use: bool,
                      todo: list[tuple[Entry, Request]]) -> list[tuple[Entry, Request]]:
        """One accept round trip for `todo`; the entries routed on stale state, to route again.
        Routing awaits per entry (the action's trust, grants, people away: bot.autonomy), up to
        CONCURRENCY entries at once, before the batch's accepts go in one pipeline."""
        limit = asyncio.Semaphore(CONCURRENCY)
        # the actions' trust and canary markers: this replica's copies, the others read in one round trip
        trust: list[tuple[TrustState, bool] | None] = [None] * len(todo)
        checks: list[TrustCheck | None] = [None] * len(todo)
        if autonomy.engine_of(router) is not None:
            try:
                trust, checks = await self._trust_of([r for _, r in todo])
            except Unavailable:
                raise
            except Exception:  # Redis refused the batch's read: each entry looks up its own (and fails alone)
                log.exception("intake: trust lookup of a batch of %d failed; looking up one by one", len(todo))

        async def routed(request: Request, looked_up: tuple[TrustState, bool] | None,
                         check: TrustCheck | None) -> Accepted | BaseException:
            async with limit:
                try:
                    return await self._route(router, request, asks_first_use, looked_up, check)
                except Unavailable:
                    raise
                except Exception as e:  # a bug met on this request (a policy rule, a trigger)
                    return e

        calls = [routed(r, t, c) for (_, r), t, c in zip(todo, trust, checks, strict=True)]
        # one entry (an agent waiting on it): routed here, without a task and a turn of the loop
        results = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        items: list[tuple[Entry, Request, Accepted]] = []
        for (entry, request), acc in zip(todo, results, strict=True):
            if isinstance(acc, BaseException):
                await self._failed(entry, acc)
            else:
                items.append((entry, request, acc))
        if not items:
            return []
        verdicts = await self.store.accept_many([(e.id, acc) for e, _, acc in items], utcnow())
        again: list[tuple[Entry, Request]] = []
        for (entry, request, acc), verdict in zip(items, verdicts, strict=True):
            if isinstance(verdict, Exception):
                await self._failed(entry, verdict)
            elif verdict.startswith("paused:"):
                self._paused = verdict == "paused:1"  # the switch changed: every replica sees it here
                again.append((entry, request))
            elif verdict.startswith("first_use:"):
                self._note_seen(acc.request.action, seen=verdict == "first_use:0")
                again.append((entry, request))
            elif verdict == "trust":  # the action's trust (or the canary marker) changed: read it again
                self._trust.pop(member(request.agent, request.action), None)
                again.append((entry, request))
            else:
                await self._guarded(entry, self._verdict(entry, router, acc, verdict))
        return again

    async def _trust_of(self, requests: list[Request]
                        ) -> tuple[list[tuple[TrustState, bool] | None], list[TrustCheck | None]]:
        """Each request's action trust and canary marker, and what accept.lua checks of them:
        actions this replica has a copy of are not read (a request is taken as no canary: its
        marker is checked by the script), the others in one round trip."""
        k = self.store.trust.k
        if len(self._trust) + len(requests) > MAX_TRUST:  # only a cache: forgetting costs a read, never a wrong route
            self._trust.clear()  # (before the batch: a copy cleared halfway would lose what it skipped reading)
        todo = [i for i, r in enumerate(requests) if member(r.agent, r.action) not in self._trust]
        read = dict(zip(todo, await self.store.trust.snapshot_many([requests[i] for i in todo]) if todo else [],
                        strict=True))
        found: list[tuple[TrustState, bool] | None] = []
        checks: list[TrustCheck | None] = []
        for i, r in enumerate(requests):
            assert r.id is not None
            m = member(r.agent, r.action)
            if i in read:
                state, canary, fields = read[i]
                self._trust[m] = (state, fields)
            else:
                (state, fields), canary = self._trust[m], False
            found.append((state, canary))
            checks.append(TrustCheck(k.action(m), k.canary(r.id), canary, fields))
        return found, checks

    async def _route(self, router: Router, request: Request, asks_first_use: bool,
                     looked_up: tuple[TrustState, bool] | None = None, check: TrustCheck | None = None) -> Accepted:
        """Route on this replica's copies of the pause switch and the seen actions; the accept
        script checks both against Redis, so a stale copy is caught, never acted on. The
        action's trust, standing grants and delegates are read from Redis (bot.autonomy); with
        the policy engine, first use is the trust state's, so the seen actions are not asked."""
        first_use = (request.action not in self._seen
                     if asks_first_use and autonomy.engine_of(router) is None else None)
        now = utcnow()
        route = honour_user_request(request, await autonomy.route(
            self.store, router, request, paused=self._paused, now=now, first_use=bool(first_use),
            looked_up=looked_up))
        decision = immediate_decision(request, route)
        deadlines = plan(request, route, tier_of(router, route), int(now.timestamp() * 1000))
        if check is not None and route.grant is not None:  # the grant must still stand when accepted
            check = replace(check, grants_key=self.store.trust.k.grants, grant_id=route.grant.id)
        return Accepted(request, route, decision, post=needs_card(route),
                        deadlines=() if decision else deadlines, first_use=first_use,
                        trust=check if looked_up is not None else None)

    def _note_seen(self, action: str, *, seen: bool) -> None:
        if not seen:
            self._seen.discard(action)
            return
        if len(self._seen) >= MAX_SEEN:  # only a cache: forgetting costs a round trip, never a wrong route
            self._seen.clear()
        self._seen.add(action)

    async def _verdict(self, entry: Entry, router: Router, acc: Accepted, verdict: str) -> str:
        if verdict.startswith("taken:"):  # the id is another agent's (or action's) request: never merged
            holder = json.loads(verdict.removeprefix("taken:"))
            return await self._dead(entry, f"id {acc.request.id!r} is taken by another request "
                                           f"({holder.get('agent')}: {holder.get('action')}); choose another "
                                           "id (the same id is the same request only for the same agent and "
                                           "action)", taken_reply=str(holder.get("reply_to") or ""))
        if verdict.startswith("reply_type:"):
            return await self._dead(entry, f"reply_to {acc.request.reply_to!r} is an existing "
                                           f"{verdict.removeprefix('reply_type:')} key, not a stream; use a "
                                           f"stream of your own or {self.store.keys.results_prefix}<name>")
        self._failures.pop(entry.id, None)
        self._note_seen(acc.request.action, seen=True)
        self.processed += 1
        if verdict in ("accepted", "redelivered") and (acc.post or acc.deadlines):
            # work for delivery or the scheduler (an auto decision has none); 'redelivered' too:
            # the client's resend of an accept whose reply was lost finds its entry acknowledged
            # by the first send, whose card must not wait for delivery's next look
            self.on_accepted()
        if verdict == "accepted" and acc.post:
            await autonomy.maybe_canary(self.store, router, acc.request, acc.route)
        return verdict

    async def _guarded(self, entry: Entry, step: Awaitable[str]) -> None:
        try:
            await step
        except Exception as e:
            await self._failed(entry, e)

    async def _failed(self, entry: Entry, e: BaseException) -> None:
        """One entry failed: Redis refusing it is retried on a later read (then dead-lettered),
        a bug met on it dead-letters it at once; Redis unreachable stops the batch."""
        if isinstance(e, Unavailable):
            raise e
        if isinstance(e, StoreFailure):  # a server state (loading, busy, out of memory)
            n = self._failures[entry.id] = self._failures.get(entry.id, 0) + 1
            log.warning("intake: entry %s failed in Redis (attempt %d): %s", entry.id, n, e)
            if n >= self.max_deliveries:
                self._failures.pop(entry.id, None)
                await self._dead(entry, f"Redis refused to store it {n} times: {e}")
            return
        log.error("intake: entry %s could not be handled", entry.id, exc_info=e)
        await self._dead(entry, f"internal error while processing: {type(e).__name__}: {clip(str(e))}")

    def parse(self, entry: Entry) -> Request:
        """The entry's request, or Invalid with a readable reason."""
        if entry.field("request") is None:
            raise Invalid(f"entry has no 'request' field (fields: {clip(', '.join(entry.names())) or 'none'})")
        if entry.field("cancel") is not None:
            raise Invalid("entry has both 'request' and 'cancel'; send one per entry")
        try:
            request = Request.model_validate(entry_json(entry, "request"))
        except ValidationError as e:
            raise Invalid(describe(e)) from e
        if request.reply_to and self.store.keys.owns(request.reply_to):
            raise Invalid(f"reply_to {request.reply_to!r} names one of the bot's own keys; use a stream "
                          f"of your own or {self.store.keys.results_prefix}<name>")
        if request.reply_to and (problem := self.store.reply_to_problem(request.reply_to)):
            raise Invalid(problem)
        if request.id is None:
            request = request.model_copy(update={"id": entry.id})
        return request

    async def _dead(self, entry: Entry, error: str, *, taken_reply: str | None = None) -> str:
        """Dead-letter `entry`. `taken_reply`: the entry names an id another agent's (or action's)
        request holds, whose reply stream this is ('' for none): the entry's own agent is told
        on its own reply_to, never on that one (its holder would take the refusal for its answer).
        A withdrawal is refused by bot.withdrawals, never here."""
        error = unicode_text(error)  # a reason quoting the entry's own text stays storable
        data = salvage(entry)
        reply = data.get("reply_to")
        reply_to = reply if isinstance(reply, str) and usable_text(reply) and not self.store.keys.owns(reply) \
            and not self.store.reply_to_problem(reply) and reply != taken_reply else None
        sent = data.get("id")
        rid = sent if isinstance(sent, str) and is_request_id(sent) else entry.id
        # the agent matches its answer by the id it sent, even one outside the alphabet
        shown = sent if usable_text(sent) else rid
        log.warning("intake: dead-lettered %s: %s", entry.id, error)
        try:
            decision = Decision(request_id=shown, status=Status.invalid, reason=error, decided_at=utcnow())
            return await self.store.dead_letter(entry, error, utcnow(), request_id=rid, decision=decision,
                                                reply_to=reply_to, max_len=self.dead_max_len,
                                                max_age_s=self.dead_max_age_s, taken=taken_reply is not None)
        except Unavailable:
            raise
        except Exception as e:  # last resort: keep the bytes, tell nobody, move on
            log.exception("intake: dead letter of %s failed; keeping it as base64", entry.id)
            packed = base64.b64encode(json.dumps(
                [[base64.b64encode(k).decode(), base64.b64encode(v).decode()] for k, v in entry.items()]
            ).encode())
            last = Entry(entry.id, {b"raw_base64": packed[:256 * 1024]})
            return await self.store.dead_letter(
                last, f"{error} (and the dead letter failed: {type(e).__name__}: {clip(unicode_text(str(e)))})", utcnow(),
                request_id=entry.id, decision=None, reply_to=None, max_len=self.dead_max_len,
                max_age_s=self.dead_max_age_s)


def _asks_first_use(router: Router) -> bool:
    """Whether the policy routes on an action's first use (otherwise nobody asks Redis)."""
    policy = getattr(router, "policy", None)
    triggers = getattr(policy, "triggers", None)
    return bool(triggers is not None and triggers.first_use.enabled)


def _first_line(e: BaseException) -> str:
    text = str(e)
    return clip(text.splitlines()[0] if text else type(e).__name__, 200)
