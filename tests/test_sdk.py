"""The agent SDK (`hitl`) against the real bot: `@require_approval` on sync and async tools,
`ask_human`, clear errors before anything is sent, and an SDK that stays light."""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import hitl
import pytest
from hitl import (
    AsyncClient,
    Client,
    Denied,
    Expired,
    InvalidRequest,
    Rejected,
    Unreachable,
    require_approval,
)
from hitl.keys import AgentKeys
from packaging.requirements import Requirement

from store.keys import Keys
from tests.harness import Harness
from tests.redis_server import free_port
from tests.reviewer import approve, card_for, edit, h, reject
from tests.util import eventually

__all__ = ["h"]


def _tools(client: Client | AsyncClient, executed: list[dict[str, Any]], **options: Any) -> tuple[Any, Any]:
    @require_approval(action="refund", editable=["amount"], risk={"amount": 250, "currency": "USD"},
                      summary="Refund ${amount} on order {order}", client=client, **options)
    def refund(order: str, amount: int, note: object = None) -> str:
        executed.append({"order": order, "amount": amount})
        return f"refunded {amount}"

    @require_approval(action="refund", editable=["amount"], client=client, **options)
    async def refund_async(order: str, amount: int) -> str:
        executed.append({"order": order, "amount": amount})
        return f"refunded {amount}"

    return refund, refund_async


@pytest.fixture
async def client(h: Harness) -> Any:
    c = await asyncio.to_thread(Client, h.redis_url, agent="billing")
    yield c
    await asyncio.to_thread(c.close)


async def test_sync_tool_runs_once_approved(h: Harness, client: Client) -> None:
    executed: list[dict[str, Any]] = []
    refund, _ = _tools(client, executed)
    task = asyncio.create_task(asyncio.to_thread(refund, "A-17", 250, note=object()))
    rec = await card_for(h, "refund")
    assert rec.request.summary == "Refund $250 on order A-17" and rec.request.agent == "billing"
    assert rec.request.params["order"] == "A-17" and rec.request.editable == ["amount"]
    assert not executed
    await approve(h, rec)
    assert await task == "refunded 250" and executed == [{"order": "A-17", "amount": 250}]


async def test_sync_tool_runs_with_the_edited_arguments(h: Harness, client: Client) -> None:
    executed: list[dict[str, Any]] = []
    refund, _ = _tools(client, executed)
    task = asyncio.create_task(asyncio.to_thread(refund, "A-17", 250))
    await edit(h, await card_for(h, "refund"), {"amount": 180})
    assert await task == "refunded 180" and executed == [{"order": "A-17", "amount": 180}]


async def test_rejected_raises_with_reason_and_code(h: Harness, client: Client) -> None:
    executed: list[dict[str, Any]] = []
    refund, _ = _tools(client, executed)
    task = asyncio.create_task(asyncio.to_thread(refund, "A-17", 250))
    await reject(h, await card_for(h, "refund"), "Refunded last week")
    with pytest.raises(Rejected) as e:
        await task
    assert e.value.reason == "Refunded last week" and e.value.reason_code == "wrong_params"
    assert executed == []


async def test_expired_raises(h: Harness, client: Client) -> None:
    executed: list[dict[str, Any]] = []
    refund, _ = _tools(client, executed, timeout_s=1)
    with pytest.raises(Expired):
        await asyncio.to_thread(refund, "A-17", 250)
    assert executed == []


async def test_denied_by_policy_raises(h: Harness, client: Client) -> None:
    executed: list[dict[str, Any]] = []

    @require_approval(action="pay", risk={"tags": ["crypto"]}, client=client)
    def pay(to: str) -> None:
        executed.append({"to": to})

    with pytest.raises(Denied, match=r"(?i)crypto payments are not allowed"):
        await asyncio.to_thread(pay, "wallet-1")
    assert executed == []


async def test_async_tool_with_the_async_client(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    _, refund_async = _tools(h.client, executed)
    task = asyncio.create_task(refund_async("A-18", 90))
    await edit(h, await card_for(h, "refund"), {"amount": 80})
    assert await task == "refunded 80" and executed == [{"order": "A-18", "amount": 80}]


async def test_async_tool_with_the_sync_client(h: Harness, client: Client) -> None:
    executed: list[dict[str, Any]] = []
    _, refund_async = _tools(client, executed)
    task = asyncio.create_task(refund_async("A-19", 10))
    await approve(h, await card_for(h, "refund"))
    assert await task == "refunded 10"


async def test_auto_approved_runs_at_once(h: Harness, client: Client) -> None:
    @require_approval(action="lookup_order", client=client)
    def lookup_order(order: str) -> str:
        return f"order {order}: shipped"

    assert await asyncio.to_thread(lookup_order, "A-17") == "order A-17: shipped"


async def test_a_stable_id_resumes_after_a_restart(h: Harness, client: Client) -> None:
    executed: list[dict[str, Any]] = []
    refund, _ = _tools(client, executed, request_id=lambda p: f"refund-{p['order']}", wait_timeout=0.3)
    with pytest.raises(hitl.DecisionTimeout) as e:
        await asyncio.to_thread(refund, "A-20", 5)
    assert e.value.request_ids == ["refund-A-20"]
    await approve(h, await card_for(h, "refund"))
    # the agent restarts and makes the same call: same request, already approved, runs once
    assert await asyncio.to_thread(refund, "A-20", 5) == "refunded 5"
    assert executed == [{"order": "A-20", "amount": 5}]


async def test_a_stable_id_decided_for_other_arguments_does_not_run_these(h: Harness, client: Client) -> None:
    """`request_id` names the request; a call under an id that people decided for other
    arguments is not what they decided: it must not run (it ran with the new amount, unseen)."""
    executed: list[dict[str, Any]] = []
    refund, refund_async = _tools(client, executed, request_id=lambda p: f"refund-{p['order']}")
    task = asyncio.create_task(asyncio.to_thread(refund, "A-21", 5))
    await edit(h, await card_for(h, "refund"), {"amount": 4})
    assert await task == "refunded 4"
    assert await asyncio.to_thread(refund, "A-21", 5) == "refunded 4"  # the same call: its decision
    with pytest.raises(InvalidRequest, match=r"refund-A-21 was decided for other arguments.*amount"):
        await asyncio.to_thread(refund, "A-21", 5000)
    with pytest.raises(InvalidRequest, match=r"refund-A-21 was decided for other arguments"):
        await refund_async("A-21", 5000)
    assert executed == [{"order": "A-21", "amount": 4}] * 2
    assert len(await h.store.redis.zrange(h.store.keys.pending, 0, -1)) == 0


async def test_ask_human_returns_the_answer(h: Harness, client: Client) -> None:
    task = asyncio.create_task(asyncio.to_thread(hitl.ask_human, "Ship order 88 today?", ["ship", "wait"],
                                                 client=client))
    rec = await card_for(h, "question")
    await h.click(rec, "U0BOB", "hitl.option:1")
    assert await task == "wait"


async def test_interim_messages_reach_a_sync_wait(h: Harness, client: Client) -> None:
    rid = await asyncio.to_thread(client.request, action="refund", summary="Refund", id="m-1")
    seen: list[str] = []
    task = asyncio.create_task(asyncio.to_thread(client.wait, rid, 20, on_message=lambda m: seen.append(m.event)))
    rec = await card_for(h, "refund")
    # a message for this request on its reply stream, as the bot writes one (take over)
    msg = {"request_id": rid, "event": "reply", "text": "on it",
           "by": {"user_id": "U0ALICE", "choice": "reply", "at": "2026-01-01T00:00:00Z"}, "at": "2026-01-01T00:00:00Z"}
    await h.store.redis.xadd(client.reply_to, {"message_for": rid, "message": json.dumps(msg)})
    await eventually(lambda: asyncio.sleep(0, seen), what="interim message")
    await approve(h, rec)
    assert (await task).approved and seen == ["reply"]


async def test_invalid_request_is_refused_before_anything_is_sent(h: Harness, client: Client) -> None:
    @require_approval(action="refund", client=client, confidence=3)
    def refund(order: str) -> None: ...

    with pytest.raises(InvalidRequest, match=r"confidence: Input should be less than or equal to 1"):
        await asyncio.to_thread(refund, "A-1")
    with pytest.raises(ValueError, match="editable names 'amt'"):
        require_approval(action="refund", editable=["amt"], client=client)(lambda order: None)
    assert await h.store.redis.xlen(h.store.keys.requests) == 0


async def test_a_reply_to_naming_the_bots_own_key_is_refused_before_anything_is_sent(h: Harness) -> None:
    """The bot would refuse it (and publish its `invalid` decision to {prefix}:decisions only); the
    SDK says so at once instead of waiting on a stream the bot writes its audit trail to."""
    prefix = h.store.keys.prefix
    async with AsyncClient.from_url(h.redis_url, prefix=prefix, agent="billing") as c:
        for reply_to in (f"{prefix}:audit", f"{prefix}:requests", prefix, f"{prefix}:results:"):
            with pytest.raises(InvalidRequest, match="names one of the bot's own keys"):
                await c.ask(action="refund", summary="Refund", reply_to=reply_to, timeout=5)
        assert await h.store.redis.xlen(h.store.keys.requests) == 0
        assert AgentKeys(prefix).owns(f"{prefix}:audit") and not AgentKeys(prefix).owns(f"{prefix}:results:a")


async def test_an_entry_naming_the_request_without_a_decision_is_not_taken_for_one(h: Harness) -> None:
    """Other writers' entries (an audit-like event, a note of the agent's own) on the reply stream
    that carry the request's id but no `decision` field are passed over, not read as one."""
    async with AsyncClient.from_url(h.redis_url, prefix=h.store.keys.prefix, agent="billing") as c:
        request_id = await c.request(action="refund", summary="Refund $5", reply_to="agent:replies",
                                     params={"amount": 5})
        await h.store.redis.xadd("agent:replies", {"request_id": request_id, "event": "noted"})
        waiting = asyncio.create_task(c.wait(request_id, timeout=20))
        rec = await card_for(h, "refund")
        assert not waiting.done()
        await approve(h, rec)
        assert (await waiting).approved


def test_no_redis_is_one_line_naming_redis_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with Client(url, retries=0) as client, pytest.raises(Unreachable) as e:
        client.ask(action="refund", summary="Refund")
    text = str(e.value)
    assert "\n" not in text and url in text and "REDIS_URL" in text


def test_agent_keys_match_the_bots() -> None:
    mine, bots = AgentKeys("{p}"), Keys("{p}")
    assert (mine.requests, mine.decisions) == (bots.requests, bots.decisions)
    assert (mine.results("a"), mine.request("r"), mine.invalid("r")) == (bots.results("a"), bots.request("r"),
                                                                          bots.invalid("r"))


def _closure(dist: str, extras: frozenset[str] = frozenset()) -> set[str]:
    seen: set[str] = set()
    todo = [(dist, extras)]
    while todo:
        name, wanted = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for line in md.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": x}) for x in wanted or {""}):
                if req.marker is not None and not wanted and "extra" in str(req.marker):
                    continue
                todo.append((req.name, frozenset(req.extras)))
    return seen


def test_the_sdk_is_light() -> None:
    """What `pip install ./sdk` brings: the dependency closure of hitl-slack-sdk without extras."""
    closure = _closure("hitl-slack-sdk")
    assert {"redis", "pydantic"} <= closure
    assert not closure & {"slack-bolt", "slack-sdk", "aiohttp", "matplotlib", "hitl"}, closure
    declared = {Requirement(r).name for r in md.requires("hitl-slack-sdk") or [] if "extra" not in r}
    assert declared == {"redis", "pydantic"}
    # the SDK distribution ships the `hitl` package and nothing of the bot
    sdk = Path(__file__).resolve().parent.parent / "sdk"
    assert sorted(p.name for p in sdk.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == ["hitl"]
    assert 'include = ["hitl*"]' in (sdk / "pyproject.toml").read_text()
    # and importing it (with every module an agent uses) loads no Slack, web or chart library
    code = ("import sys, hitl, hitl.hook, hitl.review, hitl.approval;"
            "bad = {'slack_bolt','slack_sdk','aiohttp','matplotlib','bot','store','blocks','handlers'};"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_published_decision_has_every_contract_field_and_only_the_extensions_that_say_something() -> None:
    from datetime import UTC, datetime

    from hitl.protocol import Decision, GrantRef, Mode, Route, Status

    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    plain = Decision(request_id="r1", status=Status.auto_approved, params={"order": "R-1"}, decided_at=at,
                     route=Route(mode=Mode.auto, tier="low", rules=["tier:low"], channel="#approvals"))
    out = json.loads(plain.model_dump_json())
    assert set(out) == {"request_id", "status", "params", "changes", "answer", "option", "reason",
                        "decided_by", "decided_at", "route"}  # the contract's fields, null or empty included
    assert out["route"] == {"mode": "auto", "tier": "low", "rules": ["tier:low"], "sampled": False}
    assert Decision.model_validate_json(plain.model_dump_json()) == plain  # an absent field reads as its default

    grant = GrantRef(id="g1", by=["U1"], expires_at=at)
    full = Decision(request_id="r2", status=Status.rejected, reason="no", reason_code="timeout", decided_at=at,
                    route=Route(mode=Mode.approve, tier="high", paused=True, channel="#risk", approvers=["U1"],
                                quorum=2, grant=grant, delegates={"U1": "U2"}, sampled=True))
    out = json.loads(full.model_dump_json())
    assert out["reason_code"] == "timeout"
    assert {k: out["route"][k] for k in ("paused", "channel", "approvers", "quorum", "delegates", "sampled")} == {
        "paused": True, "channel": "#risk", "approvers": ["U1"], "quorum": 2, "delegates": {"U1": "U2"},
        "sampled": True}
    assert out["route"]["grant"]["id"] == "g1" and "batch_max" not in out["route"]
    assert Decision.model_validate_json(full.model_dump_json()) == full
    assert full.model_dump(mode="json") == out  # the same in Python as on the wire
    # the schema still documents every field, with its default
    schema = Decision.model_json_schema(mode="serialization")
    assert {"reason_code", "route"} <= set(schema["properties"])
    assert schema["$defs"]["Route"]["properties"]["batch_max"]["default"] == 40


def test_the_route_defaults_that_stored_and_published_json_leaves_out_stay_put() -> None:
    """Records, the decisions streams and the audit archive leave a route's defaults out
    (store.models.stored_route, Decision's serializer): a changed default would silently change
    every route stored before it. Change one only with a migration of what is stored."""
    from hitl.protocol import _ROUTE_DEFAULTS

    assert _ROUTE_DEFAULTS == {
        "reasons": [], "paused": False, "channel": "#approvals", "approvers": [], "quorum": 1,
        "timeout_s": None, "group": None, "batch_window_s": 10, "batch_max": 40, "grant": None,
        "grant_offer_s": None, "delegates": {}, "canary": False, "on_timeout": None}
