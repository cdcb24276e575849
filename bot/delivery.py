"""Delivery: the outbox worker that posts and updates cards in Slack, exactly once each.

Outbox members are `post:<id>` and `update:<id>` in a sorted set by due time. A worker leases
due members, does the Slack call, and finishes them; a worker that dies leaves its lease to
run out and another worker retries. A post that may have reached Slack before a crash is
reconciled by looking for the card's message metadata in the channel's history, so a retry
never posts a second card. 429s reschedule the operation after `Retry-After`; 5xx and
timeouts back off exponentially.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from store.errors import NotFound
from store.models import Record, utcnow
from store.redis_store import Store

log = logging.getLogger("hitl.delivery")

METADATA_EVENT = "hitl_request"
LEASE_MS = 30_000
MAX_BACKOFF_S = 300.0
PERMANENT = {"channel_not_found", "is_archived", "invalid_blocks", "msg_too_long", "invalid_auth",
             "account_inactive", "token_revoked", "missing_scope", "not_authed"}

Render = Callable[[Record], dict[str, Any]]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Delivery:
    """Posts and updates cards from the outbox; `run()` until `stop()`, `kick()` to wake it."""

    def __init__(self, store: Store, slack: AsyncWebClient, render: Render, *, batch: int = 20) -> None:
        self.store = store
        self.slack = slack
        self.render = render
        self.batch = batch
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._attempts: dict[str, int] = {}
        self._channel_ids: dict[str, str] = {}
        self.stats = {"posted": 0, "updated": 0, "rate_limited": 0, "errors": 0}

    def kick(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before the pass: a kick during it makes the wait below return
            try:
                done = await self.run_once()
            except Exception:  # Redis briefly away: the outbox is durable, try again shortly
                log.exception("delivery: pass failed")
                done = 0
            if done:
                continue
            due = None
            try:
                due = await self.store.next_outbox_due()
            except Exception:
                log.debug("delivery: could not read the next due time")
            wait = 1.0 if due is None else min(1.0, max(0.0, (due - _now_ms()) / 1000))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def run_once(self) -> int:
        """Lease and perform every due operation once; returns how many were attempted."""
        lease, members = await self.store.claim_outbox(_now_ms(), LEASE_MS, self.batch)
        await asyncio.gather(*(self._perform(m, lease) for m in members))
        return len(members)

    async def _perform(self, member: str, lease: int) -> None:
        op, _, rid = member.partition(":")
        try:
            record = await self.store.get(rid)
        except NotFound:
            await self.store.finish_outbox(member, lease)
            return
        try:
            if op == "post":
                await self._post(record, member, lease)
            else:
                await self._update(record, member, lease)
            self._attempts.pop(member, None)
        except SlackApiError as e:
            await self._failed(record, member, lease, e)
        except (TimeoutError, ClientError, OSError) as e:
            await self._retry_later(member, lease, f"{type(e).__name__}: {e}")

    async def _post(self, record: Record, member: str, lease: int) -> None:
        if record.ts:
            await self.store.finish_outbox(member, lease)
            return
        channel = record.route.channel
        previous = await self.store.note_post_attempt(record.id, utcnow(), channel)
        found = await self._find_posted(record.id, json.loads(previous)) if previous else None
        if found:
            channel_id, found_ts = found
            await self.store.mark_posted(record.id, member, lease, channel_id, found_ts, utcnow(), record.version)
            log.info("delivery: card of %s was already posted (%s); not posting again", record.id, found_ts)
            return
        message = self.render(record)
        resp = await self._call_joining(channel, lambda: self.slack.chat_postMessage(
            channel=channel, text=message["text"], blocks=message["blocks"], unfurl_links=False,
            metadata={"event_type": METADATA_EVENT, "event_payload": {"request_id": record.id}}))
        channel_id, ts = str(resp["channel"]), str(resp["ts"])
        self._channel_ids[channel] = channel_id
        verdict, earlier = await self.store.mark_posted(record.id, member, lease, channel_id, ts, utcnow(), record.version)
        if verdict == "exists" and earlier != ts:  # another replica won a race: remove ours
            await self.slack.chat_delete(channel=channel_id, ts=ts)
        self.stats["posted"] += 1

    async def _update(self, record: Record, member: str, lease: int) -> None:
        if not record.ts or not record.channel:
            await self.store.finish_outbox(member, lease)  # the post renders the latest state
            return
        message = self.render(record)
        try:
            await self.slack.chat_update(channel=record.channel, ts=record.ts, text=message["text"],
                                         blocks=message["blocks"])
        except SlackApiError as e:
            if e.response.get("error") not in ("message_not_found", "cant_update_message"):
                raise
            log.warning("delivery: card of %s cannot be updated: %s", record.id, e.response.get("error"))
        await self.store.finish_outbox(member, lease)
        self.stats["updated"] += 1

    async def _call_joining(self, channel: str, call: Callable[[], Any]) -> Any:
        try:
            return await call()
        except SlackApiError as e:
            if e.response.get("error") != "not_in_channel":
                raise
            await self.slack.conversations_join(channel=await self._channel_id(channel))
            return await call()

    async def _channel_id(self, channel: str) -> str:
        if not channel.startswith("#"):
            return channel
        if channel in self._channel_ids:
            return self._channel_ids[channel]
        cursor = None
        while True:
            resp = await self.slack.conversations_list(limit=1000, cursor=cursor,
                                                       types="public_channel,private_channel")
            for c in resp["channels"]:
                self._channel_ids["#" + c["name"]] = c["id"]
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return self._channel_ids.get(channel, channel)

    async def _find_posted(self, request_id: str, attempt: dict[str, Any]) -> tuple[str, str] | None:
        """A card an earlier, unfinished attempt may have posted, found by its metadata."""
        channel_id = await self._channel_id(str(attempt.get("channel")))
        resp = await self.slack.conversations_history(
            channel=channel_id, oldest=str(float(attempt.get("at", 0)) - 60), limit=200,
            include_all_metadata=True)
        messages: list[dict[str, Any]] = resp.get("messages", [])
        for m in messages:
            meta = m.get("metadata") or {}
            if meta.get("event_type") == METADATA_EVENT and (meta.get("event_payload") or {}).get("request_id") == request_id:
                return channel_id, str(m["ts"])
        return None

    async def _failed(self, record: Record, member: str, lease: int, e: SlackApiError) -> None:
        status = e.response.status_code
        error = str(e.response.get("error") or status)
        self.stats["errors"] += 1
        if status == 429:
            self.stats["rate_limited"] += 1
            retry_after = float(e.response.headers.get("Retry-After", e.response.headers.get("retry-after", 1)))
            await self.store.finish_outbox(member, lease, _now_ms() + int(retry_after * 1000))
            return
        if error in PERMANENT:
            log.error("delivery: %s of %s failed: %s", member.split(":")[0], record.id, error)
            await self.store.audit(record.id, "post_failed", "system", {"op": member, "error": error}, utcnow())
        await self._retry_later(member, lease, error)

    async def _retry_later(self, member: str, lease: int, why: str) -> None:
        n = self._attempts[member] = self._attempts.get(member, 0) + 1
        delay = min(MAX_BACKOFF_S, 0.5 * 2 ** (n - 1))
        log.warning("delivery: %s failed (%s); retry %d in %.1fs", member, why, n, delay)
        await self.store.finish_outbox(member, lease, _now_ms() + int(delay * 1000))
