"""Every card, modal, Home view and reply hitl builds is one Slack would take: the validator of
tests/blockkit_limits.py (Slack's published Block Kit limits) held to the builders."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from blocks.batch import batch_card
from blocks.cards import card
from blocks.kit import button, header, option, section
from blocks.modals import edit_modal, reject_modal
from blocks.payloads import ModalMeta
from blocks.stats import stats_message
from blocks.trust import grants_message, trust_message
from store.models import Batch, Record, Request, Route
from store.stats import build_report
from store.trust import Grant, GrantBounds, TrustState
from tests.blockkit_limits import assert_message, assert_view, message_problems, view_problems


def _msg(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"text": "t", "blocks": list(blocks)}


@pytest.mark.parametrize(("message", "problem"), [
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
])
def test_the_validator_refuses_what_slack_refuses(message: dict[str, Any], problem: str) -> None:
    problems = message_problems(message)
    assert any(problem in p for p in problems), problems


def _modal(**over: Any) -> dict[str, Any]:
    return {"type": "modal", "callback_id": "c", "title": {"type": "plain_text", "text": "Title"},
            "submit": {"type": "plain_text", "text": "Go"}, "blocks": [section("s")], **over}


def _text_input(**el: Any) -> dict[str, Any]:
    return {"type": "input", "block_id": "i", "label": {"type": "plain_text", "text": "L"},
            "element": {"type": "plain_text_input", "action_id": "v", **el}}


@pytest.mark.parametrize(("view", "problem"), [
    (_modal(title={"type": "plain_text", "text": "t" * 25}), "view/title"),
    (_modal(private_metadata="m" * 3001), "private_metadata"),
    (_modal(callback_id="c" * 256), "callback_id"),
    (_modal(blocks=[section("s")] * 101), "101 blocks"),
    (_modal(blocks=[_text_input(initial_value="x" * 11, max_length=10)]), "initial_value"),
    (_modal(blocks=[_text_input(placeholder={"type": "plain_text", "text": "p" * 151})]), "placeholder"),
    (_modal(blocks=[{**_text_input(), "label": {"type": "plain_text", "text": " "}}]), "label: empty or blank"),
    ({k: v for k, v in _modal(blocks=[_text_input()]).items() if k != "submit"}, "needs submit"),
    ({"type": "home", "blocks": [section("s")] * 101}, "101 blocks"),
])
def test_the_validator_refuses_views_slack_refuses(view: dict[str, Any], problem: str) -> None:
    problems = view_problems(view)
    assert any(problem in p for p in problems), problems


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
