"""The door for Slack's HTTP requests (`POST /slack/events`): refuse what is malformed before
Bolt sees it, with the status a client can act on instead of a server error.

- 401: no timestamp or signature, a timestamp that is not a number or is more than five
  minutes off, a signature that does not match (Slack's own rules, checked in full here).
- 400: a signed body that is not what Slack sends: a form without a `payload` object, a
  `payload` that is not a JSON object, a JSON body that is not an object, bytes that are not
  UTF-8.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from urllib.parse import parse_qs

from aiohttp import web

MAX_SKEW_S = 300


def _refuse(status: int, why: str) -> web.Response:
    return web.json_response({"ok": False, "error": why}, status=status)


def check(secret: str, headers: Mapping[str, str], body: bytes, content_type: str) -> web.Response | None:
    """None if the request is signed and well-formed; otherwise the 401/400 answer."""
    timestamp = str(headers.get("X-Slack-Request-Timestamp") or "")
    signature = str(headers.get("X-Slack-Signature") or "")
    if not timestamp or not signature:
        return _refuse(401, "unsigned request")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return _refuse(401, "X-Slack-Request-Timestamp is not a number")
    if abs(time.time() - int(timestamp)) > MAX_SKEW_S:
        return _refuse(401, "stale request timestamp")
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not secret or not hmac.compare_digest(expected, signature):
        return _refuse(401, "invalid signature")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _refuse(400, "body is not UTF-8")
    if content_type == "application/json":
        return None if _is_object(text) else _refuse(400, "JSON body is not a Slack event object")
    form = parse_qs(text, keep_blank_values=True)
    if "payload" in form:
        payloads = form["payload"]
        if len(payloads) != 1 or not _is_object(payloads[0]):
            return _refuse(400, "payload is not a JSON object")
    elif "command" not in form and "ssl_check" not in form:
        return _refuse(400, "not a Slack interaction, command or event")
    return None


OBJECTS = ("view", "user", "team", "channel", "container", "message", "enterprise", "state", "event")
LISTS = ("actions", "authorizations")


def _is_object(text: str) -> bool:
    """A JSON object whose well-known fields have Slack's shapes (objects, lists of objects),
    so no framework code trips over a number where it expects an object."""
    try:
        data = json.loads(text)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    if any(data.get(k) is not None and not isinstance(data[k], dict) for k in OBJECTS if k != "user"):
        return False
    if not isinstance(data.get("user"), (dict, str, type(None))):  # events name users by id
        return False
    return all(isinstance(data.get(k, []), list) and all(isinstance(x, dict) for x in data.get(k, []))
               for k in LISTS)
