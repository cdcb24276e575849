"""The REST API under `/v1/` (docs/api.md): one router, one error mapping (bot.api.errors)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bot.api.auth import Auth
from bot.api.bus import DecisionBus, Event, Order, newest, position
from bot.api.errors import ApiError, read_json
from bot.api.openapi import document
from bot.api.schemas import CancelBody, state_of
from bot.api.service import MAX_WAIT_S, Requests
from bot.entries import describe
from store.chain import id_order
from store.models import MAX_ENTRY_BYTES

BODY_LIMIT = MAX_ENTRY_BYTES
KEEPALIVE_S = 15.0
BACKLOG_PAGE = 500
"""Decisions (and messages) read at a time when a stream resumes from Last-Event-ID (all pages are sent)."""
MESSAGE_MARGIN_MS = 60_000
"""How far before the decision a stream resumes from its messages are read (see `_backlog`)."""


def _json(model: Any, status: int = 200) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json")


def _wait(request: web.Request) -> float:
    raw = request.query.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"wait must be a number of seconds, not {raw!r}",
                       field="wait") from None
    if not 0 <= wait <= MAX_WAIT_S:
        raise ApiError(400, "invalid_parameter", f"wait must be between 0 and {MAX_WAIT_S} seconds",
                       field="wait")
    return wait


def routes(auth: Auth, service: Requests, bus: DecisionBus) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/openapi.json")
    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(document())

    @r.post("/requests")
    async def submit(request: web.Request) -> web.Response:
        key = await auth(request)
        data = await read_json(request, BODY_LIMIT)
        status, state = await service.submit(data, key)
        return _json(state, status)

    @r.get("/requests/{id}")
    async def get(request: web.Request) -> web.Response:
        key = await auth(request)
        return _json(await service.state(request.match_info["id"], key))

    @r.get("/requests/{id}/decision")
    async def decision(request: web.Request) -> web.Response:
        key = await auth(request)
        wait = _wait(request)
        d = await service.decision(request.match_info["id"], key, wait)
        if wait > 0:
            await auth.still_valid(key)  # revoked while it waited: nothing is handed over
        return web.Response(status=204) if d is None else _json(d)

    @r.post("/requests/{id}/cancel")
    async def cancel(request: web.Request) -> web.Response:
        key = await auth(request)
        data = await read_json(request, BODY_LIMIT) if request.can_read_body else {}
        try:
            body = CancelBody.model_validate(data if data is not None else {})
        except ValidationError as e:
            loc = ".".join(str(x) for x in e.errors()[0]["loc"]) or "request"
            raise ApiError(400, "invalid_request", describe(e), field=loc) from e
        return _json(state_of(await service.cancel(request.match_info["id"], key, body.reason)))

    @r.get("/events")
    async def events(request: web.Request) -> web.StreamResponse:
        key = await auth(request)
        return await _stream(request, bus, service, frozenset(key.agents), lambda: auth.keys.active(key.id))

    return r


async def _stream(request: web.Request, bus: DecisionBus, service: Requests,
                  agents: frozenset[str], active: Callable[[], Awaitable[bool]]) -> web.StreamResponse:
    """Server-Sent Events: `event: decision` (`id:` its stream id) and `event: message` (an
    interim message: take over, reply, override), in the order they were written; resume with
    Last-Event-ID. The key is asked again (`active`) before anything is sent and at each
    keep-alive: the stream of a revoked key ends without another event (its reconnection gets 401)."""
    last = position(request.headers.get("Last-Event-ID", ""))
    if last is not None:
        # an id past the streams' end (another installation's, a Redis restored from an older
        # backup, a number past 64 bits) resumes from their end, read before subscribing: else the
        # read is refused, or the live feed skips every new event as sent already
        last = min(last, newest(*await service.api.last_ids()))
    sub = bus.subscribe(agents)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        await resp.prepare(request)
        await resp.write(b": hitl decisions\n\n")
        if last is not None:  # everything after it, page by page (the live feed queues up meanwhile)
            if not await active():
                return await _end(resp)
            async for event, agent in _backlog(service, last):
                if agent in agents:
                    await resp.write(_event(event))
                last = event.order  # read past: the live feed skips up to here
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while not sub.overflowed and request.transport is not None and not request.transport.is_closing():
            try:
                event = await asyncio.wait_for(sub.queue.get(), 1.0)
            except TimeoutError:
                if loop.time() - quiet_since >= KEEPALIVE_S:
                    if not await active():
                        break
                    await resp.write(b": keep-alive\n\n")
                    quiet_since = loop.time()
                continue
            quiet_since = loop.time()
            if last is not None and event.order <= last:
                continue
            if not await active():
                break
            await resp.write(_event(event))
    except ConnectionResetError:
        pass
    finally:
        bus.unsubscribe(sub)
    return await _end(resp)


async def _backlog(service: Requests, last: Order) -> AsyncIterator[tuple[Event, str | None]]:
    """Every decision and interim message after `last`, in order, with its agent: both streams
    read page by page and merged (a message comes after the decision it was added after). A
    message whose decision was added after the decisions were read ends the backlog: it and
    that decision come from the live feed, in order."""
    (ms, seq), _, _ = last
    decisions: list[tuple[Event, str | None]] = []
    messages: list[tuple[Event, str | None]] = []
    d_next, d_done = f"{ms}-{seq}", False
    # a message added after that decision has a later id, but for a clock that went back: a
    # margin of ids before it is read too, and each message placed by its own `after`
    m_next, m_done = f"{max(0, ms - MESSAGE_MARGIN_MS)}-0", False
    while True:
        if not decisions and not d_done:
            page = await service.api.decisions_after(d_next, BACKLOG_PAGE)
            d_done = len(page) < BACKLOG_PAGE
            if page:
                d_next = page[-1][0]
                owners = await service.api.owners_of(page)
                decisions = [(Event.decision(i, d), a) for (i, _, d), a in zip(page, owners, strict=True)]
        while not messages and not m_done:  # (a page may hold only messages sent already)
            got = await service.api.messages_from(m_next, BACKLOG_PAGE)
            m_done = len(got) < BACKLOG_PAGE
            if got:
                m_next = f"({got[-1].id}"
                owners = await service.api.message_owners(got)
                messages = [(e, a) for e, a in ((Event.message(m), a) for m, a in zip(got, owners, strict=True))
                            if e.order > last]
        if not decisions and not messages:
            return
        if messages and (not decisions or messages[0][0].order < decisions[0][0].order):
            if not decisions and messages[0][0].order[0] > id_order(d_next):
                # added after a decision that came after the decisions were read: the live feed
                # has both, in order (sent from here, the decision would be skipped as sent)
                return
            yield messages.pop(0)
        else:
            yield decisions.pop(0)


async def _end(resp: web.StreamResponse) -> web.StreamResponse:
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


def _event(event: Event) -> bytes:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {event.data}\n\n".encode()
