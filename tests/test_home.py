"""The App Home, published on `app_home_opened`: what waits for the viewer, health, pause, policy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.views import View

from blocks.home import home_view
from store.models import Record, Request, Route, utcnow
from store.stats import build_report
from tests.harness import Harness, start, stop
from tests.test_commands import check_blocks_with_links
from tests.util import eventually

POLICY = """
admins: ["U0ADMIN"]
defaults: {approvers: ["S0MANAGERS"]}
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve, approvers: ["U0CAROL"]}
batching: {enabled: false}
"""


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    harness = await start(redis_url, policy=path)
    yield harness
    await stop(harness)


async def home_of(h: Harness, user: str) -> str:
    """Open the Home tab as `user`; the published view's blocks as text."""
    published = len(h.emu.calls_to("views.publish"))
    reply = await h.emu.open_home(user)
    assert reply.status == 200

    async def done() -> bool:
        return len([c for c in h.emu.calls_to("views.publish") if c.ok]) > published

    await eventually(done, what=f"home of {user}")
    view = h.emu.home(user)
    assert view is not None and not h.emu.block_errors, h.emu.block_errors
    return json.dumps(view.to_slack()["blocks"], ensure_ascii=False)


async def test_home_shows_what_each_viewer_may_decide(h: Harness) -> None:
    await h.card(await h.push(id="medium-1", summary="Refund $40 to Ana"))
    await h.card(await h.push(id="high-1", summary="Refund $900 to Ben", risk={"amount": 900}))
    await h.card(await h.push(id="own-1", summary="Refund $30 to Alice", requested_by="U0ALICE"))
    alice = await home_of(h, "U0ALICE")  # a manager (user group), but asked for own-1 herself
    assert "Waiting for you: 1" in alice and "Refund $40 to Ana" in alice
    assert "Ben" not in alice and "Refund $30" not in alice
    assert "/archives/" in alice  # a link to the card
    carol = await home_of(h, "U0CAROL")
    assert "Waiting for you: 1" in carol and "Refund $900 to Ben" in carol and "Ana" not in carol
    bob = await home_of(h, "U0BOB")
    assert "Waiting for you: 2" in bob and "Refund $30 to Alice" in bob
    assert "Nothing is waiting for you" in await home_of(h, "U0DAVE")
    for text in (alice, bob):
        assert "The last 24 hours" in text and "Escalation rate" in text
        assert "Automation runs by policy" in text and "*High tier:*" in text


async def test_home_shows_the_pause_and_its_reason(h: Harness) -> None:
    await h.emu.slash_command("U0ADMIN", "#general", "/hitl", "pause migrating the ledger")
    text = await home_of(h, "U0BOB")
    assert "Automation paused* by <@U0ADMIN>" in text and "migrating the ledger" in text


def test_home_view_fits_slack_limits_with_hostile_text() -> None:
    now = utcnow()
    hostile = Record(request=Request(id="h1", agent="a", action="b", summary="<!channel> pay <@U0X>"),
                     route=Route(tier="<b>"), created_at=now)
    waiting = [(hostile, "https://example.slack.com/archives/C1/p1")] * 30
    report = build_report([(0, {"mode:approve": 3})], now_s=3600.0, queue_depth=0,
                          oldest_created_s=None)
    view: dict[str, Any] = home_view(waiting=waiting, waiting_total=30, report=report,
                                     pause="paused", policy=["line " * 100] * 200, now=now)
    View(**view).to_dict()
    assert view["type"] == "home" and len(view["blocks"]) <= 100
    check_blocks_with_links(view["blocks"])
    text = json.dumps(view)
    assert "<!channel>" not in text and "<@U0X>" not in text and "&lt;!channel&gt; pay" in text
    assert "and 20 more" in text


async def test_admins_pause_and_resume_from_the_home_tab(h: Harness) -> None:
    from blocks.ids import BlockId, HomeActionId

    rec = await h.card(await h.push(id="open-1", summary="Refund $40 to Ana"))
    assert "Pause automation" not in await home_of(h, "U0BOB")  # no switch for others
    assert "Pause automation" in await home_of(h, "U0ADMIN")
    home = h.emu.home("U0ADMIN")
    assert home is not None
    await h.emu.click_view("U0ADMIN", home.id, HomeActionId.pause)
    modal = await eventually(lambda: _top(h, "U0ADMIN"), what="the pause modal")
    result = await h.emu.submit_view("U0ADMIN", modal.id, {BlockId.reason_text.value: {"value": "R&D <freeze>"}})
    assert result.closed
    control = await eventually(h.store.control, what="paused")
    assert control["paused"] == "1" and control["reason"] == "R&D <freeze>" and control["by"] == "U0ADMIN"

    async def card_shows(text: str, present: bool) -> bool:
        return (text in json.dumps(h.message(rec)["blocks"], ensure_ascii=False)) is present

    await eventually(lambda: card_shows("R&amp;D &lt;freeze&gt;", True), what="the reason on the open card")
    assert "Resume automation" in await home_of(h, "U0ADMIN")
    home = h.emu.home("U0ADMIN")
    assert home is not None
    await h.emu.click_view("U0ADMIN", home.id, HomeActionId.resume)

    async def resumed() -> bool:
        return (await h.store.control()).get("paused") is None

    await eventually(resumed, what="resumed")
    await eventually(lambda: card_shows("Automation paused", False), what="the notice gone on resume")
    events = [e.event for e in await h.store.audit_entries() if e.event in ("paused", "resumed")]
    assert events == ["paused", "resumed"]


async def _top(h: Harness, user: str) -> Any:
    view = h.emu.top_view(user)
    return view if view is not None and view.to_slack().get("callback_id") == "hitl.home.pause_modal" else None


async def test_home_lists_questions_and_handovers_waiting_for_the_viewer(h: Harness) -> None:
    """Every kind a person decides is listed, by the choice its card offers (an answer, a
    resolution), not only approvals; a handover someone else took over is theirs alone."""
    await h.card(await h.push(id="q-1", kind="question", summary="Which carrier for order 88?"))
    esc = await h.card(await h.push(id="esc-1", kind="escalation", summary="Customer disputes a charge"))
    bob = await home_of(h, "U0BOB")
    assert "Waiting for you: 2" in bob and "Which carrier" in bob and "disputes a charge" in bob
    await h.click(esc, "U0ALICE", "hitl.take_over")

    async def taken() -> bool:
        return (await h.store.get("esc-1")).owner is not None

    await eventually(taken, what="taken over")
    bob = await home_of(h, "U0BOB")
    assert "Waiting for you: 1" in bob and "disputes a charge" not in bob
    assert "disputes a charge" in await home_of(h, "U0ALICE")


async def test_home_says_its_count_is_a_lower_bound_when_more_wait_than_it_looks_at(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Home looks at the SCAN oldest pending requests: with more waiting, it said
    "Waiting for you: N" for those alone, as if that were all."""
    import handlers.home

    for i in range(3):
        await h.card(await h.push(id=f"many-{i}", summary=f"Refund ${10 + i} to Ana"))
    assert "Waiting for you: 3\"" in await home_of(h, "U0BOB")
    monkeypatch.setattr(handlers.home, "SCAN", 2)
    bob = await home_of(h, "U0BOB")
    assert "Waiting for you: 2+" in bob and "Counted among the 2 oldest requests waiting" in bob
