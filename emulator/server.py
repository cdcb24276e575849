"""`Emulator`: a local Slack (Web API, signed interactions) for tests and `hitl demo`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from emulator import api_files, submission
from emulator.blockcheck import BlockError
from emulator.common import BOT_USER_ID, JSON
from emulator.interactions import Interactions
from emulator.limits import STRICT_ENV, Fault, Faults, RateLimiter
from emulator.reference import Reference
from emulator.responses import Responses
from emulator.socket_mode import SocketMode
from emulator.state import Channel, User, UserGroup, Workspace, seed
from emulator.submission import SubmitResult
from emulator.transport import Reply, Transport
from emulator.ui import WebUI
from emulator.views import View
from emulator.webapi import Call, WebApi


class Emulator:
    """A fake Slack workspace the bot cannot tell from the real one.

    `rate_limits`: enforce Slack's limits as Slack tolerates them (tiers, and a burst of 3
    posts per channel then one a second). `strict_limits`: one post per channel per rolling
    second, no burst, measured when the request arrives (tiers as with `rate_limits`);
    None reads `HITL_EMULATOR_STRICT` (`1`/`true`), so `hitl demo` can run under it too.
    """

    def __init__(
        self,
        signing_secret: str,
        request_url: str | None,
        bot_token: str = "xoxb-emulator",
        *,
        rate_limits: bool = False,
        strict_limits: bool | None = None,
        reference: Reference | None = None,
        scopes: Iterable[str] | None = None,
        trigger_ttl: float = 3.0,
        clock: Callable[[], float] = time.time,
        app_token: str | None = None,
    ) -> None:
        self.signing_secret = signing_secret
        self.socket_mode = SocketMode(app_token)
        self.bot_token = bot_token
        self.ws = Workspace(clock)
        self.ws.triggers.ttl = trigger_ttl
        seed(self.ws)
        self.reference = reference or Reference.load()
        self.faults = Faults()
        if strict_limits is None:
            strict_limits = os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")
        self.limiter = RateLimiter(lambda: self.ws.clock(), enabled=rate_limits, strict=strict_limits)
        self.api = WebApi(
            self.ws, self.reference, self.faults, self.limiter, {bot_token}, lambda: self.ws.clock()
        )
        # Granted to the bot token; Slack lists them in every answer's `x-oauth-scopes` header.
        self.api.scopes = set(scopes) if scopes is not None else self.api.implemented_scopes()
        self.transport = Transport(signing_secret, request_url)
        self.transport.socket_mode = self.socket_mode
        self.responses = Responses(self.ws, self.api.record, self.api.block_errors)
        self.interactions = Interactions(self.ws, self.transport, self.responses)
        self.ui = WebUI(self)
        self.app = self.make_app()
        self.url = ""
        self.api_url = ""
        self._runner: web.AppRunner | None = None

    # -- server ---------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application: the Web API, response_urls, files, and the web page."""
        app = web.Application()
        self.socket_mode.mount(app)
        app.router.add_route("*", "/api/{method}", self.api.handle)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files/{file_id}/{name}", self._download)
        app.router.add_post("/response/{token}", self.responses.handle)
        self.ui.mount(app)
        return app

    async def _upload(self, request: web.Request) -> web.Response:
        return await api_files.receive_upload(self.ws, request)

    async def _download(self, request: web.Request) -> web.Response:
        return await api_files.download(self.ws, request)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: a free port); sets and returns `url`."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        self.api_url = f"{self.url}/api/"
        self.ws.base_url = self.url
        self.socket_mode.base_url = self.url
        return self.url

    async def stop(self) -> None:
        await self.socket_mode.close()
        await self.transport.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- configuration --------------------------------------------------------------------

    @property
    def request_url(self) -> str | None:
        return self.transport.request_url

    @request_url.setter
    def request_url(self, url: str | None) -> None:
        self.transport.request_url = url

    @property
    def clock(self) -> Callable[[], float]:
        return self.ws.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.ws.clock = clock

    @property
    def trigger_ttl(self) -> float:
        return self.ws.triggers.ttl

    @trigger_ttl.setter
    def trigger_ttl(self, seconds: float) -> None:
        self.ws.triggers.ttl = seconds

    @property
    def ack_timeout(self) -> float:
        return self.transport.ack_timeout

    @ack_timeout.setter
    def ack_timeout(self, seconds: float) -> None:
        self.transport.ack_timeout = seconds

    def inject(
        self,
        method: str,
        *,
        status: int = 200,
        retry_after: int | None = None,
        error: str | None = None,
        delay: float = 0.0,
        times: int | None = 1,
        applied: bool = False,
        body: str | None = None,
        content_type: str = "text/html",
    ) -> None:
        """Make the next `times` calls of `method` ("*": any) fail or slow down; `applied`: the
        call takes effect but is answered with the fault; `body`: a raw (non-JSON) answer."""
        self.faults.add(
            method, Fault(status, retry_after, error, delay, times, applied, body, content_type)
        )

    @property
    def scopes(self) -> set[str]:
        """The bot token's scopes: a call needing one it lacks answers `missing_scope`."""
        return self.api.scopes

    @scopes.setter
    def scopes(self, scopes: Iterable[str]) -> None:
        self.api.scopes = set(scopes)

    def leave(self, channel_id: str) -> None:
        """Take the bot out of a channel (as if someone removed it)."""
        self.ws.channel(channel_id).members.discard(BOT_USER_ID)

    def add_user(
        self,
        user_id: str,
        name: str,
        real_name: str | None = None,
        *,
        is_admin: bool = False,
        team_id: str | None = None,
        enterprise_id: str | None = None,
    ) -> User:
        """A person in every public channel; `team_id` of another workspace makes a Slack
        Connect guest (payloads carry their own team)."""
        user = self.ws.add_user(
            user_id, name, real_name, is_admin=is_admin, team_id=team_id, enterprise_id=enterprise_id
        )
        for channel in self.ws.channels.values():
            if not channel.is_private:
                channel.members.add(user_id)
        return user

    def add_channel(
        self,
        name: str,
        channel_id: str | None = None,
        *,
        is_private: bool = False,
        members: list[str] | None = None,
    ) -> Channel:
        return self.ws.add_channel(name, channel_id, is_private=is_private, members=members)

    def add_usergroup(
        self, handle: str, users: list[str], group_id: str | None = None
    ) -> UserGroup:
        return self.ws.add_usergroup(handle, users, group_id)

    # -- what happened --------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        return self.api.calls

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.api.calls if c.method == method]

    @property
    def block_errors(self) -> list[BlockError]:
        return self.api.block_errors

    @property
    def rate_limited(self) -> int:
        """How many calls the rate limiter answered with 429."""
        return self.limiter.limited

    @property
    def sent(self) -> list[Reply]:
        """Every request sent to the app, with its reply."""
        return self.transport.sent

    def messages(self, channel: str, *, include_replies: bool = False) -> list[JSON]:
        """A channel's messages, oldest first (top level only unless `include_replies`)."""
        ch = self.ws.channel(channel)
        return [
            _message_dict(m.to_slack())
            for m in ch.messages.values()
            if include_replies or not m.is_reply or m.reply_broadcast
        ]

    def thread(self, channel: str, ts: str) -> list[JSON]:
        """The parent message and its replies, oldest first."""
        ch = self.ws.channel(channel)
        parent = ch.messages[ts]
        return [
            _message_dict(m.to_slack())
            for m in [parent, *(ch.messages[t] for t in parent.reply_ts)]
        ]

    def ephemerals(self, user_id: str | None = None, channel: str | None = None) -> list[JSON]:
        cid = self.ws.channel(channel).id if channel else None
        return [
            {
                "channel": e.channel,
                "user": e.user,
                "ts": e.ts,
                "text": e.text,
                "blocks": e.blocks,
                "thread_ts": e.thread_ts,
            }
            for e in self.ws.ephemerals
            if not e.deleted and user_id in (None, e.user) and cid in (None, e.channel)
        ]

    @property
    def views(self) -> dict[str, View]:
        """Open modals by view id (each with `.errors`, `.values`, `.to_slack()`)."""
        return self.ws.views.open_modals()

    def top_view(self, user_id: str) -> View | None:
        return self.ws.views.top(user_id)

    def home(self, user_id: str) -> View | None:
        return self.ws.views.home(user_id)

    @property
    def files(self) -> dict[str, Any]:
        return {fid: f for fid, f in self.ws.files.items() if f.content is not None}

    # -- people acting --------------------------------------------------------------------

    async def click(
        self,
        user_id: str,
        channel: str,
        ts: str,
        action_id: str,
        *,
        value: Any = None,
        block_id: str | None = None,
    ) -> Reply:
        return await self.interactions.click(
            user_id, channel, ts, action_id, value=value, block_id=block_id
        )

    async def click_view(
        self,
        user_id: str,
        view_id: str,
        action_id: str,
        *,
        value: Any = None,
        block_id: str | None = None,
        values: dict[str, dict[str, Any]] | None = None,
    ) -> Reply:
        return await self.interactions.click_view(
            user_id, view_id, action_id, value=value, block_id=block_id, values=values
        )

    async def click_home(
        self, user_id: str, action_id: str, *, value: Any = None, block_id: str | None = None
    ) -> Reply:
        return await self.interactions.click_home(
            user_id, action_id, value=value, block_id=block_id
        )

    async def submit_view(
        self, user_id: str, view_id: str, values: dict[str, dict[str, Any]] | None = None
    ) -> SubmitResult:
        return await submission.submit_view(self.interactions, user_id, view_id, values or {})

    async def close_view(self, user_id: str, view_id: str) -> Reply | None:
        return await submission.close_view(self.interactions, user_id, view_id)

    async def slash_command(
        self, user_id: str, channel: str, command: str, text: str = ""
    ) -> Reply:
        return await self.interactions.slash_command(user_id, channel, command, text)

    async def open_home(self, user_id: str) -> Reply:
        return await self.interactions.open_home(user_id)


def _message_dict(msg: JSON) -> JSON:
    return {"blocks": [], "thread_ts": None, "metadata": None, "edited": None, **msg}
