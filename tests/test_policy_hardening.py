"""Attacks on the policy file and the router from outside: files that must be refused with a
clear error, requests that must never route more permissively than the policy says."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.policy import PolicyEngine, PolicyError, PolicyHolder, check
from bot.policy.check import INVALID_POLICY, INVALID_REQUEST
from store.models import Mode, Request
from store.trust import TrustState


def req(**fields: Any) -> Request:
    fields.setdefault("agent", "billing")
    fields.setdefault("action", "process_invoice")
    fields.setdefault("summary", "Process an invoice")
    fields.setdefault("id", "req-1")
    return Request.model_validate(fields)


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        PolicyEngine.from_yaml(text)
    return info.value.errors


def test_a_second_rules_section_is_refused_not_a_silent_replacement() -> None:
    """YAML lets a later key replace an earlier one without a word: a file that grows a
    second `rules:` block would drop every rule of the first (here a deny), and a crypto
    payment would run alone."""
    text = ("rules:\n"
            "  - {name: no_crypto, when: '\"crypto\" in request.risk.tags', mode: deny}\n"
            "admins: []\n"
            "rules:\n"
            "  - {name: other, when: 'request.action == \"x\"', mode: approve}\n")
    assert errors(text) == ["line 4, column 1: YAML error: duplicate key 'rules' "
                            "(first at line 1): write each key once"]


@pytest.mark.parametrize("text", [
    "tiers:\n  low: {mode: deny, mode: auto}\n  medium: {mode: approve}\n  high: {mode: approve}\n",
    "tiers:\n  low: {mode: deny}\n  medium: {mode: approve}\n  high: {mode: approve}\n"
    "  low: {mode: auto}\n",
    "triggers:\n  keywords: {enabled: true}\n  keywords: {enabled: false}\n",
])
def test_duplicate_keys_anywhere_are_refused(text: str) -> None:
    [line] = errors(text)
    assert "duplicate key" in line and line.startswith("line ")


def test_merge_keys_may_still_be_overridden() -> None:
    """`<<: *anchor` then a key of its own is YAML's way to override, not a duplicate."""
    engine = PolicyEngine.from_yaml(
        "tiers:\n  low: &base {mode: approve, quorum: 2}\n"
        "  medium: {<<: *base, quorum: 3}\n  high: *base\n")
    assert engine.tiers["medium"].quorum == 3
    assert engine.route(req(confidence=0.9)).mode is Mode.approve


def test_a_canary_file_that_is_not_utf8_is_refused_and_the_old_policy_stays(tmp_path: Path) -> None:
    """It used to escape as a UnicodeDecodeError: `hitl run` and `hitl policy check` died with
    a traceback, and a reload was neither audited as rejected nor told apart from a bug."""
    path = tmp_path / "policy.yml"
    path.write_text("triggers:\n  amount_over_limit: {limit: 100}\n")
    holder = PolicyHolder(path)
    before = holder()
    (tmp_path / "canaries.jsonl").write_bytes(b'\xff\xfe{"answer": "approve"}\n')
    path.write_text("trust:\n  canaries: {file: canaries.jsonl}\n")
    with pytest.raises(PolicyError, match=r"trust\.canaries\.file .*: cannot read it"):
        holder.reload()
    assert holder() is before and holder.last_error is not None
    code, report = check(path, [])
    assert code == INVALID_POLICY and "cannot read it" in report


def test_a_canary_file_nested_too_deep_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("trust:\n  canaries: {file: canaries.json}\n")
    (tmp_path / "canaries.json").write_text("[" * 100_000 + "]" * 100_000)
    code, report = check(path, [])
    assert code == INVALID_POLICY and "nested too deep" in report, report


def test_a_policy_nested_too_deep_is_a_policy_error() -> None:
    [line] = errors("rules: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deep" in line


def test_check_reports_a_request_nested_too_deep(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"agent": "a", "action": "b", "summary": "c", "params": {"x": '
                    + "[" * 100_000 + "]" * 100_000 + "}}")
    code, report = check(None, [deep])
    assert code == INVALID_REQUEST and "nested too deep" in report, report


def test_promotion_never_lowers_a_default_tier_that_denies() -> None:
    """"never a deny": a file whose default tier refuses what no rule places must keep
    refusing it for a trusted action, not lower it to a tier that acts alone."""
    engine = PolicyEngine.from_yaml(
        "defaults: {tier: blocked}\n"
        "tiers:\n  low: {mode: auto}\n  medium: {mode: approve}\n  high: {mode: approve}\n"
        "  blocked: {mode: deny}\n"
        "trust:\n  promote: [{after: 20, lower_tier: 3}]\n")
    trusted = TrustState(agent="billing", action="process_invoice", state="trusted", clean=30)
    route = engine.route(req(), trust=trusted)
    assert (route.mode, route.tier) == (Mode.deny, "blocked")
    assert "trust_promoted" not in route.rules


ON_TIMEOUT_APPROVE = """
tiers:
  low: {mode: auto}
  medium: {mode: approve, timeout: 4h, on_timeout: approve}
  high: {mode: approve}
"""


def test_an_agent_shortening_its_wait_is_never_approved_by_the_clock() -> None:
    """`on_timeout: approve` gives people the tier's whole timeout to object. An agent that
    sends `timeout_s: 1` must not turn that into an approval a second later, before anyone
    could see the card: a shortened wait ends as `expired` (rejected)."""
    engine = PolicyEngine.from_yaml(ON_TIMEOUT_APPROVE)
    assert engine.route(req()).on_timeout == "approve"
    assert engine.route(req(timeout_s=4 * 3600)).on_timeout == "approve"
    assert engine.route(req(timeout_s=99_999)).on_timeout == "approve"  # not shortened
    short = engine.route(req(timeout_s=1))
    assert (short.mode, short.timeout_s, short.on_timeout) == (Mode.approve, 1, None)


@pytest.mark.parametrize(("text", "rule"), [
    ("\uff4d\uff59 \uff4c\uff41\uff57\uff59\uff45\uff52 will call", "keywords"),  # fullwidth
    ("my law\u200byer will call", "keywords"),  # zero-width space
    ("my law\u00adyer will call", "keywords"),  # soft hyphen
    ("my \U0001d5f9\U0001d5ee\U0001d604\U0001d606\U0001d5f2\U0001d5ff will call", "keywords"),  # bold
    ("my la\u0301wye\u0300r will call", "keywords"),  # combining accents
    ("my _lawyer_ will call", "keywords"),  # Slack italics
    ("\uff54\uff41\uff4c\uff4b \uff54\uff4f \uff41 \uff48\uff55\uff4d\uff41\uff4e", "user_requested_human"),
    ("talk\u200b to a human", "user_requested_human"),
    ("talk to a\u2060 human please", "user_requested_human"),
])
def test_keywords_are_not_hidden_by_unicode_a_reader_does_not_see(text: str, rule: str) -> None:
    """A customer's "talk to a human" typed on a CJK keyboard (fullwidth), or a word with an
    invisible character or an accent in it, reads as the word on the card: it must fire."""
    route = PolicyEngine.default().route(req(action="reply", confidence=0.9,
                                            context={"conversation": [text]}))
    assert rule in route.rules and route.mode is Mode.escalate, route.rules


def test_configured_words_are_folded_the_same_way() -> None:
    engine = PolicyEngine.from_yaml("triggers:\n  keywords: {words: [\"d\u00e9mission\", \"\uff53\uff55\uff45\"]}\n")
    for text in ("je donne ma de\u0301mission", "je donne ma DEMISSION", "we will sue"):
        assert "keywords" in engine.route(req(summary=text)).rules, text
    assert "keywords" not in engine.route(req(summary="pursue the matter")).rules


@pytest.mark.parametrize(("when", "expected"), [
    ('request.summary.lowerAscii().contains("crypto")', "unknown function lowerAscii()"),
    ("abs(request.risk.sentiment) > 0.5", "unknown function abs()"),
    ("max(request.risk.tags) == \"x\"", "unknown function max()"),
    ("reqeust.risk.amount > 500", "unknown name 'reqeust'"),
    ("math.greatest(1, 2) == 2", "unknown function greatest()"),
])
def test_a_condition_that_can_never_run_is_refused_at_load(when: str, expected: str) -> None:
    """It compiled, `hitl policy check` said "valid", and the rule was skipped on every request
    (a deny rule that never denied), with one warning in the log."""
    [line] = errors(f"rules:\n  - {{name: no_crypto, when: '{when}', mode: deny}}\n")
    assert line.startswith("rules[0].when: ") and expected in line, line


@pytest.mark.parametrize("when", [
    'request.summary.contains("x") && request.action.startsWith("a") && request.action.endsWith("b")',
    'request.summary.matches("^a") || size(request.risk.tags) > 2 || request.risk.tags.size() > 2',
    'request.context.conversation.exists(t, t.text.contains("refund"))',
    "[1].all(i, [2].exists(j, j > i)) && request.risk.tags.exists_one(t, t == \"a\")",
    'request.risk.tags.map(t, t != "", t + "x").size() > 0 && request.risk.tags.filter(t, t == "a").size() == 0',
    'int(request.confidence) == 0 && uint(1) > 0u && double(1) > 0.0 && string(1) == "1"',
    'type(request.confidence) == double && bytes("a") == b"a" && dyn(1) == 1',
    'timestamp("2020-01-01T00:00:00Z").getFullYear() == 2020 && duration("1h").getHours() == 1',
    'has(request.risk.amount) && request.risk.amount > 500',
])
def test_conditions_with_what_the_library_has_still_load(when: str) -> None:
    engine = PolicyEngine.from_yaml(f"rules:\n  - {{name: r, when: '{when}', tier: high}}\n")
    engine.route(req(confidence=0.5, risk={"amount": 600, "tags": ["a"]},
                     context={"conversation": ["a refund"]}))
    assert not engine.skipped, engine.skipped  # each one runs on this request


def test_every_function_the_loader_allows_is_one_the_library_runs() -> None:
    """FUNCTIONS is this library's list: an upgrade that drops one must fail here, not skip
    rules in production."""
    import cel

    from bot.policy.cel import FUNCTIONS
    ts, d = 'timestamp("2020-01-01T00:00:00Z")', 'duration("90m")'
    calls = {"contains": '"ab".contains("a")', "startsWith": '"ab".startsWith("a")',
             "endsWith": '"ab".endsWith("b")', "matches": '"ab".matches("^a")', "size": 'size("ab")',
             "int": 'int("1")', "uint": "uint(1)", "double": "double(1)", "string": "string(1)",
             "bytes": 'bytes("a")', "type": "type(1)", "dyn": "dyn(1)", "duration": d, "timestamp": ts,
             **{g: f"{ts}.{g}()" for g in FUNCTIONS if g.startswith("get")}}
    assert set(calls) == FUNCTIONS
    for name, call in calls.items():
        cel.compile(call).execute(cel.Context())  # raises if the library lacks it
        assert name in cel.compile(call).functions()


# ---- a condition that cannot be decided never loosens the route ----------------------------------

UNDECIDED = """
rules:
  - {name: big, when: 'request.params.amount > 1000', tier: high}
  - {name: either, when: 'request.params.total > 1000 || request.params.vip == true', tier: high}
  - {name: no_crypto, when: 'request.params.asset.startsWith("BTC")', mode: deny}
  - {name: small_reads, when: 'request.params.rows < 10', tier: low, mode: auto}
"""


@pytest.mark.parametrize("amount", ["5000", [5000], {"value": 5000}, True])
def test_a_value_of_another_type_routes_as_if_the_rule_fired(amount: object) -> None:
    """An agent sending `"5000"` for a rule written on numbers used to have the rule skipped:
    the medium tier's route instead of the high tier's approval."""
    engine = PolicyEngine.from_yaml(UNDECIDED)
    route = engine.route(req(params={"amount": amount}, confidence=0.99))
    assert (route.tier, route.mode) == ("high", Mode.approve), route.reasons
    assert "big" in route.rules and engine.undecided["big"] == 1 and not engine.skipped["big"]
    assert route.reasons[0].startswith("High tier: rule big could not be decided on this request (")


def test_a_rule_left_undecided_by_a_missing_field_beside_a_present_one_fires() -> None:
    """`total > 1000 || vip == true` with `total` sent as a string and `vip` left out: with a
    number, `true || <missing>` fires; the string must not make it a skip."""
    engine = PolicyEngine.from_yaml(UNDECIDED)
    route = engine.route(req(params={"total": "5000"}, confidence=0.99))
    assert route.tier == "high" and "either" in route.rules
    number = engine.route(req(params={"total": 5000}, confidence=0.99))
    assert number.tier == "high" and "either" in number.rules


@pytest.mark.parametrize("params", [{}, {"amount": None}, {"other": 1}])
def test_a_request_without_the_fields_a_rule_reads_skips_it(params: dict[str, object]) -> None:
    engine = PolicyEngine.from_yaml(UNDECIDED)
    route = engine.route(req(params=params, confidence=0.99))
    assert "big" not in route.rules and engine.skipped["big"] == 1 and not engine.undecided


def test_an_undecided_deny_rule_denies() -> None:
    engine = PolicyEngine.from_yaml(UNDECIDED)
    route = engine.route(req(params={"asset": 42}, confidence=0.99))
    assert route.mode is Mode.deny and "no_crypto" in route.rules
    assert "denied as the rule would" in route.reasons[0]


def test_an_undecided_loosening_rule_never_loosens() -> None:
    """A rule that lowers the tier to auto, left undecided by `rows: "5"`: a person decides on
    the default tier, where firing it would have run the action alone."""
    engine = PolicyEngine.from_yaml(UNDECIDED)
    decided = engine.route(req(params={"rows": 5}))
    assert (decided.tier, decided.mode) == ("low", Mode.auto)
    route = engine.route(req(params={"rows": "5"}))
    assert route.mode is Mode.approve and route.tier == "medium", route
    assert "small_reads" in route.rules


@pytest.mark.parametrize("domain", ["legal", "Legal ", " LEGAL", "\uff4c\uff45\uff47\uff41\uff4c", "le\u00adgal", "Le\u200bgal"])
def test_a_regulated_domain_matches_as_a_reader_reads_it(domain: str) -> None:
    """The agent writes `risk.domain`: `"legal "` (a trailing space) or fullwidth letters went
    through as no regulated domain."""
    engine = PolicyEngine.default()
    route = engine.route(req(risk={"domain": domain}, confidence=0.99))
    assert "regulated_domain" in route.rules, domain


SAMPLED = """
tiers:
  low: {mode: auto, sample: 0.5}
  medium: {mode: approve}
  high: {mode: approve}
defaults: {tier: low}
triggers: {first_use: {enabled: false}, read_only: {enabled: false}}
"""


async def test_an_agent_cannot_choose_ids_that_escape_sampling(redis_url: str) -> None:
    """Sampling hashed the request id alone, a scheme the docs give: an agent could pick ids
    whose hash is never sampled and so escape every review. A running bot keys it by its
    deployment's secret, the same on every replica, so ids ground against the public hash are
    sampled at the policy's rate."""
    from bot.policy.engine import sample_point
    from tests.harness import start, stop
    from tests.util import eventually

    ground = [f"grind-{i}" for i in range(3000) if sample_point(f"grind-{i}") >= 0.5][:400]
    h = await start(redis_url)
    try:
        holder = h.bot.policy
        await eventually(lambda: asyncio.sleep(0, holder.sample_salt), what="the salt, read at intake's start")
        assert holder.sample_salt == await h.store.secret("sample")  # every replica reads the same
        engine = PolicyEngine.from_yaml(SAMPLED)
        holder.install(engine, "test")  # a reloaded policy keeps the salt
        assert engine.sample_salt == holder.sample_salt
        plain = PolicyEngine.from_yaml(SAMPLED)
        assert not any(plain.route(req(id=i)).sampled for i in ground)  # escaped, unsalted
        sampled = sum(engine.route(req(id=i)).sampled for i in ground)
        assert 120 < sampled < 280, sampled  # about half, as the policy says
        assert [engine.route(req(id=i)).sampled for i in ground[:50]] == \
            [engine.route(req(id=i)).sampled for i in ground[:50]]  # stable for an id
    finally:
        await stop(h)
