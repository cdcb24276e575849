"""The Web API endpoint: parse, authenticate, check against the reference, limit, record."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web

from emulator import api_chat, api_conversations, api_files, api_views
from emulator.args import Args, Handler, decode_json_args
from emulator.blockcheck import BlockError
from emulator.common import JSON, SlackError
from emulator.limits import Fault, Faults, RateLimiter
from emulator.reference import Reference
from emulator.state import Workspace

log = logging.getLogger(__name__)

HANDLERS: dict[str, Handler] = {
    **api_chat.HANDLERS,
    **api_conversations.HANDLERS,
    **api_views.HANDLERS,
    **api_files.HANDLERS,
}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_RECEIVED: contextvars.ContextVar[float | None] = contextvars.ContextVar("received", default=None)
"""When the Web API request being answered arrived (each request is its own task)."""


@dataclass
class Call:
    """One recorded Web API call: arguments decoded (blocks as Python), never the token."""

    method: str
    args: JSON
    response: JSON
    status: int
    at: float
    headers: dict[str, str] = field(default_factory=dict)
    took_effect: bool = False
    """Answered with an injected fault although the call was carried out (`applied`)."""
    received: float | None = None
    """When the request arrived (what rate limits are measured by); `at` is when it was answered."""

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))


class WebApi:
    """Serves `/api/<method>` over a workspace; every answer is recorded in `calls`."""

    def __init__(
        self,
        ws: Workspace,
        reference: Reference,
        faults: Faults,
        limiter: RateLimiter,
        tokens: set[str],
        clock: Callable[[], float],
    ) -> None:
        self.ws = ws
        self.reference = reference
        self.faults = faults
        self.limiter = limiter
        self.tokens = tokens
        self.clock = clock
        self.calls: list[Call] = []
        self.block_errors: list[BlockError] = []
        self.scopes: set[str] = self.implemented_scopes()

    def implemented_scopes(self) -> set[str]:
        """Every bot scope that some implemented method accepts, and `commands`."""
        found = {"commands"}
        for name in HANDLERS:
            spec = self.reference.get(name)
            found.update(spec.bot_scopes if spec else ())
        return found

    async def handle(self, request: web.Request) -> web.Response:
        _RECEIVED.set(self.clock())
        method = request.match_info["method"]
        try:
            raw = await _read_args(request)
        except ValueError:
            return self._answer(method, {}, {"ok": False, "error": "invalid_json"})
        token = _bearer(request) or str(raw.pop("token", "") or "")
        raw.pop("token", None)
        args = decode_json_args(raw)
        return await self._dispatch(method, args, token)

    async def _dispatch(self, method: str, args: JSON, token: str) -> web.Response:
        spec = self.reference.get(method)
        if spec is None:
            return self._answer(method, args, {"ok": False, "error": "unknown_method"})
        fault = self.faults.take(method)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.applied:  # the call takes effect; only its answer is lost
                await self._perform(method, spec, args, token)
                self.calls.pop()  # recorded once below, as the caller saw it
            failed = self._fault_answer(method, args, fault)
            if failed is not None:
                self.calls[-1].took_effect = fault.applied
                return failed
        return await self._perform(method, spec, args, token)

    def _fault_answer(self, method: str, args: JSON, fault: Fault) -> web.Response | None:
        if fault.body is not None:
            self.record(method, args, {"ok": False, "error": f"http_{fault.status}"}, fault.status)
            return web.Response(text=fault.body, status=fault.status, content_type=fault.content_type)
        if fault.status == 429:
            retry = str(fault.retry_after if fault.retry_after is not None else 1)
            return self._answer(
                method, args, {"ok": False, "error": "ratelimited"}, 429, {"Retry-After": retry}
            )
        if fault.status != 200:
            return self._answer(method, args, {"ok": False, "error": "internal_error"}, fault.status)
        if fault.error:
            return self._answer(method, args, {"ok": False, "error": fault.error})
        return None

    async def _perform(self, method: str, spec: Any, args: JSON, token: str) -> web.Response:
        if not token:
            return self._answer(method, args, {"ok": False, "error": "not_authed"})
        if token not in self.tokens:
            return self._answer(method, args, {"ok": False, "error": "invalid_auth"})
        granted = {"x-oauth-scopes": ",".join(sorted(self.scopes))}
        if not spec.granted_by(self.scopes):
            return self._answer(method, args, {
                "ok": False, "error": "missing_scope", "needed": ",".join(spec.bot_scopes),
                "provided": granted["x-oauth-scopes"]}, 200, granted)
        channel = self.ws.find_channel(str(args.get("channel") or ""))
        retry_after = self.limiter.check(method, spec.tier, channel.id if channel else None, at=_RECEIVED.get())
        if retry_after is not None:
            return self._answer(
                method,
                args,
                {"ok": False, "error": "ratelimited"},
                429,
                {"Retry-After": str(retry_after), **granted},
            )
        missing = [r for r in spec.required if args.get(r) in (None, "")]
        if missing:
            return self._answer(
                method,
                args,
                {
                    "ok": False,
                    "error": "invalid_arguments",
                    "response_metadata": {
                        "messages": [f"[ERROR] missing required field: {m}" for m in missing]
                    },
                },
                200,
                granted,
            )
        handler = HANDLERS.get(method)
        if handler is None:
            return self._answer(method, args, {"ok": False, "error": "not_implemented"}, 200, granted)
        try:
            result = {"ok": True, **handler(self.ws, Args(args))}
            if method == "chat.postMessage" and channel is not None:
                self.limiter.posted(channel.id, _RECEIVED.get())
        except SlackError as e:
            result = {"ok": False, "error": e.error, **e.extra}
            if e.error == "invalid_blocks":
                self.block_errors.append(BlockError(method, list(e.extra.get("errors", [])), args))
        except Exception:
            log.exception("emulator bug in %s", method)
            return self._answer(method, args, {"ok": False, "error": "internal_error"}, 500)
        return self._answer(method, args, result, 200, granted)

    def record(
        self,
        method: str,
        args: JSON,
        body: JSON,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Call:
        """Append one call to `calls` (also used for response_url posts)."""
        now = self.clock()
        received = _RECEIVED.get()
        call = Call(method, args, body, status, now, dict(headers or {}), received=now if received is None else received)
        self.calls.append(call)
        return call

    def _answer(
        self,
        method: str,
        args: JSON,
        body: JSON,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self.record(method, args, body, status, headers)
        # Slack's Date header, from the workspace clock (what `hitl doctor` measures skew by)
        sent = {"Date": formatdate(self.clock(), usegmt=True), **(headers or {})}
        return web.json_response(body, status=status, headers=sent)


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


async def _read_args(request: web.Request) -> dict[str, Any]:
    """Query string, then form or JSON body; a JSON body that does not parse raises ValueError."""
    args: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return args
    if request.content_type == "application/json":
        text = await request.text()
        if text.strip():
            body = json.loads(text)
            if not isinstance(body, dict):
                raise ValueError("JSON body is not an object")
            args.update(body)
    elif request.content_type in FORM_TYPES:
        form = await request.post()
        args.update({k: v for k, v in form.items() if isinstance(v, str)})
    return args
