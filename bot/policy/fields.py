"""Field types of the policy file: durations, Slack ids, reminders.

Each parser raises ValueError with a message that says what was wrong and what would be
right; `load` prefixes it with the field's path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, StringConstraints

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_UNITS = (86400, 3600, 60, 1)


def parse_duration(value: Any) -> int:
    """Seconds from `90`, `"90s"`, `"30m"`, `"4h"`, `"1h30m"` or `"2d"`; always at least 1."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: use e.g. 90s, 30m, 4h, 1h30m")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.strip().lower()
        match = _DURATION.match(text)
        if text.isdigit():
            seconds = int(text)
        elif not text or match is None:
            raise ValueError(f"invalid duration {value!r}: use e.g. 90s, 30m, 4h, 1h30m")
        else:
            seconds = sum(int(n) * u for n, u in zip(match.groups(), _UNITS, strict=True) if n)
    else:
        raise ValueError(f"invalid duration {value!r}: use e.g. 90s, 30m, 4h, 1h30m")
    if seconds < 1:
        raise ValueError(f"duration {value!r} must be at least 1 second")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest of `4h`, `1h30m`, `90s` style for a number of seconds."""
    parts = []
    for unit, label in zip(_UNITS, "dhms", strict=True):
        n, seconds = divmod(seconds, unit)
        if n:
            parts.append(f"{n}{label}")
    return "".join(parts) or "0s"


def parse_fraction_or_duration(value: Any) -> Any:
    """`"50%"` -> {"fraction": 0.5}; a duration -> {"after": seconds}; mappings unchanged."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"invalid percentage {value!r}: use e.g. 50%") from None
        if not 0 < pct < 100:
            raise ValueError(f"percentage {value!r} must be between 0% and 100%")
        return {"at": pct / 100}
    return {"after": value}


_USER = r"^[UW][A-Z0-9]{2,30}$"
_APPROVER = r"^[UWS][A-Z0-9]{2,30}$"
_CHANNEL = r"^(#[a-z0-9][a-z0-9_\-]{0,79}|[CG][A-Z0-9]{2,30})$"
_TARGET = r"^(#[a-z0-9][a-z0-9_\-]{0,79}|[CGUWS][A-Z0-9]{2,30})$"
_IDENTIFIER = r"^[a-z][a-z0-9_\-]{0,62}$"

Duration = Annotated[int, BeforeValidator(parse_duration)]
SlackUser = Annotated[str, StringConstraints(pattern=_USER)]
SlackTeam = Annotated[str, StringConstraints(pattern=r"^[TE][A-Z0-9]{2,30}$")]
"""A Slack workspace (T...) or Enterprise Grid organisation (E...) id."""
# Users (U/W) or user groups (S): who may approve.
Approver = Annotated[str, StringConstraints(pattern=_APPROVER)]
# `#name` or a channel id (C/G).
Channel = Annotated[str, StringConstraints(pattern=_CHANNEL)]
# Who an escalation level notifies: a channel, a user or a user group.
Target = Annotated[str, StringConstraints(pattern=_TARGET)]
# Names of tiers and rules.
Identifier = Annotated[str, StringConstraints(pattern=_IDENTIFIER)]

# What each pattern means, for error messages.
PATTERN_HINTS = {
    _USER: "must be a Slack user id (U...)",
    _APPROVER: "must be a Slack user id (U...) or user group id (S...)",
    _CHANNEL: "must be a channel as #name or a channel id (C...)",
    _TARGET: "must be a channel (#name), user id (U...) or user group id (S...)",
    _IDENTIFIER: "must be lower-case letters, digits, _ and -, starting with a letter",
}
