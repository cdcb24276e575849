"""`hitl mcp` against the real bot, over stdio and streamable HTTP, driven by the official MCP
client: a scripted agent asks before it acts and acts only on an approval, with the reviewer's
arguments. Waits are bounded: a slow decision answers `pending`, and `get_decision` finds it
later, even after the client gave up on a call."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.harness import Harness
from tests.redis_server import RedisServer, free_port
from tests.reviewer import answer, approve, card_for, edit, h, reject
from tests.test_sdk_resume import _hang, hung_redis
from tests.util import eventually

__all__ = ["h", "hung_redis"]

REFUND = {"action": "refund", "summary": "Refund $250 to Ana for order A-17",
          "params": {"order": "A-17", "amount": 250}, "editable": ["amount"]}


def _env(h: Harness) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": h.redis_url, "HITL_AGENT": "mcp-test-agent"}


@asynccontextmanager
async def stdio(h: Harness, wait: float) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "hitl", "mcp", "--wait", str(wait)],
                                   env=_env(h))
    async with Client(params) as client:
        yield client


@asynccontextmanager
async def http(h: Harness, wait: float) -> AsyncIterator[Client]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hitl", "mcp", "--transport", "http", "--port", str(port),
                             "--wait", str(wait)], env=_env(h), stderr=subprocess.DEVNULL)
    try:
        async def up() -> bool:
            try:
                async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/mcp") as r:
                    return r.status < 500
            except aiohttp.ClientError:
                return False

        await eventually(up, 30, "MCP HTTP server")
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            yield client
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)


async def call(client: Client, tool: str, args: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args, **kwargs)
    assert not result.is_error, result
    return dict(json.loads(result.content[0].text))  # type: ignore[union-attr]


async def scripted_agent(client: Client, executed: list[dict[str, Any]]) -> dict[str, Any]:
    """Asks, follows up while pending, and runs the refund only when approved."""
    result = await call(client, "request_approval", REFUND)
    while result["status"] == "pending":
        result = await call(client, "get_decision", {"request_id": result["request_id"]})
    if result["approved"]:
        executed.append(result["params"])
    return result


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> Any:
    return stdio if request.param == "stdio" else http


async def test_tools_listed(h: Harness, transport: Any) -> None:
    async with transport(h, 5) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert {"request_approval", "ask_human", "get_decision"} <= names


async def test_approved(h: Harness, transport: Any) -> None:
    executed: list[dict[str, Any]] = []
    async with transport(h, 30) as client:
        task = asyncio.create_task(scripted_agent(client, executed))
        rec = await card_for(h, "refund")
        assert rec.request.agent == "mcp-test-agent" and not executed
        await approve(h, rec)
        result = await task
    assert result["status"] == "approved" and executed == [{"order": "A-17", "amount": 250}]


async def test_edited(h: Harness, transport: Any) -> None:
    executed: list[dict[str, Any]] = []
    async with transport(h, 30) as client:
        task = asyncio.create_task(scripted_agent(client, executed))
        await edit(h, await card_for(h, "refund"), {"amount": 200})
        result = await task
    assert executed == [{"order": "A-17", "amount": 200}] and "edited" in result["message"]


async def test_rejected(h: Harness, transport: Any) -> None:
    executed: list[dict[str, Any]] = []
    async with transport(h, 30) as client:
        task = asyncio.create_task(scripted_agent(client, executed))
        await reject(h, await card_for(h, "refund"), "Already refunded")
        result = await task
    assert executed == [] and result["status"] == "rejected" and result["reason"] == "Already refunded"


async def test_a_slow_decision_is_pending_then_found(h: Harness, transport: Any) -> None:
    executed: list[dict[str, Any]] = []
    async with transport(h, 0.5) as client:
        first = await call(client, "request_approval", REFUND)
        assert first["status"] == "pending" and first["request_id"]
        assert (await call(client, "get_decision", {"request_id": first["request_id"]}))["status"] == "pending"
        await approve(h, await card_for(h, "refund"))
        later = await call(client, "get_decision", {"request_id": first["request_id"]})
        if later["approved"]:
            executed.append(later["params"])
    assert later["status"] == "approved" and executed == [{"order": "A-17", "amount": 250}]


async def test_nothing_is_lost_when_the_client_gives_up(h: Harness) -> None:
    async with stdio(h, 30) as client:
        with pytest.raises(Exception):  # noqa: B017 - the client's own timeout error
            await client.call_tool("request_approval", {**REFUND, "request_id": "gave-up-1"},
                                   read_timeout_seconds=0.5)
        await approve(h, await card_for(h, "refund"))
        found = await call(client, "get_decision", {"request_id": "gave-up-1"})
    assert found["status"] == "approved"


async def test_ask_human(h: Harness) -> None:
    async with stdio(h, 30) as client:
        task = asyncio.create_task(call(client, "ask_human", {"question": "Which warehouse ships A-17?"}))
        await answer(h, await card_for(h, "question"), "Berlin")
        result = await task
    assert result["status"] == "answered" and result["answer"] == "Berlin"


async def test_an_invalid_request_is_explained(h: Harness) -> None:
    async with stdio(h, 5) as client:
        result = await call(client, "request_approval", {"action": "refund", "summary": "x",
                                                         "params": {"a": 1}, "editable": ["b"]})
    assert result["status"] == "error" and "editable names 'b'" in result["message"]


async def test_an_id_taken_by_another_agents_request_is_never_its_approval(h: Harness) -> None:
    """A model that picks a request_id another agent used gets an error, not that request's
    approval (it used to come back `approved`, with the other request's params, and no card
    was posted for the new action); get_decision never reads another agent's answer."""
    rid = await h.push(agent="payments-bot", action="refund", summary="Refund $5", params={"amount": 5}, id="job-1")
    await approve(h, await h.card(rid))
    assert (await h.client.wait(rid, timeout=10)).approved
    async with stdio(h, 2) as client:
        taken = await call(client, "request_approval", {"action": "delete_database", "request_id": "job-1",
                                                        "summary": "DROP the production database"})
        read = await call(client, "get_decision", {"request_id": "job-1"})
    assert taken["status"] == "error" and "taken by another request" in taken["message"]
    assert read["status"] == "error" and "not a request of this agent" in read["message"]
    assert not any(r.get("approved") for r in (taken, read))


async def test_an_id_hitl_never_saw_is_unknown_not_pending_for_ever(h: Harness) -> None:
    """A model asking about an id nobody sent (a typo, a made-up id) is told so; an id a
    previous server process sent (no longer in this one's memory) is still found by its record."""
    async with stdio(h, 1) as client:
        unknown = await call(client, "get_decision", {"request_id": "no-such-request-ever", "wait_s": 0.1})
        first = await call(client, "request_approval", {**REFUND, "request_id": "kept-1", "wait_s": 0.1})
    assert unknown["status"] == "unknown" and "no request 'no-such-request-ever'" in unknown["message"]
    assert first["status"] == "pending"
    async with stdio(h, 1) as client:  # a new server process
        again = await call(client, "get_decision", {"request_id": "kept-1", "wait_s": 0.1})
    assert again["status"] == "pending"


async def test_a_reused_id_with_other_arguments_is_never_their_approval(h: Harness) -> None:
    """A model that reuses its request_id for another call of the same action (other params,
    another question) gets an error, not the earlier call's approval or answer: no card was
    ever posted for the new arguments (it came back `approved`, or with the old answer)."""
    rid = await h.push(agent="mcp-test-agent", action="refund", summary="Refund $5", params={"amount": 5},
                       id="refund-ana")
    await approve(h, await h.card(rid))
    qid = await h.push(agent="mcp-test-agent", kind="question", action="question", summary="Ship to Berlin?",
                       id="ask-1")
    await answer(h, await h.card(qid), "yes")
    async with stdio(h, 2) as client:
        same = await call(client, "request_approval", {"action": "refund", "summary": "Refund $5 to Ana",
                                                       "params": {"amount": 5}, "request_id": "refund-ana"})
        other = await call(client, "request_approval", {"action": "refund", "summary": "Refund $5000 to Ana",
                                                        "params": {"amount": 5000}, "request_id": "refund-ana"})
        asked = await call(client, "ask_human", {"question": "Delete every customer?", "request_id": "ask-1"})
    assert same["status"] == "approved"  # the same call again: its decision (a retry is safe)
    assert other["status"] == "error" and "other arguments" in other["message"], other
    assert asked["status"] == "error" and "another question" in asked["message"], asked
    assert not other.get("approved") and "answer" not in asked


@pytest.mark.parametrize(("args", "env", "named"), [
    (["--wait", "nan"], {}, "--wait"),
    (["--wait", "inf"], {}, "--wait"),
    (["--wait", "-1"], {}, "--wait"),
    ([], {"HITL_MCP_WAIT_S": "50s"}, "HITL_MCP_WAIT_S"),
])
def test_a_wait_that_is_not_a_bound_is_refused_at_start(args: list[str], env: dict[str, str], named: str) -> None:
    """The wait bounds every call: NaN made each call send its request, then fail (a model
    retrying posted a card per try), infinity never answered pending, a negative wait never
    waited, and a malformed HITL_MCP_WAIT_S was a traceback. Now the server does not start."""
    out = subprocess.run([sys.executable, "-m", "hitl", "mcp", *args], input="", capture_output=True, text=True,
                         timeout=60, env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", **env})
    assert out.returncode == 2 and named in out.stderr and "Traceback" not in out.stderr, out.stderr


async def test_every_call_answers_within_its_bound_while_redis_hangs(hung_redis: RedisServer) -> None:
    """A hung Redis (or a network partition) held each call about 54 s with `--wait 1`: the
    sending and the lookups were bounded only by socket timeouts and retries, past the bound the
    server promises and past common client timeouts. Each call now answers within its wait plus
    a short bound for Redis round trips, with an error that names the request (never a decision)."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "hitl", "mcp", "--wait", "1"],
                                   env={**os.environ, "REDIS_URL": hung_redis.url})
    async with Client(params) as client:
        assert (await call(client, "request_approval", {**REFUND, "wait_s": 0}))["status"] == "pending"
        _hang(hung_redis)  # Redis stops answering
        # an upper bound only to catch the overrun (before: about 54 s for each call)
        sent = await call(client, "request_approval", {**REFUND, "wait_s": 0}, read_timeout_seconds=20)
        read = await call(client, "get_decision", {"request_id": sent["request_id"], "wait_s": 0},
                          read_timeout_seconds=20)
    assert sent["status"] == "error" and sent["request_id"].startswith("mcp-") and "did not answer" in sent["message"]
    assert read["status"] == "error" and "did not answer" in read["message"] and "approved" not in read


async def test_a_request_still_queued_is_pending_not_unknown(redis_url: str) -> None:
    """With the bot down or behind, a request another process (or this server before a restart)
    sent is in the queue, not yet stored: get_decision called it unknown ("hitl has no request"),
    and a model resubmitting got a second card later. A queued request of another agent is
    still never read."""
    from hitl.client import AsyncClient

    async with AsyncClient.from_url(redis_url, agent="mcp-test-agent") as mine, \
            AsyncClient.from_url(redis_url, agent="payments-bot") as theirs:
        await mine.submit({"action": "refund", "summary": "Refund $5", "id": "queued-1"})
        await theirs.submit({"action": "refund", "summary": "Refund $9", "id": "queued-2"})
    params = StdioServerParameters(command=sys.executable, args=["-m", "hitl", "mcp", "--wait", "1"],
                                   env={**os.environ, "REDIS_URL": redis_url, "HITL_AGENT": "mcp-test-agent"})
    async with Client(params) as client:
        queued = await call(client, "get_decision", {"request_id": "queued-1", "wait_s": 0})
        other = await call(client, "get_decision", {"request_id": "queued-2", "wait_s": 0})
    assert queued["status"] == "pending", queued
    assert other["status"] == "error" and "not a request of this agent" in other["message"], other


TOKEN = "s3cret-token-for-the-mcp-tests"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                   "clientInfo": {"name": "probe", "version": "1"}}}


@asynccontextmanager
async def served(h: Harness, *args: str, **env: str) -> AsyncIterator[int]:
    """`hitl mcp --transport http` with `args` and `env`, up: yields its port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hitl", "mcp", "--transport", "http", "--port", str(port),
                             "--wait", "5", *args], env={**_env(h), **env}, stderr=subprocess.DEVNULL)
    try:
        async def up() -> bool:
            try:
                async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/mcp") as r:
                    return r.status < 500
            except aiohttp.ClientError:
                return False

        await eventually(up, 30, "MCP HTTP server")
        yield port
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)


async def _post(port: int, **headers: str) -> int:
    """The status of an MCP `initialize` POST with `headers`."""
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers}
    async with aiohttp.ClientSession(skip_auto_headers=["Host"] if "Host" in headers else []) as s, \
            s.post(f"http://127.0.0.1:{port}/mcp", json=INIT, headers=sent) as r:
        return r.status


@pytest.mark.parametrize(("env", "named"), [
    ({}, "HITL_MCP_TOKEN"),
    ({"HITL_MCP_TOKEN": ""}, "HITL_MCP_TOKEN"),
    ({"HITL_MCP_TOKEN": "short"}, "HITL_MCP_TOKEN"),
    ({"HITL_MCP_TOKEN": TOKEN}, "HITL_MCP_ALLOWED_HOSTS"),  # a wildcard bind: which names clients use?
])
def test_a_network_bind_without_its_safeguards_does_not_start(env: dict[str, str], named: str) -> None:
    """`--host 0.0.0.0` served anyone on the network, no token, any Host and Origin: they could
    submit approval requests as the agent and read its decisions. It does not start now."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HITL_MCP_")}
    try:
        out = subprocess.run([sys.executable, "-m", "hitl", "mcp", "--transport", "http", "--host", "0.0.0.0",
                              "--port", str(free_port())], capture_output=True, text=True, timeout=15,
                             env={**base, "REDIS_URL": "redis://127.0.0.1:1/0", **env})
    except subprocess.TimeoutExpired as e:
        raise AssertionError("the server started") from e
    assert out.returncode == 2 and named in out.stderr and "Traceback" not in out.stderr, out.stderr


async def test_a_network_bind_needs_the_token_and_an_allowed_host(h: Harness) -> None:
    """On a network address: no token or a wrong one is 401, a Host not allowed 421, an Origin
    not allowed 403 (never a 500); the right token from an allowed host works, with the
    official client configured with the header."""
    async with served(h, "--host", "0.0.0.0", HITL_MCP_TOKEN=TOKEN,
                      HITL_MCP_ALLOWED_HOSTS="mcp.internal:*") as port:
        bearer = f"Bearer {TOKEN}"
        assert await _post(port) == 401
        assert await _post(port, Authorization="Bearer wrong") == 401
        assert await _post(port, Authorization=f"Bearer {TOKEN}x") == 401
        assert await _post(port, Authorization=TOKEN) == 401  # not a bearer token
        assert await _post(port, Authorization="Bearer \u00e9t\u00e9") == 401
        assert await _post(port, Authorization=bearer, Host="evil.example") == 421
        assert await _post(port, Authorization=bearer, Origin="http://evil.example") == 403
        assert await _post(port, Authorization=bearer, Host=f"mcp.internal:{port}") == 200
        assert await _post(port, Authorization=bearer) == 200  # loopback names are always the machine's own
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        async with create_mcp_http_client(headers={"Authorization": bearer}) as http_client, \
                Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http_client)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
    assert "request_approval" in names


async def test_on_loopback_a_token_is_optional_and_enforced_when_set(h: Harness) -> None:
    async with served(h) as port:
        assert await _post(port) == 200
        assert await _post(port, Host="evil.example") == 421  # the library's own loopback check
    async with served(h, HITL_MCP_TOKEN=TOKEN) as port:
        assert await _post(port) == 401
        assert await _post(port, Authorization=f"Bearer {TOKEN}") == 200


async def test_another_agents_refused_id_is_never_shown_as_its_decision(h: Harness) -> None:
    """Intake refused another agent's entry (never stored: only the id's `invalid` marker, kept
    7 days, tells of it); get_decision of that id must not hand that refusal (and its reason,
    which may quote the other agent's entry) to this agent as its own decision."""
    await h.client.redis.xadd(h.bot.store.keys.requests, {"request": json.dumps(
        {"id": "refused-1", "agent": "payments-bot", "action": "refund", "params": {"secret": "s3"}})})
    await h.client.redis.xadd(h.bot.store.keys.requests, {"request": json.dumps(
        {"id": "refused-2", "agent": "mcp-test-agent", "action": "refund"})})
    for rid in ("refused-1", "refused-2"):
        await eventually(lambda rid=rid: h.bot.store.redis.exists(h.bot.store.keys.invalid(rid)),
                         what="the entry refused")
    await h.bot.store.redis.xtrim(h.bot.store.keys.requests, maxlen=0)  # as intake trims what it acknowledged
    async with stdio(h, 1) as client:
        read = await call(client, "get_decision", {"request_id": "refused-1", "wait_s": 0.1})
        own = await call(client, "get_decision", {"request_id": "refused-2", "wait_s": 0.1})
    assert own["status"] == "invalid" and "summary" in own["message"], own  # its own refusal: told
    assert read["status"] in ("unknown", "error"), read
    assert "invalid" not in json.dumps(read).replace("invalid_", "")
