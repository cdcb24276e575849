"""Signed HTTP requests from "Slack" to the app's request URL."""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp

from emulator.common import JSON
from emulator.signing import sign
from emulator.socket_mode import SocketMode

# Slack gives up on an app that has not answered an interaction within 3 seconds.
ACK_TIMEOUT = 3.0


@dataclass
class Reply:
    """The app's answer to one request Slack sent it."""

    kind: str
    payload: JSON
    status: int
    body: str
    elapsed: float
    timed_out: bool = False

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body.strip() else None
        except ValueError:
            return None


class Transport:
    """Posts signed bodies to `request_url` and keeps every reply in `sent`."""

    def __init__(self, signing_secret: str, request_url: str | None) -> None:
        self.signing_secret = signing_secret
        self.request_url = request_url
        self.ack_timeout = ACK_TIMEOUT
        self.sent: list[Reply] = []
        self._session: aiohttp.ClientSession | None = None
        self.socket_mode: SocketMode | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_form(self, kind: str, fields: dict[str, str], payload: JSON) -> Reply:
        body = urllib.parse.urlencode(fields).encode()
        return await self._post(kind, body, "application/x-www-form-urlencoded", payload)

    async def post_payload(self, kind: str, payload: JSON) -> Reply:
        """An interaction: form-encoded `payload=<json>`."""
        return await self.post_form(kind, {"payload": json.dumps(payload)}, payload)

    async def post_json(self, kind: str, payload: JSON) -> Reply:
        """An Events API delivery: a JSON body."""
        return await self._post(kind, json.dumps(payload).encode(), "application/json", payload)

    async def _post(self, kind: str, body: bytes, content_type: str, payload: JSON) -> Reply:
        if self.socket_mode is not None and self.socket_mode.connected:
            status, text, elapsed, timed_out = await self.socket_mode.deliver(kind, payload, self.ack_timeout)
            reply = Reply(kind, payload, status, text, elapsed, timed_out)
            self.sent.append(reply)
            return reply
        if not self.request_url:
            raise RuntimeError("the emulator has no request_url to send interactions to")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        # Signed with the real clock: the app compares it with its own.
        headers = sign(self.signing_secret, body, int(time.time()))
        headers["Content-Type"] = content_type
        started = time.perf_counter()
        timeout = aiohttp.ClientTimeout(total=self.ack_timeout)
        try:
            async with self._session.post(
                self.request_url, data=body, headers=headers, timeout=timeout
            ) as resp:
                text = await resp.text()
                reply = Reply(kind, payload, resp.status, text, time.perf_counter() - started)
        except TimeoutError:
            reply = Reply(kind, payload, 0, "", time.perf_counter() - started, timed_out=True)
        self.sent.append(reply)
        return reply
