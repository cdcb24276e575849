"""The one door to Slack's Web API: every call the bot makes goes through `Gateway.call`.

A failure comes out as one of three exceptions, decided here and nowhere else:
`Permanent` (Slack refused and will refuse again: `channel_not_found`, `invalid_blocks`, a
revoked token, a proxy's 405), `RateLimited` (a 429, with Slack's `Retry-After`) or
`Transient` (5xx, an HTML error page from a proxy, a timeout, a dropped connection). A call
answered `not_in_channel` joins the channel once and is tried again. Callers with an outbox
(delivery, scheduler) reschedule on RateLimited/Transient; interactive callers (the user-group
directory) may ask for a few quick retries in place.

One kept-alive aiohttp session carries every call (`open()` in the running loop, `close()`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from blocks.kit import fit_blocks
from handlers.slack_errors import (
    Permanent,
    RateLimited,
    SlackFailure,
    Transient,
    backoff_s,
    classify,
)

__all__ = ["Gateway", "Permanent", "RateLimited", "SlackFailure", "Transient", "backoff_s", "classify",
           "web_client"]

log = logging.getLogger("hitl.slack")

MAX_INLINE_WAIT_S = 5.0
TIMEOUT_S = 15
MESSAGE_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral", "chat.scheduleMessage"})


def web_client(token: str | None, base_url: str, *, retries: bool = False) -> AsyncWebClient:
    """A Web API client on `base_url`; with `retries`, slack_sdk retries 429/5xx/connection errors
    itself (Bolt's own client, for listeners' calls that must finish within Slack's 3 s)."""
    handlers = [AsyncRateLimitErrorRetryHandler(max_retry_count=2), AsyncServerErrorRetryHandler(max_retry_count=2),
                AsyncConnectionErrorRetryHandler(max_retry_count=2)] if retries else []
    return AsyncWebClient(token=token, base_url=base_url, retry_handlers=handlers, timeout=TIMEOUT_S)


class Gateway:
    """Calls Web API methods by name, classifies failures and keeps per-replica counts."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self.session: aiohttp.ClientSession | None = None
        self.stats: Counter[str] = Counter()
        self._ids: dict[str, str] = {}

    def open(self, *clients: AsyncWebClient) -> None:
        """Start the shared kept-alive session (in the running loop) for this and `clients`."""
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        for c in (self.client, *clients):
            c.session = self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def call(self, method: str, *, retries: int = 0, join: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Call `method` (e.g. "chat.postMessage"); its answer, or Permanent/Transient/RateLimited.

        `join`: on `not_in_channel`, join `kwargs["channel"]` once and try again. `retries`:
        transient failures retried in place that many times (waits of at most a few seconds)."""
        fn = getattr(self.client, method.replace(".", "_"))
        if method in MESSAGE_METHODS and isinstance(kwargs.get("blocks"), list):
            kwargs["blocks"] = fit_blocks(kwargs["blocks"])  # whatever built them: never msg_blocks_too_long
        attempt, joined = 0, False
        cause: Exception
        while True:
            try:
                resp = await fn(**kwargs)
                self.stats[f"ok:{method}"] += 1
                data = resp.data
                return dict(data) if isinstance(data, dict) else {}
            except SlackApiError as e:
                failure, cause = classify(method, e), e
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                failure, cause = Transient(method, type(e).__name__), e
            self.stats[f"{type(failure).__name__.lower()}:{method}"] += 1
            if failure.error == "not_in_channel" and join and not joined and kwargs.get("channel"):
                joined = True
                await self.call("conversations.join", channel=await self.channel_id(str(kwargs["channel"])))
                continue
            wait = failure.retry_after_s if isinstance(failure, RateLimited) else backoff_s(attempt + 1)
            if isinstance(failure, Permanent) or attempt >= retries or wait > MAX_INLINE_WAIT_S:
                raise failure from cause
            attempt += 1
            log.info("slack: %s failed (%s); retrying in %.1fs", method, failure.error, wait)
            await asyncio.sleep(wait)

    # ---- channel names -------------------------------------------------------------------

    def remember(self, name: str, channel_id: str) -> None:
        """A channel id Slack just told us (a post's answer carries it)."""
        if name.startswith("#"):
            self._ids[name] = channel_id

    async def channel_id(self, channel: str) -> str:
        """The id of a `#name` channel (listed once, then cached), or the id itself."""
        if not channel.startswith("#"):
            return channel
        if channel not in self._ids:
            cursor = None
            while True:
                resp = await self.call("conversations.list", retries=2, limit=1000, cursor=cursor,
                                       types="public_channel,private_channel")
                for c in resp.get("channels") or []:
                    self._ids["#" + c["name"]] = c["id"]
                cursor = (resp.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        return self._ids.get(channel, channel)
