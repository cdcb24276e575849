"""Block Kit builders: shape, Slack's limits (round-tripped through slack_sdk), escaping."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from blocks.cards import approval_card, card, locked_card
from blocks.details import context_modal
from blocks.facts import voters
from blocks.ids import INPUT_ACTION, ActionId, BlockId, CallbackId, param_block_id
from blocks.messages import (
    MESSAGES,
    already_decided_message,
    error_message,
    message_for,
    not_allowed_message,
)
from blocks.modals import (
    REJECT_REASONS,
    Rejection,
    answer_modal,
    edit_modal,
    parse_answer_values,
    parse_edit_values,
    parse_reject_values,
    reject_modal,
)
from blocks.payloads import ButtonValue, ModalMeta
from blocks.text import ago, clip, escape, fmt_amount, fmt_time, fmt_value, truncate, user_mention
from store.models import (
    Ballot,
    Change,
    Choice,
    Decision,
    Record,
    Request,
    Route,
    State,
    Status,
    Vote,
)
from store.trust import Away

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
META = ModalMeta(r="r1", c="C123", t="1700000000.000100")
EVIL = "<!channel> see <http://evil.com|bank.com> & more <@U999> <!here>"


def make(route: Route | None = None, **fields: Any) -> Record:
    base: dict[str, Any] = {
        "id": "r1",
        "agent": "refund-bot",
        "action": "refund",
        "summary": "Refund order 123 for a late delivery",
    }
    req = Request.model_validate(base | fields)
    return Record(request=req, route=route or Route(), created_at=NOW, params=dict(req.params))


def decided(
    record: Record, status: Status, votes: Sequence[tuple[str, Choice]] = (), **kw: Any
) -> Record:
    vs = [
        Vote(user_id=u, name=u.lower(), choice=c, at=NOW + timedelta(minutes=5)) for u, c in votes
    ]
    d = Decision(
        request_id=record.id,
        status=status,
        decided_by=vs,
        decided_at=NOW + timedelta(hours=4),
        route=record.route,
        **kw,
    )
    return record.model_copy(
        update={
            "state": State.decided,
            "votes": vs,
            "decision": d,
            "changes": kw.get("changes", {}),
        }
    )


def huge() -> Record:
    long = "x&<>" * 750
    return make(
        summary=("& <b> " * 500)[:3000],
        params={f"param_{i}": long for i in range(3)} | {f"n{i}": i * 1000 for i in range(17)},
        editable=["param_0", "n1", "draft"],
        kind="review",
        draft=long,
        confidence=0.42,
        risk={
            "amount": 1e12,
            "currency": "EUR",
            "reversible": False,
            "domain": "d" * 50,
            "sentiment": -0.9,
            "tags": ["t" * 50] * 20,
        },
        context={
            "goal": long,
            "recommendation": long,
            "failure_reason": long,
            "conversation": [{"role": "r" * 50, "text": long} for _ in range(200)],
            "actions_attempted": [{"action": "a" * 300, "result": long, "ok": False}] * 50,
            "alternatives": [long] * 10,
            "customer": {f"k{i}": long for i in range(30)},
        },
        requested_by="U0REQ",
        metadata={"model": "m" * 300, "prompt_version": "p" * 300, "session_id": "s" * 300},
        route=Route(quorum=3, reasons=["r" * 3000] * 5, rules=["x"] * 20),
    )


# ---- limit checks that slack_sdk does not do -----------------------------------------

_SAFE_ANGLE = re.compile(r"^(@[UW][A-Z0-9]{2,30}|#[CGD][A-Z0-9]{2,30}|!date\^\d+\^[^|<>]*\|[^<>|]*)$")


def _texts(obj: Any) -> list[str]:
    """Every mrkdwn string anywhere in a block tree."""
    if isinstance(obj, dict):
        if obj.get("type") == "mrkdwn":
            return [obj["text"]]
        return [t for v in obj.values() for t in _texts(v)]
    if isinstance(obj, list):
        return [t for v in obj for t in _texts(v)]
    return []


def assert_safe(text: str) -> None:
    for m in re.finditer(r"<([^>]*)>", text):
        assert _SAFE_ANGLE.match(m.group(1)), f"unsafe <...> in mrkdwn: {m.group(0)[:80]}"
    assert "<!channel" not in text and "<!here" not in text and "<http" not in text


def check_blocks(blocks: list[dict[str, Any]]) -> None:
    for b in blocks:
        parsed = Block.parse(b)
        assert parsed is not None, b
        parsed.to_dict()  # raises on the limits slack_sdk knows
        if b["type"] == "section":
            assert "text" in b or "fields" in b
            if "text" in b:
                assert 1 <= len(b["text"]["text"]) <= 3000
            assert len(b.get("fields", [])) <= 10
            assert all(1 <= len(f["text"]) <= 2000 for f in b.get("fields", []))
        if b["type"] == "header":
            assert len(b["text"]["text"]) <= 150 and b["text"]["type"] == "plain_text"
        if b["type"] == "context":
            assert 1 <= len(b["elements"]) <= 10
            assert all(len(e["text"]) <= 3000 for e in b["elements"])
        if b["type"] == "actions":
            ids = [e["action_id"] for e in b["elements"]]
            assert len(ids) == len(set(ids)), "action_id repeated within a block"
            for e in b["elements"]:
                assert len(e["text"]["text"]) <= 75 and len(e["value"]) <= 2000
        if b["type"] == "input":
            el = b["element"]
            if el["type"] == "plain_text_input":
                assert el["max_length"] <= 3000
                assert len(el.get("initial_value", "")) <= el["max_length"]
    for t in _texts(blocks):
        assert_safe(t)


def check_message(msg: dict[str, Any]) -> None:
    assert set(msg) == {"text", "blocks"}
    assert 1 <= len(msg["text"]) <= 3000
    assert_safe(msg["text"])
    assert 1 <= len(msg["blocks"]) <= 50
    check_blocks(msg["blocks"])


def check_modal(view: dict[str, Any]) -> None:
    View(**view).to_dict()
    assert view["type"] == "modal"
    assert 1 <= len(view["title"]["text"]) <= 24
    assert len(view.get("submit", {}).get("text", "")) <= 24
    assert len(view["private_metadata"]) <= 3000
    assert 1 <= len(view["blocks"]) <= 100
    check_blocks(view["blocks"])


def block_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [b.get("block_id", "") for b in blocks]


def action_ids(msg: dict[str, Any]) -> list[str]:
    acts = [b for b in msg["blocks"] if b["type"] == "actions"]
    return [e["action_id"] for b in acts for e in b["elements"]]


def all_text(msg: dict[str, Any]) -> str:
    return "\n".join(_texts(msg["blocks"]))


# ---- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("a & b", "a &amp; b"),
        ("<http://evil|bank>", "&lt;http://evil|bank&gt;"),
        ("&amp;", "&amp;amp;"),
        ("plain", "plain"),
    ],
)
def test_escape(given: str, expected: str) -> None:
    assert escape(given) == expected


@pytest.mark.parametrize(
    ("s", "n", "expected"),
    [
        ("hello", 5, "hello"),
        ("hello world", 6, "hello…"),
        ("abc", 0, ""),
    ],
)
def test_truncate(s: str, n: int, expected: str) -> None:
    assert truncate(s, n) == expected and len(truncate(s, n)) <= n


def test_clip_never_splits_an_entity() -> None:
    for n in range(1, 30):
        out = clip("ab<<<<<<<<<<", n)
        assert len(out) <= n
        assert not re.search(r"&[a-z]*…$", out)


@pytest.mark.parametrize(
    ("value", "key", "expected"),
    [
        (True, "notify", "yes"),
        (False, "notify", "no"),
        (None, "x", "—"),
        (1200, "amount", "1,200.00"),
        (1234567, "order_id", "1234567"),
        (2.5, "ratio", "2.5"),
        ({"a": [1, 2]}, "x", '{"a":[1,2]}'),
        ("<@U1>", "x", "&lt;@U1&gt;"),
        ("", "x", "(empty)"),
    ],
)
def test_fmt_value(value: Any, key: str, expected: str) -> None:
    assert fmt_value(value, key=key) == expected


def test_fmt_value_truncates() -> None:
    assert len(fmt_value("y" * 5000, limit=100)) == 100
    assert len(fmt_value({"k": "<" * 5000}, limit=100)) <= 100


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (250, "USD", "$250.00"),
        (1200, "EUR", "€1,200.00"),
        (250, "JPY", "250.00 JPY"),
        (3.5, None, "3.50"),
        (10, "GBP", "£10.00"),
    ],
)
def test_fmt_amount(amount: float, currency: str | None, expected: str) -> None:
    assert fmt_amount(amount, currency) == expected


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        ("U123ABC", "<@U123ABC>"),
        ("W0AB", "<@W0AB>"),
        ("<!channel>", "&lt;!channel&gt;"),
        ("u123", "u123"),
        ("U1>x", "U1&gt;x"),
    ],
)
def test_user_mention(uid: str, expected: str) -> None:
    assert user_mention(uid) == expected


def test_dates_use_slack_formatting() -> None:
    e = int(NOW.timestamp())
    assert fmt_time(NOW) == f"<!date^{e}^{{date_short_pretty}} at {{time}}|2025-03-01 12:00 UTC>"
    assert ago(e) == f"<!date^{e}^{{ago}}|2025-03-01 12:00 UTC>"
    assert_safe(fmt_time(NOW))


# ---- cards ----------------------------------------------------------------------------------


CARDS = {
    "minimal": make(),
    "huge": huge(),
    "evil": make(
        summary=EVIL,
        agent="<!here>",
        params={"<b>": EVIL},
        draft=EVIL,
        kind="review",
        context={
            "recommendation": EVIL,
            "goal": EVIL,
            "conversation": [{"role": "<!channel>", "text": EVIL}],
        },
        risk={"tags": [EVIL[:50]], "domain": "<x>"},
        route=Route(reasons=[EVIL], tier="<!channel>"),
    ),
    "question": make(
        kind="question", options=["Yes", {"value": "no", "label": "No", "style": "danger"}]
    ),
    "question_free": make(kind="question"),
    "escalation": make(
        kind="escalation",
        context={
            "failure_reason": "API down",
            "actions_attempted": [{"action": "retry", "result": "500", "ok": False}],
        },
    ),
    "editable": make(
        params={"amount": 250, "note": "late"},
        editable=["amount", "note"],
        risk={"amount": 250, "currency": "USD", "reversible": False},
        confidence=0.72,
    ),
    "shadow": make(
        confidence=0.9, context={"recommendation": "approve it"}, route=Route(mode="shadow")
    ),
}


@pytest.mark.parametrize("name", list(CARDS))
@pytest.mark.parametrize("paused", [False, True])
def test_cards_fit_slack(name: str, paused: bool) -> None:
    record = CARDS[name]
    check_message(approval_card(record, paused=paused, paused_reason=EVIL, details=True))
    check_modal(context_modal(record, META))
    for status in Status:
        check_message(
            locked_card(
                decided(
                    record,
                    status,
                    [("U01", Choice.approve)],
                    reason=EVIL,
                    reason_code="<x>",
                    answer=EVIL,
                    option="no",
                )
            )
        )


def test_a_stand_in_s_approval_names_the_seat_it_took() -> None:
    record = CARDS["editable"].model_copy(update={
        "route": Route(tier="high", quorum=2),
        "votes": [Ballot(user_id="U0BOB", name="bob", choice=Choice.approve, at=NOW, seat="U0ALICE")]})
    assert "1 of 2 approvals: <@U0BOB> for <@U0ALICE>" in all_text(approval_card(record))
    two = record.model_copy(update={"votes": [*record.votes, Ballot(user_id="U0CAROL", name="carol",
                                                                     choice=Choice.approve, at=NOW)]})
    assert voters(two.votes) == "<@U0BOB> for <@U0ALICE> and <@U0CAROL>"


def test_card_layout() -> None:
    record = CARDS["editable"].model_copy(
        update={
            "route": Route(tier="medium", reasons=["rule: refunds over $100"], quorum=2),
            "votes": [Vote(user_id="U01", name="a", choice=Choice.approve, at=NOW)],
        }
    )
    record.request.requested_by = "U0REQ"
    msg = approval_card(record)
    text = all_text(msg)
    assert msg["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Approval needed: refund", "emoji": True},
    }
    assert "*Confidence*\n72%" in text and "*Amount*\n$250.00" in text
    assert ":warning: *Irreversible*" in text and "*amount*\n250.00" not in text  # shown once, as Amount
    assert "Medium tier · approve first: nothing runs until a person approves · rule: refunds over $100" in text
    assert "Request `r1`" in text
    assert "1 of 2 approvals: <@U01>" in text and "Requested for <@U0REQ>" in text
    assert msg["text"] == "Approval needed: refund — Refund order 123 for a late delivery"
    buttons = msg["blocks"][-1]
    assert buttons["block_id"] == BlockId.actions
    assert [e["action_id"] for e in buttons["elements"]] == [
        ActionId.approve,
        ActionId.edit,
        ActionId.reject,
    ]
    assert [e.get("style") for e in buttons["elements"]] == ["primary", None, "danger"]
    # approve and edit name the values the card shows; reject needs not
    shown = ButtonValue(r="r1", p=record.params_mark)
    assert [ButtonValue.unpack(e["value"]) for e in buttons["elements"]] == [shown, shown, ButtonValue(r="r1")]


def test_an_approval_of_values_edited_since_no_longer_counts() -> None:
    """The card counts approvals of the values as they stand, and says whose went stale."""
    record = CARDS["editable"].model_copy(update={"route": Route(tier="high", quorum=2)})
    before = record.params_mark
    edited = record.model_copy(update={
        "params": {**record.params, "amount": 1}, "votes": [
            Ballot(user_id="U0ALICE", name="alice", choice=Choice.approve, at=NOW, p=before)]})
    assert edited.params_mark != before and edited.approvals() == []
    text = all_text(approval_card(edited))
    assert "0 of 2 approvals (approved before an edit, so no longer counted: <@U0ALICE>)" in text


def test_escaping_in_card() -> None:
    msg = approval_card(make(summary="<!channel> see <http://evil.com|bank.com> & more"))
    summary = msg["blocks"][1]["text"]["text"]
    assert summary == "&lt;!channel&gt; see &lt;http://evil.com|bank.com&gt; &amp; more"
    assert "<" not in summary and "&lt;!channel&gt;" in msg["text"]


@pytest.mark.parametrize(("editable", "has_edit"), [([], False), (["amount"], True)])
def test_edit_button_only_when_editable(editable: list[str], has_edit: bool) -> None:
    msg = approval_card(make(params={"amount": 5}, editable=editable))
    assert (ActionId.edit in action_ids(msg)) is has_edit


def test_question_buttons() -> None:
    msg = approval_card(CARDS["question"])
    assert action_ids(msg) == ["hitl.option:0", "hitl.option:1", ActionId.answer]
    elements = msg["blocks"][-1]["elements"]
    assert ButtonValue.unpack(elements[1]["value"]) == ButtonValue(r="r1", o="no")
    assert elements[1]["style"] == "danger"
    assert action_ids(approval_card(CARDS["question_free"])) == [ActionId.answer]


def test_many_params_overflow_into_context() -> None:
    msg = approval_card(make(params={f"p{i}": i for i in range(9)}))
    assert "+3 more params" in all_text(msg)


def test_shadow_hides_agent_view() -> None:
    text = all_text(approval_card(CARDS["shadow"]))
    assert "Confidence" not in text and "approve it" not in text


def test_huge_card_is_truncated_not_dropped() -> None:
    msg = approval_card(huge())
    text = all_text(msg)
    assert "Draft shortened here" in text and "(last 3 of 200)" in text
    assert "⏸" not in text


def test_paused_warning_first() -> None:
    msg = approval_card(make(), paused=True, paused_reason="incident 42")
    assert msg["blocks"][0]["text"]["text"] == "⏸ *Automation paused:* incident 42"
    # every open card carries it, handovers too; a decided card does not
    handover = card(make(kind="escalation"), paused=True, paused_reason="R&D <freeze>")
    assert handover["blocks"][0]["text"]["text"] == "⏸ *Automation paused:* R&amp;D &lt;freeze&gt;"
    done = decided(make(), Status.approved, [("U01", Choice.approve)])
    assert "⏸" not in json.dumps(card(done, paused=True, paused_reason="incident 42"), ensure_ascii=False)


@pytest.mark.parametrize(
    ("status", "votes", "kw", "expected"),
    [
        (
            Status.approved,
            [("U01", Choice.approve)],
            {},
            ":white_check_mark: *Approved* by <@U01> at <!date^",
        ),
        (
            Status.approved,
            [("U01", Choice.approve), ("U02", Choice.edit)],
            {"changes": {"amount": Change(before=250, after=200)}},
            ":pencil2: *Approved with edits* by <@U01> and <@U02> at ",
        ),
        (
            Status.rejected,
            [("U02", Choice.reject)],
            {"reason_code": "policy", "reason": "no <refunds>"},
            ":x: *Rejected* by <@U02> at ",
        ),
        (Status.expired, [], {}, ":hourglass: *Expired:* no decision in 4h"),
        (
            Status.answered,
            [("U03", Choice.answer)],
            {"answer": "ship it"},
            ":speech_balloon: *Answered* by <@U03>",
        ),
    ],
)
def test_locked_outcomes(
    status: Status, votes: list[tuple[str, Choice]], kw: dict[str, Any], expected: str
) -> None:
    msg = locked_card(decided(make(params={"amount": 250}), status, votes, **kw))
    check_message(msg)
    outcome = msg["blocks"][1]["text"]["text"]
    assert outcome.startswith(expected)
    assert not any(b["type"] == "actions" for b in msg["blocks"])
    if kw.get("changes"):
        assert outcome.endswith(": Amount 250.00 → 200.00")
    if status is Status.rejected:
        assert outcome.endswith(" — reason: Against policy: no &lt;refunds&gt;")


def test_card_dispatches_on_state() -> None:
    record = make()
    assert action_ids(card(record))
    assert not action_ids(card(decided(record, Status.approved, [("U01", Choice.approve)])))


# ---- modals ---------------------------------------------------------------------------------


EDITABLE = make(
    params={
        "count": 3,
        "amount": 12.5,
        "notify": True,
        "note": "hi",
        "blank": None,
        "big": "z" * 4000,
    },
    editable=["count", "amount", "notify", "note", "blank", "big", "draft"],
    kind="review",
    draft="Dear customer,\nsorry.",
)


@pytest.mark.parametrize("record", [*CARDS.values(), EDITABLE], ids=[*CARDS, "editable_all"])
def test_modals_fit_slack(record: Record) -> None:
    for view in (reject_modal(record, META), edit_modal(record, META), answer_modal(record, META)):
        check_modal(view)
        assert view["private_metadata"] == META.pack()


def test_reject_modal() -> None:
    view = reject_modal(make(), META)
    assert view["callback_id"] == CallbackId.reject_modal
    assert view["title"]["text"] == "Reject request" and view["submit"]["text"] == "Reject"
    code, text = (b for b in view["blocks"] if b["type"] == "input")
    assert code["block_id"] == BlockId.reason_code and code["element"]["action_id"] == INPUT_ACTION
    assert [o["value"] for o in code["element"]["options"]] == [c for c, _ in REJECT_REASONS]
    assert text["block_id"] == BlockId.reason_text and text["optional"] is True


def test_edit_modal_input_types() -> None:
    view = edit_modal(EDITABLE, META)
    assert view["callback_id"] == CallbackId.edit_modal and view["submit"]["text"] == "Approve"
    inputs = {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
    assert inputs[param_block_id("count")] == {
        "type": "number_input",
        "action_id": INPUT_ACTION,
        "is_decimal_allowed": False,
        "initial_value": "3",
    }
    assert inputs[param_block_id("amount")]["is_decimal_allowed"] is True
    assert inputs[param_block_id("amount")]["initial_value"] == "12.5"
    assert inputs[param_block_id("notify")]["type"] == "radio_buttons"
    assert inputs[param_block_id("notify")]["initial_option"]["value"] == "true"
    assert inputs[param_block_id("note")]["type"] == "plain_text_input"
    assert inputs[param_block_id("note")]["multiline"] is False
    assert inputs[param_block_id("draft")]["multiline"] is True
    assert inputs[param_block_id("draft")]["initial_value"] == "Dear customer,\nsorry."
    assert param_block_id("big") not in inputs  # too long for a text input: shown, not editable
    assert "too long to edit here" in all_text(view)


def test_edit_modal_shows_current_params_and_the_agents_proposal() -> None:
    record = make(params={"amount": 250}, editable=["amount"]).model_copy(
        update={"params": {"amount": 200}, "changes": {"amount": Change(before=250, after=200)}}
    )
    block = next(b for b in edit_modal(record, META)["blocks"] if b["type"] == "input")
    assert block["element"]["initial_value"] == "200"
    assert block["hint"]["text"] == "The agent proposed: 250.00"


def _state(**values: dict[str, Any]) -> dict[str, Any]:
    return {param_block_id(k): {INPUT_ACTION: v} for k, v in values.items()}


def _num(s: str | None) -> dict[str, Any]:
    return {"type": "number_input", "value": s}


def _txt(s: str | None) -> dict[str, Any]:
    return {"type": "plain_text_input", "value": s}


def _yes(v: str) -> dict[str, Any]:
    return {"type": "radio_buttons", "selected_option": {"value": v}}


GOOD = {
    "count": _num("12"),
    "amount": _num("1,000.25"),
    "notify": _yes("false"),
    "note": _txt("bye"),
    "blank": _txt(None),
    "draft": _txt("Hi"),
}


def test_parse_edit_values_types() -> None:
    values, errors = parse_edit_values(EDITABLE, _state(**GOOD))
    assert errors == {}
    assert values == {
        "count": 12,
        "amount": 1000.25,
        "notify": False,
        "note": "bye",
        "blank": None,
        "draft": "Hi",
    }
    assert type(values["count"]) is int and type(values["amount"]) is float


@pytest.mark.parametrize(
    ("name", "element", "error"),
    [
        ("count", _num("abc"), "Enter a whole number."),
        ("count", _num("12.5"), "Enter a whole number."),
        ("count", _num(None), "Enter a whole number."),
        ("amount", _num("1,5"), "Enter a number."),
        ("amount", _num("nan"), "Enter a number."),
        ("amount", _num("-3"), "Enter an amount of 0 or more."),
        ("notify", _yes("maybe"), "Choose yes or no."),
        ("note", _txt("   "), "This can't be empty."),
        ("draft", _txt("x" * 3001), "Keep it under 3,000 characters."),
    ],
)
def test_parse_edit_values_errors(name: str, element: dict[str, Any], error: str) -> None:
    values, errors = parse_edit_values(EDITABLE, _state(**(GOOD | {name: element})))
    assert errors == {param_block_id(name): error}
    assert name not in values


@pytest.mark.parametrize(
    ("raw", "expected"), [("12", 12), ("12.0", 12), ("1,000", 1000), ("-4", -4)]
)
def test_parse_int(raw: str, expected: int) -> None:
    values, errors = parse_edit_values(EDITABLE, _state(**(GOOD | {"count": _num(raw)})))
    assert errors == {} and values["count"] == expected and type(values["count"]) is int


def test_parse_edit_values_missing_block() -> None:
    state = _state(**GOOD)
    del state[param_block_id("note")]
    _, errors = parse_edit_values(EDITABLE, state)
    assert set(errors) == {param_block_id("note")}


def _reject_state(code: str | None, text: str | None) -> dict[str, Any]:
    selected = {"value": code} if code else None
    return {
        BlockId.reason_code: {INPUT_ACTION: {"type": "radio_buttons", "selected_option": selected}},
        BlockId.reason_text: {INPUT_ACTION: {"type": "plain_text_input", "value": text}},
    }


@pytest.mark.parametrize(
    ("code", "text", "expected", "errors"),
    [
        ("policy", None, Rejection("policy", None), set()),
        ("risky", "  too big ", Rejection("risky", "too big"), set()),
        ("other", "see ticket", Rejection("other", "see ticket"), set()),
        ("other", " ", Rejection("other", None), {BlockId.reason_text}),
        (None, "x", Rejection("", "x"), {BlockId.reason_code}),
        ("made_up", None, Rejection("made_up", None), {BlockId.reason_code}),
    ],
)
def test_parse_reject_values(
    code: str | None, text: str | None, expected: Rejection, errors: set[str]
) -> None:
    got, errs = parse_reject_values(_reject_state(code, text))
    assert got == expected and set(errs) == errors


@pytest.mark.parametrize(
    ("text", "expected", "errors"),
    [
        (" yes, ship ", "yes, ship", set()),
        ("", "", {BlockId.answer_text}),
        (None, "", {BlockId.answer_text}),
    ],
)
def test_answer(text: str | None, expected: str, errors: set[str]) -> None:
    view = answer_modal(CARDS["question"], META)
    assert view["callback_id"] == CallbackId.answer_modal
    assert any(b.get("block_id") == BlockId.answer_text for b in view["blocks"])
    got, errs = parse_answer_values({BlockId.answer_text: {INPUT_ACTION: {"value": text}}})
    assert got == expected and set(errs) == errors


# ---- messages -------------------------------------------------------------------------------


def test_already_decided_message() -> None:
    msg = already_decided_message(decided(make(), Status.approved, [("U01", Choice.approve)]))
    e = int((NOW + timedelta(hours=4)).timestamp())
    assert (
        msg["text"]
        == f"Already approved by <@U01> <!date^{e}^{{ago}}|2025-03-01 16:00 UTC> — nothing changed."
    )
    check_message(msg)
    expired = already_decided_message(decided(make(), Status.expired))
    assert expired["text"].startswith("This request already expired <!date^")
    check_message(already_decided_message(make()))


def test_refusal_messages() -> None:
    for code in ("self_approval", "not_an_approver", "already_voted", "not_found", "error"):
        assert MESSAGES[code]
        check_message(not_allowed_message(message_for(code)))
    assert message_for("nope") == MESSAGES["error"]
    msg = error_message(EVIL)
    check_message(msg)
    assert "&lt;!channel&gt;" in msg["text"]


def test_the_amount_is_not_shown_twice() -> None:
    from blocks.cards import approval_card
    from store.models import Change, Record, Request, Route

    req = Request.model_validate({"id": "r1", "agent": "a", "action": "refund", "summary": "Refund",
                                  "params": {"amount": 250, "order": "4711"}, "editable": ["amount"],
                                  "risk": {"amount": 250, "currency": "USD"}})
    rec = Record(request=req, route=Route(), params=req.params, created_at=datetime(2026, 1, 1, tzinfo=UTC))
    fields = json.dumps([b for b in approval_card(rec)["blocks"] if b.get("fields")])
    assert fields.count("$250.00") == 1 and "*Order*" in fields  # humanised labels, never raw keys
    edited = rec.model_copy(update={"params": {"amount": 200, "order": "4711"},
                                    "changes": {"amount": Change(before=250, after=200)}})
    text = json.dumps(approval_card(edited)["blocks"])
    # the edited value in place, once; the summary marked as the agent's original
    assert "*Amount*\\n$200.00, _edited from $250.00_" in text and text.count("$250.00") == 1
    assert "The agent's original summary" in text


# ---- delegation on the card: the click check's rule (store.trust.stand_ins) --------------


def _note(message: dict[str, Any]) -> str:
    return " ".join(t for t in _texts(message["blocks"]) if "is away" in t)


@pytest.mark.parametrize(("kind", "mode"), [("approval", "approve"), ("escalation", "escalate")])
def test_an_open_card_names_who_decides_for_an_approver_away_now(kind: str, mode: str) -> None:
    away = {"U0ALICE": Away(user="U0ALICE", delegate="U0BOB", since=NOW, until=NOW + timedelta(days=3))}
    rec = make(Route(approvers=["U0ALICE", "U0CAROL"], mode=mode), kind=kind)
    msg = card(rec, absences=away, now=NOW)
    for b in msg["blocks"]:
        Block.parse(b).to_dict()  # type: ignore[union-attr]
    assert "<@U0ALICE> is away until" in _note(msg) and "<@U0BOB> decides for them" in _note(msg)
    assert _note(card(rec, absences=away, now=NOW + timedelta(days=3))) == ""  # the date came
    ended = {"U0ALICE": away["U0ALICE"].model_copy(update={"ended_at": NOW})}
    assert _note(card(rec, absences=ended, now=NOW)) == ""  # back early
    # the stand-in's own request: named, but as unable to decide it
    own = make(Route(approvers=["U0ALICE"], mode=mode), kind=kind, requested_by="U0BOB")
    assert "stands in but asked for this, so cannot decide it" in _note(card(own, absences=away, now=NOW))
    # a card that does not name the person, and a decided card, say nothing of it
    assert _note(card(make(Route(approvers=["U0CAROL"])), absences=away, now=NOW)) == ""
    assert _note(card(decided(rec, Status.approved, [("U0BOB", Choice.approve)]), absences=away, now=NOW)) == ""
