"""Issue 10, point 11: only people of our own organisation act on cards. A guest from another
company in a Slack Connect channel (another team id in every payload) is refused with an
ephemeral explanation and an audit entry, and changes nothing; a team the policy names in
`external_teams` may act."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from blocks.ids import ActionId
from emulator.signing import sign
from handlers.org import is_ours
from store.models import State, Status
from tests.harness import SECRET, Harness, start, stop
from tests.util import eventually

POLICY = """
defaults: {channel: "#approvals"}
tiers:
  low: {mode: auto}
  medium: {mode: approve, timeout: 1h}
  high: {mode: approve, timeout: 1h}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""


async def guest(h: Harness, user_id: str, team_id: str, enterprise_id: str | None = None) -> None:
    """Add a Slack Connect guest over the emulator's control API."""
    body = {"id": user_id, "name": user_id.lower(), "team_id": team_id, "enterprise_id": enterprise_id}
    async with aiohttp.ClientSession() as s, s.post(f"{h.emu.url}/_emulator/add_user", json=body) as r:
        assert r.status == 200, await r.text()


async def harness(redis_url: str, tmp_path: Path, extra: str = "") -> Harness:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY + extra)
    return await start(redis_url, policy=policy)


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    harness_ = await harness(redis_url, tmp_path)
    yield harness_
    await stop(harness_)


async def _ephemeral(h: Harness, user: str) -> str | None:
    msgs = h.emu.ephemerals(user)
    return str(msgs[-1]["text"]) if msgs else None


async def test_a_guest_from_another_company_cannot_approve(h: Harness) -> None:
    await guest(h, "U0MALLORY", "T0OTHERCO")
    rid = await h.push()
    rec = await h.card(rid)
    await h.click(rec, "U0MALLORY", ActionId.approve)
    text = await eventually(lambda: _ephemeral(h, "U0MALLORY"), what="the refusal")
    assert "another organisation" in text and "Nothing was changed" in text
    after = await h.store.get(rid)
    assert after.state is State.pending and after.version == rec.version and not after.votes
    refused = [e for e in await h.store.trail(rid) if e.event == "outsider_refused"]
    assert len(refused) == 1 and refused[0].actor == "U0MALLORY" and refused[0].detail["team"] == "T0OTHERCO"
    # nor open the reject modal
    await h.click(rec, "U0MALLORY", ActionId.reject)
    assert h.emu.top_view("U0MALLORY") is None
    assert len([e for e in await h.store.trail(rid) if e.event == "outsider_refused"]) == 2
    # while our own people still decide
    await h.click(rec, "U0ALICE", ActionId.approve)
    assert (await h.client.wait(rid, timeout=10)).status is Status.approved


async def test_a_guest_cannot_use_the_slash_command(h: Harness) -> None:
    await guest(h, "U0MALLORY", "T0OTHERCO")
    reply = await h.emu.slash_command("U0MALLORY", "#approvals", "/hitl", "pause now")
    assert "another organisation" in json.dumps(reply.body)
    assert (await h.store.control()).get("paused") != "1"


async def test_a_team_named_in_the_policy_may_act(redis_url: str, tmp_path: Path) -> None:
    h = await harness(redis_url, tmp_path, "external_teams: [T0PARTNER]\n")
    try:
        await guest(h, "U0PAT", "T0PARTNER")
        await guest(h, "U0MALLORY", "T0OTHERCO")
        rid = await h.push()
        rec = await h.card(rid)
        await h.click(rec, "U0MALLORY", ActionId.approve)
        await eventually(lambda: _ephemeral(h, "U0MALLORY"), what="the refusal")
        await h.click(rec, "U0PAT", ActionId.approve)
        decision = await h.client.wait(rid, timeout=10)
        assert decision.status is Status.approved and decision.decided_by[0].user_id == "U0PAT"
    finally:
        await stop(h)


def test_ours_is_our_workspace_or_our_grid_organisation() -> None:
    none: frozenset[str] = frozenset()
    assert is_ours("T1", None, "T1", None, none)
    assert not is_ours("T2", None, "T1", None, none)
    assert not is_ours(None, None, "T1", None, none)
    assert is_ours("T2", "E1", "T1", "E1", none)  # another workspace of our Enterprise Grid org
    assert not is_ours("T2", "E2", "T1", "E1", none)
    assert is_ours("T2", "E2", "T1", "E1", frozenset({"E2"}))
    assert is_ours("T3", None, "T1", None, frozenset({"T3"}))


def test_a_guest_is_not_taken_for_one_of_ours_by_the_host_organisation() -> None:
    from handlers.org import clicker

    host = {"user": {"id": "U1", "team_id": "T0OTHERCO"}, "team": {"id": "T0HOST"}, "enterprise": {"id": "E0HOST"}}
    assert clicker(host) == ("U1", "T0OTHERCO", None)  # the host's org is not the guest's
    own = {"user": {"id": "U2", "team_id": "T0SIBLING"}, "team": {"id": "T0SIBLING"}, "enterprise": {"id": "E0HOST"}}
    assert clicker(own) == ("U2", "T0SIBLING", "E0HOST")
    assert is_ours(*clicker(own)[1:], "T0HOST", "E0HOST", frozenset())
    assert not is_ours(*clicker(host)[1:], "T0HOST", "E0HOST", frozenset())
    command = {"command": "/hitl", "user_id": "U3", "team_id": "T0HOST", "enterprise_id": "E0HOST"}
    assert clicker(command) == ("U3", "T0HOST", "E0HOST")


def _grid_click(rec_value: str, channel: str, user_id: str, org: str, action_ts: str) -> dict[str, object]:
    """A click as Slack sends it in an Enterprise Grid workspace (a workspace install):
    `user.team_id` is the organisation's id (E…), `team` the workspace, with its org."""
    return {"type": "block_actions", "api_app_id": "A0HITL", "trigger_id": f"trig-{action_ts}",
            "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": org},
            "team": {"id": "T0HITL", "domain": "hitl", "enterprise_id": "E0GRID", "enterprise_name": "Grid"},
            "enterprise": {"id": "E0GRID", "name": "Grid"}, "is_enterprise_install": False,
            "container": {"type": "message", "channel_id": channel, "message_ts": "1.1", "is_ephemeral": False},
            "actions": [{"action_id": ActionId.approve.value, "block_id": "b", "type": "button",
                         "value": rec_value, "action_ts": action_ts}]}


async def test_in_an_enterprise_grid_our_people_act_and_another_org_is_refused(h: Harness) -> None:
    """In an Enterprise Grid, Slack reports `user.team_id` as the organisation's id (E…), not the
    workspace's: a member of our own org must not be taken for an outsider, while a person whose
    org is another (a Slack Connect guest from another Grid) still is."""
    h.emu.ws.enterprise_id = "E0GRID"  # auth.test: our workspace is part of the E0GRID org
    await guest(h, "W0MALLORY", "E0OTHER")
    await guest(h, "W0ALICE", "E0GRID")
    rid = await h.push()
    rec = await h.card(rid)
    value = next(a["value"] for b in h.message(rec)["blocks"] if b.get("type") == "actions"
                 for a in b["elements"] if a.get("action_id") == ActionId.approve.value)

    async def post(payload: dict[str, object]) -> int:
        body = urlencode({"payload": json.dumps(payload)}).encode()
        headers = {**sign(SECRET, body, int(time.time())), "Content-Type": "application/x-www-form-urlencoded"}
        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{h.bot.port}/slack/events",
                                                        data=body, headers=headers) as r:
            return r.status

    assert await post(_grid_click(value, str(rec.channel), "W0MALLORY", "E0OTHER", "1.0001")) == 200
    refused = await eventually(lambda: _refusals(h, rid), what="the outsider's refusal")
    assert refused[0].actor == "W0MALLORY" and (await h.store.get(rid)).state is State.pending
    assert await post(_grid_click(value, str(rec.channel), "W0ALICE", "E0GRID", "1.0002")) == 200
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.approved and decision.decided_by[0].user_id == "W0ALICE"
    assert len(await _refusals(h, rid) or []) == 1


async def _refusals(h: Harness, rid: str) -> list[Any] | None:
    found = [e for e in await h.store.trail(rid) if e.event == "outsider_refused"]
    return found or None
