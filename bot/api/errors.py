"""The HTTP API's one error-to-response mapping: every answer, errors included, is JSON.

`{"error": {"code": ..., "message": ..., "field": ...}}`; `field` names the request field
at fault when there is one (the same words as the queue's dead letters).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from store import bounds

log = logging.getLogger("hitl.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An answer other than success: HTTP status, a stable code, words for people."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}
        self.extra = extra or {}


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def respond(e: ApiError) -> web.Response:
    return web.json_response(error_body(e.code, e.message, e.field, **e.extra), status=e.status,
                             headers=e.headers)


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "unsupported_media_type"}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiError and aiohttp's own HTTP errors as JSON bodies; a bug as a 500 with an id."""
    try:
        return await handler(request)
    except ApiError as e:
        return respond(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "http_error")
        message = {404: f"no such endpoint: {request.method} {request.path}",
                   405: f"{request.method} is not allowed on {request.path}",
                   413: "the request body is too large"}.get(e.status, e.reason)
        headers = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
        return web.json_response(error_body(code, message), status=e.status, headers=headers)
    except Exception:
        log.exception("api: unexpected error on %s %s", request.method, request.path)
        return web.json_response(error_body("internal", "internal error; it has been logged"), status=500)


@web.middleware
async def json_not_found(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the main app: unknown routes and wrong methods answer in JSON too."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as e:
        return web.json_response(error_body(_HTTP_CODES[e.status], f"no such endpoint: {request.method} "
                                            f"{request.path}" if e.status == 404 else
                                            f"{request.method} is not allowed on {request.path}"),
                                 status=e.status)


async def read_json(request: web.Request, limit: int) -> Any:
    """The body as JSON: 413 past `limit` bytes, 400 if it is not JSON or is out of the queue's
    bounds (store.bounds: a number past 1e15, NaN, nesting past 32, half a surrogate pair),
    nothing stored yet."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"the body is {request.content_length} bytes; the limit is {limit}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as e:
        raise ApiError(413, "too_large", f"the body is larger than {limit} bytes") from e
    except web.RequestPayloadError as e:  # not what its Content-Encoding says (gzip that is not)
        why = str(e).rpartition("message:")[2].strip()  # (aiohttp's text: "400, message:\n  <why>")
        # the rest of such a body cannot be read past either: the connection is not reused
        raise ApiError(400, "invalid_json", f"the body could not be read: {why}", field="request",
                       headers={"Connection": "close"}) from e
    if len(raw) > limit:
        raise ApiError(413, "too_large", f"the body is {len(raw)} bytes; the limit is {limit}")
    try:
        return bounds.loads(raw)  # the queue's bounds: numbers, nesting, Unicode text
    except bounds.OutOfBounds as e:
        raise ApiError(400, "invalid_request", f"request is out of bounds: {e}", field="request") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"request is not valid JSON: {e}", field="request") from e
