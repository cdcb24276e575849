"""The SDK finds a decision wherever the bot publishes it, and keeps its promises on the way.

Against the real bot and a real Redis: a request re-submitted under its stable id by a new
client (a restarted agent, a retried hook, a resumed adapter) is a duplicate for the bot, which
publishes the decision to the first submission's reply stream; the new client must still get
it. Also: a valid retry of an id whose first try was invalid waits for its own decision; a
request the bot would refuse is refused before it is sent; `wait(timeout=...)` keeps its
timeout while Redis hangs; a sync `on_message` may use its own client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import hitl
import pytest
from hitl import AsyncClient, Client, DecisionTimeout, InvalidRequest, require_approval
from hitl.adapters._run import with_client
from hitl.protocol import MAX_ENTRY_BYTES
from hitl.review import ToolCall, review

from tests.harness import Harness
from tests.redis_server import RedisServer
from tests.reviewer import approve, card_for, h
from tests.util import eventually

__all__ = ["h"]


async def _duplicate_seen(h: Harness, request_id: str, n: int) -> None:
    """Until the bot has handled the n-th submission of `request_id` as a duplicate."""
    async def seen() -> bool:
        return sum(e.event == "duplicate" for e in await h.store.trail(request_id)) >= n
    await eventually(seen, what=f"the bot handling re-submission {n} of {request_id}")


async def test_a_new_client_resubmitting_a_stable_id_gets_the_decision(h: Harness) -> None:
    executed: list[int] = []

    def tool(client: Client, wait_timeout: float) -> Any:
        @require_approval(action="refund", client=client, request_id=lambda p: f"refund-{p['order']}",
                          wait_timeout=wait_timeout)
        def refund(order: str, amount: int) -> str:
            executed.append(amount)
            return f"refunded {amount}"
        return refund

    first = await asyncio.to_thread(Client, h.redis_url, agent="billing")
    with pytest.raises(DecisionTimeout):
        await asyncio.to_thread(tool(first, 0.3), "A-20", 5)
    await asyncio.to_thread(first.close)  # the agent process dies
    rec = await card_for(h, "refund")

    second = await asyncio.to_thread(Client, h.redis_url, agent="billing")  # the restarted agent
    try:
        task = asyncio.create_task(asyncio.to_thread(tool(second, 30), "A-20", 5))
        await _duplicate_seen(h, rec.id, 1)  # it re-submitted and waits; then someone approves
        await approve(h, rec)
        assert await task == "refunded 5"
        assert executed == [5]
    finally:
        await asyncio.to_thread(second.close)


async def test_a_resumed_review_with_a_fresh_client_gets_the_decision(h: Harness, monkeypatch: Any) -> None:
    monkeypatch.setenv("REDIS_URL", h.redis_url)
    call = ToolCall("call_1", "refund", {"order": "A-17", "amount": 250})

    def step(timeout: float) -> Any:
        return lambda aio: review(aio, [call], framework="pydantic-ai", timeout=timeout)

    with pytest.raises(DecisionTimeout):
        await with_client(None, step(0.3))
    rec = await card_for(h, "refund")
    task = asyncio.create_task(with_client(None, step(30)))  # "run the same review again to resume"
    await _duplicate_seen(h, rec.id, 1)
    await approve(h, rec)
    assert [v.outcome for v in await task] == ["approve"]


async def test_an_ask_resubmitted_before_the_first_is_stored_gets_the_decision(h: Harness) -> None:
    """Two clients ask under one id; whichever the bot stores first, both get its decision
    (the other's reply stream never hears of it: it is found on {prefix}:decisions)."""
    a = AsyncClient.from_url(h.redis_url, agent="billing")
    b = AsyncClient.from_url(h.redis_url, agent="billing")
    try:
        asks = [asyncio.create_task(c.ask(id="pay-9", action="pay", summary="Pay invoice 9", timeout=30))
                for c in (a, b)]
        rec = await card_for(h, "pay")
        await _duplicate_seen(h, rec.id, 1)
        await approve(h, rec)
        assert [d.status.value for d in await asyncio.gather(*asks)] == ["approved", "approved"]
    finally:
        await a.close()
        await b.close()


async def _refused(h: Harness, request_id: str) -> None:
    """A first try under `request_id` that the bot refuses (no summary): an invalid marker."""
    await h.store.redis.xadd(h.store.keys.requests, {"request": json.dumps(
        {"agent": "billing", "action": "refund", "id": request_id, "reply_to": "hitl:results:first"})})
    await eventually(lambda: h.store.redis.get(h.store.keys.invalid(request_id)), what="the invalid marker")


async def test_a_valid_retry_of_an_invalid_id_waits_for_its_own_decision(h: Harness) -> None:
    await _refused(h, "X")
    client = AsyncClient.from_url(h.redis_url, agent="billing")
    try:
        task = asyncio.create_task(client.ask(id="X", action="refund", summary="Refund", timeout=30))
        rec = await card_for(h, "refund")  # the retry is a new request, posted for people
        await approve(h, rec)
        assert (await task).status.value == "approved"
        # resuming by id reports the request's decision, the marker is gone
        assert (await client.wait("X", 5)).status.value == "approved"
    finally:
        await client.close()


async def test_a_valid_resubmission_of_an_invalid_id_waits_for_its_own_decision(h: Harness) -> None:
    """The adapters' and the hook's path: submit, then wait."""
    await _refused(h, "Z")
    client = AsyncClient.from_url(h.redis_url, agent="billing")
    try:
        rid = await client.submit({"id": "Z", "action": "pay", "summary": "Pay"})
        task = asyncio.create_task(client.wait(rid, 30))
        await approve(h, await card_for(h, "pay"))
        assert (await task).status.value == "approved"
    finally:
        await client.close()


async def test_resuming_an_id_refused_with_no_request_reports_invalid(h: Harness) -> None:
    await h.store.redis.xadd(h.store.keys.requests, {"request": json.dumps(
        {"agent": "billing", "action": "refund", "id": "Y"})})
    await eventually(lambda: h.store.redis.get(h.store.keys.invalid("Y")), what="the invalid marker")
    client = AsyncClient.from_url(h.redis_url, agent="billing")
    try:
        assert (await client.wait("Y", 5)).status.value == "invalid"
    finally:
        await client.close()


REFUSED = {
    "an integer past 1e15": {"params": {"user_id": 1234567890123456789}},
    "nesting past 32 levels": {"params": {"filter": json.loads("[" * 40 + "]" * 40)}},
    "an entry over 64 KiB": {"context": {"conversation": [{"role": "user", "text": "x" * 2900}] * 30}},
    "half a surrogate pair": {"params": {"name": "Ana \ud800"}},
    "a surrogate in a key": {"params": {"\udc00": 1}},
    "not a finite number": {"params": {"amount": float("nan")}},
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_request_the_bot_would_refuse_is_refused_before_it_is_sent(h: Harness, case: str) -> None:
    client = AsyncClient.from_url(h.redis_url, agent="billing")
    try:
        with pytest.raises(InvalidRequest):
            await client.ask(action="ban_user", summary="Ban a user", timeout=30, **REFUSED[case])
        with pytest.raises(InvalidRequest):
            await client.request(action="ban_user", summary="Ban a user", **REFUSED[case])
        with pytest.raises(InvalidRequest):  # the adapters' path: no call of a batch is sent
            await review(client, [ToolCall("c0", "ok", {"a": 1}),
                                  ToolCall("c1", "ban_user", REFUSED[case].get("params", {"x": "x" * 70_000}))],
                         framework="pydantic-ai", timeout=30)
        assert await h.store.redis.xlen(h.store.keys.requests) == 0
    finally:
        await client.close()


async def test_the_largest_entry_the_sdk_sends_is_accepted(h: Harness) -> None:
    client = AsyncClient.from_url(h.redis_url, agent="billing")
    try:
        small = client.build(action="note", summary="Big")
        room = MAX_ENTRY_BYTES - len(small.model_dump_json(exclude_none=True)) - 400
        turns = [{"role": "u", "text": "x" * 2900}] * (room // 2930)
        request_id = await client.request(action="note", summary="Big", context={"conversation": turns})
        rec = await card_for(h, "note")
        assert rec.id == request_id
    finally:
        await client.close()


@pytest.fixture
def hung_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def _hang(server: RedisServer) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)  # a hung server or a network partition


async def test_wait_keeps_its_timeout_while_redis_hangs(hung_redis: RedisServer) -> None:
    client = AsyncClient.from_url(hung_redis.url, agent="a")
    rid = await client.submit({"action": "x", "summary": "x"})
    _hang(hung_redis)
    # the wait gives up by its own deadline (the outer bound only catches a hang: before, the
    # socket timeouts and retries held it for about a minute)
    with pytest.raises(DecisionTimeout):
        await asyncio.wait_for(client.wait(rid, timeout=1), 20)
    with pytest.raises(DecisionTimeout):
        await asyncio.wait_for(client.ask(action="x", summary="y", timeout=1), 20)
    os.kill(hung_redis.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
    await client.close()


async def test_wait_keeps_its_timeout_when_redis_hangs_during_the_read(hung_redis: RedisServer) -> None:
    client = AsyncClient.from_url(hung_redis.url, agent="a")
    rid = await client.submit({"action": "x", "summary": "x"})
    waiting = asyncio.create_task(asyncio.wait_for(client.wait(rid, timeout=2), 20))
    # hang Redis while the wait is blocked in its XREAD
    await eventually(lambda: _blocked_clients(hung_redis), what="the wait's blocking read")
    _hang(hung_redis)
    with pytest.raises(DecisionTimeout):
        await waiting
    os.kill(hung_redis.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
    await client.close()


async def _blocked_clients(server: RedisServer) -> bool:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(server.url)
    try:
        return int((await r.info("clients"))["blocked_clients"]) > 0
    finally:
        await r.aclose()


async def test_a_sync_on_message_callback_can_use_its_client(h: Harness) -> None:
    client = await asyncio.to_thread(Client, h.redis_url, agent="billing")
    try:
        rid = await asyncio.to_thread(client.request, action="refund", summary="Refund", id="m-2")
        history: list[int] = []

        def on_message(m: hitl.AgentMessage) -> None:
            history.append(len(client.messages(rid)))  # the same client, from the callback

        task = asyncio.create_task(asyncio.to_thread(client.wait, rid, 30, on_message=on_message))
        rec = await card_for(h, "refund")
        msg = {"request_id": rid, "event": "reply", "text": "on it",
               "by": {"user_id": "U0ALICE", "choice": "reply", "at": "2026-01-01T00:00:00Z"},
               "at": "2026-01-01T00:00:00Z"}
        await h.store.redis.xadd(client.reply_to, {"message_for": rid, "message": json.dumps(msg)})
        await eventually(lambda: asyncio.sleep(0, history), what="the callback's own call to the client")
        await approve(h, rec)
        assert (await task).approved and history == [0]
    finally:
        await asyncio.to_thread(client.close)


async def test_arguments_the_request_cannot_mark_editable_are_still_reviewed(h: Harness) -> None:
    """An adapter's tool argument named `draft`, or with a name past 100 characters, is shown
    and reviewed but not editable (`editable` cannot name it)."""
    client = AsyncClient.from_url(h.redis_url, agent="billing")
    try:
        call = ToolCall("call_1", "send_email", {"to": "ana@example.com", "draft": "Hi Ana", "k" * 101: 1})
        task = asyncio.create_task(review(client, [call], framework="pydantic-ai", timeout=30))
        rec = await card_for(h, "send_email")
        assert rec.request.editable == ["to"] and rec.request.params["draft"] == "Hi Ana"
        await approve(h, rec)
        assert [v.outcome for v in await task] == ["approve"]
    finally:
        await client.close()


async def test_an_id_taken_by_another_request_raises_instead_of_answering(h: Harness) -> None:
    """`ask(id=X)` where X is another agent's request, or the same agent's for another action,
    raises InvalidRequest: that request's decision is never this call's answer."""
    rid = await h.push(agent="payments-bot", action="refund", summary="Refund $5", id="taken-1")
    await approve(h, await h.card(rid))
    assert (await h.client.wait(rid, timeout=10)).approved
    async with AsyncClient.from_url(h.redis_url, agent="ops-bot") as other:
        with pytest.raises(InvalidRequest, match="taken by another request"):
            await other.ask(id="taken-1", action="refund", summary="Refund $5", timeout=5)
    async with AsyncClient.from_url(h.redis_url, agent="payments-bot") as same:
        with pytest.raises(InvalidRequest, match="taken by another request"):
            await same.ask(id="taken-1", action="delete_account", summary="Delete it", timeout=5)
        assert (await same.ask(id="taken-1", action="refund", summary="Refund $5", timeout=5)).approved
