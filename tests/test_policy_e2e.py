"""Policy end to end: routing at intake, quorum from a user group, who may approve, reloads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.ids import ActionId
from bot.app import build_app
from bot.config import load_settings
from bot.policy import PolicyError
from store.models import Status
from tests.harness import Harness, start, stop
from tests.util import eventually

POLICY = """
defaults:
  channel: "#approvals"
tiers:
  low:    {mode: auto, sample: 0}
  medium: {mode: approve}
  high:   {mode: approve, channel: "#approvals-high", approvers: ["S0MANAGERS"], quorum: 2, timeout: 1h}
rules:
  - name: no_crypto
    when: request.action == "buy_crypto"
    mode: deny
    reason: "Crypto purchases are not allowed"
admins: ["U0ADMIN"]
triggers:
  first_use: {enabled: false}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    return path


@pytest.fixture
async def h(redis_url: str, policy_file: Path) -> AsyncIterator[Harness]:
    harness = await start(redis_url, policy=policy_file)
    yield harness
    await stop(harness)


async def _ephemeral(h: Harness, user: str) -> str:
    async def found() -> str | None:
        msgs = h.emu.ephemerals(user)
        return json.dumps(msgs[-1]) if msgs else None

    return str(await eventually(found, what=f"ephemeral to {user}"))


async def test_high_tier_needs_two_managers(h: Harness) -> None:
    rid = await h.push(summary="Pay invoice 88 of $750", confidence=0.99,
                       risk={"amount": 750, "currency": "USD"}, requested_by="U0DAVE")
    rec = await h.card(rid)
    assert rec.route.tier == "high" and rec.route.quorum == 2
    assert [m["ts"] for m in h.emu.messages("#approvals-high")] == [rec.ts]
    assert "amount_over_limit" in rec.route.rules
    assert any("$500" in r or "500" in r for r in rec.route.reasons), rec.route.reasons
    # outside the group
    await h.click(rec, "U0CAROL", ActionId.approve)
    assert "not one of the approvers" in await _ephemeral(h, "U0CAROL")
    # the requester may never approve their own request
    await h.click(rec, "U0DAVE", ActionId.approve)
    assert "cannot approve it yourself" in await _ephemeral(h, "U0DAVE")
    await h.click(rec, "U0ALICE", ActionId.approve)

    async def one_vote() -> bool:
        return len((await h.store.get(rid)).votes) == 1

    await eventually(one_vote, what="first approval")
    rec = await h.store.get(rid)
    assert rec.decision is None

    async def progress_shown() -> bool:
        return "1 of 2" in json.dumps(h.message(rec)["blocks"])

    await eventually(progress_shown, what="quorum progress on the card")
    # Alice cannot count twice
    await h.click(rec, "U0ALICE", ActionId.approve)
    assert "already voted" in await _ephemeral(h, "U0ALICE")
    await h.click(rec, "U0BOB", ActionId.approve)
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.approved
    assert [v.user_id for v in decision.decided_by] == ["U0ALICE", "U0BOB"]
    assert decision.route is not None and decision.route.tier == "high"
    refused = [e.detail["reason"] for e in await h.store.trail(rid) if e.event == "refused"]
    assert sorted(refused) == ["already_voted", "not_an_approver", "self_approval"]


async def test_one_rejection_ends_a_quorum_request(h: Harness) -> None:
    rid = await h.push(summary="Wire $9,000", risk={"amount": 9000, "currency": "USD"})
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.approve)

    async def one_vote() -> bool:
        return len((await h.store.get(rid)).votes) == 1

    await eventually(one_vote, what="first approval")
    await h.click(rec, "U0BOB", ActionId.reject)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="reject modal")
    await h.emu.submit_view("U0BOB", view.id, {"hitl.reason_code": {"value": "risky"}})
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.rejected and decision.reason_code == "risky"
    assert [v.choice.value for v in decision.decided_by] == ["approve", "reject"]


async def test_auto_and_deny_are_decided_at_intake_without_a_card(h: Harness) -> None:
    lookup = await h.push(action="lookup_order", summary="Look up order 4711", confidence=0.95)
    crypto = await h.push(action="buy_crypto", summary="Buy 1 BTC")
    auto = await h.client.wait(lookup, timeout=10)
    denied = await h.client.wait(crypto, timeout=10)
    assert auto.status is Status.auto_approved and auto.route is not None and auto.route.mode == "auto"
    assert denied.status is Status.denied and denied.reason == "Crypto purchases are not allowed"
    await asyncio.sleep(0.2)
    assert not h.emu.calls_to("chat.postMessage")


async def test_malformed_reload_keeps_the_policy_in_force(h: Harness, policy_file: Path) -> None:
    policy_file.write_text("tiers:\n  high: {quorum: 0}\n")
    assert not await h.bot.reload_policy()
    rejected = [e for e in await h.store.audit_entries() if e.event == "policy_rejected"]
    assert rejected and "quorum" in json.dumps(rejected[0].detail)
    crypto = await h.push(action="buy_crypto", summary="Buy 1 BTC")
    assert (await h.client.wait(crypto, timeout=10)).status is Status.denied  # old rules still apply
    policy_file.write_text(POLICY.replace("buy_crypto", "sell_crypto"))
    assert await h.bot.reload_policy()
    assert any(e.event == "policy_changed" for e in await h.store.audit_entries())


async def test_a_policy_change_goes_into_force_only_once_it_is_audited(h: Harness, policy_file: Path) -> None:
    """Redis refuses writes (out of memory) when the file changes: the new policy stays out of
    force (it used to go in with no `policy_changed` entry, ever). Once Redis takes writes again
    the watcher tries again, audits it, and only then routes by it."""
    from redis.exceptions import ResponseError

    before = h.bot.policy.digest
    r = h.store.redis
    await r.config_set("maxmemory-policy", "noeviction")
    await r.config_set("maxmemory", "1")
    try:
        policy_file.write_text(POLICY.replace("buy_crypto", "sell_crypto"))
        await asyncio.sleep(2.5)  # the file watcher (every 2 s) meets the change while Redis refuses
        with pytest.raises(ResponseError):
            await h.bot.reload_policy()  # SIGHUP, `/hitl policy reload`: the same
        assert h.bot.policy.digest == before and await _audited(h) is None
    finally:
        await r.config_set("maxmemory", "0")
    changed = await eventually(lambda: _audited(h), 10, "the change audited by the watcher")
    # installed right after its entry is written (the watcher may be between the two as we look)
    await eventually(lambda: asyncio.sleep(0, h.bot.policy.digest != before), 5, "the audited policy in force")
    assert changed.detail["digest"] == h.bot.policy.digest


async def _audited(h: Harness):  # type: ignore[no-untyped-def]
    """The `policy_changed` entry of a change (the one at start names no `previous`)."""
    return next((e for e in await h.store.audit_entries()
                 if e.event == "policy_changed" and e.detail.get("previous")), None)

def test_malformed_policy_at_start_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text('rules:\n  - name: r\n    when: "request.risk.amount >"\n    tier: high\n')
    settings = load_settings(slack_bot_token="xoxb-x", slack_signing_secret="s", policy=bad)
    with pytest.raises(PolicyError) as e:
        build_app(settings)
    assert "rules[0].when" in str(e.value)
