"""Sampling for review afterwards: audit mode reviews every action unless told a share."""

from __future__ import annotations

import json
from pathlib import Path

from bot.policy.engine import PolicyEngine
from store.models import Mode, Request, Status
from tests.harness import running

AUDIT_TIER = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: audit}
  high:   {mode: approve}
rules:
  - name: audit_mail
    when: request.action == "send_email"
    tier: low
    mode: audit
  - name: quiet_sync
    when: request.action == "sync"
    tier: low
    mode: audit
    sample: 0
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""


async def test_audit_mode_without_a_sample_reviews_every_action(redis_url: str, tmp_path: Path) -> None:
    """docs/policy.md: audit "acts at once like auto; a sample (by default every one) is posted
    for review afterwards". A tier or rule in audit mode that names no sample used to review
    none: audit mode was auto under another name, and no card ever came."""
    async with running(redis_url, tmp_path, AUDIT_TIER) as h:
        by_tier = await h.push(action="close_ticket", summary="Close ticket 7")
        by_rule = await h.push(action="send_email", summary="Email Ana")
        for rid in (by_tier, by_rule):
            d = await h.client.wait(rid, timeout=10)
            assert d.status is Status.auto_approved and d.route is not None
            assert d.route.mode is Mode.audit and d.route.sampled, rid
            rec = await h.card(rid)
            assert "This already ran on its own" in json.dumps(h.message(rec)["blocks"])
        reply = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "policy")
        assert "every one reviewed afterwards" in json.dumps(reply.json())


def test_an_explicit_share_still_decides() -> None:
    """`sample: 0` written out on an audit tier or rule is kept: none of it is reviewed."""
    engine = PolicyEngine.from_yaml(AUDIT_TIER.replace("medium: {mode: audit}", "medium: {mode: audit, sample: 0}"),
                                    "t")
    for action in ("close_ticket", "sync"):
        r = engine.route(Request(agent="a", action=action, summary="s", id="x1"))
        assert r.mode is Mode.audit and not r.sampled, action

