"""Routing by the policy engine: the guides' cases, combination rules, sampling, pause."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.policy import PolicyEngine, sample_point
from store.models import Mode, Request

ISSUE_EXAMPLE = """
defaults:
  channel: "#approvals"
  approvers: []
  quorum: 1
  timeout: 4h
  on_timeout: reject
confidence:
  autonomous: 0.8
  review: 0.5
tiers:
  low:    {mode: auto, sample: 0.05}
  medium: {mode: approve}
  high:   {mode: approve, channel: "#approvals-high", approvers: ["S0MANAGERS"], quorum: 2, timeout: 1h}
rules:
  - name: high_value_payment
    when: request.risk.amount > 500
    tier: high
  - name: legal_threat
    when: request.summary.contains("lawyer")
    mode: escalate
admins: ["U0ADMIN"]
"""


def req(**fields: Any) -> Request:
    fields.setdefault("agent", "billing")
    fields.setdefault("action", "process_invoice")
    fields.setdefault("summary", "Process an invoice")
    fields.setdefault("id", "req-1")
    return Request.model_validate(fields)


@pytest.fixture(scope="module")
def default() -> PolicyEngine:
    return PolicyEngine.default()


@pytest.fixture(scope="module")
def example() -> PolicyEngine:
    return PolicyEngine.from_yaml(ISSUE_EXAMPLE)


# (case, request fields, first_use, mode, tier, rule that must fire)
CASES: list[tuple[str, dict[str, Any], bool, Mode, str, str | None]] = [
    ("clean invoice at 0.9 goes alone",
     {"confidence": 0.9, "risk": {"amount": 320, "reversible": True}}, False,
     Mode.auto, "low", "confidence_autonomous"),
    ("missing data at 0.6 acts and is reviewed",
     {"confidence": 0.6, "risk": {"amount": 120}}, False, Mode.audit, "low", "confidence_review"),
    ("multiple failures at 0.3 go to a human",
     {"confidence": 0.3, "context": {"failure_reason": "3 validation failures"}}, False,
     Mode.escalate, "medium", "confidence_low"),
    ("$750 at 0.99 is high", {"confidence": 0.99, "risk": {"amount": 750}}, False,
     Mode.approve, "high", "amount_over_limit"),
    ("irreversible delete needs approval",
     {"action": "delete_records", "confidence": 0.95, "risk": {"reversible": False}}, False,
     Mode.approve, "medium", "irreversible"),
    ("sentiment -0.8 escalates", {"risk": {"sentiment": -0.8}}, False,
     Mode.escalate, "high", "negative_sentiment"),
    ("sentiment -0.5 does not", {"confidence": 0.9, "risk": {"sentiment": -0.5}}, False,
     Mode.auto, "low", None),
    ("legal domain is high", {"risk": {"domain": "legal"}}, False,
     Mode.approve, "high", "regulated_domain"),
    ("medical domain is high", {"risk": {"domain": "Medical"}, "confidence": 0.9}, False,
     Mode.approve, "high", "regulated_domain"),
    ("a status lookup is auto", {"action": "order_status", "summary": "Look up order 42"},
     False, Mode.auto, "low", "read_only"),
    ("a read_only tag is auto", {"action": "fetch", "risk": {"tags": ["read_only"]}}, False,
     Mode.auto, "low", "read_only"),
    ("nothing known is the default tier", {}, False, Mode.approve, "medium", None),
    ("lawyer in the summary escalates", {"summary": "Customer says their LAWYER will call",
                                         "confidence": 0.95}, False,
     Mode.escalate, "high", "keywords"),
    ("lawyer in the conversation escalates",
     {"context": {"conversation": ["I'm taking legal action"]}}, False,
     Mode.escalate, "high", "keywords"),
    ("keywords need word boundaries", {"summary": "Pursue the issue", "confidence": 0.9},
     False, Mode.auto, "low", None),
    ("asking for a human escalates", {"confidence": 0.99, "context": {
        "conversation": [{"role": "user", "text": "Let me talk to a human please"}]}}, False,
     Mode.escalate, "low", "user_requested_human"),
    ("a loop escalates", {"confidence": 0.9, "metadata": {"tool_calls": 21}}, False,
     Mode.escalate, "low", "tool_call_loop"),
    ("20 tool calls is no loop", {"confidence": 0.9, "metadata": {"tool_calls": 20}}, False,
     Mode.auto, "low", None),
    ("first use needs approval", {"confidence": 0.95}, True, Mode.approve, "low", "first_use"),
    ("an escalation always escalates", {"kind": "escalation", "confidence": 0.99}, False,
     Mode.escalate, "low", "kind_escalation"),
    ("a question always needs a person", {"kind": "question", "action": "order_status"},
     False, Mode.approve, "low", "kind_question"),
    ("confidence 0.8 is autonomous", {"confidence": 0.8}, False, Mode.auto, "low", None),
    ("confidence 0.5 is review", {"confidence": 0.5}, False, Mode.audit, "low", None),
]


@pytest.mark.parametrize(("fields", "first_use", "mode", "tier", "rule"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_default_policy_routes(default: PolicyEngine, fields: dict[str, Any], first_use: bool,
                               mode: Mode, tier: str, rule: str | None) -> None:
    route = default.route(req(**fields), first_use=first_use)
    assert (route.mode, route.tier) == (mode, tier), route.reasons
    if rule is not None:
        assert rule in route.rules
    assert route.reasons, "every route says why"


def test_high_tier_needs_two_approvers_from_the_group(example: PolicyEngine) -> None:
    route = example.route(req(confidence=0.99, risk={"amount": 750}))
    assert route.mode is Mode.approve and route.tier == "high"
    assert (route.quorum, route.approvers, route.channel) == (2, ["S0MANAGERS"], "#approvals-high")
    assert route.timeout_s == 3600
    assert "high_value_payment" in route.rules
    assert "High tier: rule high_value_payment" in route.reasons


def test_amount_explainer_in_plain_words(default: PolicyEngine) -> None:
    route = default.route(req(confidence=0.99, risk={"amount": 750, "currency": "USD"}))
    assert route.reasons[0] == "High tier: amount $750 over the $500 limit"
    route = default.route(req(risk={"amount": 1250.5, "currency": "CHF"}))
    assert route.reasons[0] == "High tier: amount 1,250.50 CHF over the 500 CHF limit"


def test_low_confidence_explainer(default: PolicyEngine) -> None:
    route = default.route(req(confidence=0.3))
    assert route.reasons[0] == "Low confidence (30%) — a person decides"


def test_most_restrictive_mode_wins(example: PolicyEngine) -> None:
    # high tier says approve; legal_threat says escalate; confidence says nothing more.
    route = example.route(req(summary="my lawyer", confidence=0.99, risk={"amount": 900}))
    assert (route.mode, route.tier) == (Mode.escalate, "high")
    deny = PolicyEngine.from_yaml(ISSUE_EXAMPLE.replace("admins:", """
  - name: no_crypto
    when: '"crypto" in request.risk.tags'
    mode: deny
    reason: crypto payments are not allowed
admins:"""))
    route = deny.route(req(summary="my lawyer", risk={"amount": 900, "tags": ["crypto"]}))
    assert route.mode is Mode.deny
    assert route.reasons == ["Crypto payments are not allowed"]


def test_confidence_never_lowers_a_rule_tier(example: PolicyEngine) -> None:
    for confidence in (0.99, 0.6, 0.3, None):
        route = example.route(req(confidence=confidence, risk={"amount": 750}))
        assert route.tier == "high", confidence
        assert route.mode in (Mode.approve, Mode.escalate)


def test_missing_field_condition_is_skipped_not_fatal(
        caplog: pytest.LogCaptureFixture) -> None:
    engine = PolicyEngine.from_yaml(ISSUE_EXAMPLE)
    with caplog.at_level(logging.WARNING, logger="hitl.policy"):
        route = engine.route(req(confidence=0.9))  # no risk.amount
    assert route.mode is Mode.auto
    assert "high_value_payment" not in route.rules
    assert engine.skipped["high_value_payment"] == 1
    assert "high_value_payment" in caplog.text and "amount" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hitl.policy"):
        engine.route(req(id="req-2", confidence=0.9))
    assert engine.skipped["high_value_payment"] == 2
    assert not caplog.records, "repeats are counted and logged at debug, not warned again"


def test_read_only_trigger_switches_off() -> None:
    engine = PolicyEngine.from_yaml("triggers:\n  read_only: {enabled: false}\n")
    route = engine.route(req(action="order_status"))
    assert (route.mode, route.tier) == (Mode.approve, "medium")


def test_type_error_condition_routes_as_if_it_fired() -> None:
    """The request holds the field the condition reads, so the rule could be about it: it is
    taken as fired (policy.md, CEL conditions), never silently dropped."""
    engine = PolicyEngine.from_yaml("""
rules:
  - {name: typo, when: 'request.summary > 5', tier: high}
  - {name: not_bool, when: 'request.summary', tier: high}
  - {name: fine, when: 'has(request.risk.amount) && request.risk.amount > 1', tier: high}
""")
    route = engine.route(req(confidence=0.9))
    assert (route.tier, route.mode) == ("high", Mode.approve)
    assert dict(engine.undecided) == {"typo": 1, "not_bool": 1} and not engine.skipped
    assert any("rule typo could not be decided on this request" in r for r in route.reasons)


@pytest.mark.parametrize("expr", [
    'request.risk.amount > 500',
    'request.summary.contains("lawyer")',
    '"legal" in request.risk.tags',
    'request.confidence < 0.5 && request.risk.reversible == false',
])
def test_cel_expressions_of_the_issue(expr: str) -> None:
    engine = PolicyEngine.from_yaml(f"rules:\n  - {{name: r, when: '{expr}', tier: high}}\n")
    hit = req(summary="my lawyer", confidence=0.3,
              risk={"amount": 750, "reversible": False, "tags": ["legal"]})
    miss = req(summary="fine", confidence=0.9,
               risk={"amount": 20, "reversible": True, "tags": []})
    assert "r" in engine.route(hit).rules
    assert "r" not in engine.route(miss).rules
    assert not engine.skipped


def test_conditions_see_only_named_fields_but_all_of_them() -> None:
    engine = PolicyEngine.from_yaml("""
rules:
  - name: vip
    when: 'request.context.customer.tier == "gold" && request.metadata.region == "eu"'
    tier: high
  - name: whole
    when: 'size(request.params) > 1'
    tier: medium
""")
    route = engine.route(req(context={"customer": {"tier": "gold"}}, metadata={"region": "eu"},
                             params={"a": 1, "b": 2}, confidence=0.9))
    assert route.rules == ["confidence_autonomous", "vip", "whole"]


def test_sampling_is_deterministic_and_near_the_rate(default: PolicyEngine) -> None:
    ids = [f"inv-{i}" for i in range(10_000)]
    routes = [default.route(req(id=i, confidence=0.95)) for i in ids]
    sampled = [r.sampled for r in routes]
    assert sampled == [default.route(req(id=i, confidence=0.95)).sampled for i in ids]
    assert 0.04 < sum(sampled) / len(ids) < 0.06  # low tier samples 5%
    assert all(r.mode is Mode.auto for r in routes)
    assert sampled == [sample_point(i) < 0.05 for i in ids]


def test_review_band_is_always_reviewed(default: PolicyEngine) -> None:
    assert all(default.route(req(id=f"r{i}", confidence=0.7)).sampled for i in range(100))


def test_people_decided_routes_are_not_sampled(default: PolicyEngine) -> None:
    assert not default.route(req(confidence=0.3)).sampled


@pytest.mark.parametrize("fields", [{"confidence": 0.95}, {"confidence": 0.6}])
def test_paused_sends_automation_to_approval(default: PolicyEngine,
                                             fields: dict[str, Any]) -> None:
    route = default.route(req(**fields), paused=True)
    assert (route.mode, route.paused, route.sampled) == (Mode.approve, True, False)
    assert route.reasons[0].startswith("Automation paused")


def test_paused_keeps_stricter_modes(default: PolicyEngine) -> None:
    route = default.route(req(confidence=0.2), paused=True)
    assert route.mode is Mode.escalate and route.paused


def test_shadow_tier_pauses_to_approve() -> None:
    engine = PolicyEngine.from_yaml("""
tiers:
  low: {mode: shadow}
  medium: {mode: approve}
  high: {mode: approve}
""")
    assert engine.route(req(confidence=0.9)).mode is Mode.shadow
    assert engine.route(req(confidence=0.9), paused=True).mode is Mode.approve


def test_agent_may_shorten_the_timeout_never_extend(default: PolicyEngine) -> None:
    assert default.route(req(timeout_s=60)).timeout_s == 60
    assert default.route(req(timeout_s=99_999)).timeout_s == 4 * 3600


def test_triggers_switch_off() -> None:
    engine = PolicyEngine.from_yaml("""
triggers:
  amount_over_limit: {enabled: false}
  keywords: {enabled: false}
  negative_sentiment: {below: -0.9}
  tool_call_loop: {limit: 5}
""")
    route = engine.route(req(confidence=0.9, summary="lawyer", risk={"amount": 10_000,
                                                                     "sentiment": -0.8}))
    assert (route.mode, route.tier) == (Mode.auto, "low")
    assert engine.route(req(confidence=0.9, metadata={"tool_calls": 6})).mode is Mode.escalate


def test_user_requested_human_is_flagged_even_with_keywords(default: PolicyEngine) -> None:
    route = default.route(req(summary="Customer wants to speak to a human about a lawsuit"))
    assert {"user_requested_human", "keywords"} <= set(route.rules)
    assert route.mode is Mode.escalate


def test_tiers_merge_over_defaults_and_expose_timeout_settings() -> None:
    engine = PolicyEngine.from_yaml("""
defaults: {channel: "#ops", approvers: [U0AAA], timeout: 2h}
tiers:
  low: {mode: auto}
  medium: {mode: approve, on_timeout: approve, reminder: 50%}
  high:
    mode: approve
    approvers: []
    reminder: {after: 10m, repeat: true}
    escalation:
      - {after: 1h, notify: ["#approvals-leads"]}
      - {after: 3h, notify: [U0HEAD, S0ONCALL]}
  critical: {mode: escalate, quorum: 3}
""")
    medium, high = engine.tier("medium"), engine.tier("high")
    assert (medium.channel, medium.approvers, medium.timeout_s) == ("#ops", ("U0AAA",), 7200)
    assert medium.on_timeout == "approve" and high.on_timeout == "reject"
    assert medium.reminder is not None and medium.reminder.delay_s(7200) == 3600
    assert high.reminder is not None and high.reminder.delay_s(7200) == 600
    assert high.reminder.repeat and high.approvers == ()
    assert [lvl.after for lvl in high.escalation] == [3600, 10800]
    assert engine.tier("critical").rank == 3
    assert engine.admins == ()


def test_a_reason_a_stricter_mode_outweighed_never_contradicts_the_card() -> None:
    engine = PolicyEngine.from_yaml("tiers:\n  low: {mode: auto}\n  medium: {mode: approve}\n"
                                    "  high: {mode: approve}\ndefaults: {tier: medium}\n"
                                    "triggers: {first_use: {enabled: false}}\n")
    request = Request.model_validate({"id": "r1", "agent": "a", "action": "refund", "summary": "s",
                                      "confidence": 0.66, "risk": {"reversible": False}})
    for paused in (False, True):
        route = engine.route(request, paused=paused)
        assert route.mode is Mode.approve
        text = "; ".join(route.reasons)
        assert "acts, then a person reviews" not in text and "outweighed by a stricter rule" in text, text
    calm = Request.model_validate({"id": "r2", "agent": "a", "action": "lookup", "summary": "s", "confidence": 0.66})
    route = engine.route(calm)
    assert route.mode is Mode.audit  # where the confidence band decides, its consequence is said
    assert "acts, then a person reviews" in "; ".join(route.reasons)
