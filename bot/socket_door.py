"""Socket Mode: Slack's traffic over a WebSocket, answered as the HTTP door answers it.

slack_bolt's stock handler gives an envelope to `AsyncApp.async_dispatch` and acknowledges it
only when Bolt's answer is a 200: a listener failing after `ack()` (Bolt then forgets the
acknowledgement), an envelope no listener takes (404) or one failing before `ack()` stayed
unacknowledged, and Slack showed the person an error 3 s later. slack_sdk's client retries a
refused app-level token forever at a fixed interval (a traceback each time), inside the call
that starts the bot. Here:

- every envelope goes through `http_ack.dispatch` (the HTTP door's path) and is ALWAYS
  acknowledged: with the acknowledgement's body when a listener built one, else empty;
- the envelope's `retry_attempt`/`retry_reason` become the `x-slack-retry-num`/
  `x-slack-retry-reason` headers Slack sends over HTTP (only on a retry, as there);
- `start()` connects once: a token Slack refuses fails it (ConfigError naming
  SLACK_APP_TOKEN); any other failure, and every later loss of the connection, is retried by
  one background task with capped exponential back-off, one log line per failed attempt;
- `state()` says whether the socket is up, for `/healthz` and `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from slack_bolt.adapter.socket_mode.async_base_handler import AsyncBaseSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot import http_ack, inbound
from bot.env import ConfigError
from bot.gateway import web_client

log = logging.getLogger("hitl.socket")

BACKOFF_MIN_S = 1.0
"""The wait before the second attempt after a failed one; doubled after each failure..."""
BACKOFF_MAX_S = 60.0
"""...up to this (apps.connections.open is rate-limited per app: replicas must not hammer it)."""
ATTEMPT_S = 15.0
"""One attempt (apps.connections.open, then the WebSocket handshake) fails after this long."""
GRACE_S = 10.0
"""How long the socket may be down (a reconnect, a network blip) before health says so; at once
when Slack refused the token (no retry mends that)."""
REFUSED = frozenset({"invalid_auth", "not_authed", "token_revoked", "account_inactive",
                     "not_allowed_token_type", "missing_scope"})
"""apps.connections.open errors that no retry mends: the token must be replaced."""
_CLOSING: set[asyncio.Future[None]] = set()


class TokenRefused(Exception):
    """Slack refused the app-level token (`error` is Slack's code)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class RateLimited(Exception):
    """apps.connections.open answered `ratelimited`: wait `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"ratelimited, Retry-After {retry_after:g} s")
        self.retry_after = retry_after


class Unanswered(Exception):
    """apps.connections.open failed for a reason a later attempt may not meet (5xx, an outage)."""


def refused_message(error: str) -> str:
    """The configuration error a refused app-level token stops `hitl run` with."""
    return ("configuration error:\n  SLACK_APP_TOKEN: Slack refused it (" + error + "); create an "
            "app-level token with connections:write (Basic Information → App-Level Tokens)")


class _Client(SocketModeClient):
    """slack_sdk's aiohttp client, but it never reconnects by itself: `connect()` makes one
    attempt (or raises), and a lost or refreshed connection is reported to `on_lost`."""

    def __init__(self, app_token: str, api_url: str, logger: logging.Logger,
                 on_lost: Callable[[bool], None]) -> None:
        super().__init__(app_token=app_token, logger=logger, web_client=web_client(None, api_url), ping_interval=10)
        self.on_lost = on_lost

    @property
    def up(self) -> bool:
        session = self.current_session
        return not self.closed and not self.stale and session is not None and not session.closed

    async def open_url(self) -> str:
        """A WebSocket URL from apps.connections.open; TokenRefused, RateLimited, Unanswered, or a
        network error."""
        try:
            response = await self.web_client.apps_connections_open(app_token=self.app_token)
        except SlackApiError as e:
            data = e.response.data if isinstance(e.response.data, dict) else {}  # a proxy's 503 page
            error = str(data.get("error") or f"HTTP {e.response.status_code}")
            if error in REFUSED:
                raise TokenRefused(error) from e
            if error == "ratelimited" or e.response.status_code == 429:
                raise RateLimited(_seconds(e.response.headers.get("Retry-After"))) from e
            raise Unanswered(f"apps.connections.open: {error}") from e
        return str(response["url"])

    async def run_message_listeners(self, message: dict[str, Any], raw_message: str) -> None:
        """slack_sdk's, except an envelope whose payload it cannot read (neither an object nor
        text: it raises, and the envelope is never acknowledged, so Slack sends it again and
        again) is acknowledged and dropped, as the HTTP door answers such a body 400."""
        payload = message.get("payload") if isinstance(message, dict) else None
        if message.get("envelope_id") and "payload" in message and not isinstance(payload, (dict, str)):
            log.warning("Socket Mode: envelope %s is not what Slack sends: not a JSON object; acknowledged, "
                        "not handled", message["envelope_id"])
            with contextlib.suppress(Exception):  # the socket went away: Slack retries it, refused again
                await self.send_socket_mode_response(SocketModeResponse(str(message["envelope_id"])))
            return
        await super().run_message_listeners(message, raw_message)

    async def connect(self) -> None:
        """One attempt: a new URL, a new session, then the old one closed (Slack's advice for a
        refresh; the SDK closes first, and retries forever inside this call)."""
        url = await self.open_url()
        if self.aiohttp_client_session.closed:
            self.aiohttp_client_session = aiohttp.ClientSession()
        session = await self.aiohttp_client_session.ws_connect(
            url, autoping=False, heartbeat=self.ping_interval, proxy=self.proxy,
            ssl=self.web_client.ssl if self.web_client.ssl is not None else True)
        self.abandon()
        old, self.current_session, self.wss_uri = self.current_session, session, url
        self.stale, self.last_ping_pong_time = False, None
        self.current_session_monitor = asyncio.ensure_future(self.monitor_current_session())
        self.message_receiver = asyncio.ensure_future(self.receive_messages())
        if old is not None and not old.closed:  # its closing handshake may take seconds: not waited for
            closing = asyncio.ensure_future(_close(old))
            _CLOSING.add(closing)
            closing.add_done_callback(_CLOSING.discard)
        with contextlib.suppress(Exception):  # the first ping (the monitor notices a dead session)
            await session.ping(f"sdk-ping-pong:{time.time()}".encode())

    def abandon(self) -> None:
        """Stop watching and reading the current session (it is lost, or being replaced)."""
        for task in (self.current_session_monitor, self.message_receiver):
            if task is not None:
                task.cancel()
        self.current_session_monitor = self.message_receiver = None

    async def disconnect(self) -> None:
        if self.current_session is not None:  # the SDK logs "abandoned" even when there is none
            await super().disconnect()

    async def connect_to_new_endpoint(self, force: bool = False) -> None:
        """Called by the SDK on a CLOSE frame, a dead ping, or Slack's `disconnect` message."""
        if not self.closed:
            self.on_lost(force)


class SocketDoor(AsyncBaseSocketModeHandler):
    """Slack's traffic over Socket Mode, acknowledged as over HTTP; one task keeps it connected."""

    app: AsyncApp
    client: _Client

    def __init__(self, app: AsyncApp, app_token: str, api_url: str) -> None:
        self.app = app
        self.app_token = app_token
        self.client = _Client(app_token, api_url, app.logger, self._lost)
        self.client.socket_mode_request_listeners.append(self.handle)
        self.failures = 0
        """Connection attempts that failed (for /metrics)."""
        self._wake = asyncio.Event()
        self._force = False
        self._down_since: float | None = time.monotonic()
        self._supervisor: asyncio.Task[None] | None = None
        self._refused = False
        """The last attempt failed on the token."""
        self.closing = False
        """The bot is stopping: no new envelope is taken (`finish`)."""
        self._handling: set[asyncio.Task[Any]] = set()

    # -- envelopes --------------------------------------------------------------------------

    async def handle(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        """Dispatch as the HTTP door does, then acknowledge the envelope whatever happened. While
        the bot stops (`closing`) new envelopes are left unacknowledged: Slack sends them again,
        to a replica that runs."""
        if self.closing:
            return
        me = asyncio.current_task()
        if me is not None:
            self._handling.add(me)
            me.add_done_callback(self._handling.discard)
        if (problem := inbound.envelope_problem(req.type, req.payload)) is not None:
            # the HTTP door's 400: acknowledged (a resend would be the same), never handled
            log.warning("Socket Mode: envelope %s is not what Slack sends: %s; acknowledged, not handled",
                        req.envelope_id, problem)
            await self._ack(client, req.envelope_id, None)
            return
        request = AsyncBoltRequest(mode="socket_mode", body=req.payload, headers=retry_headers(req))
        response: BoltResponse | None = None
        try:
            response = await http_ack.dispatch(self.app, request)
        except Exception:  # Bolt tripped over the payload: acknowledged all the same (logged)
            log.exception("slack envelope %s could not be handled", req.envelope_id)
        if response is not None and response.status >= 500 and (req.payload or {}).get("type") == "view_submission":
            # failed before its ack (Redis away): an empty ack would close the form as if it went
            # through; unacknowledged, Slack keeps it open with its error, as the HTTP door's 503 does
            log.warning("Socket Mode: form %s not acknowledged: hitl could not handle it now", req.envelope_id)
            return
        await self._ack(client, req.envelope_id, ack_payload(response, command=req.type == "slash_commands"))

    @staticmethod
    async def _ack(client: AsyncBaseSocketModeClient, envelope_id: str, payload: dict[str, Any] | None) -> None:
        try:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id, payload))
        except Exception as e:  # the socket went away meanwhile: Slack retries or shows an error
            log.warning("Socket Mode: envelope %s not acknowledged: %s: %s", envelope_id, type(e).__name__, e)

    # -- the connection ---------------------------------------------------------------------

    async def connect_async(self) -> None:
        """Connect once. A refused token raises ConfigError (naming SLACK_APP_TOKEN; everything
        closed); any other failure is retried in the background, and so is every later loss."""
        wait = await self._attempt(BACKOFF_MIN_S, first=True)
        self._supervisor = asyncio.create_task(self._supervise(wait), name="slack-socket")

    async def finish(self, timeout: float) -> int:
        """Take no new envelope, and wait (at most `timeout` s) until every envelope being
        handled has been acknowledged, on the connection still open; how many had not."""
        self.closing = True
        handling = {t for t in self._handling if not t.done()}
        if not handling:
            return 0
        _, still = await asyncio.wait(handling, timeout=timeout)
        return len(still)

    async def disconnect_async(self) -> None:
        """Stop taking envelopes: no reconnecting, the connection closed (Slack sends to the others)."""
        await self._stop_supervising()
        await self.client.disconnect()

    async def close_async(self) -> None:
        await self._stop_supervising()
        if not self.client.closed:
            await self.client.close()

    def state(self) -> str:
        """`connected`; `reconnecting` while down for at most GRACE_S; then, or once Slack
        refused the token, `down`."""
        if self.client.up:
            return "connected"
        if self._down_since is None:
            self._down_since = time.monotonic()
        if self._refused or time.monotonic() - self._down_since > GRACE_S:
            return "down"
        return "reconnecting"

    def _lost(self, force: bool) -> None:
        self._force = self._force or force
        self._wake.set()

    async def _stop_supervising(self) -> None:
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _supervise(self, wait: float | None) -> None:
        """Reconnect whenever the connection is lost (at once, then after `wait`, doubled after
        each failure up to BACKOFF_MAX_S); `wait` is None while connected."""
        backoff = BACKOFF_MIN_S if wait is None else min(wait * 2, BACKOFF_MAX_S)
        while True:
            if wait is None:
                await self._wake.wait()
                backoff = BACKOFF_MIN_S
            else:
                await asyncio.sleep(wait)
            self._wake.clear()
            force, self._force = self._force, False
            if self.client.up and not force:
                wait = None
                continue
            wait = await self._attempt(backoff)
            if wait is not None:
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _attempt(self, backoff: float, first: bool = False) -> float | None:
        """One connection attempt: None when connected, else how long to wait before the next
        (`backoff`, or longer when rate-limited), said in one log line."""
        if not self.client.up:
            self.client.abandon()  # the SDK's watchers of a dead session would log every 10 s
            if self._down_since is None:
                self._down_since = time.monotonic()
        try:
            await asyncio.wait_for(self.client.connect(), ATTEMPT_S)
        except TokenRefused as e:
            self._refused = True
            if first:
                await self.close_async()
                raise ConfigError(refused_message(e.error)) from None
            self.failures += 1
            log.error("Socket Mode: Slack refused SLACK_APP_TOKEN (%s); trying again in %g s", e.error, backoff)
            return backoff
        except Exception as e:
            self.failures += 1
            self._refused = False
            wait = max(backoff, e.retry_after) if isinstance(e, RateLimited) else backoff
            log.warning("Socket Mode: could not connect (%s: %s); trying again in %g s",
                        type(e).__name__, str(e) or "timed out", wait)
            return wait
        if not first:
            log.info("Socket Mode: connected")
        self._down_since, self._refused = None, False
        return None


async def _close(session: aiohttp.ClientWebSocketResponse) -> None:
    with contextlib.suppress(Exception):
        await session.close()


def _seconds(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return BACKOFF_MAX_S


def retry_headers(req: SocketModeRequest) -> dict[str, str | Sequence[str]]:
    """What Slack's HTTP request would carry: the retry headers, on a retry only."""
    if not req.retry_attempt:
        return {}
    headers: dict[str, str | Sequence[str]] = {"x-slack-retry-num": str(req.retry_attempt)}
    if req.retry_reason:
        headers["x-slack-retry-reason"] = req.retry_reason
    return headers


def ack_payload(response: BoltResponse | None, command: bool = False) -> dict[str, Any] | None:
    """The envelope's acknowledgement payload: the body `ack()` built, if any (nothing for an
    error: an envelope is acknowledged empty whatever Bolt answered)."""
    if response is not None and response.status >= 500 and command:
        # the HTTP door's 503: a command's person is told, not left without a reply
        return {"response_type": "ephemeral", "text": "hitl could not complete this right now; try again in a moment."}
    if response is None or response.status != 200 or not response.body:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    if content_type.startswith("application/json"):
        body = json.loads(response.body)
        return body if isinstance(body, dict) else None
    return {"text": response.body}
