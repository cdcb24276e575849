"""Reading one raw queue entry: a field's JSON within bounds, errors in plain words, and what
can be salvaged of an unusable entry. Shared by intake (requests) and withdrawals (cancels)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from store import bounds
from store.models import MAX_ENTRY_BYTES
from store.stream import Entry

MAX_FIELDS = 32  # a request entry has one field, `request`; a few more are tolerated
MAX_SALVAGE_BYTES = 1 << 20
"""An unusable entry is read for its id and reply_to up to this size (the rest stay unanswered)."""


class Invalid(Exception):
    """A queue entry that can never become a request; the message says why, in plain words."""


def describe(e: ValidationError) -> str:
    """Pydantic errors as `field.path: message; ...`, the text agents see in `reason`."""
    parts = []
    for err in e.errors()[:10]:
        loc = ".".join(str(x) for x in err["loc"]) or "request"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def entry_json(entry: Entry, name: str) -> dict[str, Any]:
    """The JSON object in the entry's one field `name` (within bounds), or Invalid."""
    raw = entry.field(name)
    assert raw is not None
    if len(entry.fields) > MAX_FIELDS:
        raise Invalid(f"entry has {len(entry.fields)} fields; send one field, {name!r}")
    if (n := entry.count(name)) > 1:  # which one the agent meant, nobody can tell
        raise Invalid(f"entry has {n} {name!r} fields; send one")
    if len(raw) > MAX_ENTRY_BYTES:
        raise Invalid(f"{name} is {len(raw)} bytes; the limit is {MAX_ENTRY_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"{name} is not UTF-8 text (byte {e.start}: {e.reason})") from e
    try:
        data = bounds.loads(text)
    except bounds.OutOfBounds as e:
        raise Invalid(f"{name} is out of bounds: {e}") from e
    except ValueError as e:  # json.JSONDecodeError
        raise Invalid(f"{name} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise Invalid(f"{name} must be a JSON object, not {type(data).__name__}")
    return data


def salvage(entry: Entry) -> dict[str, Any]:
    """What can be read of an unusable entry (for its id and reply_to), or nothing. Parsed
    without the bounds that refused it (a number too large, NaN, deep nesting, more than
    MAX_ENTRY_BYTES: its agent still learns why), up to MAX_SALVAGE_BYTES."""
    raw = entry.field("request")
    if not raw or len(raw) > MAX_SALVAGE_BYTES:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_int=_none, parse_float=_none, parse_constant=_none)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested past Python's own limit
        return {}
    return data if isinstance(data, dict) else {}


def _none(_: str) -> None:
    """A number, as far as salvaging an id and a reply_to goes (however large: never parsed)."""


def usable_text(value: object) -> bool:
    """Text an agent may have meant as its id or reply stream: 1-256 characters, all Unicode."""
    return isinstance(value, str) and 0 < len(value) <= 256 and unicode_text(value) == value


def unicode_text(text: str) -> str:
    """`text` with any half surrogate pair (from a JSON escape) written out as `\\udXXX`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def clip(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
