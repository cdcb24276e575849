"""Signed webhooks against a real local receiver: signature, retries, dead letters, hosts."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.worker import cancel_all
from store.webhooks import WebhookStore
from tests.api_util import LOOKUP, WEBHOOK_SECRET, Api, api_harness, new_key
from tests.harness import Harness, start_bot
from tests.redis_server import free_port
from tests.util import eventually

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def documented_verify() -> Any:
    """The verification snippet exactly as docs/api.md shows it."""
    text = DOCS.read_text()
    section = text[text.index("### Verifying a delivery"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    scope: dict[str, Any] = {}
    exec(code.group(1), scope)
    return scope["verify"]


@dataclass
class Receiver:
    fail_first: int = 0
    always_fail: bool = False
    calls: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = not self.always_fail and len(self.calls) >= self.fail_first
        status = 200 if ok else 503
        self.calls.append((dict(request.headers), body, status))
        return web.Response(status=status, text="ok" if ok else "not now")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def accepted(self) -> list[tuple[dict[str, str], bytes, int]]:
        return [c for c in self.calls if c[2] == 200]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    r.port = free_port()
    await web.TCPSite(runner, "127.0.0.1", r.port).start()
    yield r
    await runner.cleanup()


@pytest.mark.cluster_too
async def test_a_flaky_receiver_gets_exactly_one_accepted_signed_delivery(redis_url: str, receiver: Receiver) -> None:
    receiver.fail_first = 5
    async with api_harness(redis_url) as h:
        api = Api(h, await new_key(h, "support-bot"))
        try:
            status, body, _ = await api.call("POST", "/v1/requests",
                                             json={**LOOKUP, "id": "wh-1", "callback_url": receiver.url})
            assert status == 201 and body["decision"]["status"] == "auto_approved"

            async def delivered() -> bool:
                return "webhook_delivered" in [e.event for e in await h.store.trail("wh-1")]

            await eventually(delivered, what="webhook delivered")
            await h.bot.api.webhooks.run_once()  # nothing is due any more: no further attempt
        finally:
            await api.close()
        events = [e.event for e in await h.store.trail("wh-1")]
    assert len(receiver.calls) == 6 and len(receiver.accepted) == 1
    assert events.count("webhook_failed") == 5 and events.count("webhook_delivered") == 1
    headers, raw, _ = receiver.accepted[0]
    verify = documented_verify()
    assert verify(WEBHOOK_SECRET.encode(), headers, raw)
    assert not verify(b"another secret", headers, raw)
    assert not verify(WEBHOOK_SECRET.encode(), headers, raw.replace(b"auto_approved", b"approved"))
    import json

    payload = json.loads(raw)
    assert payload["request_id"] == "wh-1" and payload["decision"]["status"] == "auto_approved"


async def test_decisions_without_a_callback_are_acknowledged_and_make_no_delivery(
        redis_url: str, receiver: Receiver) -> None:
    # the enqueuer takes a read batch in one pipeline: the decision with a callback becomes a
    # delivery, the others are only acknowledged
    async with api_harness(redis_url) as h:
        api = Api(h, await new_key(h, "support-bot"))
        try:
            for i in range(5):
                body = {**LOOKUP, "id": f"plain-{i}"}
                if i == 2:
                    body["callback_url"] = receiver.url
                assert (await api.call("POST", "/v1/requests", json=body))[0] == 201
            hooks = h.bot.api.webhooks.hooks

            async def all_taken() -> bool:
                # all five decided first (intake publishes after the 201): taking none of them
                # yet is "every decision taken" too
                if await h.store.redis.xlen(h.store.keys.decisions) < 5:
                    return False
                pending = await h.store.redis.xpending(h.store.keys.decisions, "webhooks")
                read = await h.store.redis.xinfo_groups(h.store.keys.decisions)
                lag = next(g for g in read if g["name"] == "webhooks").get("lag")
                return pending["pending"] == 0 and lag == 0

            await eventually(all_taken, what="every decision taken and acknowledged")
            assert [d is not None for d in [await hooks.get(f"plain-{i}") for i in range(5)]] == [
                False, False, True, False, False]
        finally:
            await api.close()


async def test_a_receiver_that_never_accepts_is_dead_lettered(redis_url: str, receiver: Receiver) -> None:
    receiver.always_fail = True
    async with api_harness(redis_url, webhook_give_up_s=0.3) as h:
        api = Api(h, await new_key(h, "support-bot"))
        try:
            await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "wh-2", "callback_url": receiver.url})
            hooks = h.bot.api.webhooks.hooks
            dead = await eventually(hooks.dead_letters, what="dead-lettered delivery")
            rec = await h.store.get("wh-2")
        finally:
            await api.close()
        events = [e.event for e in await h.store.trail("wh-2")]
    assert dead[0]["request_id"] == "wh-2" and dead[0]["error"] == "HTTP 503" and dead[0]["url"] == receiver.url
    assert events.count("webhook_dead") == 1 and events.count("webhook_failed") == len(receiver.calls) >= 2
    assert rec.decision is not None and rec.decision.status.value == "auto_approved"  # the decision stands


async def test_a_callback_to_a_host_not_allowed_is_refused_at_submit(redis_url: str) -> None:
    async with api_harness(redis_url, webhook_hosts="hooks.example.com") as h:
        api = Api(h, await new_key(h, "support-bot"))
        try:
            for url in ("http://127.0.0.1:9/hook", "https://evil.example.net/x", "http://10.0.0.8/hook",
                        f"http://127.0.0.1:{h.bot.port}/v1/requests"):
                status, body, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "callback_url": url})
                assert status == 400 and body["error"]["field"] == "callback_url", url
            assert await h.store.redis.xlen(h.store.keys.requests) == 0
        finally:
            await api.close()


async def test_deliveries_survive_a_restart(redis_url: str, receiver: Receiver) -> None:
    receiver.always_fail = True
    async with api_harness(redis_url) as h:
        api = Api(h, await new_key(h, "support-bot"))
        try:
            await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "wh-3", "callback_url": receiver.url})
            await eventually(lambda: _attempted(receiver), what="a first attempt")
        finally:
            await api.close()
    receiver.always_fail = False
    async with api_harness(redis_url) as h2:
        async def delivered() -> bool:
            return "webhook_delivered" in [e.event for e in await h2.store.trail("wh-3")]

        # the first bot kept retrying until it stopped, so the backoff may have grown (0.02 s
        # doubling): the delivery is due when its score says, and the restarted bot owes it then
        # (it may have been delivered already, while the bot started: then it is gone from the queue)
        due_ms = await h2.store.redis.zscore(WebhookStore(h2.store).due, "wh-3")
        if due_ms is None:
            assert await delivered(), "the pending delivery did not survive the restart"
        wait_s = max(0.0, (due_ms or 0) / 1000 - time.time())
        await eventually(delivered, timeout=wait_s + 10, what="delivery by the restarted bot")
    assert len(receiver.accepted) == 1


@contextlib.asynccontextmanager
async def _receiving(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[int]:
    """A receiver answering POST /hook with `handler`, on a port of its own (yielded)."""
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def _attempted(receiver: Receiver) -> bool:
    return bool(receiver.calls)


async def test_an_invalid_try_of_the_same_id_is_not_delivered_as_the_requests_decision(
        redis_url: str, receiver: Receiver) -> None:
    """The agent's first entry for an id is refused (`invalid` on the decisions stream), its
    corrected retry is accepted with a callback_url; when the enqueuer reads both only then (it
    was down), the receiver gets the request's own decision, once, not the refusal."""
    import asyncio
    import json

    async with api_harness(redis_url) as h:  # webhooks on: the consumer group exists
        await asyncio.sleep(0.3)
    async with api_harness(redis_url, webhook_hosts="") as h:  # a replica that enqueues nothing
        r, k = h.store.redis, h.store.keys
        await r.xadd(k.requests, {"request": json.dumps({"id": "wh-4", "agent": "support-bot",
                                                         "action": "lookup_order"})})  # no summary
        await eventually(lambda: r.exists(k.invalid("wh-4")), what="the refusal")
        await r.xadd(k.requests, {"request": json.dumps({**LOOKUP, "id": "wh-4", "callback_url": receiver.url})})
        assert (await h.client.wait("wh-4", timeout=10)).status.value == "auto_approved"
    async with api_harness(redis_url) as h:
        async def delivered() -> bool:
            return "webhook_delivered" in [e.event for e in await h.store.trail("wh-4")]

        await eventually(delivered, 15, "the delivery")
    [(_, body, _)] = receiver.accepted
    assert json.loads(body)["decision"]["status"] == "auto_approved"


async def test_a_name_that_rebinds_to_an_internal_address_reaches_nothing() -> None:
    """The check before a delivery resolves the host, and the connection resolves it again: a
    name answering a public address first and an internal one next (DNS rebinding) is refused
    when the connection is made. DNS is played by a resolver that answers what the test says
    (this machine has no DNS to rebind)."""
    import socket

    from aiohttp.abc import AbstractResolver, ResolveResult

    from bot.api.callbacks import CallbackPolicy, CheckedResolver

    class Answers(AbstractResolver):
        def __init__(self, ip: str) -> None:
            self.ip = ip

        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
            return [{"hostname": host, "host": self.ip, "port": port, "family": family, "proto": 0, "flags": 0}]

        async def close(self) -> None:
            return None

    policy = CallbackPolicy("*.example.test", own_port=8080, secret="s")
    public = await CheckedResolver(policy, Answers("93.184.216.34")).resolve("hooks.example.test", 443)
    assert public[0]["host"] == "93.184.216.34"
    for internal in ("10.0.0.7", "127.0.0.1", "169.254.169.254", "::1"):
        with pytest.raises(OSError, match="refused at connect"):
            await CheckedResolver(policy, Answers(internal)).resolve("hooks.example.test", 443)
    exact = CallbackPolicy("hooks.internal", own_port=8080, secret="s")  # listed exactly: allowed in
    assert await CheckedResolver(exact, Answers("10.0.0.7")).resolve("hooks.internal", 443)


async def test_a_hanging_receiver_holds_up_no_other_agents_webhooks(redis_url: str, receiver: Receiver) -> None:
    """One agent's receiver takes every delivery and never answers (a firewall that drops, or a
    key that points its callbacks at a tarpit): its attempts wait out their timeout, but
    another agent's delivery is not queued behind them."""
    import asyncio

    from tests.api_util import trusted

    release = asyncio.Event()
    hanging: list[int] = []

    async def hang(request: web.Request) -> web.Response:
        await request.read()
        hanging.append(1)
        await release.wait()
        return web.Response(status=200)

    async with _receiving(hang) as port, api_harness(redis_url) as h:
        await trusted(h, "ops-bot", LOOKUP["action"])
        api = Api(h, await new_key(h, "support-bot"))
        try:
            for i in range(25):
                status, _, _ = await api.call("POST", "/v1/requests", json={
                    **LOOKUP, "id": f"hang-{i}", "callback_url": f"http://127.0.0.1:{port}/hook"})
                assert status == 201
            await eventually(lambda: asyncio.sleep(0, bool(hanging)), what="the hanging receiver is called")
            status, _, _ = await api.call("POST", "/v1/requests", key=await new_key(h, "ops-bot"), json={
                **LOOKUP, "agent": "ops-bot", "id": "fine-1", "callback_url": receiver.url})
            assert status == 201
            await eventually(lambda: asyncio.sleep(0, bool(receiver.accepted)), 4,
                             "the other agent's delivery, while the hanging ones wait")
        finally:
            release.set()
            await api.close()


async def test_a_2xx_whose_body_never_ends_is_accepted_once(redis_url: str) -> None:
    """Any 2xx accepts a delivery, whatever follows it: a receiver that answers 200 and then
    sends a body without end (slowly, or gigabytes of it) is delivered to once, at once,
    and hitl reads none of that body."""
    import asyncio

    calls: list[int] = []
    release = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        calls.append(1)
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        await resp.write(b"x" * 65536)
        await release.wait()
        return resp

    async with _receiving(endless) as port, api_harness(redis_url) as h:
        api = Api(h, await new_key(h, "support-bot"))
        try:
            await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "wh-5",
                                                         "callback_url": f"http://127.0.0.1:{port}/hook"})

            async def delivered() -> bool:
                return "webhook_delivered" in [e.event for e in await h.store.trail("wh-5")]

            await eventually(delivered, 4, "the delivery accepted by its 200")
            events = [e.event for e in await h.store.trail("wh-5")]
        finally:
            release.set()
            await api.close()
        assert calls == [1] and "webhook_failed" not in events


async def _feeds_go_on(redis_url: str, receiver: Receiver, spoil: Callable[[Harness], Awaitable[None]],
                      later: str) -> None:
    """With an event stream open, `spoil` the feeds; a later decision (request `later`) must
    still reach the stream and its webhook."""
    import asyncio

    async with api_harness(redis_url) as h:
        api = Api(h, await new_key(h, "support-bot"))
        try:
            async with api.session.get(api.base + "/v1/events", headers=api.headers()) as resp:
                await resp.content.readline()  # the opening comment
                await resp.content.readline()
                await spoil(h)
                status, _, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": later,
                                                                            "callback_url": receiver.url})
                assert status == 201
                lines: list[str] = []
                while not any(later in x for x in lines):
                    raw = await asyncio.wait_for(resp.content.readline(), 5)
                    assert raw, f"the event stream ended: {lines}"
                    lines.append(raw.decode().strip())

            async def delivered() -> bool:
                return "webhook_delivered" in [e.event for e in await h.store.trail(later)]

            await eventually(delivered, 5, "the later decision's webhook")
        finally:
            await api.close()


async def test_a_refused_entry_whose_id_names_another_key_stops_no_feed(redis_url: str, receiver: Receiver) -> None:
    """The `invalid` decision of a refused queue entry carries the id the agent sent, even one
    outside the id alphabet: `<id>:notices` names the set of an escalated request's notices.
    Reading it as a record failed (WRONGTYPE), which stopped the webhook enqueuer for good (it
    read the same entry again and again) and ended the API's decision feed. Every agent's
    later decisions still reach their webhooks and event streams."""
    import json

    async def spoil(h: Harness) -> None:
        api = Api(h, await new_key(h, "support-bot"))
        try:
            status, _, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "esc-1"})
            assert status == 201
        finally:
            await api.close()
        await h.store.note_notice("esc-1", "0:U0BOB")  # as an escalation level records its notices
        r, k = h.store.redis, h.store.keys
        await r.xadd(k.requests, {"request": json.dumps({"id": "esc-1:notices", "agent": "support-bot",
                                                         "action": "lookup_order"})})  # no summary
        await eventually(lambda: r.xlen(k.dead), what="the refusal")

    await _feeds_go_on(redis_url, receiver, spoil, "after-1")


async def test_a_record_whose_stored_request_is_not_json_stops_no_feed(redis_url: str, receiver: Receiver) -> None:
    """Only another program writing hitl's keys makes such a record; reading whose decision it
    was raised, which stopped the webhook enqueuer for good (the same entry, again and again)
    and ended the API's decision feed. Later decisions still reach webhooks and event streams."""

    async def spoil(h: Harness) -> None:
        r, k = h.store.redis, h.store.keys
        decision = '{"request_id": "foreign-1", "status": "approved"}'
        await r.hset(k.request("foreign-1"), mapping={"request": "not json {", "decision": decision})
        await r.xadd(k.decisions, {"request_id": "foreign-1", "decision": decision})

    await _feeds_go_on(redis_url, receiver, spoil, "after-2")


async def test_an_attempt_whose_reply_was_lost_is_counted_once(redis_url: str, receiver: Receiver) -> None:
    """The attempt's record (an increment of `attempts`) ran, its reply was lost and the client
    sent the transaction again: the attempt counted twice, which doubled the next back-off and
    gave up on the delivery early. It is written as a value now."""
    from tests.cut_proxy import CutProxy

    receiver.always_fail = True
    async with CutProxy(redis_url, b"last_status") as proxy, \
            api_harness(proxy.url, webhook_retry_s=30.0) as h:  # no second attempt within the test
        api = Api(h, await new_key(h, "support-bot"))
        try:
            status, _, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "wh-cut",
                                                                        "callback_url": receiver.url})
            assert status == 201

            async def failed() -> bool:
                return "webhook_failed" in [e.event for e in await h.store.trail("wh-cut")]

            await eventually(failed, what="the first attempt recorded")
            assert proxy.cut.is_set() and len(receiver.calls) == 1
            d = await WebhookStore(h.store).get("wh-cut")
            assert d is not None and d.attempts == 1
        finally:
            await api.close()


async def test_decisions_a_stopped_replica_had_read_are_still_delivered(redis_url: str, receiver: Receiver) -> None:
    """A replica read decisions through the `webhooks` group and was stopped before it stored
    their deliveries (a rolling restart gives the new replica another HITL_CONSUMER): another
    replica takes those entries over once idle, as intake and the stats projector do."""
    async with api_harness(redis_url, claim_idle_s=0.5) as h:
        task = next(t for t in h.bot.tasks if t.get_name() == "webhook-enqueue")
        await cancel_all([task])  # this replica's enqueuer is gone (cancelled until it ends: a single
        # cancel can be swallowed inside a Redis read on Python 3.11, and the test then hung) ...
        api = Api(h, await new_key(h, "support-bot"))
        try:
            status, _, _ = await api.call("POST", "/v1/requests",
                                          json={**LOOKUP, "id": "wh-gone", "callback_url": receiver.url})
            assert status == 201
        finally:
            await api.close()
        # ... after reading the decision as `replica-gone` (it never comes back under that name)
        read = await h.store.redis.xreadgroup("webhooks", "replica-gone", {h.store.keys.decisions: ">"})
        assert [f["request_id"] for _, f in read[0][1]] == ["wh-gone"]
        h.bots.append(await start_bot(redis_url, h.emu, consumer="replica-b", claim_idle_s=0.5,
                                      webhook_hosts="127.0.0.1", webhook_secret=WEBHOOK_SECRET,
                                      webhook_retry_s=0.02, api_rate=1000.0, api_burst=1000.0))

        async def delivered() -> bool:
            return "webhook_delivered" in [e.event for e in await h.store.trail("wh-gone")]

        await eventually(delivered, timeout=10, what="the decision's webhook, taken over by replica-b")
        pending = await h.store.redis.xpending(h.store.keys.decisions, "webhooks")
        assert pending["pending"] == 0
    assert len(receiver.accepted) == 1


async def test_a_callback_host_that_does_not_resolve_in_time_is_retried_later(
        redis_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's DNS lookup ran outside the attempt's timeout: one that hangs held the attempt
    past its lease, and another replica attempted the same delivery meanwhile. It is bounded
    by the attempt's time now, and the delivery is tried again later."""
    import asyncio

    from bot.api import callbacks, webhooks

    async def hangs(self: callbacks.CallbackPolicy, url: str) -> None:  # a resolver that never answers
        await asyncio.Event().wait()

    monkeypatch.setattr(webhooks, "HTTP_TIMEOUT_S", 0.3)
    async with api_harness(redis_url, webhook_retry_s=5.0) as h:  # its next attempt after the test
        monkeypatch.setattr(callbacks.CallbackPolicy, "resolve", hangs)
        api = Api(h, await new_key(h, "support-bot"))
        try:
            status, _, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "wh-dns",
                                                                        "callback_url": receiver.url})
            assert status == 201

            async def failed() -> list[dict[str, Any]]:
                return [e.detail for e in await h.store.trail("wh-dns") if e.event == "webhook_failed"]

            detail = (await eventually(failed, 5, "the attempt ended by its timeout"))[0]
            assert "did not resolve within" in detail["error"] and detail["retry_in_s"] > 0
        finally:
            await api.close()
