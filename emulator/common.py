"""Names shared by every emulator module: ids of the emulated team and Slack's error type."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

TEAM_ID = "T0HITL"
TEAM_DOMAIN = "hitl-emulator"
APP_ID = "A0HITL"
BOT_ID = "B0HITL"
BOT_USER_ID = "U0HITLBOT"


class SlackError(Exception):
    """An `ok: false` answer: `error` is Slack's error code, `extra` goes into the body."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra
