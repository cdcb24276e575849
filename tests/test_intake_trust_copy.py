"""Intake's trust copy when it is full (MAX_TRUST), and a standing grant revoked between
routing and accept: neither may fail a batch or approve on a view that is no longer true."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import bot.intake
from bot.intake import Intake
from store.models import Mode
from store.redis_store import Store
from tests import test_intake_batch
from tests.test_intake_batch import _push, _take

trusting = test_intake_batch.trusting  # the fixture, shared


async def test_a_full_trust_copy_does_not_fail_the_batch(store: Store, trusting: Intake,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(bot.intake, "MAX_TRUST", 1)
    await _push(store, id="k-1", action="refund")
    await _take(trusting)
    assert "billing/refund" in trusting._trust
    # one batch: an action not in the copy first (read, and the full copy cleared), then one in it
    await _push(store, id="k-2", action="export")
    await _push(store, id="k-3", action="refund")
    with caplog.at_level(logging.ERROR, logger="hitl.intake"):
        await _take(trusting)
    assert (await store.get("k-3")).route.mode is Mode.approve
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], \
        [r.getMessage() for r in caplog.records]


GRANTING = test_intake_batch.TRUSTING.replace("defaults: {tier: low}", "defaults: {tier: medium}")


async def test_a_grant_revoked_between_routing_and_accept_approves_nothing(
        store: Store, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a revoke landing between intake's grant read and its accept (another replica, /hitl
    # grants) must stop the auto-approval: accept.lua checks the grant still stands. The revoke
    # is injected at that point (real Redis; the wrapper only forces the interleaving).
    from datetime import timedelta

    from bot.policy import PolicyEngine
    from store.models import utcnow
    from store.trust import Grant

    now = utcnow()
    g = Grant(id="g-1", agent="billing", action="refund", tier="medium", request_id="r0",
              created_at=now, expires_at=now + timedelta(hours=1))
    assert (await store.trust.vote_grant(g, "U1", 1, now, redact=store.redact, current=("U1", "U2", "U3")))[0] == "created"
    real = store.trust.matching_grant

    async def then_revoked(request: Any, at: Any, route: Any, **kw: Any) -> Any:
        found = await real(request, at, route, **kw)
        if found is not None:
            assert await store.trust.revoke(found.id, "U0ADMIN", utcnow(), redact=store.redact)
        return found

    monkeypatch.setattr(store.trust, "matching_grant", then_revoked)
    engine = PolicyEngine.from_yaml(GRANTING)
    i = Intake(store, lambda: engine, redis_url=redis_url, consumer="g1")
    await store.ensure_group()
    try:
        await _push(store, id="g-r1", action="refund")
        await _take(i)
    finally:
        await i.close()
    assert not await store.trust.grants()  # revoked (audited grant_revoked) before the accept ran
    rec = await store.get("g-r1")
    assert rec.route.grant is None and rec.decision is None, "auto-approved on a revoked grant"
