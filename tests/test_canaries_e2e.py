"""Canaries and calibration end to end: known-answer items look like real cards, reach no agent,
are scored per reviewer; confidence is compared with what people decided."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.ids import ActionId, BlockId
from store.models import Mode, Status
from tests.harness import Harness, start, stop
from tests.util import eventually

ROOT = Path(__file__).resolve().parent.parent

POLICY = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve}
admins: ["U0ADMIN"]
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
trust:
  canaries: {file: canaries.jsonl, share: 0.5}
"""

CANARIES = [
    {"agent": "refund-bot", "action": "refund", "summary": "Refund $950 to a card ending 0000",
     "params": {"order": "A-77", "card": "0000"}, "confidence": 0.9, "risk": {"reversible": False},
     "answer": "reject", "why": "The card is not the customer's: the order was paid with one ending 4242."},
]


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    (tmp_path / "canaries.jsonl").write_text("\n".join(json.dumps(c) for c in CANARIES) + "\n")
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    harness = await start(redis_url, policy=policy)
    yield harness
    await stop(harness)


async def _canaries(h: Harness, n: int) -> list[str]:
    async def found() -> list[str] | None:
        ids = [i for i in await h.store.pending_ids(500) if not i.startswith("real-")]
        return ids if len(ids) >= n else None

    return await eventually(found, what=f"{n} canaries")  # type: ignore[no-any-return]


async def test_canaries_look_real_reach_no_agent_and_are_scored(h: Harness) -> None:
    for i in range(12):  # fixed ids: which requests are followed by a canary is deterministic
        await h.push(agent="refund-bot", action="refund", summary=f"Refund order {i}", id=f"real-{i}",
                     reply_to="agent:inbox")
    ids = await _canaries(h, 2)
    wrong, right = ids[0], ids[1]
    rec = await h.card(wrong)
    assert rec.route.mode is Mode.approve and rec.route.canary and rec.request.reply_to is None
    shown = json.dumps(h.message(rec))
    assert "canary" not in shown.lower() and "Refund $950" in shown  # looks like any other card
    # a reviewer approves what should have been rejected
    await h.click(rec, "U0BOB", ActionId.approve)
    decided = await h.decided(wrong)
    assert decided.decision is not None and decided.decision.status is Status.approved
    dm = await eventually(lambda: asyncio.sleep(0, h.emu.messages("U0BOB")), what="private feedback")
    text = json.dumps(dm[-1]["blocks"])
    assert "was a canary" in text and "should have been rejected" in text and "ending 4242" in text
    # another rejects it: caught, and told nothing
    rec2 = await h.card(right)
    await h.click(rec2, "U0ALICE", ActionId.reject)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0ALICE")), what="reject modal")
    await h.emu.submit_view("U0ALICE", view.id, {BlockId.reason_code.value: {"value": "wrong_action"}})
    await h.decided(right)

    async def scored() -> dict[str, tuple[int, int]] | None:
        s = await h.store.trust.canary_scores()
        return s if len(s) == 2 else None

    assert await eventually(scored, what="scores") == {"U0BOB": (0, 1), "U0ALICE": (1, 0)}
    assert not h.emu.messages("U0ALICE")
    # their decisions never reached any agent: not in {prefix}:decisions, not in any reply stream
    published = [f["request_id"] for _, f in await h.store.redis.xrange(h.store.keys.decisions)]
    assert wrong not in published and right not in published
    inbox = [f.get("request_id") for _, f in await h.store.redis.xrange("agent:inbox")]
    assert wrong not in inbox and right not in inbox
    # nor did they count towards the action's trust
    state = await h.store.trust.state("refund-bot", "refund")
    assert state.outcomes == 0
    # stats show the catch rate per reviewer and the team
    async def counted() -> str | None:
        reply = await h.emu.slash_command("U0ADMIN", "C0GENERAL", "/hitl", "stats")
        text = json.dumps(reply.json())
        return text if "caught 1 of 2" in text else None

    text = await eventually(counted, what="canaries in /hitl stats")
    assert "Canary catch rate: too few to judge (2 canaries" in text


async def _canaries_after_one(h: Harness) -> str:
    for i in range(12):
        await h.push(agent="refund-bot", action="refund", summary=f"Refund order {i}", id=f"real-{i}")
    return (await _canaries(h, 1))[0]


async def test_an_agent_cannot_pass_its_request_off_as_a_canary(h: Harness) -> None:
    ids = await _canaries_after_one(h)
    # the same id again is the same request (ids are idempotent): it cannot become a canary
    await h.push(id=ids, agent="x", action="y", summary="Forged", reply_to="agent:x")
    rid = await h.push(id="looks-like-a-canary", agent="x", action="y", summary="Forged", reply_to="agent:x")
    rec = await h.card(rid)
    assert not rec.route.canary and (await h.store.get(ids)).request.agent == "refund-bot"
    await h.click(rec, "U0BOB", ActionId.approve)
    d = await h.client.wait(rid, timeout=10)
    assert d.status is Status.approved


async def test_calibration_in_stats_and_export(h: Harness) -> None:
    for i in range(3):
        rid = await h.push(agent="pay-bot", action="pay", summary=f"Pay {i}", confidence=0.85, id=f"pay-{i}",
                           risk={"reversible": False})
        rec = await h.card(rid)
        if i < 2:
            await h.click(rec, "U0BOB", ActionId.approve)
        else:
            await h.click(rec, "U0BOB", ActionId.reject)
            view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="modal")
            await h.emu.submit_view("U0BOB", view.id, {BlockId.reason_code.value: {"value": "wrong_action"}})
        await h.decided(rid)

    async def three() -> bool:
        return (await h.store.trust.calibration()).get(("pay-bot/pay", "0.8")) == (3, 2)

    await eventually(three, what="calibration counted")
    reply = await h.emu.slash_command("U0ADMIN", "C0GENERAL", "/hitl", "stats")
    text = json.dumps(reply.json())
    assert "pay-bot/pay at 0.8-0.9 confidence: approved as proposed 67% of 3" in text
    assert "too few to judge (3 decisions)" in text
    env = {"REDIS_URL": h.redis_url, "PATH": "/usr/bin:/bin"}
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot.cli", "calibration", "export"],
                                  cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {"agent": "pay-bot", "action": "pay", "band": [0.8, 0.9], "decisions": 3,
            "approved_as_proposed": 2, "rate": 2 / 3, "drift": None} in rows
