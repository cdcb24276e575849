"""Batch cards and their modals: Slack's limits, escaping, and what the reviewer is told."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from blocks.batch import batch_card
from blocks.batch_views import bulk_result_message, digest_card, one_by_one_modal, reject_all_modal
from blocks.payloads import BatchMeta
from store.errors import AlreadyDecided, NotAllowed
from store.models import Batch, Choice, Decision, Record, Request, Route, State, Status, Vote
from store.trust import Away

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
EVIL = "<!channel> see <http://evil.example|bank.com> & *bold*"


def _record(i: int, *, summary: str = "Delete /tmp/report.csv", decided: bool = False, **req: Any) -> Record:
    request = Request.model_validate({"id": f"r{i}", "agent": "files", "action": "delete_file",
                                      "summary": f"{summary} {i}", "params": {"path": f"/tmp/{i}"}, **req})
    rec = Record(request=request, route=Route(group="key:cleanup"), created_at=NOW, params=request.params,
                 batch="b1")
    if decided:
        vote = Vote(user_id="U0ALICE", name="alice", choice=Choice.approve, at=NOW)
        rec = rec.model_copy(update={"state": State.decided, "votes": [vote], "decision": Decision(
            request_id=request.id or "", status=Status.approved, decided_by=[vote], decided_at=NOW)})
    return rec


def _batch(n: int) -> Batch:
    return Batch(id="b1", group="key:cleanup", channel="#approvals", items=[f"r{i}" for i in range(n)],
                 created_at=NOW - timedelta(seconds=5))


def _check(blocks: list[dict[str, Any]], limit: int = 50) -> None:
    assert len(blocks) <= limit
    for b in blocks:
        assert Block.parse(b) is not None
        Block.parse(b).to_dict()  # raises on Slack's limits


@pytest.mark.parametrize("n", [2, 5, 40])
def test_batch_card_fits_slack(n: int) -> None:
    records = [_record(i, summary=EVIL * 40, risk={"reversible": False}) for i in range(n)]
    msg = batch_card(_batch(n), records)
    _check(msg["blocks"])
    text = json.dumps(msg)
    assert "<!channel>" not in text and "<http://evil" not in text and "&lt;!channel&gt;" in text
    actions = next(b for b in msg["blocks"] if b["type"] == "actions")
    assert [e["text"]["text"] for e in actions["elements"]] == [f"Approve all {n}", f"Reject all {n}",
                                                              "Review one by one"]
    confirm = actions["elements"][0]["confirm"]["text"]["text"]
    assert len(confirm) <= 300 and "delete_file" in confirm


def test_five_deletions_become_one_confirmation_with_the_list() -> None:
    records = [_record(i, risk={"reversible": False}) for i in range(5)]
    msg = batch_card(_batch(5), records)
    text = json.dumps(msg["blocks"])
    assert "Approving all runs *delete_file* 5 times" in text
    assert "5 of these cannot be undone" in text
    confirm = next(b for b in msg["blocks"] if b["type"] == "actions")["elements"][0]["confirm"]["text"]["text"]
    assert all(f"Delete /tmp/report.csv {i}" in confirm for i in range(5)) and "cannot be undone" in confirm
    assert sum(1 for b in msg["blocks"] if b.get("block_id", "").startswith("hitl.batch:b1:")) == 5


def test_a_batch_of_one_is_the_ordinary_card() -> None:
    msg = batch_card(_batch(1), [_record(0)])
    assert "hitl.approve" in json.dumps(msg["blocks"]) and "hitl.batch" not in json.dumps(msg["blocks"])


def test_decided_items_show_who_without_double_escaping() -> None:
    msg = batch_card(_batch(2), [_record(0, decided=True), _record(1)])
    line = next(b for b in msg["blocks"] if b.get("block_id") == "hitl.batch:b1:r0")["text"]["text"]
    assert "<@U0ALICE>" in line and "&lt;@" not in line and "accessory" not in json.dumps(
        next(b for b in msg["blocks"] if b.get("block_id") == "hitl.batch:b1:r0"))
    assert "Approve all 1" in json.dumps(msg["blocks"])


def test_modals_fit_slack() -> None:
    records = [_record(i, summary=EVIL * 30) for i in range(40)]
    meta = BatchMeta(b="b1", r="r0", c="C1", t="1.2")
    for view in (reject_all_modal(_batch(40), records, meta),
                 one_by_one_modal(_batch(40), records[0], (1, 40), meta, note="You cannot approve this one"),
                 one_by_one_modal(_batch(40), None, (0, 0), meta)):
        _check(view["blocks"], 100)
        assert len(view["title"]["text"]) <= 24 and len(view["private_metadata"]) <= 3000


def test_bulk_result_says_what_happened_to_each() -> None:
    done = _record(0, decided=True)
    waiting = _record(1)
    msg = bulk_result_message("approved", [
        ("r0", done, None), ("r1", waiting, None),
        ("r2", None, NotAllowed("self_approval", "x")), ("r3", None, AlreadyDecided(done))])
    text = msg["text"]
    assert text.startswith("Approved 1 of the 4 you saw.")
    assert "1 still need another approver" in text and "cannot approve it yourself" in text
    assert "1 had already been settled" in text


def test_digest_card() -> None:
    waiting = [_record(i) for i in range(25)]
    msg = digest_card("#approvals", waiting, 42.0, cleared=False)
    _check(msg["blocks"])
    text = json.dumps(msg["blocks"])
    assert "25 requests" in text and "delete_file 25" in text and "42 s" in text
    assert "cleared" in json.dumps(digest_card("#approvals", [], None, cleared=True))


def test_an_open_batch_shows_the_pause_and_a_settled_one_does_not() -> None:
    records = [_record(i) for i in range(3)]
    msg = batch_card(_batch(3), records, paused=True, paused_reason="Incident <7> & co")
    assert "⏸ *Automation paused:* Incident &lt;7&gt; &amp; co" in json.dumps(msg["blocks"], ensure_ascii=False)
    settled = [_record(i, decided=True) for i in range(3)]
    assert "⏸" not in json.dumps(batch_card(_batch(3), settled, paused=True, paused_reason="x"), ensure_ascii=False)


def test_the_block_budget_is_computed_even_past_max_items() -> None:
    """A batch bigger than any valid max_items (old data, a changed policy) still fits: settled
    items fold into one block, and waiting items past the room are left off the card and out
    of what its bulk buttons bind."""
    from blocks.payloads import BatchValue

    records = [_record(i, decided=i < 10, requested_by="U0ALICE", risk={"reversible": False}) for i in range(48)]
    msg = batch_card(_batch(48), records, paused=True, paused_reason="incident")
    _check(msg["blocks"])
    actions = next(b for b in msg["blocks"] if b["type"] == "actions")
    value = BatchValue.unpack(actions["elements"][0]["value"])
    assert value.n == 38 and value.i == 48 and "10 settled:" in json.dumps(msg["blocks"])
    waiting = [_record(i) for i in range(60)]
    msg = batch_card(_batch(60), waiting, paused=True, paused_reason="incident")
    _check(msg["blocks"])
    value = BatchValue.unpack(next(b for b in msg["blocks"] if b["type"] == "actions")["elements"][0]["value"])
    assert value.i == value.n == 45 and "15 more not shown yet" in json.dumps(msg["blocks"])


@pytest.mark.parametrize("settled", [0, 800])
def test_the_bulk_buttons_carry_the_mark_of_every_waiting_item_they_bind(settled: int) -> None:
    """However many items the card covers (800 settled ones of old data ahead of the waiting
    ones), the bulk value names each waiting item's values, so Approve all never approves unchecked."""
    from blocks.payloads import BatchValue

    records = [_record(i, decided=i < settled) for i in range(settled + 45)]
    msg = batch_card(_batch(settled + 45), records)
    _check(msg["blocks"])
    actions = next(b for b in msg["blocks"] if b["type"] == "actions")
    value = BatchValue.unpack(actions["elements"][0]["value"])
    assert value.i is not None and value.n
    marks = value.marks_of(_batch(settled + 45).items[:value.i])
    assert marks == {r.id: r.params_mark for r in records[settled:settled + value.n]}


def test_a_bulk_value_drawn_before_marks_carried_places_still_reads() -> None:
    from blocks.payloads import BatchValue

    assert BatchValue(b="b1", m=",abc,def").marks_of(["r0", "r1", "r2"]) == {"r0": "", "r1": "abc", "r2": "def"}
    assert BatchValue(b="b1", m="abc").marks_of(["r0", "r1"]) == {}  # not the card's items: nothing checked passes
    assert BatchValue(b="b1", m="1:abc,9:def").marks_of(["r0", "r1"]) == {"r1": "abc"}


@pytest.mark.parametrize("offer", [None, 3600])
def test_an_item_offers_a_grant_only_when_its_route_does(offer: int | None) -> None:
    records = [_record(i, editable=["path"]).model_copy(update={"route": Route(
        group="key:cleanup", grant_offer_s=offer)}) for i in range(40)]
    msg = batch_card(_batch(40), records)
    _check(msg["blocks"])
    menus = [b["accessory"]["options"] for b in msg["blocks"] if b.get("accessory", {}).get("type") == "overflow"]
    assert len(menus) == 40 and all(len(m) <= 5 for m in menus)
    values = [[o["value"].partition("|")[0] for o in m] for m in menus]  # an approval also names its values
    assert all(("grant" in v) is bool(offer) for v in values)
    if offer:
        assert menus[0][1]["text"]["text"] == "✅ Approve + allow similar 1h"
    # the bulk buttons never grant
    actions = next(b for b in msg["blocks"] if b["type"] == "actions")
    assert not any("similar" in e["text"]["text"] for e in actions["elements"])


def test_the_lead_names_stand_ins_by_the_card_rule() -> None:
    route = Route(group="key:cleanup", approvers=["U0ALICE", "U0DAN"])
    records = [_record(i).model_copy(update={"route": route}) for i in range(3)]
    away = {"U0ALICE": Away(user="U0ALICE", delegate="S0TEAM", since=NOW, until=NOW + timedelta(days=1)),
            "U0DAN": Away(user="U0DAN", delegate="U0BOB", since=NOW - timedelta(days=2), until=NOW)}
    lead = json.dumps(batch_card(_batch(3), records, absences=away, now=NOW)["blocks"][1])
    assert "<@U0ALICE> is away until" in lead and "<!subteam^S0TEAM> decides for them" in lead
    assert "U0DAN" not in lead  # his date has come
    assert lead.count("decides for them") == 1  # one line for the same absence on every item
    later = json.dumps(batch_card(_batch(3), records, absences=away, now=NOW + timedelta(days=1))["blocks"])
    assert "is away" not in later
    assert "is away" not in json.dumps(batch_card(_batch(3), records)["blocks"])  # absences unknown


def test_a_card_filled_to_the_text_limit_keeps_its_warnings_whole() -> None:
    """Items fill the card's text up to Slack's limit with room kept for the bulk buttons and the
    footer; that room must hold their confirmations (300 characters each), or Slack's limit is
    met by cutting the longest text, the lead, and its warnings go first."""
    from blocks.kit import MESSAGE_TEXT_MAX, text_size

    records = [_record(i, summary="S" * 300, agent=f"agent-{i}-" + "a" * 90, action=f"act_{i}_" + "b" * 90,
                       params={"order_id": "X" * 200, "amount": 5, "note": "n" * 300}, editable=["amount"],
                       requested_by=f"U0R{i}", risk={"amount": 100 + i, "currency": "USD", "reversible": False})
               for i in range(45)]
    msg = batch_card(_batch(45), records, paused=True, paused_reason="p" * 600)
    _check(msg["blocks"])
    lead = msg["blocks"][1]["text"]["text"]
    assert lead.endswith("Requested for <@U0R0>, <@U0R1>, <@U0R10>, <@U0R11>, <@U0R12>"), lead[-80:]
    assert text_size(msg["blocks"]) <= MESSAGE_TEXT_MAX


def test_the_lead_of_a_card_that_cannot_show_every_item_describes_what_approve_all_does() -> None:
    """Past the room, waiting items wait for a later drawing: the lead's "Approving all runs ...
    moving $X in total" and its warnings must be about the items Approve all acts on."""
    from blocks.payloads import BatchValue

    records = [_record(i, risk={"amount": 10, "currency": "USD", "reversible": i < 46}) for i in range(60)]
    msg = batch_card(_batch(60), records)
    value = BatchValue.unpack(next(b for b in msg["blocks"] if b["type"] == "actions")["elements"][0]["value"])
    assert value.n == 46  # no pause notice: 46 items fit
    lead = msg["blocks"][1]["text"]["text"]
    assert "*delete_file* 46 times, moving $460.00 in total" in lead and "cannot be undone" not in lead
    assert "14 more not shown yet" in msg["blocks"][-1]["elements"][0]["text"]
