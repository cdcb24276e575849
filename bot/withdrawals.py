"""Withdrawals: an agent withdraws its own pending request with a `cancel` queue entry.

Applied in stream order by intake (after the requests before it in the same read). The
`withdraw` transition acknowledges the entry in the same step. A refusal (another agent's
request, a decided one, an unknown id, a malformed entry) is dead-lettered with its reason,
audited `withdraw_refused` on the request's trail, and nothing is published: no agent takes a
refused withdrawal for a decision. A withdrawal that finds no record while an entry before it
requesting that id is still unacknowledged (another replica read it, not yet stored) is left
pending, retried by intake's reclaim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import ValidationError

from bot.entries import Invalid, describe, entry_json, unicode_text
from store.errors import AlreadyDecided, Conflict, NotFound
from store.models import Cancel, utcnow
from store.redis_store import Store
from store.stream import Entry, RequestStream
from store.transitions import WITHDRAWN_CODE, withdraw

log = logging.getLogger("hitl.intake")

WITHDRAW_REFUSED = "withdraw_refused"
"""The audit event of a refused withdrawal, on the request's trail."""


def is_withdrawal(entry: Entry) -> bool:
    """Whether the entry is a withdrawal (a `cancel` and no `request`: both is an invalid request)."""
    return entry.field("cancel") is not None and entry.field("request") is None


class Withdrawals:
    """Applies or refuses `cancel` entries for one intake consumer."""

    def __init__(self, store: Store, stream: RequestStream, *, on_applied: Callable[[], None],
                 dead_max_len: int, dead_max_age_s: float | None) -> None:
        self.store = store
        self.stream = stream
        self.on_applied = on_applied
        """Called after a withdrawal is stored: delivery locks the card."""
        self.dead_max_len = dead_max_len
        self.dead_max_age_s = dead_max_age_s

    async def handle(self, entry: Entry) -> str:
        """The `withdraw` transition for the entry's request, the entry acknowledged in the
        same step; or its refusal, dead-lettered. The same withdrawal again (a retry) finds it
        done and changes nothing. Returns what happened (`withdrawn`, `waiting`, ...)."""
        try:
            cancel = Cancel.model_validate(entry_json(entry, "cancel"))
        except ValidationError as e:
            return await self.refuse(entry, f"cancel: {describe(e)}")
        except Invalid as e:
            return await self.refuse(entry, f"cancel: {e}")
        rid = cancel.id
        for _ in range(10):
            try:
                rec = await self.store.get(rid)
            except NotFound:
                if await self.stream.request_pending(rid, before=entry.id):
                    # another replica holds its request, read but not stored yet: left unacknowledged,
                    # so it is retried (reclaimed once idle) after that request is stored or refused
                    log.info("intake: withdrawal %s of %r waits for its request", entry.id, rid)
                    return "waiting"
                return await self.refuse(entry, f"cancel: no request {rid!r} (not sent, or not read yet: a "
                                                "withdrawal follows its request into the queue)")
            if rec.request.agent != cancel.agent:
                return await self.refuse(entry, f"cancel: request {rid!r} is another agent's ({rec.request.agent}), "
                                                f"not {cancel.agent}'s: an agent withdraws only its own requests",
                                         request_id=rid)
            if rec.decision is not None:
                if rec.decision.reason_code == WITHDRAWN_CODE:  # withdrawn already: the same again is done
                    await self.store.ack(entry.id)
                    return "withdrawn_before"
                return await self.refuse(entry, f"cancel: request {rid!r} is already decided "
                                                f"({rec.decision.status}); the withdrawal changes nothing",
                                         request_id=rid)
            now = utcnow()
            try:
                await self.store.apply(withdraw(rec, now=now, by=f"{cancel.agent} (queue)", reason=cancel.reason),
                                       now, ack=entry.id)
            except (Conflict, AlreadyDecided, NotFound):  # a click or a deadline came first: look again
                continue
            self.on_applied()
            return "withdrawn"
        return await self.refuse(entry, f"cancel: request {rid!r} kept changing; send the withdrawal again",
                                 request_id=rid)

    async def give_up(self, entry: Entry, deliveries: int) -> str:
        """Refuse a withdrawal delivered `deliveries` times without being applied (its request
        never stored meanwhile, or a consumer crashed on it), on its request's trail."""
        try:
            rid: str | None = Cancel.model_validate(entry_json(entry, "cancel")).id
        except (ValidationError, Invalid):
            rid = None
        return await self.refuse(entry, f"cancel: delivered {deliveries} times without being applied (its "
                                        "request was never stored meanwhile, or a consumer crashed on it)",
                                 request_id=rid)

    async def refuse(self, entry: Entry, error: str, *, request_id: str | None = None) -> str:
        """Dead-letter the withdrawal with `error`, audited `withdraw_refused` on `request_id`'s
        trail (the entry's id when None), never `invalid` (the request itself is not); nothing
        is published."""
        error = unicode_text(error)  # a reason quoting the entry's own text stays storable
        log.warning("intake: dead-lettered %s: %s", entry.id, error)
        return await self.store.dead_letter(entry, error, utcnow(), request_id=request_id or entry.id,
                                            decision=None, reply_to=None, max_len=self.dead_max_len,
                                            max_age_s=self.dead_max_age_s, event=WITHDRAW_REFUSED)
