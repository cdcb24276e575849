"""Trust, grants, canaries, the App Home and `/hitl trust|grants|away`, hardened after an
adversarial review: each test is a finding, driven through the real bot (signed HTTP, the
emulator as Slack) or the real store (a real redis-server)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from blocks.ids import ActionId, HomeActionId
from blocks.trust import grant_line, trust_line
from bot.evidence.redaction import Redactor
from bot.policy.engine import PolicyEngine
from store.models import Mode, Request, Route, Status, utcnow
from store.redis_store import Store
from store.trust import Grant, GrantBounds, GrantTerms, TrustState, member, split_member
from tests.harness import Harness, running, start, stop
from tests.util import eventually

ROOT = Path(__file__).resolve().parent.parent


async def _count(store: Store, rid: str, kind: str, *, agent: str = "pay-bot", action: str = "pay",
                 after: int = 2) -> None:
    """Count one outcome of a request whose record exists (the script counts only those)."""
    await store.redis.hset(store.keys.request(rid), "x", "1")
    r = Request(agent=agent, action=action, summary="s", id=rid)
    await store.trust.outcome(r, kind, after, utcnow(), agree=kind == "clean")


async def _home(h: Harness, user: str) -> str:
    before = len([c for c in h.emu.calls_to("views.publish") if c.ok])
    assert (await h.emu.open_home(user)).status == 200

    async def done() -> bool:
        return len([c for c in h.emu.calls_to("views.publish") if c.ok]) > before

    await eventually(done, what=f"home of {user}")
    view = h.emu.home(user)
    assert view is not None
    return json.dumps(view.to_slack()["blocks"], ensure_ascii=False)


async def _auto(h: Harness, rid: str) -> Any:
    """The record of a request decided at intake (no card), once stored."""
    async def done() -> Any:
        return await h.store.exists(rid) and (await h.store.get(rid)).decision

    await eventually(done, what=f"decision of {rid}")
    return await h.store.get(rid)


def _text(reply: Any) -> str:
    return json.dumps(reply.json(), ensure_ascii=False)


# ---- promotion steps count clean approvals in a row ------------------------------------------

PROMOTING = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve}
trust:
  after: 2
  promote:
    - {after: 6, lower_tier: 1}
"""


async def test_rejections_and_edits_break_a_run_of_clean_approvals(store: Store) -> None:
    engine = PolicyEngine.from_yaml(PROMOTING, "t")
    kinds = ["clean", "clean"]  # trusted now
    kinds += ["rejected", "clean", "rejected", "clean", "edited", "clean", "rejected", "clean"]
    for i, kind in enumerate(kinds):
        await _count(store, f"r{i}", kind)
    state = await store.trust.state("pay-bot", "pay")
    assert state.trusted and state.clean == 1  # trusted it stays; the run starts again
    nxt = Request(agent="pay-bot", action="pay", summary="Pay", id="next")
    route = engine.route(nxt, trust=state)
    # people refused or changed 4 of its last 8 requests: never 6 clean approvals in a row
    assert route.mode is Mode.approve and "trust_promoted" not in route.rules, route.reasons
    for i in range(5):  # 6 in a row now
        await _count(store, f"s{i}", "clean")
    route = engine.route(nxt, trust=await store.trust.state("pay-bot", "pay"))
    assert route.mode is Mode.auto and "trust_promoted" in route.rules
    assert any("6 clean approvals in a row" in r for r in route.reasons), route.reasons


# ---- a grant's `same` parameters: absent stays absent, values compare exactly ----------------

SAME_TO = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve, grants: {duration: 1h, max_amount: 100, same: [to]}}
  high:   {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""


async def test_a_grant_made_without_a_same_param_does_not_cover_any_value_of_it(
        redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, SAME_TO) as h:
        rid = await h.push(summary="Refund $50", params={"order": "A-1"}, risk={"amount": 50})
        await h.click(await h.card(rid), "U0BOB", ActionId.approve_grant)
        await h.decided(rid)
        (g,) = await h.grants(1)
        assert "no to" in g.bounds.describe()
        # a similar request, except that the money now goes where the agent likes: people decide
        rid2 = await h.push(summary="Refund $50", params={"order": "A-2", "to": "attacker"}, risk={"amount": 50})
        rec2 = await h.card(rid2)
        assert rec2.decision is None and rec2.route.grant is None
        # one without `to`, like the request it was made on, is covered
        rid3 = await h.push(summary="Refund $50", params={"order": "A-3"}, risk={"amount": 50})
        rec3 = await _auto(h, rid3)
        assert rec3.decision is not None and rec3.decision.status is Status.auto_approved
        assert rec3.route.grant is not None and rec3.route.grant.id == g.id


def _req(**params: Any) -> Request:
    return Request(agent="bot", action="refund", summary="s", id="x", params=params)


def test_grant_bounds_compare_values_exactly_and_old_grants_never_cover_more() -> None:
    one = GrantBounds(params={"to": [1]}, absent=[])
    assert one.covers(_req(to=1))
    assert not any(one.covers(_req(to=v)) for v in (True, 1.0, "1", [1]))
    assert not one.covers(_req())  # absent is not a value
    null = GrantBounds(params={"to": [None]}, absent=[])
    assert null.covers(_req(to=None)) and not null.covers(_req())
    terms = GrantTerms(3600, None, ("to", "order"))
    made = terms.bounds_for(_req(order="A-1"))
    assert made.absent == ["to"] and made.covers(_req(order="A-1")) and not made.covers(_req(order="A-1", to="x"))
    # a grant stored before absent parameters were kept: the tier's `same` says which must be absent
    old = GrantBounds.model_validate({"amount_max": None, "params": {"order": ["A-1"]}})
    assert old.absent is None
    assert old.covers(_req(order="A-1"), ("to", "order"))
    assert not old.covers(_req(order="A-1", to="x"), ("to", "order"))


async def test_a_grant_stored_before_absent_params_were_kept_covers_no_value_of_them(store: Store) -> None:
    now = utcnow()
    stored = {"id": "g-old", "agent": "bot", "action": "refund", "tier": "medium", "request_id": "r0",
              "bounds": {"amount_max": None, "params": {}}, "created_at": now.isoformat(),
              "expires_at": (now + timedelta(hours=1)).isoformat(), "by": ["U1"], "approvers": [], "quorum": 1}
    await store.redis.hset(store.trust.k.grants, "g-old", json.dumps(stored))
    route = Route(tier="medium")
    found = await store.trust.matching_grant(_req(to="attacker"), now, route, same=("to",), redact=store.redact)
    assert found is None
    assert await store.trust.matching_grant(_req(), now, route, same=("to",), redact=store.redact) is not None


# ---- a canary card looks like any other, grant button included --------------------------------

CANARY_POLICY = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
trust:
  canaries: {file: canaries.jsonl, share: 0.5}
"""
CANARY = {"agent": "refund-bot", "action": "refund", "summary": "Refund $950 to a card ending 0000",
          "params": {"order": "A-77"}, "answer": "reject", "why": "wrong card"}


def _buttons(msg: dict[str, Any]) -> list[str]:
    return [e.get("action_id") for b in msg.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


async def test_a_canary_card_offers_allow_similar_and_the_click_makes_no_grant(
        redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "canaries.jsonl").write_text(json.dumps(CANARY) + "\n")
    (tmp_path / "policy.yml").write_text(CANARY_POLICY)
    h = await start(redis_url, policy=tmp_path / "policy.yml")
    try:
        for i in range(12):
            await h.push(agent="refund-bot", action="refund", summary=f"Refund order {i}", id=f"real-{i}")

        async def canary() -> str | None:
            ids = [i for i in await h.store.pending_ids(500) if not i.startswith("real-")]
            return ids[0] if ids else None

        cid = await eventually(canary, what="a canary")
        crec = await h.card(cid)
        real = _buttons(h.message(await h.card("real-0")))
        assert ActionId.approve_grant.value in real
        assert _buttons(h.message(crec)) == real  # nothing sets it apart
        await h.click(crec, "U0BOB", ActionId.approve_grant)
        decided = await h.decided(cid)
        assert decided.decision is not None and decided.decision.status is Status.approved
        reply = await h.ephemeral("U0BOB")
        assert "Similar requests" in reply and "approved on their own" in reply  # as on a real card
        assert await h.store.trust.grants() == []  # no agent's request is ever covered by a canary
        scored = await eventually(h.store.trust.canary_scores, what="the canary scored")
        assert scored == {"U0BOB": (0, 1)}
    finally:
        await stop(h)


# ---- redacted params never reach the audit trail through a grant ------------------------------

CARD = "4111 1111 1111 1111"
REDACTING = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve, grants: {duration: 1h, max_amount: 100, same: [card_number]}}
  high:   {mode: approve}
admins: ["U0ADMIN"]
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
redact:
  params: [card_number]
"""


async def test_grant_audit_entries_are_redacted_and_the_grant_still_matches(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, REDACTING) as h:
        rid = await h.push(summary="Refund $50", params={"card_number": CARD}, risk={"amount": 50})
        await h.click(await h.card(rid), "U0BOB", ActionId.approve_grant)
        (g,) = await h.grants(1)
        assert g.bounds.params == {"card_number": [CARD]}  # the grant itself matches on the value
        same = await _auto(h, await h.push(summary="Refund $20", params={"card_number": CARD}, risk={"amount": 20}))
        assert same.route.grant is not None and same.route.grant.id == g.id
        reply = await h.emu.slash_command("U0ADMIN", "C0GENERAL", "/hitl", f"grants revoke {g.id}")
        assert "Revoked" in _text(reply)
        entries = await h.store.audit_entries()
        events = {e.event for e in entries}
        assert {"grant_created", "grant_revoked"} <= events
        leaking = [e.event for e in entries if CARD in json.dumps(e.detail)]
        assert leaking == [], f"raw card number in audit entries: {leaking}"
        # the revoke is on the request's trail, next to the grant's creation
        trail = [e.event for e in await h.store.trail(rid)]
        assert "grant_created" in trail and "grant_revoked" in trail


async def test_an_expired_grant_is_audited_redacted(store: Store) -> None:
    store.redact = Redactor(["card_number"]).detail
    now = utcnow()
    g = Grant(id="g-1", agent="bot", action="refund", tier="medium", request_id="r1",
              bounds=GrantBounds(params={"card_number": [CARD]}, absent=[]), created_at=now - timedelta(hours=2),
              expires_at=now - timedelta(hours=1))
    assert (await store.trust.vote_grant(g, "U1", 1, now, redact=store.redact, current=("U1", "U2", "U3")))[0] == "created"
    assert await store.trust.matching_grant(_req(card_number=CARD), now, Route(tier="medium"),
                                            redact=store.redact) is None
    entries = await store.audit_entries()
    assert [e.event for e in entries] == ["grant_created", "grant_expired"]
    assert all(CARD not in json.dumps(e.detail) for e in entries)
    assert entries[1].detail["bounds"]["params"]["card_number"] == "[redacted]"


# ---- one trust record per agent and action, whatever their names ------------------------------

ADMIN = """
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve}
admins: ["U0ADMIN"]
batching: {enabled: false}
"""


async def test_two_different_actions_do_not_share_one_trust_record(store: Store) -> None:
    for i in range(5):
        await _count(store, f"r{i}", "clean", agent="billing", action="refund/all", after=5)
    assert (await store.trust.state("billing", "refund/all")).trusted
    other = await store.trust.state("billing/refund", "all")
    assert not other.trusted and other.approvals == 0
    # an agent without `/` or `%` keeps the key it always had: nothing to migrate
    assert member("billing", "refund/all") == "billing/refund/all"
    assert member("billing/refund", "all") == "billing%2Frefund/all"
    assert split_member(member("50%/x", "a/b")) == ("50%/x", "a/b")


async def test_admins_name_an_action_of_an_agent_whose_name_has_a_slash(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, ADMIN) as h:
        await _count(h.store, "r1", "clean", agent="billing", action="refund/all")
        await _count(h.store, "r2", "clean", agent="billing/refund", action="all")
        reply = await h.emu.slash_command("U0ADMIN", "C0GENERAL", "/hitl", "trust pin billing%2Frefund/all")
        assert "is pinned" in _text(reply)
        pinned = {(s.agent, s.action): s.pinned for s in await h.store.trust.states()}
        assert pinned == {("billing", "refund/all"): False, ("billing/refund", "all"): True}
        listed = _text(await h.emu.slash_command("U0ADMIN", "C0GENERAL", "/hitl", "trust"))
        assert "billing/refund / all" in listed and "billing / refund/all" in listed


async def test_pinning_an_action_that_does_not_exist_is_an_error(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, ADMIN) as h:
        await _count(h.store, "r1", "clean", agent="billing-agent", action="refund")
        for op in ("pin", "reset", "unpin"):
            reply = await h.emu.slash_command("U0ADMIN", "C0GENERAL", "/hitl", f"trust {op} billing-agent/refnd")
            text = _text(reply)
            assert reply.json()["response_type"] == "ephemeral"
            assert "No action `billing-agent/refnd`" in text and "`billing-agent/refund`" in text, text
        assert [(s.agent, s.action, s.pinned) for s in await h.store.trust.states()] == [
            ("billing-agent", "refund", False)]
        assert not [e for e in await h.store.audit_entries() if e.event.startswith("trust_")]


# ---- `/hitl away ... to @bob` with the shipped manifest, and a delegate who exists ------------

def test_the_manifest_makes_slack_escape_mentions() -> None:
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["should_escape"] is True


async def test_away_with_a_mention_as_slack_sends_it(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, ADMIN) as h:
        # what Slack sends for a person picked as you type, with the manifest's escaping on
        reply = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away until 2099-12-24 to <@U0BOB|bob>")
        assert "You are away until" in _text(reply)
        assert (await h.store.trust.away(utcnow()))["U0ALICE"].delegate == "U0BOB"
        reply = await h.emu.slash_command("U0CAROL", "C0GENERAL", "/hitl",
                                          "away until 2099-12-24 to <!subteam^S0MANAGERS|@managers>")
        assert "You are away until" in _text(reply)
        assert (await h.store.trust.away(utcnow()))["U0CAROL"].delegate == "S0MANAGERS"
        # plain text (escaping off, or typed without picking): a clear word, nothing recorded
        reply = await h.emu.slash_command("U0DAVE", "C0GENERAL", "/hitl", "away until 2099-12-24 to @bob")
        text = _text(reply)
        assert reply.json()["response_type"] == "ephemeral" and "not as a mention" in text, text
        reply = await h.emu.slash_command("U0DAVE", "C0GENERAL", "/hitl", "away until 2099-12-24 to <#C0GENERAL|general>")
        assert "A channel cannot stand in" in _text(reply)
        assert "U0DAVE" not in await h.store.trust.away(utcnow())


async def test_away_to_someone_not_in_the_workspace_is_refused(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, ADMIN) as h:
        for target in ("UNKNOWN1", "USA", "<@U0NOBODY|ghost>", "S0NOSUCH", "U0HITLBOT"):
            reply = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", f"away until 2099-12-24 to {target}")
            assert reply.status == 200 and reply.json()["response_type"] == "ephemeral"
            assert "nothing changed" in _text(reply), (target, reply.body)
        assert "U0ALICE" not in await h.store.trust.away(utcnow())
        assert not [e for e in await h.store.audit_entries() if e.event == "away"]


async def test_other_commands_get_the_text_as_typed(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, ADMIN) as h:
        await h.emu.slash_command("U0ADMIN", "C0GENERAL", "/hitl",
                                  "pause ask <@U0BOB|bob> in <#C0GENERAL|general>, see <https://status.example.com>")
        reason = (await h.store.control()).get("reason")
        assert reason == "ask @bob in #general, see https://status.example.com"


# ---- the App Home: a stand-in sees what they may decide; a refused Revoke is explained --------

HOME = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve, approvers: [U0ALICE]}
  high:   {mode: approve}
admins: ["U0ADMIN", "U0CAROL"]
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""


async def test_home_lists_cards_a_stand_in_may_decide(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, HOME) as h:
        reply = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away until 2099-12-24 to <@U0BOB|bob>")
        assert "You are away until" in reply.body
        rec = await h.card(await h.push(summary="Refund $40 to Ana"))
        home = await _home(h, "U0BOB")
        assert "Waiting for you: 1" in home and "Refund $40 to Ana" in home, home[:400]
        assert "Waiting for you: 0" in await _home(h, "U0DAVE")
        await h.click(rec, "U0BOB", ActionId.approve)
        assert (await h.decided(rec.id)).decision.decided_by[0].user_id == "U0BOB"


async def test_a_refused_revoke_is_audited_and_explained(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, HOME) as h:
        rec = await h.card(await h.push(summary="Refund $40 to Ana", risk={"amount": 40}))
        await h.click(rec, "U0ALICE", ActionId.approve_grant)
        (g,) = await h.grants(1)
        # Revoke is offered to its granters and admins only
        dave = await _home(h, "U0DAVE")
        assert g.id in dave and HomeActionId.revoke_grant.value not in dave
        assert HomeActionId.revoke_grant.value in await _home(h, "U0CAROL")  # an admin, for now
        (tmp_path / "policy.yml").write_text(HOME.replace(', "U0CAROL"', ""))
        assert await h.bot.reload_policy()
        # Carol clicks the Revoke of the Home drawn while she was an admin
        await h.emu.click_home("U0CAROL", HomeActionId.revoke_grant, value=g.id)
        dm = await eventually(lambda: _dms(h, "U0CAROL"), what="a word to Carol")
        assert "Only the people who granted" in dm and "stays in force" in dm
        # /hitl grants revoke by someone who may not: the same refusal, audited too
        reply = await h.emu.slash_command("U0DAVE", "C0GENERAL", "/hitl", f"grants revoke {g.id}")
        assert "Only the people who granted" in _text(reply)
        assert [g.id for g in await h.store.trust.grants()] == [g.id]
        refused = [(e.actor, e.detail.get("from")) for e in await h.store.audit_entries()
                   if e.event == "refused" and e.detail.get("command") == "grants revoke"]
        assert refused == [("U0CAROL", "home"), ("U0DAVE", "command")]
        assert all(e.detail.get("reason") == "not_granter" for e in await h.store.trail(rec.id) if e.event == "refused")


async def _dms(h: Harness, user: str) -> str | None:
    msgs = h.emu.messages(user)
    return json.dumps(msgs[-1]["blocks"]) if msgs else None


# ---- agent text in trust messages is escaped once ---------------------------------------------

def test_trust_and_grant_lines_escape_agent_names_once() -> None:
    line = trust_line(TrustState(agent="R&D bot", action="<refund>", changed_at=utcnow().isoformat(), why="a <b> & c"), 5)
    assert "R&amp;D bot" in line and "&lt;refund&gt;" in line and "&amp;amp;" not in line, line
    now = utcnow()
    g = Grant(id="g-1", agent="R&D bot", action="refund", tier="medium", request_id="r1",
              created_at=now, expires_at=now + timedelta(hours=1), by=["U0BOB"])
    assert "R&amp;D bot" in grant_line(g) and "&amp;amp;" not in grant_line(g), grant_line(g)
