"""A request the API answered 202 `queued` (intake has not taken it yet) is known to the API at
once: GET says `queued`, a long poll waits for its decision (an `invalid` one too), a cancel
is refused with a retryable error until intake has taken it, and another key learns nothing
more than of a stored request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api_util import LOOKUP, REFUND, Api, api_harness, new_key
from tests.harness import Harness, start_bot
from tests.util import eventually


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    async with api_harness(redis_url, api_submit_wait_s=0.2) as h:
        h.bot.intake.stop()
        await eventually(lambda: asyncio.sleep(0, not h.bot.intake.running), what="intake stopped")
        yield h


async def _queued(api: Api, body: dict[str, Any]) -> None:
    status, got, _ = await api.call("POST", "/v1/requests", json=body)
    assert status == 202 and got["state"] == "queued", got


async def test_a_queued_request_is_known_to_its_key_and_its_long_poll_gets_the_decision(h: Harness,
                                                                                       redis_url: str) -> None:
    api = Api(h, await new_key(h, "support-bot"))
    other = await new_key(h, "billing-bot")
    try:
        await _queued(api, {**LOOKUP, "id": "q-1"})
        status, body, _ = await api.call("GET", "/v1/requests/q-1")
        assert status == 200 and body["id"] == "q-1" and body["state"] == "queued", body
        assert (await api.call("GET", "/v1/requests/q-1/decision"))[0] == 204
        # another agent's key: as for a stored request of another agent
        assert (await api.call("GET", "/v1/requests/q-1", key=other))[0] == 403
        assert (await api.call("GET", "/v1/requests/q-1/decision?wait=1", key=other))[0] == 403
        assert (await api.call("POST", "/v1/requests/q-1/cancel", key=other))[0] == 403
        assert (await api.call("GET", "/v1/requests/q-nothing"))[0] == 404

        poll = asyncio.ensure_future(api.call("GET", "/v1/requests/q-1/decision?wait=30"))
        await asyncio.sleep(0)
        h.bots.append(await start_bot(redis_url, h.emu, consumer="replica-2"))
        status, d, _ = await poll
        assert status == 200 and d["request_id"] == "q-1" and d["status"] == "auto_approved", d
    finally:
        await api.close()


async def test_a_queued_request_intake_refuses_gets_its_invalid_decision(h: Harness, redis_url: str) -> None:
    """Another agent's entry under the same id came first: intake stores that one and refuses
    ours (its `invalid` goes to no shared stream): our long poll still ends with it."""
    api = Api(h, await new_key(h, "billing-bot"))
    try:
        await h.store.redis.xadd(h.store.keys.requests, {"request": json.dumps({**LOOKUP, "id": "q-2"})})
        await _queued(api, {**REFUND, "id": "q-2"})
        poll = asyncio.ensure_future(api.call("GET", "/v1/requests/q-2/decision?wait=30"))
        await asyncio.sleep(0)
        h.bots.append(await start_bot(redis_url, h.emu, consumer="replica-2"))
        status, d, _ = await poll
        assert status == 200 and d["request_id"] == "q-2" and d["status"] == "invalid", d
        status, body, _ = await api.call("GET", "/v1/requests/q-2")
        assert status == 200 and body["state"] == "decided" and body["decision"]["status"] == "invalid", body
        # the stored request is support-bot's: its key reads it, ours sees only its own refusal
        sup = Api(h, await new_key(h, "support-bot"))
        try:
            status, body, _ = await sup.call("GET", "/v1/requests/q-2")
            assert status == 200 and body["agent"] == "support-bot" and body["state"] == "decided"
        finally:
            await sup.close()
    finally:
        await api.close()


async def test_a_cancel_of_a_queued_request_is_refused_retryably_then_works(h: Harness, redis_url: str) -> None:
    await h.store.redis.hset(h.store.trust.k.action("billing-bot/refund"), mapping={"state": "new"})
    api = Api(h, await new_key(h, "billing-bot"))
    try:
        await _queued(api, {**REFUND, "id": "q-3"})
        status, body, headers = await api.call("POST", "/v1/requests/q-3/cancel")
        assert status == 409 and body["error"]["code"] == "queued", body
        assert headers.get("Retry-After")
        h.bots.append(await start_bot(redis_url, h.emu, consumer="replica-2"))

        async def withdrawn() -> Any:
            status, body, _ = await api.call("POST", "/v1/requests/q-3/cancel")
            return body if status == 200 else None

        body = await eventually(withdrawn, what="the cancel once intake took the request")
        assert body["decision"]["reason_code"] == "withdrawn"
    finally:
        await api.close()


async def test_a_humanlayer_call_intake_refuses_is_answered_rejected_not_pending_forever(
        h: Harness, redis_url: str) -> None:
    from bot.api.humanlayer import hitl_id

    api = Api(h, await new_key(h, "billing-bot"))
    base = "/humanlayer/v1"
    call = {"run_id": "billing-bot", "call_id": "hq-1",
            "spec": {"fn": "refund", "kwargs": {"amount": 5}}}
    try:
        # another agent's entry under the same hitl id came first: intake refuses ours
        await h.store.redis.xadd(h.store.keys.requests,
                                 {"request": json.dumps({**LOOKUP, "id": hitl_id("fn", "hq-1")})})
        status, body, _ = await api.call("POST", f"{base}/function_calls", json=call)
        assert status == 200 and body["status"] is None, body
        status, body, _ = await api.call("GET", f"{base}/function_calls/hq-1")
        assert status == 200 and body["status"] is None, body
        h.bots.append(await start_bot(redis_url, h.emu, consumer="replica-2"))

        async def answered() -> Any:
            status, body, _ = await api.call("GET", f"{base}/function_calls/hq-1")
            assert status == 200, body
            return body["status"]

        got = await eventually(answered, what="the refused call answered")
        assert got["approved"] is False and got["comment"] and got["responded_at"], got
    finally:
        await api.close()


async def test_an_escalation_of_a_queued_humanlayer_call_is_refused_retryably_not_404(h: Harness) -> None:
    api = Api(h, await new_key(h, "billing-bot"))
    base = "/humanlayer/v1"
    try:
        call = {"run_id": "billing-bot", "call_id": "hq-2", "spec": {"fn": "refund", "kwargs": {"amount": 5}}}
        assert (await api.call("POST", f"{base}/function_calls", json=call))[0] == 200
        status, body, headers = await api.call("POST", f"{base}/agent/function_calls/hq-2/escalate_email",
                                               json={"escalation_msg": "please look"})
        assert status == 409 and body["error"]["code"] == "queued" and headers.get("Retry-After"), body
    finally:
        await api.close()
