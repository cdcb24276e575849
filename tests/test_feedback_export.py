"""`hitl feedback export`: one record per human decision, with edits, reasons and signals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from store.models import Choice
from store.redis_store import Store
from tests.audit_util import decide, hitl


def records(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return lines[0], lines[1:]


async def history(store: Store) -> None:
    await decide(store, "edit1", Choice.edit, params={"amount": 250, "note": "x"}, edits={"amount": 200})
    await decide(store, "rej1", Choice.reject, reason_code="wrong_params", reason="amount is off by one")
    await decide(store, "pol1", Choice.reject, reason_code="policy", reason="never refund gift cards",
                 agent="giftcards", user="U0BOB")
    await decide(store, "ok1", Choice.approve)


async def test_edits_reasons_and_signals(store: Store, redis_url: str, tmp_path: Path) -> None:
    await history(store)
    out = tmp_path / "fb.jsonl"
    res = hitl(["feedback", "export", "--out", str(out)], {"REDIS_URL": redis_url})
    assert res.returncode == 0, res.stderr
    header, recs = records(out)
    assert header["format"] == "hitl-feedback" and header["version"] == 1
    by = {r["request_id"]: r for r in recs}
    assert set(by) == {"edit1", "rej1", "pol1", "ok1"}
    e = by["edit1"]
    assert (e["outcome"], e["edited"], e["signal"]) == ("approved", True, "teaching")
    assert e["diff"] == {"amount": {"before": 250, "after": 200}}
    assert e["params"] == {"amount": 250, "note": "x"} and e["final_params"]["amount"] == 200
    assert e["route"]["rules"] == ["refunds"] and e["confidence"] == 0.7
    assert e["reviewers"][0]["id"] == "U0ALICE" and e["seconds_to_decide"] is not None
    r = by["rej1"]
    assert (r["outcome"], r["reason_code"], r["reason"], r["signal"]) == (
        "rejected", "wrong_params", "amount is off by one", "teaching")
    assert by["pol1"]["signal"] == "policy" and by["ok1"]["signal"] == "confirmation"


async def test_filters_and_pseudonyms(store: Store, redis_url: str, tmp_path: Path) -> None:
    await history(store)
    out = tmp_path / "fb.jsonl"
    env = {"REDIS_URL": redis_url, "HITL_PSEUDONYM_KEY": "k1"}
    hitl(["feedback", "export", "--outcome", "rejected", "--pseudonymize", "--out", str(out)], env, check=True)
    header, recs = records(out)
    assert header["pseudonymized"] is True
    assert {r["request_id"] for r in recs} == {"rej1", "pol1"}
    ids = {r["request_id"]: r["reviewers"][0]["id"] for r in recs}
    assert "U0ALICE" not in out.read_text() and ids["rej1"].startswith("p_") and ids["rej1"] != ids["pol1"]
    hitl(["feedback", "export", "--agent", "billing", "--pseudonymize", "--out", str(out)], env, check=True)
    _, again = records(out)
    assert {r["request_id"] for r in again} == {"edit1", "rej1", "ok1"}
    assert {r["reviewers"][0]["id"] for r in again if r["request_id"] == "rej1"} == {ids["rej1"]}  # stable
    hitl(["feedback", "export", "--since", "2001-01-01", "--until", "2001-01-02", "--out", str(out)],
         env, check=True)
    assert len(out.read_text().splitlines()) == 1


def test_pseudonymize_without_a_key_is_refused(redis_url: str) -> None:
    res = hitl(["feedback", "export", "--pseudonymize"], {"REDIS_URL": redis_url})
    assert res.returncode == 2 and "HITL_PSEUDONYM_KEY" in res.stderr


async def test_automatic_outcomes_are_not_feedback(store: Store, redis_url: str, tmp_path: Path) -> None:
    from store.models import Decision, Request, Route, Status, utcnow
    from store.redis_store import GROUP, Accepted

    await decide(store, "ok1", Choice.approve)
    req = Request.model_validate({"id": "auto1", "agent": "billing", "action": "tag", "summary": "Tag it"})
    await store.redis.xadd(store.keys.requests, {"request": req.model_dump_json()})
    res = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=1)
    auto = Decision(request_id="auto1", status=Status.auto_approved, decided_at=utcnow())
    await store.accept(res[0][1][0][0], Accepted(req, Route(mode="auto"), auto, post=False), utcnow())
    out = tmp_path / "fb.jsonl"
    hitl(["feedback", "export", "--out", str(out)], {"REDIS_URL": redis_url}, check=True)
    _, recs = records(out)
    assert [r["request_id"] for r in recs] == ["ok1"]


async def test_canaries_are_not_feedback(store: Store, redis_url: str, tmp_path: Path) -> None:
    """A canary is a known-answer item the bot injected, not the agent's proposal: what people
    made of it teaches the agent nothing (it counts towards no trust or calibration either)."""
    await history(store)
    await decide(store, "gold1", Choice.reject, reason_code="wrong_params", reason="not the customer's card",
                 canary=True)
    await decide(store, "gold2", Choice.approve, canary=True)
    out = tmp_path / "fb.jsonl"
    hitl(["feedback", "export", "--out", str(out)], {"REDIS_URL": redis_url}, check=True)
    _, recs = records(out)
    assert sorted(r["request_id"] for r in recs) == ["edit1", "ok1", "pol1", "rej1"]


async def test_a_rejection_after_an_edit_is_not_a_correction(store: Store, redis_url: str,
                                                              tmp_path: Path) -> None:
    """Two must approve: Alice edits (her approval), Bob rejects against policy. The edit was
    turned down, not taken: the record is a policy signal, not a teaching pair."""
    from store.models import Request, Route, utcnow
    from store.redis_store import GROUP, Accepted
    from store.transitions import vote

    req = Request.model_validate({"id": "q1", "agent": "billing", "action": "refund", "summary": "Refund $250",
                                  "params": {"amount": 250}, "editable": ["amount"], "confidence": 0.9})
    await store.ensure_group()
    await store.redis.xadd(store.keys.requests, {"request": req.model_dump_json()})
    res = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=1)
    route = Route(rules=["refunds"], tier="high", quorum=2)
    assert await store.accept(res[0][1][0][0], Accepted(req, route, None, post=True), utcnow()) == "accepted"
    await store.apply(vote(await store.get("q1"), user_id="U0ALICE", name="alice", choice=Choice.edit,
                           now=utcnow(), edits={"amount": 200}), utcnow())
    await store.apply(vote(await store.get("q1"), user_id="U0BOB", name="bob", choice=Choice.reject,
                           now=utcnow(), reason_code="policy", reason="no refunds on this account"), utcnow())
    out = tmp_path / "fb.jsonl"
    hitl(["feedback", "export", "--out", str(out)], {"REDIS_URL": redis_url}, check=True)
    _, recs = records(out)
    (r,) = recs
    assert (r["outcome"], r["reason_code"]) == ("rejected", "policy")
    assert r["signal"] == "policy"
    assert r["edited"] is False and r["diff"] == {}
