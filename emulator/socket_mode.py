"""Socket Mode: `apps.connections.open` and a WebSocket that carries envelopes, as Slack does.

While an app is connected, interactions, slash commands and events reach it as envelopes over
the socket instead of signed HTTP requests, and its acknowledgement (with an optional
response payload) is the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from emulator.common import JSON

ENVELOPE_TYPES = {"slash_command": "slash_commands", "event_callback": "events_api"}


class SocketMode:
    def __init__(self, app_token: str | None) -> None:
        self.app_token = app_token
        self.base_url = ""
        self._sockets: list[web.WebSocketResponse] = []
        self._waiting: dict[str, asyncio.Future[JSON]] = {}
        self.envelopes: list[JSON] = []

    @property
    def connected(self) -> bool:
        return any(not ws.closed for ws in self._sockets)

    def mount(self, app: web.Application) -> None:
        # before /api/{method}: this method takes the app-level token, not the bot token
        app.router.add_post("/api/apps.connections.open", self.open)
        app.router.add_get("/socket-mode/{ticket}", self.socket)

    async def open(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        if not token:
            form = await request.post()
            token = str(form.get("token") or "")
        if not self.app_token or token != self.app_token:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        ws_url = self.base_url.replace("http://", "ws://") + f"/socket-mode/{uuid.uuid4().hex}"
        return web.json_response({"ok": True, "url": ws_url})

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": len(self._sockets),
                            "connection_info": {"app_id": "A0HITL"}, "debug_info": {"host": "emulator"}})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            with contextlib.suppress(ValueError):
                data = json.loads(msg.data)
                future = self._waiting.pop(str(data.get("envelope_id")), None)
                if future is not None and not future.done():
                    future.set_result(data)
        return ws

    async def deliver(self, kind: str, payload: JSON, timeout: float) -> tuple[int, str, float, bool]:
        """Send one envelope to a connected app; (status, body of its response, seconds, timed out)."""
        ws = next(w for w in reversed(self._sockets) if not w.closed)
        envelope_id = uuid.uuid4().hex
        envelope: dict[str, Any] = {"envelope_id": envelope_id, "type": ENVELOPE_TYPES.get(kind, "interactive"),
                                    "payload": payload, "accepts_response_payload": kind != "event_callback",
                                    "retry_attempt": 0, "retry_reason": ""}
        self.envelopes.append(envelope)
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._waiting[envelope_id] = future
        started = time.perf_counter()
        await ws.send_json(envelope)
        try:
            ack = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._waiting.pop(envelope_id, None)
            return 0, "", time.perf_counter() - started, True
        body = json.dumps(ack["payload"]) if ack.get("payload") else ""
        return 200, body, time.perf_counter() - started, False

    async def close(self) -> None:
        for ws in self._sockets:
            await ws.close()
        self._sockets.clear()
