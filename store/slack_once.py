"""Slack requests already handled, shared by every replica (`handlers.once` decides what is one).

A request's claim holds `handling` until its first delivery has answered, then that answer
(JSON: the body and its content type), for ten minutes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from store.keys import Keys

CLAIM_S = 600
HANDLING = "handling"


class SlackClaims:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis, self.keys = redis, keys

    def _key(self, what: str) -> str:
        return self.keys.slack_once(hashlib.sha256(what.encode("utf-8", "backslashreplace")).hexdigest()[:32])

    async def note(self, what: str) -> None:
        """A first delivery: claimed (not waited for by the caller's request)."""
        await self.redis.set(self._key(what), HANDLING, ex=CLAIM_S)

    async def claim(self, what: str) -> tuple[bool, dict[str, str] | None]:
        """A retry: (True, None) when nobody had it (this one handles it), else (False, the first
        delivery's answer, None while it is still being handled): one round trip."""
        before = await self.redis.set(self._key(what), HANDLING, nx=True, ex=CLAIM_S, get=True)
        if before is None:
            return True, None
        try:
            answer = json.loads(before) if before != HANDLING else None
        except ValueError:
            answer = None
        return False, answer if isinstance(answer, dict) else None

    async def answered(self, what: str, body: str, content_type: str) -> None:
        """The first delivery's answer, for a retry to give again."""
        await self.redis.set(self._key(what), json.dumps({"body": body, "type": content_type}), ex=CLAIM_S)

    async def drop(self, what: str) -> None:
        """The first delivery answered nothing (or a refusal): a retry is handled afresh."""
        await self.redis.delete(self._key(what))
