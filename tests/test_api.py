"""The REST API over real HTTP: the real bot, the emulator as Slack, a real redis-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from blocks.ids import ActionId
from store.models import Status
from tests.api_util import LOOKUP, REFUND, Api, api_harness, new_key
from tests.harness import Harness
from tests.util import eventually


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    async with api_harness(redis_url) as h:
        yield h


@pytest.fixture
async def api(h: Harness) -> AsyncIterator[Api]:
    a = Api(h, await new_key(h, "billing-bot", "support-bot"))
    yield a
    await a.close()


async def test_an_auto_routed_request_is_decided_in_the_submit_answer_and_idempotent(h: Harness, api: Api) -> None:
    status, body, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "look-1"})
    assert status == 201, body
    assert body["state"] == "decided" and body["duplicate"] is False
    assert body["decision"]["status"] == "auto_approved" and body["route"]["mode"] == "auto"
    status, again, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "look-1", "summary": "other"})
    assert status == 200 and again["duplicate"] is True and again["decision"] == body["decision"]
    assert await h.store.redis.xlen(h.store.keys.decisions) == 1  # one request, one decision
    status, got, _ = await api.call("GET", "/v1/requests/look-1")
    assert status == 200 and got["decision"]["status"] == "auto_approved"
    status, d, _ = await api.call("GET", "/v1/requests/look-1/decision")
    assert status == 200 and d["status"] == "auto_approved"


@pytest.mark.cluster_too
async def test_long_poll_returns_the_reviewers_decision(h: Harness, api: Api) -> None:
    status, body, _ = await api.call("POST", "/v1/requests", json=REFUND)
    assert status == 201 and body["state"] == "pending" and body["route"]["mode"] == "approve"
    rid = body["id"]
    status, _, _ = await api.call("GET", f"/v1/requests/{rid}/decision?wait=0")
    assert status == 204
    waiting = asyncio.ensure_future(api.call("GET", f"/v1/requests/{rid}/decision?wait=30"))
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.approve)
    status, d, _ = await waiting
    assert status == 200 and d["status"] == "approved" and d["decided_by"][0]["user_id"] == "U0ALICE"


async def test_cancel_withdraws_locks_the_card_and_is_audited(h: Harness, api: Api) -> None:
    _, _body, _ = await api.call("POST", "/v1/requests", json={**REFUND, "id": "wd-1"})
    rec = await h.card("wd-1")
    status, done, _ = await api.call("POST", "/v1/requests/wd-1/cancel", json={"reason": "customer paid"})
    assert status == 200, done
    assert done["decision"]["status"] == "rejected" and done["decision"]["reason_code"] == "withdrawn"
    assert [e.event for e in await h.store.trail("wd-1")].count("withdrawn") == 1

    async def locked() -> bool:
        return "Withdrawn" in json.dumps(h.message(rec))

    await eventually(locked, what="card locked as withdrawn")
    status, again, _ = await api.call("POST", "/v1/requests/wd-1/cancel")
    assert status == 409 and again["error"]["code"] == "already_decided"
    assert (await h.store.get("wd-1")).decision.reason_code == "withdrawn"  # type: ignore[union-attr]


async def _added(h: Harness) -> int:
    """Entries ever added to the requests stream (intake trims acknowledged ones meanwhile)."""
    return int((await h.store.redis.xinfo_stream(h.store.keys.requests))["entries-added"])


@pytest.mark.cluster_too  # on a cluster, 'hitl:audit' is not the bot's ({hitl}) but in another slot
async def test_bad_input_is_refused_with_the_queues_words_and_nothing_is_stored(h: Harness, api: Api) -> None:
    before = await _added(h)
    status, body, _ = await api.call("POST", "/v1/requests", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"]["field"] == "request" and "not valid JSON" in body["error"]["message"]
    bad = {"agent": "billing-bot", "action": "refund", "confidence": 3}
    status, body, _ = await api.call("POST", "/v1/requests", json=bad)
    assert status == 400 and body["error"]["field"] == "summary"
    # the same words the queue's dead-letter stream gives for the same entry
    await h.push_raw(bad)
    dead = await eventually(lambda: h.store.redis.xrange(h.store.keys.dead), what="dead letter")
    assert dead[0][1]["error"] == body["error"]["message"]
    status, body, _ = await api.call("POST", "/v1/requests", json={**REFUND, "reply_to": "hitl:audit"})
    assert status == 400 and body["error"]["field"] == "reply_to"
    status, body, _ = await api.call("POST", "/v1/requests", data=b"x" * 70_000)
    assert status == 413 and body["error"]["code"] == "too_large"
    for text, words in ((b'{"summary": "x\\ud800"}', "half of a surrogate pair"),
                        (b'{"params": {"n": 12345678901234567890}}', "send larger ids as text"),
                        (b'{"confidence": NaN}', "NaN is not a number")):
        body_bytes = json.dumps({**REFUND, "summary": "s"}).encode()[:-1] + b", " + text[1:]
        status, body, _ = await api.call("POST", "/v1/requests", data=body_bytes,
                                         headers={"Content-Type": "application/json"})
        assert status == 400 and body["error"]["code"] == "invalid_request" and words in body["error"]["message"]
    status, body, _ = await api.call("GET", "/v1/nowhere")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, _ = await api.call("GET", "/nowhere/at/all")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, _ = await api.call("GET", "/v1/requests/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, _ = await api.call("GET", "/v1/requests/x/decision?wait=61")
    assert status == 400 and body["error"]["field"] == "wait"
    assert await _added(h) == before + 1  # only the raw push above


async def test_events_stream_only_the_keys_agents_decisions(h: Harness, api: Api) -> None:
    support = await new_key(h, "support-bot")
    async with api.session.get(api.base + "/v1/events", headers=api.headers(support)) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        await resp.content.readline()  # the opening comment
        await resp.content.readline()
        other = await new_key(h, "ops-bot")
        await api.call("POST", "/v1/requests", json={**LOOKUP, "agent": "ops-bot", "id": "ops-1"}, key=other)
        await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "sup-1"})
        lines = []
        while len(lines) < 3:
            line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().strip()
            if line:
                lines.append(line)
    assert lines[0].startswith("id: ") and lines[1] == "event: decision"
    data = json.loads(lines[2].removeprefix("data: "))
    assert data["request_id"] == "sup-1" and data["status"] == Status.auto_approved.value


async def test_a_submit_intake_does_not_take_in_time_answers_202_and_is_taken_later(redis_url: str) -> None:
    async with api_harness(redis_url, api_submit_wait_s=0.3) as h:
        h.bot.intake.stop()
        await eventually(lambda: asyncio.sleep(0, not h.bot.intake.running), what="intake stopped")
        api = Api(h, await new_key(h, "support-bot"))
        try:
            status, body, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "later-1"})
            assert status == 202 and body["state"] == "queued" and body["id"] == "later-1"
            status, body, _ = await api.call("GET", "/v1/requests/later-1")
            assert status == 200 and body["state"] == "queued"
            # the entry waits in the queue; any intake (here a second replica) takes it
            from tests.harness import start_bot

            h.bots.append(await start_bot(redis_url, h.emu, consumer="replica-2"))

            async def decided() -> Any:
                status, d, _ = await api.call("GET", "/v1/requests/later-1/decision?wait=5")
                return d if status == 200 else None

            assert (await eventually(decided, what="decision by the second replica"))["status"] == "auto_approved"
        finally:
            await api.close()


async def test_an_id_naming_another_key_of_a_request_and_odd_humanlayer_fields_are_4xx(h: Harness) -> None:
    """`<id>:webhook` / `<id>:humanlayer` name a request's side keys, not requests: 404 (they
    were read as records: a 500); HumanLayer's `allowed_responder_ids` must be a list of ids."""
    api = Api(h, await new_key(h, "support-bot", "billing-bot"))
    try:
        status, _, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "side-1"})
        assert status in (200, 201)
        for path in ("/v1/requests/side-1:webhook", "/v1/requests/side-1:trail"):
            assert (await api.call("GET", path))[0] == 404
            assert (await api.call("POST", path + "/cancel"))[0] == 404
        call = {"run_id": "billing-bot", "call_id": "c-int", "spec": {"fn": "refund", "kwargs": {"a": 1}, "channel": {
            "slack": {"channel_or_user_id": "C1", "allowed_responder_ids": 5}}}}
        status, body, _ = await api.call("POST", "/humanlayer/v1/function_calls", json=call)
        assert status == 400 and body["error"]["field"] == "channel.slack.allowed_responder_ids"
        call["spec"]["channel"]["slack"]["allowed_responder_ids"] = "U0ALICE"  # was split into letters
        assert (await api.call("POST", "/humanlayer/v1/function_calls", json=call))[0] == 400
        # a channel that is not an id was posted to as its text ("{'id': 'C1'}"): Slack refused the card
        call["spec"]["channel"]["slack"] = {"channel_or_user_id": {"id": "C1"}}
        status, body, _ = await api.call("POST", "/humanlayer/v1/function_calls", json=call)
        assert status == 400 and body["error"]["field"] == "channel.slack.channel_or_user_id"
        assert (await api.call("GET", "/humanlayer/v1/function_calls/c-int"))[0] == 404  # nothing kept
    finally:
        await api.close()


async def test_events_resumed_after_more_than_a_page_of_decisions_send_them_all(h: Harness) -> None:
    """Resuming with Last-Event-ID sends every decision since, however many (only the first
    page of 500 used to be sent, the rest never), each once, then the live ones."""
    import aiohttp

    key = await new_key(h, "support-bot")
    r = h.store.redis
    n = 620
    async with r.pipeline(transaction=False) as p:
        for i in range(n):
            p.xadd(h.store.keys.requests, {"request": json.dumps({**LOOKUP, "id": f"sse-{i}"})})
        await p.execute()
    await eventually(lambda: _at_least(r.xlen(h.store.keys.decisions), n), 60, "all decided")
    first = (await r.xrange(h.store.keys.decisions, count=1))[0][0]
    got: list[str] = []
    async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{h.bot.port}/v1/events",
            headers={"Authorization": f"Bearer {key}", "Last-Event-ID": first}) as resp:
        async with asyncio.timeout(30):
            async for line in resp.content:
                if line.startswith(b"id: "):
                    got.append(line[4:].strip().decode())
                    if len(got) == n - 1:
                        break
    assert len(got) == len(set(got)) == n - 1 and first not in got


async def _at_least(count: Any, n: int) -> bool:
    return int(await count) >= n


async def test_a_request_in_non_latin_text_within_64_kib_of_utf8_is_accepted_as_sent(h: Harness, api: Api) -> None:
    """The limit is 64 KiB of UTF-8 JSON (docs/protocol.md), as the queue counts it: the API used
    to queue the request with every non-ASCII character escaped (`\\u4e2d`, six bytes for three,
    twelve for an emoji's four), so a 35 KiB request in Chinese was refused as 72 KiB."""
    turns = [{"role": "customer", "text": "退款请求" * 700 + "🙂" * 100} for _ in range(4)]
    body = {**REFUND, "id": "utf8-1", "context": {"conversation": turns}}
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert len(raw) < 40_000 and len(json.dumps(body).encode()) > 64 * 1024  # escaped, it is past 64 KiB
    status, got, _ = await api.call("POST", "/v1/requests", data=raw, headers={"Content-Type": "application/json"})
    assert status == 201, got
    rec = await h.store.get("utf8-1")
    assert [t.text for t in rec.request.context.conversation] == [t["text"] for t in turns]
    # past the limit in UTF-8 bytes: refused with the body's own size
    big = {**body, "id": "utf8-2", "context": {"conversation": turns * 2}}
    raw = json.dumps(big, ensure_ascii=False).encode()
    status, got, _ = await api.call("POST", "/v1/requests", data=raw, headers={"Content-Type": "application/json"})
    assert status == 413 and got["error"]["code"] == "too_large"
    assert f"{len(raw)} bytes" in got["error"]["message"], got


async def _next_decision(resp: Any) -> dict[str, Any]:
    async for line in resp.content:
        if line.startswith(b"data: "):
            return json.loads(line[6:])  # type: ignore[no-any-return]
    raise AssertionError("the stream ended")


@pytest.mark.parametrize("last", ["99999999999999999999-0", "18446744073709551615-18446744073709551615",
                                  "9999999999999-0", "9999999999999-0.9999999999999-5"])
async def test_events_resumed_from_an_id_past_the_streams_end_still_send_new_decisions(
        h: Harness, api: Api, last: str) -> None:
    """A Last-Event-ID no stream has reached (a client of another installation, a Redis restored
    from an older backup, a typo) resumes from the newest event: a number past a stream id's
    64 bits made Redis refuse the read, the stream broke off (a 500 in the log) and so did every
    reconnection with the same id; an id in the future made the live feed skip every decision
    as already sent, so the client waited for ever."""
    status, _, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "before-1"})
    assert status == 201
    async with api.session.get(api.base + "/v1/events", headers={**api.headers(), "Last-Event-ID": last}) as resp:
        assert resp.status == 200
        await resp.content.readline()  # the opening comment: the resume is read before what follows
        status, _, _ = await api.call("POST", "/v1/requests", json={**LOOKUP, "id": "after-1"})
        assert status == 201
        async with asyncio.timeout(10):
            assert (await _next_decision(resp))["request_id"] == "after-1"


async def test_a_body_that_does_not_decode_as_its_content_encoding_is_a_400(h: Harness, api: Api) -> None:
    """`Content-Encoding: gzip` (or deflate) on a body that is not compressed was a 500 (aiohttp's
    RequestPayloadError escaped as a bug) and dropped the connection; a compressed body that is
    fine is read as any other."""
    import gzip

    before = await _added(h)
    plain = json.dumps({**REFUND, "id": "enc-1"}).encode()
    for path, encoding in (("/v1/requests", "gzip"), ("/v1/requests", "deflate"),
                           ("/v1/requests/enc-1/cancel", "gzip"), ("/humanlayer/v1/function_calls", "gzip")):
        status, body, _ = await api.call("POST", path, data=plain, headers={
            "Content-Type": "application/json", "Content-Encoding": encoding})
        assert status == 400 and body["error"]["code"] == "invalid_json", (path, encoding, body)
        assert encoding in body["error"]["message"]
    assert await _added(h) == before  # nothing was queued
    status, body, _ = await api.call("POST", "/v1/requests", data=gzip.compress(plain), headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert status == 201 and body["id"] == "enc-1"
