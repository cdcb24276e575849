"""Typed access to a Web API call's arguments, merged from query string, form and JSON body."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emulator.blockcheck import (
    MAX_MESSAGE_BLOCKS,
    MAX_MESSAGE_TEXT,
    check_blocks,
    message_text_size,
)
from emulator.common import JSON, SlackError

if TYPE_CHECKING:
    from emulator.state import Workspace

# Arguments Slack accepts as JSON strings inside a form body; decoded before recording.
JSON_ARGS = ("blocks", "view", "metadata", "files", "attachments")


def decode_json_args(args: JSON) -> JSON:
    """A copy of `args` with JSON-string arguments decoded (left as-is when not valid JSON)."""
    out = dict(args)
    for key in JSON_ARGS:
        value = out.get(key)
        if isinstance(value, str) and value.strip():
            with contextlib.suppress(ValueError):
                out[key] = json.loads(value)
    return out


class Args:
    """One call's arguments; accessors raise Slack's errors for malformed values."""

    def __init__(self, data: JSON) -> None:
        self.data = data

    def has(self, name: str) -> bool:
        return self.data.get(name) not in (None, "")

    def text(self, name: str, default: str = "") -> str:
        value = self.data.get(name)
        return default if value is None else str(value)

    def flag(self, name: str) -> bool:
        value = self.data.get(name)
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true")

    def number(self, name: str, default: int) -> int:
        value = self.data.get(name)
        if value in (None, ""):
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SlackError(
                "invalid_arguments",
                response_metadata={"messages": [f"[ERROR] invalid value for {name}: {value!r}"]},
            ) from None

    def blocks(self, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[JSON] | None:
        """Validated blocks, or None when the call has none."""
        value = self.data.get("blocks")
        if value is None or value == "":
            return None
        if not isinstance(value, list):
            raise SlackError("invalid_blocks_format")
        errors = check_blocks(value, max_blocks)
        if errors:
            raise SlackError(
                "invalid_blocks",
                errors=errors,
                response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
            )
        if max_blocks == MAX_MESSAGE_BLOCKS and message_text_size(value) > MAX_MESSAGE_TEXT:
            raise SlackError("msg_blocks_too_long")
        return value

    def metadata(self) -> JSON | None:
        value = self.data.get("metadata")
        if value is None or value == "":
            return None
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("event_type"), str)
            or not isinstance(value.get("event_payload", {}), dict)
        ):
            raise SlackError("invalid_metadata_format")
        return {"event_type": value["event_type"], "event_payload": value.get("event_payload", {})}

    def json_value(self, name: str) -> Any:
        value = self.data.get(name)
        if isinstance(value, str):
            raise SlackError(
                "invalid_arguments",
                response_metadata={"messages": [f"[ERROR] {name} is not valid JSON"]},
            )
        return value


Handler = Callable[["Workspace", Args], JSON]
