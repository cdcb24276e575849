"""The door for Slack's HTTP requests (`POST /slack/events`): refuse what is malformed before
Bolt sees it, with the status a client can act on instead of a server error.

- 401: no timestamp or signature, a timestamp that is not a number or is more than five
  minutes off, a signature that does not match (Slack's own rules, checked in full here).
- 400: a signed body that is not what Slack sends: a form without a `payload` object, a
  `payload` that is not a JSON object (or is nested too deep to parse), a JSON body that is
  not an object, bytes that are not UTF-8, and a payload whose fields the listeners read do
  not have Slack's types (an interaction without a user id, `block_actions` without actions or an action without an
  `action_id`, a modal submission without a view, a callback_id or a state of objects, an
  input's value that is not text, a slash command without `command` or `user_id`).

What passes reaches Bolt as `bolt_request` builds it: with the fields `check` read, not those
of Bolt's own parser, which takes any form whose text says `payload` anywhere (a slash
command's words, a channel's or a person's name) for an interaction and reads it as empty.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest

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
    # compare_digest refuses text outside ASCII (a TypeError): such a signature matches nothing
    if not secret or not signature.isascii() or not hmac.compare_digest(expected, signature):
        return _refuse(401, "invalid signature")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _refuse(400, "body is not UTF-8")
    if content_type == "application/json":
        problem = _object_problem(text)
        return None if problem is None else _refuse(400, f"JSON body is not a Slack event object: {problem}")
    form = parse_qs(text, keep_blank_values=True)
    if "payload" in form:
        payloads = form["payload"]
        if len(payloads) != 1:
            return _refuse(400, "more than one payload")
        if (problem := _object_problem(payloads[0])) is not None:
            return _refuse(400, f"payload is not what Slack sends: {problem}")
    elif "command" in form:
        if not all(len(form.get(k, [])) == 1 and form[k][0] for k in ("command", "user_id")):
            return _refuse(400, "a slash command without its command and user_id")
    elif "ssl_check" not in form:
        return _refuse(400, "not a Slack interaction, command or event")
    return None


def fields(body: bytes, content_type: str) -> dict[str, Any]:
    """The fields of a request `check` let through: a JSON body's object, a form's `payload`
    object, or else the form's fields (the last of a repeated one, as Bolt keeps it)."""
    text = body.decode("utf-8")
    if content_type == "application/json":
        return dict(json.loads(text))
    form = parse_qs(text, keep_blank_values=True)
    if "payload" in form:
        return dict(json.loads(form["payload"][0]))
    return {k: v[-1] for k, v in form.items()}


def bolt_request(body: bytes, content_type: str, query: str, headers: Mapping[str, str]) -> AsyncBoltRequest:
    """Bolt's request for one `check` let through, carrying the fields `check` read."""
    request = AsyncBoltRequest(body=body.decode("utf-8"), query=query, headers=dict(headers))
    read = fields(body, content_type)
    if request.body != read:  # Bolt's parser misread it (a command whose text says `payload`)
        request.body = read
        request.context = build_async_context(AsyncBoltContext({}), read)
    return request


OBJECTS = ("view", "user", "team", "channel", "container", "message", "enterprise", "state", "event")
LISTS = ("actions", "authorizations")
INTERACTIONS = ("block_actions", "view_submission", "view_closed", "block_suggestion", "shortcut",
                "message_action")
"""Payload types a person causes: each names its user as an object with an id."""


def _object_problem(text: str) -> str | None:
    """None for a JSON object whose well-known fields have Slack's shapes (so no framework or
    listener code trips over a number where it expects an object); otherwise what is wrong."""
    try:
        data = json.loads(text)
    except ValueError:
        return "not JSON"
    except RecursionError:  # nested deeper than the parser goes: no Slack payload is
        return "JSON nested too deep"
    if not isinstance(data, dict):
        return "not a JSON object"
    return _shape_problem(data)


def _shape_problem(data: dict[str, Any]) -> str | None:
    """What is not shaped as Slack shapes it, or None: the fields every listener reads (the
    user's id, the actions, a modal's state) are checked here, so none of them meets a list
    where Slack sends text or a number where it sends an object."""
    if any(data.get(k) is not None and not isinstance(data[k], dict) for k in OBJECTS if k != "user"):
        return "a field that Slack sends as an object is not one"
    user = data.get("user")
    if not isinstance(user, (dict, str, type(None))):  # events name users by id
        return "user is neither an object nor an id"
    if not all(isinstance(data.get(k, []), list) and all(isinstance(x, dict) for x in data.get(k, []))
               for k in LISTS):
        return "a field that Slack sends as a list of objects is not one"
    kind = data.get("type")
    if kind in INTERACTIONS and not (isinstance(user, dict) and _text(user.get("id"))):
        return f"{kind} without a user id"
    if kind == "block_actions":
        return _actions_problem(data.get("actions"))
    if kind in ("view_submission", "view_closed"):
        return _view_problem(data.get("view"), submitted=kind == "view_submission")
    if kind == "event_callback":
        event = data.get("event")
        return None if isinstance(event, dict) and _text(event.get("type")) else "event_callback without an event type"
    if kind == "url_verification" and not isinstance(data.get("challenge"), str):
        return "url_verification without a challenge"
    return None


def envelope_problem(kind: str, payload: object) -> str | None:
    """What `check` would refuse (400) in a Socket Mode envelope's payload, or None: the same
    shapes as over HTTP, for an envelope of type `kind` (`interactive`, `slash_commands`,
    `events_api`)."""
    if not isinstance(payload, dict):
        return "not a JSON object"
    if kind == "slash_commands":
        if all(isinstance(payload.get(k), str) and payload[k] for k in ("command", "user_id")):
            return None
        return "a slash command without its command and user_id"
    return _shape_problem(payload)


def _text(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _actions_problem(actions: object) -> str | None:
    if not isinstance(actions, list) or not actions:
        return "block_actions without actions"
    for a in actions:
        if not _text(a.get("action_id")):
            return "an action without an action_id"
        for key in ("value", "block_id", "type", "action_ts"):
            if a.get(key) is not None and not isinstance(a[key], str):
                return f"an action's {key} is not text"
        for key in ("selected_option", "selected_date", "selected_user", "selected_conversation",
                    "selected_channel"):
            if a.get(key) is not None and not isinstance(a[key], (dict, str)):
                return f"an action's {key} is neither an object nor text"
    return None


def _view_problem(view: object, *, submitted: bool) -> str | None:
    if not isinstance(view, dict) or not _text(view.get("callback_id")) or not _text(view.get("type")):
        return "a view without a type and a callback_id"
    for key in ("private_metadata", "id", "hash"):
        if view.get(key) is not None and not isinstance(view[key], str):
            return f"the view's {key} is not text"
    if view.get("blocks") is not None and not isinstance(view["blocks"], list):
        return "the view's blocks are not a list"
    state = view.get("state")
    if state is None and not submitted:  # a submission always carries its state, empty or not
        return None
    values = state.get("values") if isinstance(state, dict) else None
    if not isinstance(values, dict):
        return "the view's state has no values object"
    for block in values.values():
        if not isinstance(block, dict) or not all(isinstance(v, dict) for v in block.values()):
            return "a state value is not an object of objects"
        for v in block.values():
            if _state_problem(v):
                return "a state value does not have Slack's types"
    return None


def _state_problem(v: dict[str, Any]) -> bool:
    """Whether one input's state has a value of a type Slack never sends for it."""
    for key in ("type", "value", "selected_date", "selected_time", "selected_user", "selected_conversation",
                "selected_channel"):
        if v.get(key) is not None and not isinstance(v[key], str):
            return True
    if v.get("selected_option") is not None and not isinstance(v["selected_option"], dict):
        return True
    for key in ("selected_options", "selected_users", "selected_conversations", "selected_channels"):
        items = v.get(key)
        if items is not None and not (isinstance(items, list)
                                      and all(isinstance(x, (dict if key == "selected_options" else str))
                                              for x in items)):
            return True
    return False
