"""Every card, modal, Home view and reply hitl builds is one Slack would take: the validator of
tests/blockkit_limits.py (Slack's published Block Kit limits) held to the builders, by hand for
the cases that once failed and by property tests over requests and states at the protocol's
bounds (3,000-character texts, 200 conversation turns, 10 options of 75 characters, 20
editable params, 60 voters, 30 escalation targets, batches at max_items, long reasons)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.batch import BATCH_ITEMS_MAX, batch_card
from blocks.batch_views import (
    DigestCounts,
    bulk_result_message,
    digest_card,
    one_by_one_modal,
    queue_modal,
    reject_all_modal,
)
from blocks.cards import card
from blocks.commands import (
    audit_message,
    help_message,
    pause_message,
    paused_line,
    policy_message,
    queue_message,
    usage_message,
)
from blocks.details import context_modal
from blocks.escalation import escalation_note, escalation_notice, owned_message, reminder_message
from blocks.home import home_view, pause_modal
from blocks.kit import button, header, option, section
from blocks.messages import already_decided_message, error_message, not_allowed_message
from blocks.modals import (
    answer_modal,
    edit_modal,
    hand_back_modal,
    reject_modal,
    reply_modal,
    resolve_modal,
)
from blocks.payloads import BatchMeta, ModalMeta
from blocks.stats import audit_line, stats_message
from blocks.text import clip, truncate
from blocks.trust import (
    away_message,
    calibration_lines,
    canary_feedback,
    demotion_notice,
    grants_home,
    grants_message,
    trust_message,
)
from emulator import Emulator
from emulator.blockcheck import check_blocks, check_view
from store.errors import AlreadyDecided, NotAllowed
from store.models import (
    AgentMessage,
    AuditEvent,
    Ballot,
    Batch,
    Change,
    Choice,
    Decision,
    Mode,
    Record,
    Request,
    Review,
    Route,
    State,
    Status,
    Vote,
)
from store.stats import Sign, build_report
from store.trust import Away, Grant, GrantBounds, TrustState
from tests.blockkit_limits import assert_message, assert_view, message_problems, view_problems
from tests.harness import TOKEN


def _msg(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"text": "t", "blocks": list(blocks)}


MESSAGE_CASES = [
    (_msg(*[section("x")] * 51), "51 blocks"),
    (_msg(*[section("x" * 3000)] * 5), "msg_blocks_too_long"),
    (_msg({"type": "header", "text": {"type": "plain_text", "text": "   "}}), "blank"),
    (_msg({"type": "header", "text": {"type": "mrkdwn", "text": "h"}}), "must be plain_text"),
    (_msg({"type": "section", "text": {"type": "mrkdwn", "text": "s", "emoji": True}}), "emoji"),
    (_msg({"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}), "1..10"),
    (_msg({"type": "actions", "elements": [button("b", f"a{i}", "v") for i in range(26)]}), "1..25"),
    (_msg({"type": "actions", "elements": [button("b", "a", "v"), button("c", "a", "v")]}), "duplicate action_id"),
    (_msg({"type": "actions", "elements": [{**button("b", "a", "v"), "text": {"type": "plain_text", "text": ""}}]}),
     "blank"),
    (_msg({"type": "actions", "elements": [button("b", "a", "v" * 2001)]}), "value"),
    (_msg({**section("s"), "accessory": {"type": "overflow", "action_id": "o", "options": [option("a", "1")]}}),
     "allowed 2..5"),
    (_msg({**section("s"), "accessory": {"type": "overflow", "action_id": "o",
                                         "options": [option("a", "v" * 151), option("b", "2")]}}), "value"),
    (_msg({**section("s"), "block_id": "b"}, {**section("t"), "block_id": "b"}), "duplicate block_id"),
    (_msg({**section("s"), "block_id": "b" * 256}), "block_id"),
    ({"text": "t" * 40_001, "blocks": [section("s")]}, "text: longer"),
    (_msg({"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}), "fields"),
    (_msg(header("h" * 150), section("s" * 3000), {"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}),
     "limit 3000"),
]


@pytest.mark.parametrize(("message", "problem"), MESSAGE_CASES)
def test_the_validator_refuses_what_slack_refuses(message: dict[str, Any], problem: str) -> None:
    problems = message_problems(message)
    assert any(problem in p for p in problems), problems


def _modal(**over: Any) -> dict[str, Any]:
    return {"type": "modal", "callback_id": "c", "title": {"type": "plain_text", "text": "Title"},
            "submit": {"type": "plain_text", "text": "Go"}, "blocks": [section("s")], **over}


def _text_input(**el: Any) -> dict[str, Any]:
    return {"type": "input", "block_id": "i", "label": {"type": "plain_text", "text": "L"},
            "element": {"type": "plain_text_input", "action_id": "v", **el}}


VIEW_CASES = [
    (_modal(title={"type": "plain_text", "text": "t" * 25}), "view/title"),
    (_modal(private_metadata="m" * 3001), "private_metadata"),
    (_modal(callback_id="c" * 256), "callback_id"),
    (_modal(blocks=[section("s")] * 101), "101 blocks"),
    (_modal(blocks=[_text_input(initial_value="x" * 11, max_length=10)]), "initial_value"),
    (_modal(blocks=[_text_input(placeholder={"type": "plain_text", "text": "p" * 151})]), "placeholder"),
    (_modal(blocks=[{**_text_input(), "label": {"type": "plain_text", "text": " "}}]), "label: empty or blank"),
    ({k: v for k, v in _modal(blocks=[_text_input()]).items() if k != "submit"}, "needs submit"),
    ({"type": "home", "blocks": [section("s")] * 101}, "101 blocks"),
]


@pytest.mark.parametrize(("view", "problem"), VIEW_CASES)
def test_the_validator_refuses_views_slack_refuses(view: dict[str, Any], problem: str) -> None:
    problems = view_problems(view)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(("message", "problem"), [
    (m, p) for m, p in MESSAGE_CASES if p not in ("msg_blocks_too_long", "text: longer")])  # checked per call
def test_the_emulator_refuses_those_blocks_too(message: dict[str, Any], problem: str) -> None:
    """So an end-to-end test of a card Slack would refuse fails as in Slack (invalid_blocks); it
    crashed on a mrkdwn text with `emoji`, and took blank buttons, headers and labels, overflow
    menus of one option and text inputs whose initial value is longer than their max_length."""
    assert check_blocks(message["blocks"]), problem


@pytest.mark.parametrize(("view", "problem"), VIEW_CASES)
def test_the_emulator_refuses_those_views_too(view: dict[str, Any], problem: str) -> None:
    assert check_view(view), problem


async def test_the_emulator_answers_invalid_blocks_for_a_blank_button() -> None:
    emu = Emulator(signing_secret="s", request_url=None, bot_token=TOKEN)
    await emu.start()
    try:
        async with aiohttp.ClientSession() as s:
            blank = {**button("x", "a", "v"), "text": {"type": "plain_text", "text": "  "}}
            async with s.post(f"{emu.api_url}chat.postMessage", headers={"Authorization": f"Bearer {TOKEN}"},
                              json={"channel": "#approvals", "text": "t",
                                    "blocks": [{"type": "actions", "elements": [blank]}]}) as r:
                answer = await r.json()
        assert answer["ok"] is False and answer["error"] == "invalid_blocks"
    finally:
        await emu.stop()


def test_the_validator_takes_what_slack_takes() -> None:
    assert message_problems(_msg(header("h" * 150), section("s" * 3000), section("t" * 3000))) == []
    assert view_problems(_modal(blocks=[_text_input(initial_value="x" * 3000, max_length=3000)])) == []


NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_trust_and_grants_replies_of_forty_long_entries_fit_one_message() -> None:
    """`/hitl trust` with 40 actions of long names and reasons, `/hitl grants` with grants whose
    bounds name long parameter values: each line fits a section, but 40 of them held more text
    than Slack takes in one message (msg_blocks_too_long), so the command's reply failed."""
    states = [TrustState(agent="billing-agent-" + "a" * 80 + str(i), action="refund_" + "b" * 90, pinned=True,
                         approvals=120, outcomes=130, overrides=3, changed_at=NOW.isoformat(),
                         changed_by="U0ADMIN", why="demoted after an override: " + "w" * 200) for i in range(40)]
    assert_message(trust_message(states, 20))
    bounds = GrantBounds(amount_max=500, params={"customer_segment": ["enterprise-" + "x" * 300] * 4})
    grants = [Grant(id=f"g{i}", agent="billing-agent", action="refund", tier="medium", request_id=f"r{i}",
                    bounds=bounds, created_at=NOW, expires_at=NOW, by=["U0ALICE"]) for i in range(40)]
    reply = grants_message(grants)
    assert_message(reply)
    shown = str(reply["blocks"])
    assert "`g0`" in shown and "do not fit in one Slack message" in shown  # says what it left out
    assert "grants revoke GRANT_ID" in shown  # the footer stays


@pytest.mark.parametrize("group", ["key:<!channel> payroll", "<!here>/<@U0BOSS>", "shadow:key:<!channel>"])
def test_a_batch_cards_notification_text_never_mentions_anyone(group: str) -> None:
    """A batch card's `text` (what the notification and screen readers say) carried the batch
    key, agent and action unescaped: an agent sending batch_key `<!channel>` pinged the channel."""
    agent, _, action = group.removeprefix("shadow:").partition("/")
    recs = [Record(request=Request(id=f"r{i}", agent=agent if action else "a", action=action or "b",
                                   summary="Refund $5", batch_key=group.partition("key:")[2] or None),
                   route=Route(group=group), created_at=NOW) for i in range(2)]
    msg = batch_card(Batch(id="b1", group=group, channel="#c", items=["r0", "r1"], created_at=NOW), recs)
    assert_message(msg)
    assert "<!" not in msg["text"] and "<@" not in msg["text"] and "&lt;" in msg["text"]


def test_blank_labels_from_agents_still_make_cards_and_forms_slack_takes() -> None:
    """An option label of spaces (the protocol takes any 1 to 75 characters), a HumanLayer reason
    title of spaces, a param named '' or ' ', a summary of spaces: each became a plain_text of
    only spaces (a button, a radio option, an input's label), which Slack refuses, so the card
    was undeliverable or the form did not open. The option's value stands in for its label."""
    req = Request.model_validate({
        "id": "q1", "agent": "a", "action": "ask", "summary": "   ", "kind": "question",
        "options": [{"value": "yes", "label": "   "}, {"value": " ", "label": " "}],
        "metadata": {"humanlayer": {"reject_options": [{"name": "too_risky", "title": "  "}]}}})
    rec = Record(request=req, route=Route(), created_at=NOW)
    msg = card(rec)
    assert_message(msg)
    buttons = [e["text"]["text"] for e in msg["blocks"][-1]["elements"]]
    assert buttons[0] == "yes"
    meta = ModalMeta(r="q1")
    reject = reject_modal(rec, meta)
    assert_view(reject)
    assert "too_risky" in str(reject["blocks"])
    edit = Request.model_validate({"id": "e1", "agent": "a", "action": "b", "summary": "s",
                                   "params": {"": 5, " ": "x"}, "editable": ["", " "]})
    assert_view(edit_modal(Record(request=edit, route=Route(), created_at=NOW, params=dict(edit.params)), meta))


def test_the_calibration_table_escapes_agent_names_once() -> None:
    """`/hitl stats` escaped the calibration lines a second time (clip of text already mrkdwn):
    an agent `R&D-bot` read `R&amp;D-bot` in Slack."""
    report = replace(build_report([(0, {"mode:approve": 3})], now_s=3600.0, queue_depth=0, oldest_created_s=None),
                     calibration=[("R&D-bot/<refund>", "0.8", 100, 80)] * 40)
    msg = stats_message(report)
    assert_message(msg)
    table = next(b["text"]["text"] for b in msg["blocks"] if "Agent confidence" in str(b))
    assert "R&amp;D-bot/&lt;refund&gt;" in table and "&amp;amp;" not in table and "&amp;lt;" not in table


# ---- property tests: every builder, from requests and states at the protocol's bounds ----------

CHUNK = st.sampled_from(["a", "Z9 ", "R&D ", "<!channel> ", "<@U0BOB>", "é💸", "*_~`", "   ", "a&b", "x\n"])
LENGTH = st.sampled_from([1, 2, 40, 75, 150, 300, 3000])


@st.composite
def texts(draw: st.DrawFn, most: int = 3000) -> str:
    """Agent text: hostile characters, often at the length a bound allows (3000, 75...)."""
    n = min(draw(LENGTH), most)
    return (draw(CHUNK) * n)[:n]


SCALAR = st.one_of(st.integers(-10**15, 10**15), st.floats(-1e15, 1e15, allow_nan=False), st.booleans(),
                   st.none(), texts(300))
VALUE = st.one_of(SCALAR, st.lists(texts(300), max_size=3), st.dictionaries(texts(20), texts(300), max_size=3))
KEY = st.one_of(st.sampled_from(["", " ", "amount", "order_id", "draft", "<!here>"]), texts(100))


@st.composite
def requests(draw: st.DrawFn, i: int = 0) -> Request:
    kind = draw(st.sampled_from(["approval", "review", "question", "escalation"]))
    params = draw(st.dictionaries(KEY, VALUE, max_size=12))
    scalars = sorted(k for k, v in params.items() if not isinstance(v, dict | list) and k != "draft")
    n_turns = draw(st.sampled_from([0, 3, 200]))
    turn = {"role": draw(texts(50)), "text": draw(texts())}
    options = [{"value": f"{j}" + draw(texts(74)), "label": draw(texts(75)),
                "style": draw(st.sampled_from([None, "primary", "danger"]))}
               for j in range(draw(st.integers(0, 10)) if kind == "question" else 0)]
    editable = draw(st.lists(st.sampled_from(scalars), unique=True, max_size=20)) if scalars else []
    draft = draw(st.none() | texts()) if kind != "review" else draw(texts())
    if draft is not None and draw(st.booleans()) and "draft" not in editable:
        editable.append("draft")
    return Request.model_validate({
        "id": f"r{i}-" + "x" * draw(st.sampled_from([0, 120])), "kind": kind,
        "agent": draw(texts(100)).strip() or "a", "action": draw(texts(100)).strip() or "b",
        "summary": draw(texts()), "params": params, "editable": editable, "draft": draft,
        "confidence": draw(st.none() | st.floats(0, 1)), "options": options,
        "requested_by": draw(st.none() | st.just("U0ALICE")),
        "batch_key": draw(st.none() | texts(128)),
        "risk": {"amount": draw(st.none() | st.floats(0, 1e15)), "currency": draw(st.none() | st.just("EUR")),
                 "reversible": draw(st.none() | st.booleans()), "domain": draw(st.none() | texts(50)),
                 "sentiment": draw(st.none() | st.floats(-1, 1)), "tags": [draw(texts(50))] * draw(st.integers(0, 20))},
        "context": {"goal": draw(st.none() | texts()), "recommendation": draw(st.none() | texts()),
                    "failure_reason": draw(st.none() | texts()), "conversation": [turn] * n_turns,
                    "actions_attempted": [{"action": draw(texts(300)), "result": draw(texts()), "ok": False}]
                    * draw(st.sampled_from([0, 50])),
                    "customer": {f"k{j}" + draw(texts(40)): draw(VALUE) for j in range(draw(st.sampled_from([0, 30])))},
                    "alternatives": [draw(texts())] * draw(st.integers(0, 10)),
                    "escalation_reason": draw(st.none() | st.just("user_requested"))},
        "metadata": {"session_id": draw(texts(300)), "model": draw(texts(300)), "tool_calls": 10**9,
                     "humanlayer": {"reject_options": [{"name": f"n{j}" + draw(texts(140)), "title": draw(texts(300))}
                                                       for j in range(draw(st.sampled_from([0, 10])))]}},
    })


PEOPLE = [f"U{i:08d}" for i in range(60)]


@st.composite
def records(draw: st.DrawFn, i: int = 0) -> Record:
    req = draw(requests(i))
    votes = [Ballot(user_id=u, name=draw(texts(100)), choice=Choice.approve, at=NOW,
                    seat=draw(st.none() | st.just("U0SEAT")))
             for u in PEOPLE[:draw(st.sampled_from([0, 1, 9, 60]))]]
    route = Route(mode=draw(st.sampled_from(list(Mode))), tier=draw(texts(100)).strip() or "t",
                  reasons=[draw(texts())] * draw(st.integers(0, 5)), rules=["confidence_low", "tool_call_loop", "keywords"],
                  quorum=draw(st.integers(1, 10)), approvers=PEOPLE[:draw(st.sampled_from([0, 50]))],
                  grant_offer_s=draw(st.none() | st.integers(1, 400 * 86400)), paused=draw(st.booleans()),
                  sampled=draw(st.booleans()))
    rec = Record(request=req, route=route, created_at=NOW, params=dict(req.params), votes=votes,
                 escalated_to=[f"#esc-{j}-" + draw(texts(80)) for j in range(draw(st.sampled_from([0, 30])))]
                 + ["C0OPS", "S0TEAM", "U0CAROL"],
                 escalation_level=draw(st.integers(0, 10**6)),
                 owner=draw(st.none() | st.just(Vote(user_id="U0OWNER", name="o", choice=Choice.take_over, at=NOW))),
                 messages=[AgentMessage(request_id=req.id or "", event="reply", text=draw(texts()),
                                        by=Vote(user_id="U0OWNER", name=draw(texts(100)), choice=Choice.reply, at=NOW),
                                        at=NOW)] * draw(st.sampled_from([0, 20])),
                 undeliverable=draw(st.none() | texts(300)))
    editable = [k for k in req.editable if k != "draft"]
    if editable and draw(st.booleans()):
        rec.changes = {k: Change(before=req.params[k], after=draw(SCALAR)) for k in editable}
        rec.params.update({k: c.after for k, c in rec.changes.items()})
    state = draw(st.sampled_from(["pending", *[s.value for s in Status], "reviewed"]))
    if state != "pending":
        status = Status.auto_approved if state == "reviewed" else Status(state)
        rec.state = State.decided
        rec.decision = Decision(request_id=rec.id, status=status, decided_at=NOW, decided_by=votes,
                                reason=draw(st.none() | texts()), reason_code=draw(st.none() | texts(150)),
                                answer=draw(st.none() | texts()), option=draw(st.none() | texts(75)))
        if state == "reviewed":
            rec.review = Review(verdict=draw(st.sampled_from(["ok", "wrong"])), by=votes[0] if votes else
                                Vote(user_id="U0REV", choice=Choice.reject, at=NOW),
                                reason_code=draw(texts(150)), reason=draw(texts()))
    return rec


OURS = re.compile(r"<(@[UW][A-Z0-9]{2,30}|#[CG][A-Z0-9]{2,30}|!subteam\^S[A-Z0-9]{2,30}|!date\^\d+\^[^|<>]*\|[^<>]*"
                  r"|https://acme\.slack\.com/archives/C1/p1\|[a-zA-Z ]+)>")
"""The mentions, dates and links hitl itself writes (users, channels, groups it was told to, a
card's permalink with fixed words): any other `<` or `>` came from agent text unescaped."""


def _texts(node: Any, kind: str) -> list[str]:
    if isinstance(node, list):
        return [t for n in node for t in _texts(n, kind)]
    if not isinstance(node, dict):
        return []
    if node.get("type") == kind and isinstance(node.get("text"), str):
        return [node["text"]]
    return [t for v in node.values() for t in _texts(v, kind)]


def _escaped_once(blocks: Any) -> None:
    """Agent text (which has no ';') escaped exactly once in mrkdwn, never in plain_text."""
    for text in _texts(blocks, "mrkdwn"):
        assert "&amp;amp;" not in text and "&amp;lt;" not in text and "&amp;gt;" not in text, text
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), f"bare or split entity in {text!r}"
        rest = OURS.sub("", text)
        assert "<" not in rest and ">" not in rest, f"unescaped or split <...> in {text!r}"
    for text in _texts(blocks, "plain_text"):
        assert "&amp;" not in text and "&lt;" not in text, f"escaped plain text {text!r}"


PROPS = settings(max_examples=30, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])


def _fits(msg: dict[str, Any]) -> None:
    assert_message(msg)
    _escaped_once(msg["blocks"])


def _opens(view: dict[str, Any]) -> None:
    assert_view(view)
    _escaped_once(view["blocks"])


@PROPS
@given(records(), st.booleans(), texts(500), st.booleans())
def test_any_request_in_any_state_gives_cards_and_modals_slack_takes(
        record: Record, paused: bool, reason: str, details: bool) -> None:
    absences = {u: Away(user=u, delegate="S0TEAM", until=NOW + timedelta(days=3), since=NOW) for u in PEOPLE[:10]}
    _fits(card(record, paused=paused, paused_reason=reason, details=details, absences=absences, now=NOW))
    meta = ModalMeta(r=record.id, c="C0APPROVALS", t="1700000000.000100", p=record.params_mark)
    for build in (reject_modal, edit_modal, answer_modal, reply_modal, resolve_modal, hand_back_modal, context_modal):
        _opens(build(record, meta))
    _opens(reject_modal(record, meta, after_the_fact=True))
    targets = [f"#{reason}", "S0TEAM", "U0CAROL", "C0OPS"] * 10
    for msg in (reminder_message(record, targets, 10**9, Status.expired),
                escalation_note(record, 10**6, targets, 10**9),
                escalation_notice(record, 10**6, 10**9, "https://acme.slack.com/archives/C1/p1"),
                owned_message(Vote(user_id="U0OWNER", choice=Choice.take_over, at=NOW)),
                already_decided_message(record), not_allowed_message(reason), error_message(reason),
                queue_message([(record, "https://acme.slack.com/archives/C1/p1")] * 30, 10**6, NOW),
                demotion_notice(record, "U0BOB", "override", 20),
                canary_feedback(record, "approve", {"answer": "reject", "why": reason})):
        _fits(msg)


@PROPS
@given(st.lists(records(), min_size=2, max_size=4), st.integers(2, BATCH_ITEMS_MAX),
       st.sampled_from(["key:", "shadow:key:", "review:", ""]), st.booleans(), texts(500))
def test_any_batch_at_max_items_gives_a_card_and_modals_slack_takes(
        samples: list[Record], n: int, kind: str, paused: bool, reason: str) -> None:
    recs = [samples[j % len(samples)].model_copy(update={
        "request": samples[j % len(samples)].request.model_copy(update={"id": f"item-{j:02d}-" + "i" * 110})})
        for j in range(n)]
    group = kind + (recs[0].request.batch_key or "refunds")
    batch = Batch(id="b" * 32, group=group, channel="C0APPROVALS", items=[r.id for r in recs], created_at=NOW)
    _fits(batch_card(batch, recs, paused=paused, paused_reason=reason))
    meta = BatchMeta(b=batch.id, r=recs[0].id, c="C0APPROVALS", t="1700000000.000100", i=n, h="h" * 12,
                     p=recs[0].params_mark)
    _opens(reject_all_modal(batch, recs, meta))
    _opens(one_by_one_modal(batch, recs[0], (1, n), meta, note=clip(reason, 2000)))
    _opens(one_by_one_modal(batch, None, (0, 0), meta))
    _opens(queue_modal(f"#{reason}", recs * 30, total=10**6))
    counts = DigestCounts(10**6, {f"{r.request.action}{j}": j for j, r in enumerate(recs * 5)},
                          {f"{r.route.tier}{j}": j for j, r in enumerate(recs * 5)})
    _fits(digest_card(f"#{reason}", recs, 10**9, cleared=False, counts=counts))
    _fits(digest_card(f"#{reason}", recs, None, cleared=True))
    errors = [NotAllowed("self_approval", "x"), AlreadyDecided(recs[0]), None]
    _fits(bulk_result_message("approved", [(r.id, r, errors[j % 3]) for j, r in enumerate(recs)],
                              arrived=10**6, gone=10**6))


@PROPS
@given(st.lists(records(), min_size=1, max_size=3), texts(500), st.booleans(), st.integers(0, 60))
def test_home_views_and_command_replies_slack_takes(
        samples: list[Record], reason: str, admin: bool, n_grants: int) -> None:
    report = replace(
        build_report([(0, {"mode:approve": 3})], now_s=3600.0, queue_depth=10**6, oldest_created_s=0.0),
        warnings=[Sign("c", reason, "U0BOB")] * 20, too_few=[Sign("d", reason)] * 20,
        top_actions=[(reason, 5)] * 10, top_agents=[(reason, 5)] * 10,
        calibration=[(f"{reason}/x", "0.8", 100, 5)] * 60, canaries=(10, 5),
        canary_reviewers=[("U0BOB", 5, 5)] * 20, by_mode={reason: 3})
    grants = [Grant(id=f"g{j}" + "x" * 40, agent=reason[:100] or "a", action="refund", tier="t", request_id="r",
                    bounds=GrantBounds(amount_max=1e15, params={reason[:50]: [reason] * 5}, absent=[reason[:50]]),
                    created_at=NOW, expires_at=NOW, by=PEOPLE[:10]) for j in range(n_grants)]
    trust = [*grants_home(grants, {g.id for g in grants}), header("Agent confidence vs. people"),
             section(truncate("\n".join(calibration_lines(report.calibration)), 2900))]
    waiting = [(samples[j % len(samples)], "https://acme.slack.com/archives/C1/p1") for j in range(10)]
    pause = paused_line(True, reason, "U0ADMIN", NOW)
    _opens(home_view(waiting=waiting, waiting_total=10**6, report=report, pause=pause,
                     policy=[clip(reason, 3000)] * 200, now=NOW, switch=admin if admin else None,
                     audit=audit_line(None, 0), trust=trust))
    _opens(pause_modal())
    states = [TrustState(agent=reason[:100] or "a", action=f"act{j}", pinned=True, changed_at=NOW.isoformat(),
                         changed_by="U0ADMIN", why=reason) for j in range(60)]
    events = [AuditEvent(id=f"{j}-0", request_id="r", event="clicked", actor=reason[:100] or "U0BOB", at=NOW,
                         detail={"choice": "reject", "reason": reason}) for j in range(150)]
    for msg in (stats_message(report, lag=10**6, chart=True, audit=audit_line(None, 0)),
                trust_message(states, 20), grants_message(grants), policy_message([clip(reason, 3000)] * 200, pause),
                audit_message(reason, events), help_message("/hitl", unknown=reason), usage_message(reason),
                pause_message("U0ADMIN", reason, was_paused=True),
                away_message(Away(user="U0BOB", delegate="S0TEAM", until=NOW, since=NOW), NOW)):
        _fits(msg)
