"""`hitl feedback export`: one JSONL record per human decision, for training and evals.

Teaching signal: what a person changed or why they said no (edits with the per-field diff,
rejections with a reason): examples to learn from. Policy signal: what should never happen
(rejections coded `policy` or `risky`, overrides of actions that ran on their own): candidates
for a deny rule or a higher tier, not for imitation. Plain approvals are confirmations.
Schema: docs/feedback.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from bot.evidence.export import jsonl, stream_id
from bot.evidence.redaction import Redactor
from store.models import Record, Vote
from store.redis_store import Store

VERSION = 1
DECIDING = {"decided", "reviewed", "overridden"}
POLICY_CODES = {"policy", "risky"}
HUMAN_OUTCOMES = {"approved", "rejected", "answered", "resolved"}
"""Decisions people made (an expiry with some votes in is not one)."""


@dataclass(frozen=True)
class Filters:
    since_ms: int | None = None
    until_ms: int | None = None
    agent: str | None = None
    action: str | None = None
    outcome: str | None = None


class Pseudonyms:
    """Reviewer ids as keyed HMAC-SHA-256: stable across exports with one key, not reversible."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key

    def __call__(self, user_id: str) -> str:
        if self.key is None:
            return user_id
        return "p_" + hmac.new(self.key, user_id.encode(), hashlib.sha256).hexdigest()[:20]


async def decided_ids(store: Store, f: Filters) -> AsyncIterator[list[str]]:
    """Request ids with a decision or review in the time range, a page at a time, each once."""
    chain = store.chain
    seen: set[str] = set()
    async for rows in chain.pages(chain.audit_key, stream_id(f.since_ms, False), stream_id(f.until_ms, True)):
        ids = []
        for _, fields in rows:
            rid = fields.get("request_id", "")
            if fields.get("event") in DECIDING and rid and rid not in seen:
                seen.add(rid)
                ids.append(rid)
        if ids:
            yield ids


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def _reviewer(v: Vote, pseudo: Pseudonyms) -> dict[str, Any]:
    return {"id": pseudo(v.user_id), "choice": v.choice.value, "at": v.at.isoformat()}


def record_of(r: Record, redact: Redactor, pseudo: Pseudonyms) -> dict[str, Any] | None:
    """The feedback record of one request, or None when no person decided or reviewed it, or
    it was a canary (a known-answer item the bot injected: no agent proposed it)."""
    if r.route.canary:
        return None
    d, req = r.decision, r.request
    review = r.review
    human = d is not None and bool(d.decided_by) and d.status.value in HUMAN_OUTCOMES
    if not human and review is None:
        return None
    shown = r.posted_at or r.created_at
    if human and d is not None:
        outcome, reason_code, reason = d.status.value, d.reason_code, d.reason
        reviewers = [_reviewer(v, pseudo) for v in d.decided_by]
        final, changes, at = d.params, d.changes, d.decided_at
    else:
        assert review is not None
        outcome = "review_ok" if review.verdict == "ok" else "overridden"
        reason_code, reason = review.reason_code, review.reason
        reviewers = [_reviewer(review.by, pseudo)]
        final, changes, at = r.params, {}, review.by.at
    # an edit is a correction only when it was approved: edits a co-approver made before
    # someone rejected (a quorum) were turned down, so they are no gold pair and the
    # rejection's own code decides the signal
    diff = {k: {"before": c.before, "after": c.after} for k, c in changes.items()} if outcome == "approved" else {}
    if diff:
        signal = "teaching"
    elif outcome == "overridden" or (outcome == "rejected" and reason_code in POLICY_CODES):
        signal = "policy"
    elif outcome == "rejected":
        signal = "teaching"
    else:
        signal = "confirmation"
    out = {
        "version": VERSION, "request_id": r.id, "agent": req.agent, "action": req.action,
        "kind": req.kind.value, "summary": req.summary, "params": req.params,
        "confidence": req.confidence,
        "route": {"mode": r.route.mode.value, "tier": r.route.tier, "rules": r.route.rules,
                  "sampled": r.route.sampled},
        "outcome": outcome, "final_params": final, "diff": diff, "edited": bool(diff),
        "reason_code": reason_code, "reason": reason, "answer": d.answer if d else None,
        "reviewers": reviewers, "decided_at": at.isoformat(),
        "seconds_to_decide": _seconds(shown, at), "signal": signal,
    }
    return redact.value(out) if redact else out


def _keep(rec: dict[str, Any], f: Filters) -> bool:
    return ((f.agent is None or rec["agent"] == f.agent) and (f.action is None or rec["action"] == f.action)
            and (f.outcome is None or rec["outcome"] == f.outcome))


async def export_feedback(store: Store, out: IO[str], f: Filters, redact: Redactor,
                          pseudo: Pseudonyms) -> int:
    """Write the header line and one line per human decision; the number of records."""
    out.write(json.dumps({"type": "header", "format": "hitl-feedback", "version": VERSION,
                          "pseudonymized": pseudo.key is not None}) + "\n")
    n = 0
    async for ids in decided_ids(store, f):
        for record in await store.get_many(ids):
            rec = record_of(record, redact, pseudo)
            if rec is not None and _keep(rec, f):
                # line breaks other than "\n" (U+2028, U+2029, U+0085) as JSON escapes, as in the audit export
                out.write(jsonl(rec, default=str) + "\n")
                n += 1
    return n
