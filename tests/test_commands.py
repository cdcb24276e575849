"""`/hitl` end to end: signed slash commands from the emulator, the bot's replies, its effects."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from blocks.commands import COMMANDS, OPEN_CARD, audit_message, queue_message
from blocks.ids import ActionId, BlockId
from blocks.text import escape
from bot.policy import PolicyEngine
from bot.stats import policy_lines
from store.models import AuditEvent, Mode, Record, Request, Route, Status, utcnow
from store.stats import StatsStore
from tests.harness import Harness, start, start_bot, stop
from tests.test_blocks import check_blocks
from tests.util import eventually

POLICY = """
admins: ["U0ADMIN"]
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve, quorum: 2, timeout: 1h}
rules:
  - name: no_crypto
    when: '"crypto" in request.risk.tags'
    mode: deny
    reason: crypto payments are not allowed
triggers:
  first_use: {enabled: false}
batching: {enabled: false}
"""
LOOKUP = {"agent": "support-bot", "action": "lookup_order", "summary": "Look up order 4711",
          "confidence": 0.95}


_OUR_LINK = re.compile(r"<https?://[^|<>\s]+\|" + re.escape(OPEN_CARD) + ">")


def check_blocks_with_links(blocks: list[dict[str, Any]]) -> None:
    """Slack's limits and no unsafe `<...>`, allowing only links whose label is our own words."""
    check_blocks(json.loads(_OUR_LINK.sub("", json.dumps(blocks))))


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


async def hitl(h: Harness, text: str, user: str = "U0ALICE", channel: str = "#general") -> dict[str, Any]:
    """Run `/hitl text` as `user`; the reply, which must be ephemeral and well formed."""
    before = len(h.emu.ephemerals(user))
    reply = await h.emu.slash_command(user, channel, "/hitl", text)
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["response_type"] == "ephemeral"
    shown = h.emu.ephemerals(user)
    assert len(shown) == before + 1 and shown[-1]["text"] == body["text"]  # shown to the asker
    assert not h.emu.block_errors, h.emu.block_errors
    check_blocks_with_links(body["blocks"])
    return dict(body)


def words(reply: dict[str, Any]) -> str:
    return json.dumps(reply["blocks"], ensure_ascii=False)


async def counted(h: Harness, **expected: int) -> None:
    """Wait until the stats projector has counted everything and the totals are as expected."""
    stats = StatsStore(h.store.redis, h.store.keys)

    async def done() -> bool:
        totals = await stats.totals()
        return await stats.lag() == 0 and all(totals.get(k.replace("__", ":"), 0) == v
                                              for k, v in expected.items())

    await eventually(done, what=f"stats {expected}")


async def test_help_lists_every_command_and_unknown_shows_it(h: Harness) -> None:
    for text in ("help", "", "frobnicate now"):
        reply = await hitl(h, text)
        for usage, _ in COMMANDS:
            assert f"/hitl {escape(usage)}" in words(reply)
    assert "I don't know `frobnicate`" in words(reply)
    assert not h.emu.ephemerals("U0BOB")  # nobody else sees it
    assert not h.emu.messages("#general")


@pytest.mark.cluster_too
async def test_pause_by_an_admin_sends_everything_to_people_and_survives_a_restart(
        h: Harness, policy_file: Path) -> None:
    assert (await h.client.wait(await h.push(**LOOKUP), timeout=10)).status is Status.auto_approved
    reply = await hitl(h, "pause Incident 42: the refund agent misbehaves", user="U0ADMIN")
    assert "Automation paused" in words(reply)
    assert (await h.store.control())["reason"] == "Incident 42: the refund agent misbehaves"
    paused = [e for e in await h.store.audit_entries() if e.event == "paused"]
    assert paused and paused[0].actor == "U0ADMIN"

    rid = await h.push(**LOOKUP)
    rec = await h.card(rid)
    assert rec.route.mode is Mode.approve and rec.route.paused
    card = json.dumps(h.message(rec)["blocks"])
    assert "Automation paused" in card and "Incident 42" in card

    # a restart: the new bot reads the switch from Redis
    old = h.bot
    await old.stop()
    h.bots.remove(old)
    h.bot = await start_bot(h.redis_url, h.emu, port=old.port, policy=policy_file)
    h.bots.append(h.bot)
    rid = await h.push(**LOOKUP)
    rec = await h.card(rid)
    assert rec.route.paused and "Incident 42" in json.dumps(h.message(rec)["blocks"])
    assert "Automation paused" in words(await hitl(h, "policy"))

    assert "Automation resumed" in words(await hitl(h, "resume", user="U0ADMIN"))
    assert (await h.client.wait(await h.push(**LOOKUP), timeout=10)).status is Status.auto_approved
    assert "not paused" in words(await hitl(h, "resume", user="U0ADMIN"))
    assert [e.event for e in await h.store.audit_entries() if e.event in ("paused", "resumed")] == [
        "paused", "resumed"]


async def test_a_pause_shows_on_every_open_card_until_resumed(h: Harness) -> None:
    rid = await h.push(summary="Refund $40", id="open-before-pause")
    rec = await h.card(rid)
    assert "Automation paused" not in json.dumps(h.message(rec)["blocks"])
    await hitl(h, "pause Incident 7", user="U0ADMIN")

    async def shows(text: str, present: bool) -> bool:
        return (text in json.dumps(h.message(await h.store.get(rid))["blocks"])) is present

    await eventually(lambda: shows("Incident 7", True), what="the open card shows the pause")
    await hitl(h, "resume", user="U0ADMIN")
    await eventually(lambda: shows("Automation paused", False), what="the banner goes on resume")


async def test_pause_and_resume_by_others_are_refused_and_audited(h: Harness) -> None:
    for command in ("pause stop everything", "resume"):
        reply = await hitl(h, command, user="U0BOB")
        assert "Only hitl admins can do this" in words(reply)
    assert (await h.store.control()).get("paused") is None
    refused = [e for e in await h.store.audit_entries() if e.event == "refused"]
    assert [(e.actor, e.detail["command"], e.detail["reason"]) for e in refused] == [
        ("U0BOB", "pause", "not_admin"), ("U0BOB", "resume", "not_admin")]
    assert (await h.client.wait(await h.push(**LOOKUP), timeout=10)).status is Status.auto_approved


async def test_queue_lists_waiting_requests_oldest_first_with_links(h: Harness) -> None:
    ids = []
    for i, amount in enumerate((100, 900, 50)):
        rid = await h.push(id=f"q{i}", summary=f"Refund ${amount} to customer {i}",
                           risk={"amount": amount})
        await h.card(rid)
        ids.append(rid)
    await h.click(await h.store.get("q2"), "U0ALICE", ActionId.approve)
    await h.decided("q2")
    reply = await hitl(h, "queue")
    text = words(reply)
    assert "Waiting for a person: 2" in text and "q2" not in text
    assert text.index("Refund $100") < text.index("Refund $900")
    assert "high tier" in text and "medium tier" in text and "0/2 approvals" in text
    rec = await h.store.get("q0")
    assert f"/archives/{rec.channel}/p{(rec.ts or '').replace('.', '')}" in text
    assert len(h.emu.calls_to("chat.getPermalink")) == 2


async def test_stats_from_a_known_history_with_a_chart(h: Harness) -> None:
    for i in range(2):
        assert (await h.client.wait(await h.push(**LOOKUP, id=f"auto{i}"), timeout=10)).approved
    denied = await h.client.wait(await h.push(id="crypto", risk={"tags": ["crypto"]}), timeout=10)
    assert denied.status is Status.denied
    for i in range(4):
        await h.card(await h.push(id=f"ap{i}", summary=f"Refund ${10 + i} to Ana"))
    await h.card(await h.push(id="esc", kind="escalation", summary="Customer asks for a person"))
    for rid in ("ap0", "ap1"):
        await h.click(await h.store.get(rid), "U0ALICE", ActionId.approve)
    await h.click(await h.store.get("ap2"), "U0BOB", ActionId.reject)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="reject modal")
    await h.emu.submit_view("U0BOB", view.id, {BlockId.reason_code.value: {"value": "risky"}})
    for rid in ("ap0", "ap1", "ap2"):
        await h.decided(rid)
    await counted(h, mode__auto=2, mode__deny=1, mode__approve=4, mode__escalate=1,
                  st__approved=2, st__rejected=1)

    reply = await hitl(h, "stats")
    text = words(reply)
    assert "the last 24 hours" in text
    assert "8: auto 2 · approve 4 · escalate 1 · deny 1" in text
    assert "62% sent to people" in text  # (4 + 1) / 8
    assert "3: approved 67% · rejected 33% · edited 0%" in text
    assert "Override rate* (edited or rejected)\\n33%" in text
    assert "2 waiting" in text and "(3)" in text  # queue; three decisions timed
    assert "lookup_order 2" in text and "support-bot 2" in text
    assert "<@U0ALICE> 2 · " in text and "<@U0BOB> 1 · " in text
    assert "too few to judge (8 requests" in text  # 8 requests: rates shown, not judged

    async def shared() -> list[Any]:
        return [c for c in h.emu.calls_to("files.completeUploadExternal") if c.ok]

    done = await eventually(shared, what="chart shared")
    (chart,) = h.emu.files.values()
    png = chart.content
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (900, 560)
    # as private as the reply: a DM with the asker, never the channel
    dm = done[0].args.get("channel_id")
    assert len(done) == 1 and dm != "C0GENERAL" and dm.startswith("D")
    assert not any(m.get("files") for m in h.emu.messages("#general"))
    assert any(m.get("files") for m in h.emu.messages(dm))

    assert "the last 7 days" in words(await hitl(h, "stats 7d"))
    assert "Use `/hitl stats 24h`" in words(await hitl(h, "stats 1y"))


async def test_policy_in_plain_words(h: Harness) -> None:
    text = words(await hitl(h, "policy"))
    for expected in ("Automation runs by policy", "*Low tier:* acts alone", "*Medium tier:* a "
                     "person approves first, in #approvals; anyone may decide; unanswered after "
                     "4h it is rejected", "2 different people approve first",
                     "*Rule no_crypto:*", "mode deny", "crypto payments are not allowed",
                     "off: first_use", "<@U0ADMIN>"):
        assert expected in text, expected


async def test_policy_says_when_a_change_was_refused(h: Harness, policy_file: Path) -> None:
    policy_file.write_text("tiers:\n  high: {quorum: 0}\n")
    assert not await h.bot.reload_policy()
    text = words(await hitl(h, "policy"))
    assert "The last change to" in text and "was refused" in text and "tiers.high.quorum" in text
    assert "*Rule no_crypto:*" in text  # the policy in force is still the earlier one
    policy_file.write_text(POLICY)
    await h.bot.reload_policy()
    assert "was refused" not in words(await hitl(h, "policy"))


async def test_audit_shows_who_did_what_and_when(h: Harness) -> None:
    rid = await h.push(id="trail-1")
    await h.click(await h.card(rid), "U0CAROL", ActionId.approve)
    await h.decided(rid)
    await eventually(lambda: _has(h, rid, "published"), what="published")
    text = words(await hitl(h, "audit trail-1"))
    for expected in ("Audit trail of trail-1", "*received* by _billing-agent_: action refund",
                     "*routed* by _policy_: approve in tier medium", "*posted*",
                     "*clicked* by <@U0CAROL>: approve", "*decided*", ": approved", "*published*",
                     "<!date^"):
        assert expected in text, expected
    assert text.index("*received*") < text.index("*clicked*") < text.index("*published*")
    assert "I have no request `nope`" in words(await hitl(h, "audit nope"))
    assert "Which request?" in words(await hitl(h, "audit"))


async def _has(h: Harness, rid: str, event: str) -> bool:
    return any(e.event == event for e in await h.store.trail(rid))


# ---- builders and the policy in words (no Slack, no Redis) ---------------------------------------


def test_policy_lines_describe_every_tier_and_escape_the_file() -> None:
    engine = PolicyEngine.from_yaml("""
admins: ["U0ADMIN", "U0BOSS"]
tiers:
  low: {mode: audit, sample: 0.1}
  high:
    mode: approve
    approvers: ["S0MANAGERS", "U0CAROL"]
    quorum: 2
    timeout: 2h
    reminder: 50%
    escalation:
      - {after: 30m, notify: ["#approvals-leads"]}
      - {after: 1h, notify: ["U0DAVE"]}
defaults: {tier: high}
rules:
  - name: odd
    when: 'request.summary.contains("<!channel>")'
    mode: deny
    reason: "no <@U0X> & pings"
triggers:
  read_only: {tier: low}
  amount_over_limit: {tier: high}
  irreversible: {tier: high}
  regulated_domain: {tier: high}
  negative_sentiment: {tier: high}
  keywords: {tier: high}
""", "test.yml")
    text = "\n".join(policy_lines(engine))
    assert "*Low tier:* acts at once; 10% reviewed afterwards." in text
    assert ("*High tier:* 2 different people approve first, in #approvals; only "
            "<!subteam^S0MANAGERS>, <@U0CAROL> may decide; unanswered after 2h it is rejected; "
            "reminder at 50% of the timeout; after 30m #approvals-leads is notified; after 1h "
            "<@U0DAVE> is notified.") in text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text and "<@U0X>" not in text
    assert "*Admins* (may pause and resume): <@U0ADMIN>, <@U0BOSS>." in text
    assert "amount_over_limit (amounts over 500)" in text


def test_queue_and_audit_replies_fit_slack() -> None:
    now = datetime.now(UTC)
    rec = Record(request=Request(id="r1", agent="a", action="b", summary="<!here> refund " * 30),
                 route=Route(quorum=2), created_at=now - timedelta(hours=3), channel="C1", ts="1.2")
    reply = queue_message([(rec, "https://x.slack.com/archives/C1/p12")] * 25, 40, now)
    check_blocks_with_links(reply["blocks"])
    text = json.dumps(reply)
    assert "waiting 3h" in text and "0/2 approvals" in text and "and 20 more" in text
    assert "<!here>" not in text
    events = [AuditEvent(event="clicked", request_id="r1", actor="U0ALICE", at=now,
                         detail={"choice": "reject", "reason_code": "risky", "reason": "<!channel>"})
              ] * 150
    reply = audit_message("r1", events)
    check_blocks(reply["blocks"])
    text = json.dumps(reply)
    assert len(reply["blocks"]) <= 50 and "50 later entries not shown" in text
    assert "<!channel>" not in text and "reject: risky &lt;!channel&gt;" in text


def test_the_audit_reply_escapes_the_id_as_typed_in_its_text() -> None:
    """`/hitl audit <!channel>`: the reply's blocks escaped the typed id, its text did not."""
    for events in ([], [AuditEvent(event="received", request_id="x", actor="agent", at=utcnow())]):
        reply = audit_message("<!channel>", events)
        assert "<!channel>" not in reply["text"] and "&lt;!channel&gt;" in reply["text"]


async def test_a_command_whose_words_say_payload_is_answered(h: Harness) -> None:
    """Bolt takes any form whose body contains `payload` for an interaction and, finding no
    `payload` field, parsed a slash command to nothing: `/hitl pause payload schema change`
    (or any command from a channel named #payloads) went unanswered and did nothing."""
    reply = await hitl(h, "pause payload schema change", user="U0ADMIN")
    assert "Automation paused" in reply["text"]
    assert (await h.store.control()).get("reason") == "payload schema change"
    assert "/hitl" in words(await hitl(h, "help payload"))
