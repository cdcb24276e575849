"""The emulator's web page and the small JSON API it talks to (`/_emulator/...`).

The page acts as one workspace member at a time (switchable). Everything a person does on
it goes through the emulator's own `click`, `submit_view`, `close_view`, `slash_command` and
`open_home`, so the app receives the same signed requests as from real Slack. Live updates:
`GET /_emulator/events` is a server-sent event stream of the snapshot, sent when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from emulator.common import JSON, SlackError
from emulator.payloads import InteractionError
from emulator.snapshot import snapshot
from emulator.state import Ephemeral
from emulator.transport import Reply

if TYPE_CHECKING:
    from emulator.server import Emulator

STATIC = Path(__file__).with_name("static")
DEFAULT_USER = "U0ALICE"
TICK = 0.2  # how often an event stream looks for changes (seconds)
KEEPALIVE = 15.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadInput(Exception):
    """The page sent something the emulator cannot act on; answered with HTTP 400."""


def outcome(reply: Reply | None, kind: str) -> JSON:
    """What the status line says about one request sent to the app."""
    if reply is None:
        return {"kind": kind, "status": None, "ms": None, "summary": f"{kind}: not sent to the app"}
    ms = round(reply.elapsed * 1000, 1)
    if reply.timed_out:
        summary = f"Sent {kind} → no answer within {ms:.0f} ms (timed out)"
    else:
        summary = f"Sent {kind} → {reply.status} in {ms:.0f} ms"
    return {"kind": kind, "status": reply.status, "ms": ms, "timed_out": reply.timed_out,
            "summary": summary}


class WebUI:
    """Routes for `/`, `/static/*` and `/_emulator/*`, bound to one emulator."""

    def __init__(self, emu: Emulator, user_id: str = DEFAULT_USER) -> None:
        self.emu = emu
        self.user_id = user_id
        self.last: JSON | None = None
        self.notices: list[Ephemeral] = []  # what the Slack client itself says (failed commands)
        self._closing = asyncio.Event()

    def mount(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/_emulator/state", self._state)
        app.router.add_get("/_emulator/events", self._events)
        for name, action in (
            ("user", self.switch_user),
            ("click", self.click),
            ("click_view", self.click_view),
            ("submit", self.submit),
            ("close", self.close),
            ("command", self.command),
            ("home", self.home),
            ("fault", self.fault),
            ("clear_faults", self.clear_faults),
            ("add_user", self.add_user),
        ):
            app.router.add_post(f"/_emulator/{name}", self._json_endpoint(action))
        app.on_shutdown.append(self._shutdown)

    def snapshot(self, user_id: str | None = None) -> JSON:
        return snapshot(self.emu.ws, user_id or self.user_id, self.notices, self.last)

    # -- pages and streams ----------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def _state(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.snapshot(request.query.get("user")))
        except SlackError as e:
            return web.json_response({"ok": False, "error": e.error}, status=404)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the snapshot each time it changes (and a keep-alive comment)."""
        pinned = request.query.get("user")
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        sent, quiet = "", 0.0
        try:
            while not self._closing.is_set():
                body = json.dumps(self.snapshot(pinned))
                if body != sent:
                    await resp.write(f"data: {body}\n\n".encode())
                    sent, quiet = body, 0.0
                elif quiet >= KEEPALIVE:
                    await resp.write(b": keep-alive\n\n")
                    quiet = 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), TICK)
                quiet += TICK
        except (ConnectionError, SlackError):
            pass  # the page went away (or its pinned user did)
        return resp

    async def _shutdown(self, app: web.Application) -> None:
        self._closing.set()

    # -- actions --------------------------------------------------------------------------

    def _json_endpoint(self, action: Callable[[JSON], Awaitable[JSON]]) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise BadInput("send a JSON object")
                return web.json_response({"ok": True, **await action(body)})
            except (BadInput, InteractionError, ValueError) as e:
                return web.json_response({"ok": False, "error": str(e)}, status=400)
            except SlackError as e:
                return web.json_response({"ok": False, "error": e.error}, status=400)

        return handle

    def _user(self, body: JSON) -> str:
        user_id = str(body.get("user") or self.user_id)
        if user_id not in self.emu.ws.users:
            raise BadInput(f"no user {user_id!r} in the workspace")
        return user_id

    def _done(self, result: JSON) -> JSON:
        self.last = result
        return result

    async def switch_user(self, body: JSON) -> JSON:
        """Act as another member from now on; answers with what they see."""
        self.user_id = self._user(body)
        return {"user": self.user_id, "state": self.snapshot()}

    async def click(self, body: JSON) -> JSON:
        """A button, select or overflow choice on a message or ephemeral message."""
        reply = await self.emu.click(
            self._user(body), _need(body, "channel"), _need(body, "ts"), _need(body, "action_id"),
            value=body.get("value"), block_id=body.get("block_id"),
        )
        return self._done(outcome(reply, "block_actions"))

    async def click_view(self, body: JSON) -> JSON:
        """A button or choice inside a modal or the Home tab, with the inputs typed so far."""
        reply = await self.emu.click_view(
            self._user(body), _need(body, "view_id"), _need(body, "action_id"),
            value=body.get("value"), block_id=body.get("block_id"), values=body.get("values"),
        )
        return self._done(outcome(reply, "block_actions"))

    async def submit(self, body: JSON) -> JSON:
        """Press a modal's Submit; inline errors come back (and stay on the view)."""
        result = await self.emu.submit_view(
            self._user(body), _need(body, "view_id"), body.get("values") or {}
        )
        out = outcome(result.reply, "view_submission")
        if result.reply is None:
            n = len(result.errors)
            out["summary"] = f"Not sent: Slack's client found {n} field{'s' * (n != 1)} to fix"
        elif result.errors:
            out["summary"] += f"; the app answered with {len(result.errors)} error(s)"
        if result.problem:
            out["summary"] += f"; problem: {result.problem}"
        return self._done({**out, "closed": result.closed, "errors": result.errors,
                           "problem": result.problem})

    async def close(self, body: JSON) -> JSON:
        """Press a modal's Close; the app hears of it only with notify_on_close."""
        reply = await self.emu.close_view(self._user(body), _need(body, "view_id"))
        out = outcome(reply, "view_closed")
        if reply is None:
            out["summary"] = "Closed the modal (the app did not ask to be told)"
        return self._done(out)

    async def command(self, body: JSON) -> JSON:
        """`/command text` typed in a channel's message box."""
        user_id = self._user(body)
        line = str(body.get("text") or "").strip()
        if not line.startswith("/") or len(line) < 2:
            raise BadInput("only slash commands reach the app here, e.g. /hitl help")
        command, _, text = line.partition(" ")
        channel = self.emu.ws.channel(_need(body, "channel"))
        reply = await self.emu.slash_command(user_id, channel.id, command, text.strip())
        if reply.status != 200:
            error = "operation_timeout" if reply.timed_out else "dispatch_failed"
            notice = f'{command} failed with the error "{error}"'
            self.notices.append(
                Ephemeral(channel.id, user_id, self.emu.ws.next_ts(), notice)
            )
        return self._done(outcome(reply, command))

    async def home(self, body: JSON) -> JSON:
        """Open the app's Home tab (`app_home_opened`)."""
        reply = await self.emu.open_home(self._user(body))
        return self._done(outcome(reply, "app_home_opened"))


    # -- control (for tests and demos driving faults and people over HTTP) -------------------

    async def fault(self, body: JSON) -> JSON:
        """Queue a fault for a Web API method: {method, status, error, retry_after, times,
        applied (the call takes effect, the answer is the fault), body (raw text, e.g. HTML),
        content_type}."""
        times = body.get("times", 1)
        self.emu.inject(
            str(_need(body, "method")), status=int(body.get("status", 200)),
            retry_after=body.get("retry_after"), error=body.get("error"),
            times=None if times is None else int(times), applied=bool(body.get("applied")),
            body=body.get("body"), content_type=str(body.get("content_type") or "text/html"),
        )
        return {"queued": body["method"]}

    async def clear_faults(self, body: JSON) -> JSON:
        """Drop every queued fault: Slack answers normally again."""
        self.emu.faults.clear()
        return {"cleared": True}

    async def add_user(self, body: JSON) -> JSON:
        """Add a person: {id, name, team_id (another workspace: a Slack Connect guest),
        enterprise_id}."""
        user = self.emu.add_user(
            str(_need(body, "id")), str(_need(body, "name")), team_id=body.get("team_id"),
            enterprise_id=body.get("enterprise_id"),
        )
        return {"user": user.to_slack()}


def _need(body: JSON, key: str) -> Any:
    value = body.get(key)
    if value in (None, ""):
        raise BadInput(f"missing {key!r}")
    return value
