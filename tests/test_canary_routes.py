"""A canary looks exactly like a real request of its route: the same card where real ones get a
card, none where the policy lets real ones run (or refuses them) without a person; a canary the
policy would never show anyone is refused when the canary file is loaded (docs/trust.md)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blocks.ids import ActionId, BlockId
from bot.policy.engine import PolicyEngine
from bot.policy.load import PolicyError
from store.models import Mode, Status
from tests.harness import Harness, running
from tests.util import eventually

ROOT = Path(__file__).resolve().parent.parent

POLICY = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
trust:
  after: 1
  promote: [{after: 1, lower_tier: 1}]
  canaries: {file: canaries.jsonl, share: 0.5}
"""

BODY: dict[str, Any] = {"agent": "refund-bot", "action": "refund", "summary": "Refund $950 to a card ending 0000",
                        "params": {"order": "A-77", "card": "0000"}}
CANARY = {**BODY, "answer": "reject", "why": "The order was paid with the card ending 4242."}


def _shape(h: Harness, request_id: str, message: dict[str, Any]) -> str:
    """A card's blocks with its request id, clock times and Slack's own block ids blanked."""
    ours = {b.value for b in BlockId}
    blocks = [{k: v for k, v in b.items() if k != "block_id" or v in ours} for b in message["blocks"]]
    text = json.dumps(blocks, sort_keys=True).replace(request_id, "<id>")
    return re.sub(r"\d{1,2}:\d\d|<!date\^\d+\^[^>]*>|\d{4}-\d\d-\d\d", "<t>", text)


async def _decided(h: Harness, request_id: str) -> Any:
    async def stored() -> bool:
        return bool(await h.store.exists(request_id))

    await eventually(stored, what=f"{request_id} stored")
    return await h.decided(request_id)


async def _next_canary(h: Harness, seen: set[str], batch: list[int]) -> str:
    """Push real requests of another action (which reach people) until a new canary is queued."""
    pattern = h.store.trust.k.canary("*")

    async def found() -> str | None:
        keys = [k for k in await h.store.redis.keys(pattern) if not k.endswith(":scored")]
        fresh = sorted({k.rsplit(":", 1)[1] for k in keys} - seen)
        if fresh:
            return fresh[0]
        batch[0] += 1
        await h.push(agent="pay-bot", action="pay", summary=f"Pay invoice {batch[0]}", id=f"pay-{batch[0]}")
        return None

    rid = str(await eventually(found, what="a canary"))
    seen.add(rid)
    return rid


async def test_a_canary_is_shown_only_as_a_real_request_of_its_route_would_be(
        redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "canaries.jsonl").write_text(json.dumps(CANARY) + "\n")
    async with running(redis_url, tmp_path, POLICY) as h:
        seen: set[str] = set()
        batch = [0]
        # while the action is not trusted, real refunds ask a person: so does the canary, on the same card
        await h.push(**BODY, id="real-1")
        real = await h.card("real-1")
        canary = await _next_canary(h, seen, batch)
        fake = await h.card(canary)
        assert real.route.mode is fake.route.mode is Mode.approve and fake.route.canary
        assert _shape(h, canary, h.message(fake)) == _shape(h, "real-1", h.message(real))
        # people approve the real one: the action is trusted and promoted to the tier that runs alone
        await h.click(real, "U0BOB", ActionId.approve)
        await h.decided("real-1")
        await h.click(fake, "U0BOB", ActionId.reject)
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="reject modal")
        await h.emu.submit_view("U0BOB", view.id, {BlockId.reason_code.value: {"value": "wrong_action"}})
        await h.decided(canary)

        async def promoted() -> bool:
            return (await h.store.trust.state("refund-bot", "refund")).trusted

        await eventually(promoted, what="refund trusted")
        await h.push(**BODY, id="real-2")
        real2 = await _decided(h, "real-2")
        assert real2.route.mode is Mode.auto and real2.route.tier == "low" and not real2.ts
        # a canary of that action now gets no card either: it runs as the real ones do, scored for nobody
        canary2 = await _next_canary(h, seen, batch)
        fake2 = await _decided(h, canary2)
        assert fake2.decision is not None and fake2.decision.status is Status.auto_approved
        assert (fake2.route.mode, fake2.route.tier) == (real2.route.mode, real2.route.tier)
        assert fake2.route.canary and not fake2.ts and not fake2.channel
        published = [f["request_id"] for _, f in await h.store.redis.xrange(h.store.keys.decisions)]
        assert canary2 not in published


CONFIDENT = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve}
rules:
  - {name: wipes, when: 'request.action == "wipe"', mode: deny}
trust:
  canaries: {file: canaries.jsonl, share: 0.1}
"""


def test_a_canary_the_policy_never_shows_a_person_is_refused_at_load(tmp_path: Path) -> None:
    rows = [CANARY,                                            # medium: approve
            {**CANARY, "confidence": 0.6},                     # low tier, audit: acts, then reviewed
            {**CANARY, "confidence": 0.93},                    # high confidence: low tier, auto
            {**CANARY, "action": "wipe", "answer": "reject"}]  # denied by a rule
    (tmp_path / "canaries.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    policy = tmp_path / "policy.yml"
    policy.write_text(CONFIDENT)
    with pytest.raises(PolicyError) as e:
        PolicyEngine.from_file(policy)
    problems = e.value.errors
    assert len(problems) == 3, problems
    assert "item 2: the policy routes it to audit (tier low: Moderate confidence (60%)" in problems[0]
    assert "item 3: the policy routes it to auto (tier low: High confidence (93%))" in problems[1]
    assert "no person would see it" in problems[1]
    assert "item 4: the policy routes it to deny (tier medium: Rule wipes)" in problems[2]
    out = subprocess.run([sys.executable, "-m", "bot.cli", "policy", "check", str(policy)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 1 and "item 3: the policy routes it to auto" in out.stdout + out.stderr, out
    # the first alone is fine
    (tmp_path / "canaries.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert len(PolicyEngine.from_file(policy).canaries) == 1


ROUTES = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve, grants: true}
  high:   {mode: approve}
rules:
  - {name: shadow_emails, when: 'request.action == "send_email"', mode: shadow}
  - {name: takeovers, when: 'request.action == "close_account"', mode: escalate}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
trust:
  canaries: {file: canaries.jsonl, share: 0.5}
"""

BODIES: list[dict[str, Any]] = [
    {**BODY, "risk": {"amount": 40, "currency": "USD"}},  # a tier whose cards offer "Approve and allow similar"
    {"agent": "mail-bot", "action": "send_email", "summary": "Email Bo his card number", "confidence": 0.93,
     "context": {"recommendation": "Send it, Bo asked for it"}},
    {"agent": "care-bot", "action": "close_account", "summary": "Close Bo's account and delete his data",
     "context": {"goal": "Bo asked to leave", "recommendation": "Close it"}},
]


async def test_every_route_that_reaches_people_shows_a_canary_as_its_real_cards(
        redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "canaries.jsonl").write_text("\n".join(json.dumps({**b, "answer": "reject"}) for b in BODIES) + "\n")
    async with running(redis_url, tmp_path, ROUTES) as h:
        for i, body in enumerate(BODIES):
            await h.push(**body, id=f"real-{i}")
        seen: set[str] = set()
        batch = [0]
        found: dict[str, str] = {}
        while len(found) < len(BODIES):
            rid = await _next_canary(h, seen, batch)
            found.setdefault((await h.card(rid)).request.action, rid)
        for i, body in enumerate(BODIES):
            real, fake = await h.card(f"real-{i}"), await h.card(found[body["action"]])
            assert real.route.model_dump(exclude={"canary"}) == fake.route.model_dump(exclude={"canary"})
            assert _shape(h, fake.id, h.message(fake)) == _shape(h, real.id, h.message(real)), body["action"]
        fakes = [await h.card(found[b["action"]]) for b in BODIES]
        assert [f.route.mode for f in fakes] == [Mode.approve, Mode.shadow, Mode.escalate]
        assert ActionId.approve_grant.value in json.dumps(h.message(fakes[0]))  # the offer, as on real cards
        assert "93%" not in json.dumps(h.message(fakes[1]))  # the agent's view hidden, as on real cards
