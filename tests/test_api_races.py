"""Tries to break the API's guarantees: racing submits, cancel against clicks, two replicas
delivering one webhook, resuming an event stream, a queue request with a forbidden callback."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from store.errors import AlreadyDecided, Conflict
from store.models import Choice, utcnow
from store.transitions import vote, withdraw
from tests.api_util import LOOKUP, REFUND, Api, api_harness, new_key
from tests.harness import start_bot
from tests.redis_server import free_port
from tests.util import eventually


async def test_racing_submits_of_one_id_make_one_request(redis_url: str) -> None:
    async with api_harness(redis_url) as h:
        api = Api(h, await new_key(h, "billing-bot"))
        try:
            answers = await asyncio.gather(*(api.call("POST", "/v1/requests", json={**REFUND, "id": "same"})
                                             for _ in range(8)))
        finally:
            await api.close()
        codes = sorted(status for status, _, _ in answers)
        assert codes == [200] * 7 + [201]
        assert all(body["duplicate"] is (status == 200) for status, body, _ in answers)
        # Each POST either queued an entry (its id had no record yet) or found the record and
        # queued nothing; of the entries queued (counted as added: intake trims acknowledged
        # ones), intake accepted one and saw every other as a duplicate, storing it once.
        added = int((await h.store.redis.xinfo_stream(h.store.keys.requests))["entries-added"])
        assert 1 <= added <= 8

        async def the_others_seen_as_duplicates() -> bool:
            return [e.event for e in await h.store.trail("same")].count("duplicate") == added - 1

        await eventually(the_others_seen_as_duplicates, what="the other queued entries seen as duplicates")
        assert [e.event for e in await h.store.trail("same")].count("received") == 1


async def test_cancel_racing_clicks_gives_one_decision(redis_url: str) -> None:
    async with api_harness(redis_url) as h:
        api = Api(h, await new_key(h, "billing-bot"))
        try:
            await api.call("POST", "/v1/requests", json={**REFUND, "id": "race-1"})

            async def click(i: int) -> str:
                for _ in range(100):
                    rec = await h.store.get("race-1")
                    try:
                        await h.store.apply(vote(rec, user_id=f"U{i:04d}", name="", choice=Choice.approve,
                                                 now=utcnow()), utcnow())
                        return "approved"
                    except AlreadyDecided:
                        return "late"
                    except Conflict:
                        continue
                return "gave up"

            results = await asyncio.gather(api.call("POST", "/v1/requests/race-1/cancel"),
                                           *(click(i) for i in range(10)))
        finally:
            await api.close()
        cancel_status = results[0][0]
        clicks = results[1:]
        rec = await h.store.get("race-1")
        assert rec.decision is not None
        if cancel_status == 200:
            assert rec.decision.reason_code == "withdrawn" and clicks.count("late") == 10
        else:
            assert cancel_status == 409 and clicks.count("approved") == 1
        assert await h.store.redis.xlen(h.store.keys.decisions) == 1
        try:
            withdraw(rec, now=utcnow(), by="x")
        except AlreadyDecided:
            pass
        else:
            raise AssertionError("withdraw of a decided request must refuse")


async def test_two_replicas_deliver_a_webhook_once(redis_url: str) -> None:
    calls: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        calls.append(len(calls))
        await asyncio.sleep(0.05)  # slow enough that a second sender would overlap
        return web.Response(status=200 if len(calls) > 3 else 500)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with api_harness(redis_url) as h:
            second = await start_bot(redis_url, h.emu, consumer="replica-2", webhook_hosts="127.0.0.1",
                                     webhook_secret="s", webhook_retry_s=0.01)
            h.bots.append(second)
            api = Api(h, await new_key(h, "support-bot"))
            try:
                for i in range(5):
                    await api.call("POST", "/v1/requests", json={**LOOKUP, "id": f"two-{i}",
                                                                 "callback_url": f"http://127.0.0.1:{port}/hook"})

                async def all_delivered() -> bool:
                    states = [await h.bot.api.webhooks.hooks.get(f"two-{i}") for i in range(5)]
                    return all(d is not None and d.state == "delivered" for d in states)

                await eventually(all_delivered, what="five deliveries")
                for i in range(5):
                    trail = [e.event for e in await h.store.trail(f"two-{i}")]
                    assert trail.count("webhook_delivered") == 1, trail
            finally:
                await api.close()
    finally:
        await runner.cleanup()


async def test_an_event_stream_resumes_from_last_event_id(redis_url: str) -> None:
    async with api_harness(redis_url) as h:
        api = Api(h, await new_key(h, "support-bot"))
        try:
            await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "ev-1"})
            first = (await h.store.redis.xrange(h.store.keys.decisions))[0][0]
            await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "ev-2"})
            async with api.session.get(api.base + "/v1/events",
                                       headers={**api.headers(), "Last-Event-ID": first}) as resp:
                lines = []
                while not any(x.startswith("data: ") for x in lines):
                    lines.append((await asyncio.wait_for(resp.content.readline(), 10)).decode().strip())
        finally:
            await api.close()
    data = json.loads(next(x for x in lines if x.startswith("data: ")).removeprefix("data: "))
    assert data["request_id"] == "ev-2"  # what was missed after `first`, not `first` itself


async def test_a_queued_request_with_a_forbidden_callback_is_dead_lettered_not_sent(redis_url: str) -> None:
    async with api_harness(redis_url) as h:
        rid = await h.client.request(**LOOKUP, id="q-1", callback_url="http://10.1.2.3/hook")
        dead = await eventually(h.bot.api.webhooks.hooks.dead_letters, what="dead-lettered delivery")
        assert dead[0]["request_id"] == rid and "not allowed" in dead[0]["error"]
        rec = await h.store.get(rid)
        assert rec.decision is not None and rec.decision.status.value == "auto_approved"
