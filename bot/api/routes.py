"""The REST API under `/v1/` (docs/api.md): one router, one error mapping (bot.api.errors)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bot.api.auth import Auth
from bot.api.bus import DecisionBus
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
"""Decisions read at a time when a stream resumes from Last-Event-ID (all pages are sent)."""


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
        return _json(state_of(await service.get(request.match_info["id"], key)))

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
    """Server-Sent Events: `event: decision`, `id:` the stream id (resume with Last-Event-ID).
    The key is asked again (`active`) before anything is sent and at each keep-alive: the
    stream of a revoked key ends without another event (its reconnection gets 401)."""
    sub = bus.subscribe(agents)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        await resp.prepare(request)
        await resp.write(b": hitl decisions\n\n")
        last = request.headers.get("Last-Event-ID", "")
        if not re.fullmatch(r"\d{1,20}-\d{1,20}", last):
            last = ""
        if last:  # everything after it, page by page (the live feed queues up meanwhile)
            while True:
                backlog = await service.api.decisions_after(last, BACKLOG_PAGE)
                owners = await service.api.owners_of(backlog)
                if not await active():
                    return await _end(resp)
                for (sid, _rid, decision), agent in zip(backlog, owners, strict=True):
                    if agent in agents:
                        await resp.write(_event(sid, decision))
                if backlog:
                    last = backlog[-1][0]  # read past: the live feed skips up to here
                if len(backlog) < BACKLOG_PAGE:
                    break
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while not sub.overflowed and request.transport is not None and not request.transport.is_closing():
            try:
                sid, _rid, decision = await asyncio.wait_for(sub.queue.get(), 1.0)
            except TimeoutError:
                if loop.time() - quiet_since >= KEEPALIVE_S:
                    if not await active():
                        break
                    await resp.write(b": keep-alive\n\n")
                    quiet_since = loop.time()
                continue
            quiet_since = loop.time()
            if last and _not_after(sid, last):
                continue
            if not await active():
                break
            await resp.write(_event(sid, decision))
    except ConnectionResetError:
        pass
    finally:
        bus.unsubscribe(sub)
    return await _end(resp)


async def _end(resp: web.StreamResponse) -> web.StreamResponse:
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


def _event(sid: str, decision: str) -> bytes:
    return f"id: {sid}\nevent: decision\ndata: {decision}\n\n".encode()


def _not_after(sid: str, last: str) -> bool:
    try:
        return id_order(sid) <= id_order(last)
    except ValueError:
        return False
