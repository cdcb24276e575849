"""The real `humanlayer` SDK (0.7.9, unmodified) pointed at hitl: approvals, rejections with a
comment, and a human as a tool, decided by people in the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from humanlayer import ContactChannel, HumanLayer, ResponseOption, SlackContactChannel

from blocks.ids import ActionId, BlockId, CallbackId
from bot.api.humanlayer import hitl_id
from store.models import Status
from tests.api_util import Api, api_harness, new_key, trusted
from tests.harness import Harness
from tests.util import eventually

CHANNEL = "C0HLAPPROVE"
POLL_S = 0.2  # the SDK's `sleep` is a public setting; its default (3 s) is measured in bench/


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    async with api_harness(redis_url) as h:
        h.emu.add_channel("hl-approvals", CHANNEL)
        yield h


@contextlib.asynccontextmanager
async def under(policy: str, redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[Harness, Api]]:
    """The bot under `policy` (YAML), the calls' channel, and an API client of billing-bot."""
    path = tmp_path / "policy.yml"
    path.write_text(policy)
    async with api_harness(redis_url, policy=path) as h:
        h.emu.add_channel("hl-approvals", CHANNEL)
        api = Api(h, await new_key(h, "billing-bot"))
        try:
            yield h, api
        finally:
            await api.close()


def sdk(h: Harness, key: str, call_id: str, **kw: Any) -> HumanLayer:
    return HumanLayer(api_key=key, api_base_url=f"http://127.0.0.1:{h.bot.port}/humanlayer/v1",
                      sleep=lambda _: time.sleep(POLL_S), genid=lambda _: call_id, **kw)


def channel(*responders: str) -> ContactChannel:
    return ContactChannel(slack=SlackContactChannel(channel_or_user_id=CHANNEL, allowed_responder_ids=list(responders)
                                                    or None, context_about_channel_or_user="the billing team"))


async def test_an_approved_call_runs_and_only_allowed_responders_decide(h: Harness) -> None:
    hl = sdk(h, await new_key(h, "billing-bot"), "call-approve-1")
    ran: list[int] = []

    @hl.require_approval(contact_channel=channel("U0ALICE"))
    def refund(amount: int, customer: str) -> str:
        ran.append(amount)
        return f"refunded {amount} to {customer}"

    result = asyncio.ensure_future(asyncio.to_thread(refund, amount=250, customer="Ana"))
    rid = hitl_id("fn", "call-approve-1")
    rec = await h.card(rid)
    assert rec.channel == CHANNEL and rec.request.agent == "billing-bot" and rec.request.action == "refund"
    assert rec.request.params == {"amount": 250, "customer": "Ana"} and rec.route.approvers == ["U0ALICE"]
    await h.click(rec, "U0BOB", ActionId.approve)  # not an allowed responder: refused, nothing decided
    assert (await h.store.get(rid)).decision is None
    await h.click(rec, "U0ALICE", ActionId.approve)
    assert await result == "refunded 250 to Ana" and ran == [250]


async def test_a_rejected_call_returns_humanlayers_text_with_the_comment(h: Harness) -> None:
    hl = sdk(h, await new_key(h, "billing-bot"), "call/reject 1")  # outside hitl's id alphabet
    ran: list[int] = []

    @hl.require_approval(contact_channel=channel(), reject_options=[
        ResponseOption(name="already_done", title="Already refunded"),
        ResponseOption(name="too_much", title="Amount too high")])
    def refund(amount: int) -> str:
        ran.append(amount)
        return "refunded"

    result = asyncio.ensure_future(asyncio.to_thread(refund, amount=900))
    rid = hitl_id("fn", "call/reject 1")
    rec = await h.card(rid)
    await h.click(rec, "U0BOB", ActionId.reject)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="reject modal")
    offered = [o["value"] for b in view.spec["blocks"] if b.get("block_id") == BlockId.reason_code
               for o in b["element"]["options"]]
    assert offered == ["already_done", "too_much"]  # the call's reject_options are the reasons
    await h.emu.submit_view("U0BOB", view.id, {BlockId.reason_code.value: {"value": "already_done"},
                                               BlockId.reason_text.value: {"value": "Order was already refunded"}})
    text = await result
    assert text == "User in the billing team denied refund with message: Order was already refunded"
    assert ran == []
    # the SDK's own call id comes back on every answer
    api = Api(h, await new_key(h, "billing-bot"))
    try:
        status, body, _ = await api.call("GET", "/humanlayer/v1/function_calls/call%2Freject%201")
        assert status == 200 and body["call_id"] == "call/reject 1" and body["status"]["approved"] is False
        assert body["status"]["reject_option_name"] == "already_done"
    finally:
        await api.close()


async def test_human_as_tool_gets_the_reviewers_answer(h: Harness) -> None:
    hl = sdk(h, await new_key(h, "support-bot"), "call-ask-1")
    ask = hl.human_as_tool(contact_channel=ContactChannel(slack=SlackContactChannel(channel_or_user_id=CHANNEL)))
    answer = asyncio.ensure_future(asyncio.to_thread(ask, "May I refund order 4711 after 60 days?"))
    rec = await h.card(hitl_id("hc", "call-ask-1"))
    assert rec.request.kind.value == "question" and rec.request.agent == "support-bot"
    await h.click(rec, "U0CAROL", ActionId.answer)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0CAROL")), what="answer modal")
    assert view.spec["callback_id"] == CallbackId.answer_modal
    await h.emu.submit_view("U0CAROL", view.id, {BlockId.answer_text.value: {"value": "Yes, it is a gold customer"}})
    assert await answer == "Yes, it is a gold customer"
    assert (await h.store.get(rec.id)).decision.status is Status.answered  # type: ignore[union-attr]


def _call(call_id: str, fn: str = "refund", **spec: Any) -> dict[str, Any]:
    return {"run_id": "billing-bot", "call_id": call_id,
            "spec": {"fn": fn, "kwargs": {"amount": 5}, "channel": {"slack": {"channel_or_user_id": CHANNEL}},
                     **spec}}


async def test_the_compat_api_over_http_maps_scope_options_escalation_and_errors(h: Harness) -> None:
    api = Api(h, await new_key(h, "billing-bot"))
    base = "/humanlayer/v1"
    try:
        # a call policy would let run alone still waits for a person: HumanLayer asked for one
        await trusted(h, "billing-bot", "lookup_order")
        status, body, _ = await api.call("POST", f"{base}/function_calls",
                                         json=_call("c-1", fn="lookup_order", reject_options=[
                                             {"name": "stale", "title": "Data is stale"}]))
        assert status == 200 and body["call_id"] == "c-1" and body["status"]["approved"] is None
        rec = await h.store.get(hitl_id("fn", "c-1"))
        assert rec.route.mode.value == "approve" and rec.route.channel == CHANNEL
        # idempotent by call id
        status, again, _ = await api.call("POST", f"{base}/function_calls", json=_call("c-1", fn="lookup_order"))
        assert status == 200 and again["spec"] == body["spec"]
        # rejected without words: the comment is the option's title, never empty
        card = await h.card(rec.id)
        await h.click(card, "U0BOB", ActionId.reject)
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="reject modal")
        await h.emu.submit_view("U0BOB", view.id, {BlockId.reason_code.value: {"value": "stale"}})
        await h.decided(rec.id)
        status, body, _ = await api.call("GET", f"{base}/function_calls/c-1")
        assert body["status"]["approved"] is False and body["status"]["comment"] == "Data is stale"
        assert body["status"]["reject_option_name"] == "stale" and body["status"]["responded_at"]
        # escalation: the next level now, the agent's message audited, named people may decide
        await api.call("POST", f"{base}/function_calls", json=_call("c-2"))
        status, body, _ = await api.call("POST", f"{base}/agent/function_calls/c-2/escalate_email", json={
            "escalation_msg": "still waiting, please look", "channel": {
                "slack": {"channel_or_user_id": "U0DAVE", "allowed_responder_ids": ["U0DAVE"]}}})
        assert status == 200 and body["call_id"] == "c-2"
        rec2 = await h.store.get(hitl_id("fn", "c-2"))
        assert rec2.escalation_level == 0 and "U0DAVE" in rec2.extra_approvers and "U0DAVE" in rec2.escalated_to
        trail = await h.store.trail(rec2.id)
        assert any(e.event == "escalation_requested" and e.detail["message"] == "still waiting, please look"
                   for e in trail)
        # another agent's key may not read it; every error is a JSON body
        other = await new_key(h, "ops-bot")
        status, body, _ = await api.call("GET", f"{base}/function_calls/c-2", key=other)
        assert status == 403 and body["error"]["code"] == "forbidden"
        status, body, _ = await api.call("GET", f"{base}/function_calls/c-2", key="")
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, body, _ = await api.call("GET", f"{base}/contact_requests/nope")
        assert status == 404 and body["error"]["code"] == "not_found"
        status, body, _ = await api.call("POST", f"{base}/function_calls", json={"run_id": "x"})
        assert status == 400 and body["error"]["field"] == "call_id"
        status, body, _ = await api.call("POST", f"{base}/function_calls", json=_call("c-3", fn=""))
        assert status == 400 and body["error"]["field"] == "spec.fn"
        for options in ([{"name": "x" * 151}], [{"name": "same"}, {"name": "same", "title": "Same again"}],
                        [{"title": "no name"}]):  # a reviewer's pick must answer back a name the call sent
            status, body, _ = await api.call("POST", f"{base}/function_calls",
                                             json=_call("c-4", fn="lookup_order", reject_options=options))
            assert status == 400 and body["error"]["field"] == "spec.reject_options", body
        assert not await h.store.exists(hitl_id("fn", "c-4"))
        assert not await h.store.exists(hitl_id("fn", "c-3"))
        assert await h.bot.api.service.api.get_call(hitl_id("fn", "c-3")) is None  # nothing half-stored
    finally:
        await api.close()


PINNED = """
defaults: {channel: "#approvals", approvers: ["U0CAROL", "U0ALICE"]}
tiers:
  low: {mode: approve}
  medium: {mode: approve}
  high: {mode: approve}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""


async def test_an_escalation_cannot_name_approvers_the_policy_does_not_allow(redis_url: str,
                                                                            tmp_path: Path) -> None:
    """The agent's own escalate_email may bring in people the policy allows (Alice, left out by
    the call's allowed_responder_ids), never anyone else: Dave, whom it names, is not an approver
    of this tier, so his Approve is refused and the request waits for Carol or Alice."""
    async with under(PINNED, redis_url, tmp_path) as (h, api):
        base = "/humanlayer/v1"
        call = _call("c-pinned")
        call["spec"]["channel"]["slack"]["allowed_responder_ids"] = ["U0CAROL"]
        status, _, _ = await api.call("POST", f"{base}/function_calls", json=call)
        assert status == 200
        rid = hitl_id("fn", "c-pinned")
        assert (await h.store.get(rid)).route.approvers == ["U0CAROL"]
        status, _, _ = await api.call("POST", f"{base}/agent/function_calls/c-pinned/escalate_email", json={
            "escalation_msg": "approve it, Dave", "channel": {
                "slack": {"channel_or_user_id": "U0DAVE", "allowed_responder_ids": ["U0DAVE", "U0ALICE"]}}})
        assert status == 200
        rec = await h.card(rid)
        assert rec.escalation_level == 0 and "U0DAVE" not in rec.extra_approvers
        assert "U0ALICE" in rec.extra_approvers  # within the policy's approvers: allowed
        await h.click(rec, "U0DAVE", ActionId.approve)
        await eventually(lambda: _refused(h, rid, "not_an_approver"), what="Dave refused")
        assert (await h.store.get(rid)).decision is None
        await h.click(rec, "U0ALICE", ActionId.approve)
        assert (await h.decided(rid)).decision.status is Status.approved  # type: ignore[union-attr]


async def _refused(h: Harness, rid: str, reason: str) -> bool:
    return any(e.event == "refused" and e.detail.get("reason") == reason for e in await h.store.trail(rid))


PASSING = """
defaults: {channel: "#approvals"}
tiers:
  low: {mode: approve, timeout: 1h, on_timeout: approve}
  medium: {mode: approve, timeout: 1h, on_timeout: approve}
  high: {mode: approve, timeout: 1h, on_timeout: approve}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""


async def test_a_call_nobody_decided_is_never_approved_by_the_clock(redis_url: str, tmp_path: Path) -> None:
    """A HumanLayer call always waits for a person: a tier's `on_timeout: approve` (which lets an
    unanswered queue request pass) would tell the SDK `approved: true` and run the function with
    nobody's approval. It expires instead, and the SDK hears a rejection."""
    async with under(PASSING, redis_url, tmp_path) as (h, api):
        status, _, _ = await api.call("POST", "/humanlayer/v1/function_calls", json=_call("c-clock"))
        assert status == 200
        rid = hitl_id("fn", "c-clock")
        await h.card(rid)
        assert h.bot.scheduler is not None
        h.bot.scheduler.clock = lambda: time.time() + 3700
        h.bot.scheduler.kick()
        d = (await h.decided(rid)).decision
        assert d is not None and d.status is Status.expired, d
        status, body, _ = await api.call("GET", "/humanlayer/v1/function_calls/c-clock")
        assert status == 200 and body["status"]["approved"] is False and body["status"]["comment"]


HANDOVER = """
defaults: {channel: "#approvals"}
tiers:
  low: {mode: approve}
  medium: {mode: approve}
  high: {mode: approve}
rules:
  - {name: refunds_to_people, when: 'request.action == "refund"', mode: escalate, reason: "Refunds go to a person"}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""


async def test_a_call_handed_back_tells_the_sdk_the_instructions(redis_url: str, tmp_path: Path) -> None:
    """A call policy hands to a person (mode escalate) and that person hands back with
    instructions: not approved, and the comment is their instructions (it said `answered`)."""
    async with under(HANDOVER, redis_url, tmp_path) as (h, api):
        assert (await api.call("POST", "/humanlayer/v1/function_calls", json=_call("c-back")))[0] == 200
        rec = await h.card(hitl_id("fn", "c-back"))
        assert rec.route.mode.value == "escalate"
        await h.click(rec, "U0BOB", ActionId.hand_back)
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="hand back modal")
        done = await h.emu.submit_view("U0BOB", view.id, {BlockId.instructions_text.value: {
            "value": "Refund only $3, the rest as a voucher"}})
        assert done.closed, done.errors
        await h.decided(rec.id)
        status, body, _ = await api.call("GET", "/humanlayer/v1/function_calls/c-back")
        assert status == 200 and body["status"]["approved"] is False
        assert body["status"]["comment"] == "Refund only $3, the rest as a voucher", body["status"]


async def test_response_options_the_card_cannot_answer_back_exactly_are_refused(h: Harness) -> None:
    """A contact request's response options become the question's buttons, whose values hold 75
    characters: two names alike in their first 75 characters, a name missing or more than ten
    options were cut or merged (the answer named an option the SDK never sent). Refused with 400
    instead, nothing stored; ten distinct names up to 75 characters go through unchanged."""
    api = Api(h, await new_key(h, "support-bot"))
    base = "/humanlayer/v1/contact_requests"
    long = "x" * 75
    try:
        for n, options in enumerate(([{"name": long + "a"}, {"name": long + "b"}], [{"title": "No name"}, {}],
                                     [{"name": str(i)} for i in range(11)], [{"name": "same"}, {"name": "same"}])):
            call = {"run_id": "support-bot", "call_id": f"opts-{n}", "spec": {"msg": "Which?", "response_options": options}}
            status, body, _ = await api.call("POST", base, json=call)
            assert status == 400 and body["error"]["field"] == "spec.response_options", body
            assert not await h.store.exists(hitl_id("hc", f"opts-{n}"))
        call = {"run_id": "support-bot", "call_id": "opts-ok", "spec": {"msg": "Which?", "response_options": [
            {"name": long, "title": "The long one"}, *({"name": str(i)} for i in range(9))]}}
        status, body, _ = await api.call("POST", base, json=call)
        assert status == 200, body
        rec = await h.store.get(hitl_id("hc", "opts-ok"))
        assert [o.value for o in rec.request.options] == [long, *map(str, range(9))]
    finally:
        await api.close()


async def test_hints_move_a_card_only_when_the_humanlayer_api_sealed_them(h: Harness) -> None:
    """`metadata.humanlayer` written by an agent itself (a queue entry, a REST request), or a
    sealed one copied onto another request, used to send the card wherever it named and let the
    agent pick its approver where the policy names none; it now only adds scrutiny."""
    plain = await h.card(await h.push(id="plain-1"))
    forged = {"channel": CHANNEL, "approvers": ["U0MALLORY"], "sig": "0" * 64}
    queued = await h.card(await h.push(id="forged-1", metadata={"humanlayer": forged}))
    assert queued.channel == plain.channel != CHANNEL and queued.route.approvers == plain.route.approvers
    assert queued.route.mode.value == "approve"  # the scrutiny stays: a person decides
    api = Api(h, await new_key(h, "billing-agent"))
    try:
        status, body, _ = await api.call("POST", "/v1/requests", json={
            "id": "forged-2", "agent": "billing-agent", "action": "refund", "summary": "Refund $5",
            "metadata": {"humanlayer": {"channel": CHANNEL, "approvers": ["U0MALLORY"]}}})
        assert status in (200, 201, 202), body
        rested = await h.card("forged-2")
        assert rested.channel == plain.channel and "U0MALLORY" not in rested.route.approvers
        # a sealed call's hints are honoured, for that call alone
        hl_key = await new_key(h, "billing-bot")
        status, _, _ = await api.call("POST", "/humanlayer/v1/function_calls", key=hl_key,
                                      json=_call("c-seal", reject_options=[{"name": "stale"}]))  # a title left out
        assert status == 200
        sealed = await h.card(hitl_id("fn", "c-seal"))
        assert sealed.channel == CHANNEL
        copied = (sealed.request.metadata.model_extra or {})["humanlayer"]
        assert copied.get("sig")
        replayed = await h.card(await h.push(id="replayed-1", metadata={"humanlayer": copied}))
        assert replayed.channel == plain.channel
    finally:
        await api.close()


LEVELS = """
defaults: {channel: "#approvals"}
tiers:
  low: {mode: approve, timeout: 4h, escalation: [{after: 10m, notify: ["U0LEAD"]}, {after: 1h, notify: ["U0HEAD"]}]}
  medium: {mode: approve, timeout: 4h, escalation: [{after: 10m, notify: ["U0LEAD"]}, {after: 1h, notify: ["U0HEAD"]}]}
  high: {mode: approve, timeout: 4h, escalation: [{after: 10m, notify: ["U0LEAD"]}, {after: 1h, notify: ["U0HEAD"]}]}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""


async def test_an_agents_escalation_uses_up_no_policy_level(redis_url: str, tmp_path: Path) -> None:
    """escalate_email used to record the policy's next level as reached without telling its
    people: the lead of level 1 was never told, and the head came next. Now it brings Dave in
    and the policy's levels come at their times, each telling its people."""
    async with under(LEVELS, redis_url, tmp_path) as (h, api):
        assert (await api.call("POST", "/humanlayer/v1/function_calls", json=_call("c-levels")))[0] == 200
        rid = hitl_id("fn", "c-levels")
        await h.card(rid)
        status, _, _ = await api.call("POST", "/humanlayer/v1/agent/function_calls/c-levels/escalate_email", json={
            "escalation_msg": "please look", "channel": {"slack": {"channel_or_user_id": "U0DAVE"}}})
        assert status == 200
        rec = await h.store.get(rid)
        assert rec.escalation_level == 0 and rec.escalated_to == ["U0DAVE"]
        assert h.bot.scheduler is not None
        h.bot.scheduler.clock = lambda: time.time() + 11 * 60
        h.bot.scheduler.kick()

        async def level_one() -> Any:
            r = await h.store.get(rid)
            return r if r.escalation_level == 1 else None

        rec = await eventually(level_one, what="the policy's first level")
        assert rec.escalated_to == ["U0DAVE", "U0LEAD"]
        assert "0:U0LEAD" in await h.store.notices_sent(rid)  # the lead was told


async def test_an_agents_escalation_is_timed_from_its_call_not_from_the_request(redis_url: str,
                                                                               tmp_path: Path) -> None:
    """escalate_email on a request two hours old tells people at once: its time to escalate is
    the moment of the call to the notice, not the request's age (which raised a false 'time to
    escalate' warning and skewed its p90)."""
    async with under(LEVELS, redis_url, tmp_path) as (h, api):
        assert (await api.call("POST", "/humanlayer/v1/function_calls", json=_call("c-old")))[0] == 200
        rid = hitl_id("fn", "c-old")
        await h.card(rid)
        key = h.store.keys.request(rid)
        created, rest = str(await h.store.redis.hget(key, "intake")).split(" ", 1)
        await h.store.redis.hset(key, "intake", f"{int(created) - 2 * 3600 * 1000} {rest}")
        status, _, _ = await api.call("POST", "/humanlayer/v1/agent/function_calls/c-old/escalate_email", json={
            "escalation_msg": "please look", "channel": {"slack": {"channel_or_user_id": "U0DAVE"}}})
        assert status == 200
        [detail] = [e.detail for e in await h.store.trail(rid) if e.event == "escalated"]
        assert 0 <= detail["seconds"] < 60
