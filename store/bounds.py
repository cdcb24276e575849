"""Bounded JSON: the limits every value from outside (a queue entry, an edit) is held to.

One copy, shared with the agent SDK (`hitl.bounds`, which checks each request against the same
limits before sending it); this module keeps the bot's import path.
"""

from __future__ import annotations

from hitl.bounds import (
    MAX_DEPTH,
    MAX_DIGITS,
    MAX_NUMBER,
    OutOfBounds,
    check_depth,
    check_entry,
    check_number,
    check_unicode,
    check_value,
    loads,
)

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "MAX_NUMBER", "OutOfBounds", "check_depth", "check_entry",
           "check_number", "check_unicode", "check_value", "loads"]
