"""The policy file: defaults, validation errors that name the field, reload, `check`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from bot.policy import Policy, PolicyEngine, PolicyError, PolicyHolder, check, default_text
from bot.policy.cel import referenced_fields
from bot.policy.fields import format_duration, parse_duration
from store.models import Mode


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        PolicyEngine.from_yaml(text)
    return info.value.errors


def test_default_file_spells_out_the_model_defaults() -> None:
    """A section left out of a file means the same as the default file's section."""
    data = yaml.safe_load(default_text())
    assert Policy.model_validate(data) == Policy()
    assert set(data) == set(Policy.model_fields)
    assert set(data["triggers"]) == set(type(Policy().triggers).model_fields)


def test_empty_file_is_the_default_policy() -> None:
    engine = PolicyEngine.from_yaml("")
    assert list(engine.tiers) == ["low", "medium", "high"]
    assert engine.policy == PolicyEngine.default().policy


@pytest.mark.parametrize(("text", "expected"), [
    ("rules:\n  - {name: ok, when: 'true', tier: low}\n"
     "  - {name: bad, when: 'request.risk.amount >> 500', tier: high}\n",
     "rules[1].when: CEL syntax error at column 22: extraneous input '>'"),
    ("tiers:\n  low: {mode: autoo}\n", "tiers.low.mode: unknown mode 'autoo'; use one of 'auto'"),
    ("tiers:\n  high: {mode: approve, quorum: 0}\n",
     "tiers.high.quorum: must be at least 1 (got 0)"),
    ("tiers:\n  high: {mode: approve, quorum: 11}\n", "tiers.high.quorum: must be at most 10"),
    ("defaults: {timeout: 4x}\n",
     "defaults.timeout: invalid duration '4x': use e.g. 90s, 30m, 4h, 1h30m"),
    ("tiers:\n  high: {mode: approve, timeout: 0}\n",
     "tiers.high.timeout: duration 0 must be at least 1 second"),
    ("rules:\n  - {name: r, when: 'true', tier: hgih}\n",
     "rules[0].tier: unknown tier 'hgih'; the tiers are low, medium, high"),
    ("rules:\n  - {name: r, when: 'true'}\n", "rules[0]: a rule needs a tier, a mode, or both"),
    ("rules:\n  - {name: r, when: 'true', mode: deny}\n  - {name: r, when: 'false', mode: deny}\n",
     "rules[1].name: 'r' is used by an earlier rule"),
    ("rules:\n  - {name: keywords, when: 'true', mode: deny}\n",
     "rules[0].name: 'keywords' is the name of a built-in trigger"),
    ("defaults: {on_timeout: approve}\n",
     "defaults.on_timeout: 'approve' is refused here (deny by default)"),
    ("defaults: {approvers: [bob]}\n",
     "defaults.approvers[0]: 'bob' must be a Slack user id (U...) or user group id (S...)"),
    ("defaults: {chanel: '#x'}\n", "defaults.chanel: unknown field"),
    ("confidence: {autonomous: 0.4, review: 0.6}\n",
     "confidence: review (0.6) must not be above autonomous (0.4)"),
    ("confidence: {autonomous: 1.5}\n", "confidence.autonomous: must be at most 1"),
    ("tiers:\n  high:\n    mode: approve\n    escalation:\n      - {after: 2h, notify: ['#a']}\n"
     "      - {after: 1h, notify: ['#b']}\n",
     "tiers.high.escalation: level 1 (after 1h) must come later than level 0 (after 2h)"),
    ("tiers:\n  high: {mode: approve, reminder: 150%}\n",
     "tiers.high.reminder: percentage '150%' must be between 0% and 100%"),
    ("tiers:\n  routine: {mode: auto}\n  other: {mode: approve}\ndefaults: {tier: routine}\n",
     "triggers.amount_over_limit.tier: unknown tier 'high' (the built-in default"),
    ("triggers:\n  tool_call_loop: {limit: 0}\n", "triggers.tool_call_loop.limit: must be at least 1"),
    ("triggers:\n  sentiment: {below: -0.5}\n", "triggers.sentiment: unknown field"),
    ("rules: [\n", "line 2, column 1: YAML error"),
    ("- just a list\n", "the file must be a mapping of sections, not a list"),
])
def test_invalid_files_name_the_field(text: str, expected: str) -> None:
    found = errors(text)
    assert any(e.startswith(expected) for e in found), found


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(PolicyError) as info:
        PolicyEngine.from_yaml("rules:\n  - {name: a, when: 'true', tier: x}\n"
                               "  - {name: b, when: 'true', tier: y}\n", "p.yml")
    text = str(info.value)
    assert text.startswith("invalid policy p.yml:\n")
    assert "rules[0].tier" in text and "rules[1].tier" in text


def test_multiline_condition_error_names_the_line() -> None:
    found = errors("rules:\n  - name: r\n    when: |\n      true &&\n      (false\n    tier: high\n")
    assert found[0].startswith("rules[0].when: CEL syntax error at line 3, column"), found


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("4h", 14400), ("1h30m", 5400), ("2d", 172800), (45, 45),
    ("120", 120), (" 1H ", 3600)])
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_duration_format_round_trips() -> None:
    for seconds in (1, 59, 90, 3600, 5400, 90061):
        assert parse_duration(format_duration(seconds)) == seconds


def test_disabled_trigger_may_name_a_missing_tier() -> None:
    engine = PolicyEngine.from_yaml("""
tiers: {low: {mode: auto}, medium: {mode: approve}}
triggers:
  amount_over_limit: {tier: medium}
  regulated_domain: {enabled: false}
  negative_sentiment: {tier: null}
  keywords: {tier: medium}
""")
    route = engine.route(
        __import__("store.models").models.Request.model_validate(
            {"agent": "a", "action": "pay", "summary": "s", "risk": {"domain": "legal"},
             "confidence": 0.9}))
    assert route.tier == "low"


def test_referenced_fields() -> None:
    assert referenced_fields(["request.risk.amount > 5", "request.summary.contains('x')"]) == {
        "risk": {"amount"}, "summary": True}
    assert referenced_fields(["request.risk.tags.exists(t, t == 'a')"]) == {"risk": {"tags"}}
    assert referenced_fields(["request['risk'].amount > 5"]) is None
    assert referenced_fields(["size(request) > 1"]) is None
    assert referenced_fields([]) == {}


def test_reload_keeps_the_old_policy_on_a_malformed_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("triggers:\n  amount_over_limit: {limit: 100}\n")
    holder = PolicyHolder(path)
    before = holder()
    assert before.policy.triggers.amount_over_limit.limit == 100
    assert holder.reload() is False  # unchanged
    path.write_text("tiers:\n  high: {mode: approve, quorum: 0}\n")
    with caplog.at_level(logging.ERROR, logger="hitl.policy"), pytest.raises(PolicyError):
        holder.reload()
    assert holder() is before and holder.last_error is not None
    assert "tiers.high.quorum" in caplog.text
    path.write_text("triggers:\n  amount_over_limit: {limit: 200}\n")
    assert holder.reload() is True
    assert holder().policy.triggers.amount_over_limit.limit == 200
    assert holder.last_error is None


def test_malformed_file_at_start_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("tiers:\n  low: {mode: sometimes}\n")
    with pytest.raises(PolicyError, match=r"tiers\.low\.mode: unknown mode 'sometimes'"):
        PolicyHolder(path)
    with pytest.raises(PolicyError, match="cannot read the file"):
        PolicyHolder(tmp_path / "missing.yml")


def test_holder_without_a_file_uses_the_default() -> None:
    holder = PolicyHolder(None)
    assert holder().source == "built-in default policy"
    assert holder.reload() is False


def test_check_prints_each_route(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text("tiers:\n  low: {mode: auto}\n  medium: {mode: approve}\n"
                      "  high: {mode: approve, approvers: [S0MANAGERS], quorum: 2, timeout: 1h}\n")
    invoice = tmp_path / "invoice.json"
    invoice.write_text(json.dumps({"agent": "billing", "action": "pay_invoice", "id": "inv-1",
                                   "summary": "Pay Acme $750", "confidence": 0.99,
                                   "risk": {"amount": 750, "currency": "USD"}}))
    many = tmp_path / "many.json"
    many.write_text(json.dumps([
        {"agent": "a", "action": "lookup", "summary": "s", "confidence": 0.9},
        {"agent": "a", "action": "refund", "summary": "s", "confidence": 0.3}]))
    code, report = check(policy, [invoice, many])
    assert code == 0, report
    assert f"{policy}: valid" in report
    assert "  tiers     low (auto) < medium (approve) < high (approve)" in report
    block = report.split(f"{invoice}: pay_invoice")[1]
    for line in ("  mode      approve", "  tier      high",
                 "  rules     confidence_autonomous, amount_over_limit",
                 "  why       High tier: amount $750 over the $500 limit",
                 "  approvers S0MANAGERS", "  quorum    2", "  timeout   1h", "  sampled   no"):
        assert line in block, block
    assert f"{many}[1]: refund" in report and "  mode      escalate" in report


def test_check_reports_an_invalid_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text("rules:\n  - {name: r, when: 'request.x >', tier: high}\n")
    code, report = check(policy, [])
    assert code == 1
    assert "rules[0].when: CEL syntax error at column" in report


def test_check_reports_an_invalid_request(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"agent": "a", "action": "x", "summary": "s", "confidence": 2}))
    code, report = check(None, [bad])
    assert code == 2
    assert "built-in default policy: valid" in report
    assert "invalid request: confidence" in report
    assert any(line.startswith(f"{bad}: invalid request: confidence") for line in report.splitlines())  # named once


def test_check_shows_paused_and_first_use(tmp_path: Path) -> None:
    req = tmp_path / "r.json"
    req.write_text(json.dumps({"agent": "a", "action": "x", "summary": "s", "confidence": 0.9}))
    _, report = check(None, [req], first_use=True)
    assert "first_use" in report and f"  mode      {Mode.approve.value}" in report
    _, report = check(None, [req], paused=True)
    assert "  paused    yes" in report


def test_the_docs_show_the_default_policy_as_it_is() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    docs = (root / "docs" / "policy.md").read_text()
    start = docs.index("## The built-in default policy")
    block = docs[docs.index("```yaml\n", start) + len("```yaml\n"):]
    assert block[:block.index("```")] == (root / "bot" / "policy" / "default.yml").read_text()


def test_defaults_give_every_tier_its_escalation_and_reminder() -> None:
    policy = Policy.model_validate(yaml.safe_load("""
defaults:
  reminder: 50%
  escalation: [{after: 30m, notify: ["#oncall"]}]
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve, escalation: [], reminder: null}
  top: {mode: approve, reminder: 10m, escalation: [{after: 5m, notify: ["#execs"]}]}
"""))
    tiers = PolicyEngine(policy).tiers
    assert [lv.notify for lv in tiers["medium"].escalation] == [["#oncall"]]
    assert tiers["medium"].reminder is not None and tiers["medium"].reminder.at == 0.5
    assert tiers["high"].escalation == () and tiers["high"].reminder is None  # opted out
    assert [lv.notify for lv in tiers["top"].escalation] == [["#execs"]] and tiers["top"].reminder
    assert tiers["top"].reminder.after == 600
    with pytest.raises(ValueError, match="must come later"):
        Policy.model_validate(yaml.safe_load(
            "defaults: {escalation: [{after: 30m, notify: ['#a']}, {after: 10m, notify: ['#b']}]}"))


def test_max_items_is_validated_against_what_fits_on_a_card() -> None:
    from blocks.batch import BATCH_ITEMS_MAX

    assert Policy.model_validate({"batching": {"max_items": BATCH_ITEMS_MAX}}).batching.max_items == 45
    with pytest.raises(ValueError, match="max_items"):
        Policy.model_validate({"batching": {"max_items": BATCH_ITEMS_MAX + 1}})
