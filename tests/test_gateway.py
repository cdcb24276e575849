"""Issue 10, point 7: one door to Slack's Web API that classifies every failure, whatever the
body (Slack's JSON, a proxy's HTML page, nothing), and what delivery, the scheduler and the
approver check do with each kind. Faults are queued over the emulator's control API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from blocks.ids import ActionId
from bot.gateway import Gateway, Permanent, RateLimited, Transient
from bot.metrics import render_metrics
from emulator import Emulator
from store.models import Status
from store.redis_store import Store
from tests.harness import TOKEN, Harness, running
from tests.util import eventually

HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
HTML_405 = "<html><body><h1>405 Not Allowed</h1></body></html>"

POLICY = """
defaults: {channel: "#approvals"}
tiers:
  low: {mode: auto}
  medium: {mode: approve, timeout: 1h, approvers: ["S0MANAGERS"]}
  high: {mode: approve, timeout: 1h}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""


async def control(emu: Emulator, name: str, **body: Any) -> None:
    """POST to the emulator's control API (`/_emulator/<name>`)."""
    async with aiohttp.ClientSession() as s, s.post(f"{emu.url}/_emulator/{name}", json=body) as r:
        assert r.status == 200, await r.text()


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    e = Emulator(signing_secret="s", request_url=None, bot_token=TOKEN)
    await e.start()
    yield e
    await e.stop()


@pytest.fixture
async def gw(emu: Emulator) -> AsyncIterator[Gateway]:
    g = Gateway(AsyncWebClient(token=TOKEN, base_url=emu.api_url))
    g.open()
    yield g
    await g.close()


@pytest.mark.parametrize(("fault", "kind", "error"), [
    ({"status": 502, "body": HTML_502}, Transient, "http_502"),
    ({"status": 503}, Transient, "internal_error"),
    ({"status": 405, "body": HTML_405}, Permanent, "http_405"),
    ({"status": 404, "body": "not here", "content_type": "text/plain"}, Permanent, "http_404"),
    ({"error": "channel_not_found"}, Permanent, "channel_not_found"),
    ({"error": "fatal_error"}, Transient, "fatal_error"),
    ({"status": 429, "retry_after": 7}, RateLimited, "ratelimited"),
])
async def test_every_failure_has_one_kind_whatever_its_body(
        emu: Emulator, gw: Gateway, fault: dict[str, Any], kind: type[Exception], error: str) -> None:
    await control(emu, "fault", method="chat.postMessage", **fault)
    with pytest.raises(kind) as e:
        await gw.call("chat.postMessage", channel="#approvals", text="hello")
    assert type(e.value) is kind and e.value.error == error  # type: ignore[attr-defined]
    if isinstance(e.value, RateLimited):
        assert e.value.retry_after_s == 7
    assert (await gw.call("chat.postMessage", channel="#approvals", text="again"))["ok"]


async def test_not_in_channel_joins_once_and_tries_again(emu: Emulator, gw: Gateway) -> None:
    await control(emu, "fault", method="chat.postMessage", error="not_in_channel")
    resp = await gw.call("chat.postMessage", join=True, channel="#approvals", text="hello")
    assert resp["ok"] and len(emu.calls_to("conversations.join")) == 1
    await control(emu, "fault", method="chat.postMessage", error="not_in_channel", times=2)
    with pytest.raises(Permanent, match="not_in_channel"):
        await gw.call("chat.postMessage", join=True, channel="#approvals", text="hello")
    assert len(emu.calls_to("conversations.join")) == 2  # once per call, never in a loop


async def test_quick_retries_in_place_honour_retry_after(emu: Emulator, gw: Gateway) -> None:
    await control(emu, "fault", method="auth.test", status=502, body=HTML_502)
    assert (await gw.call("auth.test", retries=1))["ok"]
    await control(emu, "fault", method="auth.test", status=429, retry_after=60)
    with pytest.raises(RateLimited):  # too long to wait in place: the caller reschedules
        await gw.call("auth.test", retries=3)
    assert len(emu.calls_to("auth.test")) == 3


# ---- the bot end to end ------------------------------------------------------------------------


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(redis_url, tmp_path, POLICY) as harness:
        yield harness


async def test_an_html_502_on_a_post_is_retried_and_the_card_arrives_once(h: Harness) -> None:
    await control(h.emu, "fault", method="chat.postMessage", status=502, body=HTML_502, times=2)
    rid = await h.push()
    rec = await h.card(rid)
    assert [c.status for c in h.emu.calls_to("chat.postMessage")] == [502, 502, 200]
    assert len(h.emu.messages("#approvals")) == 1 and rec.undeliverable is None


async def test_a_card_slack_refuses_for_good_is_undeliverable_audited_once_and_expires(h: Harness) -> None:
    await control(h.emu, "fault", method="chat.postMessage", status=405, body=HTML_405, times=None)
    rid = await h.push(timeout_s=2)
    rec = await eventually(lambda: _undeliverable(h.store, rid), what="the card marked undeliverable")
    assert rec.undeliverable == "http_405" and rec.ts is None
    text = await render_metrics(h.bot)
    assert "hitl_cards_undeliverable 1" in text
    reply = await h.emu.slash_command("U0ALICE", "#approvals", "/hitl", "queue")
    assert "card undeliverable" in json.dumps(reply.body) and "http_405" in json.dumps(reply.body)
    decision = await h.client.wait(rid, timeout=15)  # the deadline still ends it
    assert decision.status is Status.expired
    trail = [e.event for e in await h.store.trail(rid)]
    assert trail.count("undeliverable") == 1 and "expired" in trail
    assert len(h.emu.calls_to("chat.postMessage")) == 1  # never retried
    assert "hitl_cards_undeliverable 0" in await render_metrics(h.bot)


async def _undeliverable(store: Store, rid: str) -> Any:
    if not await store.exists(rid):
        return None
    rec = await store.get(rid)
    return rec if rec.undeliverable else None


async def test_an_html_502_from_the_group_directory_does_not_drop_a_click(h: Harness) -> None:
    rid = await h.push()
    rec = await h.card(rid)
    await control(h.emu, "fault", method="usergroups.users.list", status=502, body=HTML_502)
    await h.click(rec, "U0BOB", ActionId.approve)  # Bob is one of the managers
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.approved and decision.decided_by[0].user_id == "U0BOB"
