"""response_url and immediate (ack-body) responses: messages the app sends back to an interaction."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from emulator.blockcheck import (
    MAX_MESSAGE_TEXT,
    BlockError,
    check_blocks,
    message_text_size,
    with_ids,
)
from emulator.common import JSON
from emulator.state import Ephemeral, Workspace

RESPONSE_URL_TTL = 30 * 60
RESPONSE_URL_USES = 5

Recorder = Callable[[str, JSON, JSON, int], Any]


@dataclass
class Target:
    """Where a response_url posts: the interaction's channel, person and original message."""

    channel: str
    user_id: str
    message_ts: str | None
    ephemeral: bool
    expires: float
    uses: int = 0


class Responses:
    """Issues response_urls and applies what the app posts to them, as Slack does."""

    def __init__(self, ws: Workspace, record: Recorder, block_errors: list[BlockError]) -> None:
        self.ws = ws
        self.record = record
        self.targets: dict[str, Target] = {}
        self.block_errors = block_errors

    def issue(self, channel: str, user_id: str, message_ts: str | None, ephemeral: bool) -> str:
        token = secrets.token_hex(12)
        self.targets[token] = Target(
            channel, user_id, message_ts, ephemeral, self.ws.clock() + RESPONSE_URL_TTL
        )
        return f"{self.ws.base_url}/response/{token}"

    async def handle(self, request: web.Request) -> web.Response:
        """POST /response/<token>."""
        target = self.targets.get(request.match_info["token"])
        if target is None or self.ws.clock() > target.expires:
            return self._answer({}, {"ok": False, "error": "expired_url"}, 404)
        if target.uses >= RESPONSE_URL_USES:
            return self._answer({}, {"ok": False, "error": "used_url"}, 404)
        try:
            body = json.loads(await request.text())
        except ValueError:
            return self._answer({}, {"ok": False, "error": "invalid_payload"}, 400)
        if not isinstance(body, dict):
            return self._answer({}, {"ok": False, "error": "invalid_payload"}, 400)
        target.uses += 1
        error = self.apply(target, body)
        if error:
            return self._answer(body, {"ok": False, "error": error}, 400)
        return self._answer(body, {"ok": True})

    def _answer(self, args: JSON, body: JSON, status: int = 200) -> web.Response:
        self.record("response_url", args, body, status)
        return web.json_response(body, status=status)

    def apply(self, target: Target, body: JSON) -> str | None:
        """Carry out one response; the Slack error code, or None on success."""
        text = str(body.get("text") or "")
        blocks = body.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return "invalid_blocks_format"
        if blocks is not None:
            errors = check_blocks(blocks)
            if not errors and message_text_size(blocks) > MAX_MESSAGE_TEXT:
                errors = [f"the blocks hold more than {MAX_MESSAGE_TEXT} characters of text"]
                self.block_errors.append(BlockError("response_url", errors, body))
                return "msg_blocks_too_long"
            if errors:
                self.block_errors.append(BlockError("response_url", errors, body))
                return "invalid_blocks"
            blocks = with_ids(blocks)
        channel = self.ws.channels[target.channel]
        original = channel.messages.get(target.message_ts or "")
        eph = self._ephemeral(target)
        if _truthy(body.get("delete_original")):
            if eph is not None:
                eph.deleted = True
            elif original is not None:
                del channel.messages[original.ts]
            return None
        if _truthy(body.get("replace_original")) and (eph or original):
            if eph is not None:
                eph.text, eph.blocks = text, blocks or []
            elif original is not None:
                original.text, original.blocks = text, blocks or []
            return None
        if not text and not blocks:
            return "no_text"
        thread_ts = body.get("thread_ts") or None
        if body.get("response_type") == "in_channel":
            self.ws.post(channel, text, blocks, thread_ts=thread_ts)
        else:
            self.ws.ephemerals.append(
                Ephemeral(
                    channel.id, target.user_id, self.ws.next_ts(), text, blocks or [], thread_ts
                )
            )
        return None

    def _ephemeral(self, target: Target) -> Ephemeral | None:
        if not target.ephemeral:
            return None
        return next(
            (
                e
                for e in self.ws.ephemerals
                if e.ts == target.message_ts and e.user == target.user_id and not e.deleted
            ),
            None,
        )

    def immediate(self, channel: str, user_id: str, body: str) -> str | None:
        """Show the body an app acknowledged a slash command with (JSON, or plain text)."""
        if not body.strip():
            return None
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {"text": body}
        if not isinstance(parsed, dict):
            return "invalid_payload"
        target = Target(channel, user_id, None, False, self.ws.clock() + RESPONSE_URL_TTL)
        return self.apply(target, parsed)


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"
