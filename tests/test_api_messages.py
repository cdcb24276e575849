"""Interim messages and after-the-fact reviews over the HTTP API: an agent that uses REST (or
named no reply_to) hears of an override in `GET /v1/requests/{id}` and on the event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from blocks.ids import ActionId, BlockId
from tests.api_util import LOOKUP, WEBHOOK_SECRET, Api, new_key, trusted
from tests.harness import Harness, running
from tests.test_mcp import call, stdio
from tests.test_webhooks import Receiver, receiver
from tests.util import eventually

__all__ = ["receiver"]

POLICY = """
tiers:
  low:    {mode: auto, sample: 1.0}
  medium: {mode: approve}
  high:   {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(redis_url, tmp_path, POLICY, api_rate=1000.0, api_burst=1000.0, webhook_hosts="127.0.0.1",
                       webhook_secret=WEBHOOK_SECRET, webhook_retry_s=0.02) as harness:
        await trusted(harness, LOOKUP["agent"], LOOKUP["action"])
        yield harness


async def override(h: Harness, rid: str) -> None:
    """Bob flags the action that ran on its own as wrong, through its card."""
    rec = await h.card(rid)
    await h.click(rec, "U0BOB", ActionId.review_wrong)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="what-was-wrong modal")
    await h.emu.submit_view("U0BOB", view.id, {BlockId.reason_code.value: {"value": "wrong_action"},
                                               BlockId.reason_text.value: {"value": "Wrong order"}})

    async def reviewed() -> bool:
        return (await h.store.get(rid)).review is not None

    await eventually(reviewed, what="the override stored")


async def events(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The next `n` events of a stream: (id, event, data)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(10):
        while len(out) < n:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if not line:
                if fields:
                    out.append((fields["id"], fields["event"], json.loads(fields["data"])))
                fields = {}
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
    return out


async def test_an_override_is_in_the_request_on_the_event_stream_and_a_webhook(h: Harness, receiver: Receiver) -> None:
    api = Api(h, await new_key(h, "support-bot"))
    other = await new_key(h, "ops-bot")
    try:
        async with api.session.get(api.base + "/v1/events", headers=api.headers()) as resp:
            await resp.content.readline()
            status, body, _ = await api.call("POST", "/v1/requests",
                                             json={**LOOKUP, "id": "ov-1", "callback_url": receiver.url})
            assert status == 201 and body["decision"]["status"] == "auto_approved"
            assert "messages" not in body and "review" not in body  # nothing yet: the JSON as before
            await override(h, "ov-1")
            (did, dkind, _), (mid, mkind, msg) = await events(resp, 2)
        assert (dkind, mkind) == ("decision", "message")
        assert msg["request_id"] == "ov-1" and msg["event"] == "override"
        assert msg["reason_code"] == "wrong_action" and msg["text"] == "Wrong order" and msg["by"]["user_id"] == "U0BOB"

        status, got, _ = await api.call("GET", "/v1/requests/ov-1")
        assert status == 200 and got["messages"] == [msg]
        assert got["review"]["verdict"] == "wrong" and got["review"]["reason_code"] == "wrong_action"
        assert got["review"]["by"]["user_id"] == "U0BOB" and got["review"]["at"]
        assert (await api.call("GET", "/v1/requests/ov-1", key=other))[0] == 403

        # resumed from the decision: the message comes again; resumed from the message, nothing
        # of before it: the next thing is a later decision
        headers = {**api.headers(), "Last-Event-ID": did}
        async with api.session.get(api.base + "/v1/events", headers=headers) as resp:
            assert [(i, k) for i, k, _ in await events(resp, 1)] == [(mid, "message")]
        async with api.session.get(api.base + "/v1/events", headers={**api.headers(), "Last-Event-ID": mid}) as resp:
            await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "ov-2"})
            [(_, kind, data)] = await events(resp, 1)
        assert kind == "decision" and data["request_id"] == "ov-2"
        # another agent's key never sees it, live or resumed
        async with api.session.get(api.base + "/v1/events",
                                   headers={**api.headers(other), "Last-Event-ID": did}) as resp:
            await api.call("POST", "/v1/requests", json={**LOOKUP, "agent": "ops-bot", "id": "ops-1"}, key=other)
            [(_, kind, data)] = await events(resp, 1)
        assert kind == "decision" and data["request_id"] == "ops-1"
        # the webhook: the decision, then the message as its own event, signed the same way
        await eventually(lambda: asyncio.sleep(0, len(receiver.accepted) >= 2), what="two deliveries")
        bodies = [json.loads(b) for _, b, _ in receiver.accepted]
        assert [b["event"] for b in bodies] == ["decision", "message"]
        assert bodies[1]["message"] == msg and bodies[1]["agent"] == "support-bot"
        assert all("X-Hitl-Signature" in hd for hd, _, _ in receiver.accepted)
    finally:
        await api.close()


async def test_get_decision_over_mcp_tells_of_an_override(h: Harness) -> None:
    await trusted(h, "mcp-test-agent", "lookup_order")
    async with stdio(h, 5) as client:
        got = await call(client, "request_approval", {"action": "lookup_order", "summary": "Look up order 4711",
                                                      "confidence": 0.95, "request_id": "mcp-ov-1"})
        assert got["status"] == "auto_approved"
        await override(h, "mcp-ov-1")
        got = await call(client, "get_decision", {"request_id": "mcp-ov-1"})
    assert got["status"] == "auto_approved" and got["review"]["verdict"] == "wrong"
    assert [(m["event"], m["reason_code"], m["text"]) for m in got["messages"]] == [
        ("override", "wrong_action", "Wrong order")]


async def test_a_resume_that_reads_a_message_whose_decision_came_after_its_read_loses_neither(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed stream reads the decisions after Last-Event-ID, then the messages. A decision
    and a message after it, both added between those two reads, made the backlog send the
    message and then skip the decision from the live feed as sent already (it comes before the
    message): the client never saw that decision. Both now come, in order."""
    api = Api(h, await new_key(h, "support-bot"))
    try:
        status, _, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "rs-1"})
        assert status == 201
        [(first, _)] = await h.store.redis.xrevrange(h.store.keys.decisions, count=1)
        store = h.bot.api.service.api
        read = store.messages_from
        hooked = False

        async def between_the_reads(first_id: str, count: int = 500) -> Any:
            nonlocal hooked
            if not hooked:  # once: the first read of messages, after the decisions' read
                hooked = True
                status, _, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "rs-2"})
                assert status == 201
                await override(h, "rs-2")
            return await read(first_id, count)

        monkeypatch.setattr(store, "messages_from", between_the_reads)
        async with api.session.get(api.base + "/v1/events", headers={**api.headers(), "Last-Event-ID": first}) as resp:
            got = await events(resp, 2)
        assert [(kind, data["request_id"]) for _, kind, data in got] == [("decision", "rs-2"), ("message", "rs-2")]
    finally:
        await api.close()
