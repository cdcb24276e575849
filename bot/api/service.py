"""What the API does, shared by the REST routes and the HumanLayer compatibility layer.

Submitting validates with the queue's own model and words, then adds the request to the
queue exactly as an agent would and waits briefly for intake: the record it creates, or the
dead letter it writes, is the answer. Routing, policy, audit and decisions are intake's and
the transitions' alone; the API only reads records and applies the `withdraw` transition.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, cast

from pydantic import ValidationError

from bot.api.bus import DecisionBus
from bot.api.callbacks import CallbackPolicy
from bot.api.errors import ApiError
from bot.api.schemas import RequestState, state_of
from bot.entries import describe
from store.api_keys import ApiKey
from store.api_requests import ApiStore
from store.errors import AlreadyDecided, Conflict, NotFound
from store.keys import is_request_id
from store.models import MAX_ENTRY_BYTES, Decision, Record, Request, Status, utcnow
from store.redis_store import Store
from store.transitions import withdraw

MAX_WAIT_S = 60
REREAD_S = 5.0  # a long-poll re-reads the record this often, whatever the feed says
SUBMIT_REREAD_S = 0.25


class Requests:
    def __init__(self, store: Store, bus: DecisionBus, callbacks: CallbackPolicy, submit_wait_s: float) -> None:
        self.store = store
        self.api = ApiStore(store)
        self.bus = bus
        self.callbacks = callbacks
        self.submit_wait_s = submit_wait_s

    def validate(self, data: Any) -> Request:
        """The request, or 400 naming the field (the dead-letter stream's words)."""
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_request", f"request must be a JSON object, not {type(data).__name__}",
                           field="request")
        try:
            request = Request.model_validate(data)
        except ValidationError as e:
            loc = ".".join(str(x) for x in e.errors()[0]["loc"]) or "request"
            raise ApiError(400, "invalid_request", describe(e), field=loc) from e
        if request.reply_to and self.store.keys.owns(request.reply_to):
            raise ApiError(400, "invalid_request", f"reply_to {request.reply_to!r} names one of the bot's own "
                           f"keys; use a stream of your own or {self.store.keys.results_prefix}<name>",
                           field="reply_to")
        if request.reply_to and (problem := self.store.reply_to_problem(request.reply_to)):
            raise ApiError(400, "invalid_request", problem, field="reply_to")  # (another cluster slot)
        if request.callback_url is not None:
            try:
                self.callbacks.check(request.callback_url)
            except ValueError as e:
                raise ApiError(400, "invalid_request", f"callback_url: {e}", field="callback_url") from e
        return request

    async def submit(self, data: dict[str, Any], key: ApiKey) -> tuple[int, RequestState]:
        """Queue a request for intake: (201 new / 200 duplicate / 202 still queued, its state)."""
        request = self.validate(data)
        if request.agent not in key.agents:
            raise ApiError(403, "forbidden", f"this API key may not act for agent {request.agent!r}")
        rid = request.id or uuid.uuid4().hex
        # the agent's text as it sent it (not \u-escaped: that made non-ASCII text up to three
        # times its size), measured in UTF-8 bytes as intake measures the queue entry
        raw = json.dumps({**data, "id": rid}, ensure_ascii=False)
        if (size := len(raw.encode())) > MAX_ENTRY_BYTES:
            raise ApiError(413, "too_large", f"request is {size} bytes; the limit is {MAX_ENTRY_BYTES}")
        # registered before the entry exists: the audit feed cannot tell of it before we listen
        fut = self.bus.intake_waiter(rid)
        try:
            for _ in range(10):
                entry_id = await self.api.submit_new(rid, raw, request.agent)  # the id check and the XADD in one step
                if entry_id is not None:
                    return await self._outcome(rid, entry_id, key, fut)
                existing = await self._record(rid)
                if existing is not None:
                    return 200, state_of(self._own(existing, key), duplicate=True)
        finally:
            self.bus.forget(rid, fut)
        raise ApiError(409, "conflict", f"request {rid!r} kept changing; try again")

    async def _outcome(self, rid: str, entry_id: str, key: ApiKey,
                       first: asyncio.Future[str] | None = None) -> tuple[int, RequestState]:
        """Wait for intake's verdict on our entry: woken by the audit feed (any replica's intake),
        and re-reading now and then in case the feed is away. `first`: a waiter registered
        before the entry was added; while the feed runs, nothing is read before it fires."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.submit_wait_s
        event, rounds = None, 0
        if first is not None and self.bus.running:
            event = await self._event(first, min(self.submit_wait_s, SUBMIT_REREAD_S))
        while True:
            fut = self.bus.intake_waiter(rid)
            try:
                rec = await self._record(rid)
                if rec is not None:
                    if rec.entry_id == entry_id:
                        return 201, state_of(rec)
                    return 200, state_of(self._own(rec, key), duplicate=True)
                if event == "invalid" or not self.bus.running or rounds % 4 == 3:
                    reason = await self.api.dead_reason(entry_id)
                    if reason is not None:
                        raise ApiError(400, "invalid_request", reason, field="request")
                left = deadline - loop.time()
                if left <= 0:
                    return 202, RequestState(id=rid, state="queued")
                rounds += 1
                event = await self._event(fut, min(left, SUBMIT_REREAD_S))
            finally:
                self.bus.forget(rid, fut)

    @staticmethod
    async def _event(fut: asyncio.Future[str], seconds: float) -> str | None:
        """The intake event `fut` gets within `seconds`, or None."""
        try:
            return await asyncio.wait_for(asyncio.shield(fut), seconds)
        except TimeoutError:
            return None

    def _own(self, record: Record, key: ApiKey) -> Record:
        if record.request.agent not in key.agents:
            raise ApiError(409, "id_taken", f"request id {record.id!r} is already used by another agent",
                           field="id")
        return record

    async def _record(self, rid: str) -> Record | None:
        if not is_request_id(rid):  # not a request's id (`x:webhook` names another key of x)
            return None
        try:
            return await self.store.get(rid)
        except NotFound:
            return None

    async def get(self, rid: str, key: ApiKey) -> Record:
        """The record, 404 if unknown, 403 if it belongs to an agent the key is not for."""
        rec = await self._record(rid)
        if rec is None:
            raise ApiError(404, "not_found", f"no request {rid!r}")
        if rec.request.agent not in key.agents:
            raise ApiError(403, "forbidden", f"this API key may not read requests of agent {rec.request.agent!r}")
        return rec

    async def state(self, rid: str, key: ApiKey) -> RequestState:
        """The request's state for this key: its record's; else, for a request this API queued
        for one of the key's agents that intake has not taken yet, `queued` (or `decided`
        `invalid` once intake refused it). A key of other agents gets 403 for a queued request as
        for a stored one, and 404 where nothing is known."""
        rec = await self._record(rid)
        if rec is not None and rec.request.agent in key.agents:
            return state_of(rec)
        queued = await self.api.queued(rid) if is_request_id(rid) else None
        if queued is not None:
            for agent, entry in sorted(queued.entries.items()):
                if agent not in key.agents:
                    continue
                if entry in queued.refused:
                    error, raw = queued.refused[entry]
                    decision = Decision.model_validate_json(raw) if raw else Decision(
                        request_id=rid, status=Status.invalid, reason=error, decided_at=utcnow())
                    return RequestState(id=rid, state="decided", agent=agent, decision=decision)
                if await self.api.in_queue(entry):
                    return RequestState(id=rid, state="queued", agent=agent)
            if rec is None and queued.entries and not any(a in key.agents for a in queued.entries):
                agent = min(queued.entries)
                raise ApiError(403, "forbidden", f"this API key may not read requests of agent {agent!r}")
        if rec is None:
            raise ApiError(404, "not_found", f"no request {rid!r}")
        raise ApiError(403, "forbidden", f"this API key may not read requests of agent {rec.request.agent!r}")

    async def decision(self, rid: str, key: ApiKey, wait: float) -> Decision | None:
        """The decision, waiting up to `wait` seconds for it (None if still pending). A request
        still queued is waited for too: intake's refusal of it is its decision (`invalid`)."""
        st = await self.state(rid, key)
        if st.decision is not None or wait <= 0:
            return st.decision
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, MAX_WAIT_S)
        while True:
            # a decision published for the id, or intake's verdict on an entry of it; then read
            # again: what was published may be another agent's (an `invalid` for its entry)
            futs = {self.bus.waiter(rid), self.bus.intake_waiter(rid)}
            try:
                st = await self.state(rid, key)  # after registering: nothing published in between is missed
                if st.decision is not None:
                    return st.decision
                left = deadline - loop.time()
                if left <= 0:
                    return None
                await asyncio.wait(futs, timeout=min(left, REREAD_S), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in futs:
                    self.bus.forget(rid, fut)

    async def stored(self, rid: str, key: ApiKey) -> Record:
        """The record, to act on: 404 / 403 as for a GET; 409 `queued` (retry after Retry-After)
        while intake has not taken a request this API queued; 409 `already_decided` once intake
        refused it."""
        rec = await self._record(rid)
        if rec is not None and rec.request.agent in key.agents:
            return rec
        st = await self.state(rid, key)
        extra = {"request": st.model_dump(mode="json")}
        if st.state == "queued":
            raise ApiError(409, "queued", f"request {rid!r} is still queued: intake has not taken it yet; "
                           "retry", headers={"Retry-After": "1"}, extra=extra)
        raise ApiError(409, "already_decided", f"request {rid!r} is already decided", extra=extra)

    async def cancel(self, rid: str, key: ApiKey, reason: str | None) -> Record:
        """Withdraw a pending request (decided `rejected`, reason_code `withdrawn`); 409 if decided,
        409 `queued` (retry after Retry-After) while intake has not taken it yet."""
        for _ in range(10):
            rec = await self.stored(rid, key)
            now = utcnow()
            try:
                t = withdraw(rec, now=now, by=f"{rec.request.agent} (API key {key.id})", reason=reason)
                return await self.store.apply(t, now)
            except AlreadyDecided as e:
                raise ApiError(409, "already_decided", f"request {rid!r} is already decided",
                               extra={"request": state_of(cast(Record, e.record)).model_dump(mode="json")}) from e
            except Conflict:
                continue
        raise ApiError(409, "conflict", f"request {rid!r} kept changing; try again")
