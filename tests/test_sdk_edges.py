"""The SDK from the agent's side, at its edges, against a real Redis: what a newer bot writes,
a process forked after making a client, timeouts that are not plain positive numbers, a request
a timed-out `ask` never got to send."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from hitl import AsyncClient, Client, DecisionTimeout, HitlError, Status

NEWER = {"request_id": "", "status": "approved", "params": {"amount": 5}, "changes": {},
         "decided_by": [{"user_id": "U1", "name": "ana", "choice": "approve", "at": "2030-01-01T00:00:00Z",
                         "device": "mobile"},
                        {"user_id": "U2", "name": "bob", "choice": "co_sign", "at": "2030-01-01T00:00:00Z"}],
         "decided_at": "2030-01-01T00:00:00Z", "confidence_after": 0.9,
         "route": {"mode": "approve", "tier": "low", "rules": [], "sampled": False, "region": "eu"}}


async def _published(client: AsyncClient, decision: dict[str, Any], **fields: Any) -> str:
    """Submit a request, then publish `decision` for it on its reply stream, as a bot would."""
    rid = await client.submit(client.build(action="refund", summary="Refund", **fields))
    await client.redis.xadd(client.reply_to, {"request_id": rid, "decision": json.dumps({**decision, "request_id": rid})})
    await client.redis.hset(client.keys.request(rid), mapping={"decision": json.dumps({**decision, "request_id": rid})})
    return rid


async def test_a_decision_from_a_newer_bot_with_unknown_fields_is_read(redis_url: str) -> None:
    async with AsyncClient.from_url(redis_url, agent="billing") as client:
        rid = await _published(client, NEWER)
        decision = await client.wait(rid, timeout=5)
        assert decision.approved and decision.params == {"amount": 5}
        assert [v.name for v in decision.decided_by] == ["ana"]  # a vote of an unknown choice is left out
        stored = await client.decision(rid)
        assert stored is not None and stored.approved


@pytest.mark.parametrize("status", ["approved_later", "APPROVED", "", None])
async def test_a_decision_of_an_unknown_status_is_never_an_approval(redis_url: str, status: Any) -> None:
    async with AsyncClient.from_url(redis_url, agent="billing") as client:
        rid = await _published(client, {**NEWER, "status": status})
        with pytest.raises(HitlError, match="not an approval"):
            await client.wait(rid, timeout=5)
        with pytest.raises(HitlError, match="not an approval"):
            await client.decision(rid)


async def test_an_interim_message_from_a_newer_bot_does_not_end_the_wait(redis_url: str) -> None:
    got: list[str] = []
    async with AsyncClient.from_url(redis_url, agent="billing") as client:
        rid = await client.submit(client.build(action="refund", summary="Refund"))
        by = {"user_id": "U1", "name": "ana", "choice": "reply", "at": "2030-01-01T00:00:00Z", "team": "T1"}
        for event, vote in (("reply", by), ("nudge", {**by, "choice": "nudge"})):
            message = {"request_id": rid, "event": event, "text": "hi", "by": vote, "at": "2030-01-01T00:00:00Z"}
            await client.redis.xadd(client.reply_to, {"message_for": rid, "message": json.dumps(message)})
        await client.redis.xadd(client.reply_to, {"request_id": rid, "decision": json.dumps({**NEWER, "request_id": rid})})
        decision = await client.wait(rid, timeout=5, on_message=lambda m: got.append(m.event))
        assert decision.status is Status.approved
        assert got == ["reply"]  # the unreadable one is skipped, not a crash




async def test_timeouts_that_are_not_plain_numbers(redis_url: str) -> None:
    async with AsyncClient.from_url(redis_url, agent="billing") as client:
        rid = await client.submit(client.build(action="refund", summary="Refund"))
        waiting = asyncio.create_task(client.wait(rid, timeout=math.inf))  # infinity: no limit
        await asyncio.sleep(0.2)
        await client.redis.xadd(client.reply_to, {"request_id": rid, "decision": json.dumps({**NEWER, "request_id": rid})})
        assert (await waiting).approved
        with pytest.raises(ValueError, match="timeout is NaN"):
            await client.wait(rid, timeout=math.nan)
        for t in (0, -1, -math.inf):
            with pytest.raises(DecisionTimeout):
                await client.wait(rid, timeout=t)
        with pytest.raises(DecisionTimeout):
            await client.ask(action="refund", summary="Refund", timeout=-5)


def _in_child(body: Callable[[], str], within: float = 8) -> str:
    """Run `body` in a forked child; its result (or error) as text, or 'hung' after `within` s."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, never return into pytest
        try:
            out = body()
        except BaseException as e:
            out = f"error {type(e).__name__}: {e}"
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    deadline = time.monotonic() + within
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            return "hung"
        time.sleep(0.05)
    with os.fdopen(read) as f:
        return f.read()


def test_a_client_made_before_a_fork_works_in_the_child_and_the_parent(redis_url: str) -> None:
    client = Client(redis_url, agent="billing")
    try:
        rid = client.submit(client.build(action="refund", summary="Refund", id="fork-1"))

        def child() -> str:
            rid2 = client.submit(client.build(action="refund", summary="Refund in the child"))
            with pytest.raises(DecisionTimeout):
                client.wait(rid2, timeout=0.3)
            return f"{client.decision(rid)} {client.reply_to}"

        assert _in_child(child) == f"None {client.reply_to}"
        assert _in_child(child) == f"None {client.reply_to}"  # again: the client is not spent
        assert client.decision(rid) is None  # the parent's connections still answer
        with pytest.raises(DecisionTimeout):
            client.wait(rid, timeout=0.3)
    finally:
        client.close()


async def test_an_ask_that_timed_out_before_sending_is_sent_by_its_resume(redis_url: str) -> None:
    # a fresh client's first command connects first: timeout=0 ends the ask before its XADD
    async with AsyncClient.from_url(redis_url, agent="billing") as client:
        with pytest.raises(DecisionTimeout) as timed_out:
            await client.ask(action="refund", summary="Refund", timeout=0)
        rid = timed_out.value.request_ids[0]
        assert f"wait({rid!r}) resumes it" in str(timed_out.value)
        assert await client.redis.xlen(client.keys.requests) == 0  # not sent (yet)
        with pytest.raises(DecisionTimeout):
            await client.wait(rid, timeout=0.3)  # the resume the error promises
        entries = await client.redis.xrange(client.keys.requests)
        assert [json.loads(f["request"])["id"] for _, f in entries] == [rid]
        with pytest.raises(DecisionTimeout):
            await client.wait(rid, timeout=0.1)
        assert await client.redis.xlen(client.keys.requests) == 1  # sent once
