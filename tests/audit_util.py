"""Shared by the evidence tests: real decisions through the store, and the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from store.models import Choice, Request, Route, utcnow
from store.redis_store import GROUP, Accepted, Store
from store.transitions import vote


async def decide(store: Store, rid: str, choice: Choice, *, params: dict[str, Any] | None = None,
                 edits: dict[str, Any] | None = None, reason_code: str | None = None,
                 reason: str | None = None, agent: str = "billing", user: str = "U0ALICE",
                 canary: bool = False) -> None:
    """Accept a request (as intake does; `canary`: routed as a known-answer item the bot
    injected) and let one person decide it."""
    req = Request.model_validate({"id": rid, "agent": agent, "action": "refund", "summary": "Refund $250",
                                  "params": params or {}, "editable": list((params or {}).keys()),
                                  "confidence": 0.7})
    await store.ensure_group()
    await store.redis.xadd(store.keys.requests, {"request": req.model_dump_json()})
    res = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=1)
    route = Route(rules=["refunds"], tier="medium", canary=canary)
    assert await store.accept(res[0][1][0][0], Accepted(req, route, None, post=True), utcnow()) == "accepted"
    rec = await store.get(rid)
    await store.apply(vote(rec, user_id=user, name="alice", choice=choice, now=utcnow(), edits=edits,
                           reason_code=reason_code, reason=reason), utcnow())


def hitl(args: list[str], env: dict[str, str], check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the `hitl` command as a user would."""
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, check=check, timeout=60)
