"""Redaction: named params and pattern matches never reach the audit trail; the chain stays valid."""

from __future__ import annotations

import pytest

from bot.evidence.redaction import MASK, Redactor
from bot.evidence.sealer import Sealer
from bot.evidence.signing import NO_KEY
from bot.evidence.verify import verify_live
from bot.evidence.wiring import redactor
from bot.policy import PolicyError
from bot.policy.engine import PolicyEngine
from store.chain import ChainStore
from store.models import Choice
from store.redis_store import Store
from tests.audit_util import decide

CARD = "4111 1111 1111 1111"
POLICY = """
redact:
  params: [card_number, ssn]
  patterns: ['\\b(?:\\d[ -]?){13,16}\\b']
"""


def test_the_policy_takes_a_list_or_params_and_patterns() -> None:
    assert PolicyEngine.from_yaml("redact: [card_number, ssn]\n", "t").policy.redact.params == ["card_number", "ssn"]
    p = PolicyEngine.from_yaml(POLICY, "t").policy.redact
    assert p.params == ["card_number", "ssn"] and len(p.patterns) == 1
    with pytest.raises(PolicyError, match="not a valid regular expression"):
        PolicyEngine.from_yaml("redact: {patterns: ['(']}\n", "t")


def test_redactor_masks_keys_at_any_depth_and_pattern_matches() -> None:
    r = Redactor(["card_number"], [r"\b\d{3}-\d{2}-\d{4}\b"])
    out = r.value({"changes": {"card_number": {"before": "1", "after": "2"}, "amount": {"before": 1, "after": 2}},
                   "reason": "ssn 123-45-6789 is wrong", "Card_Number": "x"})
    assert out == {"changes": {"card_number": MASK, "amount": {"before": 1, "after": 2}},
                   "reason": f"ssn {MASK} is wrong", "Card_Number": MASK}


async def test_redacted_before_it_is_written_and_the_chain_verifies(store: Store) -> None:
    engine = PolicyEngine.from_yaml(POLICY, "t")
    store.redact = redactor(lambda: engine)
    await decide(store, "r1", Choice.edit, params={"card_number": CARD, "amount": 10},
                 edits={"card_number": "4000 0000 0000 0002", "amount": 12})
    await decide(store, "r2", Choice.reject, reason_code="other", reason=f"customer said card {CARD} is stolen")
    raw = await store.redis.xrange(store.keys.audit)
    text = repr(raw)
    assert CARD not in text and "4000 0000 0000 0002" not in text and MASK in text
    edited = [f for _, f in raw if f["event"] == "edited"]
    assert '"amount": {"before": 10, "after": 12}' in edited[0]["detail"]   # other fields kept
    chain = ChainStore(store.redis, "hitl")
    await Sealer(chain, None).seal_all()
    r = await verify_live(chain, [], NO_KEY)
    assert r.problems == [] and r.entries == len(raw)
    # the record keeps what the bot needs to act; only the audit trail is redacted
    assert (await store.get("r1")).params["card_number"] == "4000 0000 0000 0002"
