"""A local Slack: stateful Web API, signed interactions and a web page (`/`).

Imports nothing of the product; the bot talks to it exactly as to Slack.
"""

from emulator.blockcheck import BlockError
from emulator.limits import Fault
from emulator.payloads import InteractionError
from emulator.server import Emulator
from emulator.signing import sign
from emulator.submission import SubmitResult
from emulator.transport import Reply
from emulator.webapi import Call

__all__ = [
    "BlockError",
    "Call",
    "Emulator",
    "Fault",
    "InteractionError",
    "Reply",
    "SubmitResult",
    "sign",
]
