"""`hitl audit verify --file`: verify an export with the public key only (no Redis)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.evidence.canonical import entry_hash
from bot.evidence.verify import Report, Walker
from store.chain_models import Checkpoint, Link

REQUEST_NOTE = ("a --request export: each entry is checked against its own (prev_hash, hash) and "
                "consecutive entries against each other; that no entry is missing and that a "
                "signature covers them cannot be proven from this file (export a time range for that)")


def verify_rows(rows: list[dict[str, Any]], keys: list[Ed25519PublicKey], no_key: str) -> Report:
    """Check every entry, every link between entries and every checkpoint of an export."""
    r = Report()
    header = rows[0] if rows and rows[0].get("type") == "header" else {}
    entries = sorted((x for x in rows if x.get("type") == "entry"), key=lambda x: int(x["seq"]))
    cps = [Checkpoint(int(c["seq"]), c["hash"], int(c["time"]), c["sig"], c["key"])
           for c in rows if c.get("type") == "checkpoint"]
    if header.get("request") is not None:
        return _one_by_one(r, entries, cps, keys, no_key)
    prev = header.get("prev") or {"seq": 0, "hash": "0" * 64}
    w = Walker(r, Link(int(prev["seq"]), prev["hash"], ""), {c.seq for c in cps})
    for e in entries:
        if e["prev_hash"] != w.prev and int(e["seq"]) == w.expected:
            w.problem("modified", int(e["seq"]), e["id"], f"entry seq {e['seq']} names a prev_hash that is "
                      "not the hash of the entry before it")
        w.sealed(Link(int(e["seq"]), e["hash"], e["id"]), e["fields"])
    w.checkpoints(cps, keys, int(prev["seq"]))
    if not keys:
        r.unsigned = f"checkpoints were not checked: {no_key}"
    elif r.entries and (r.signed_through or 0) < (r.last_seq or 0):
        r.unsigned = (f"entries seq {(r.signed_through or int(prev['seq'])) + 1}..{r.last_seq} are not covered "
                      "by a signed checkpoint in this file")
    return r


def _one_by_one(r: Report, entries: list[dict[str, Any]], cps: list[Checkpoint],
                keys: list[Ed25519PublicKey], no_key: str) -> Report:
    from bot.evidence.signing import key_id, signature_ok

    by_key = {key_id(k): k for k in keys}
    prev: dict[str, Any] | None = None
    for e in entries:
        seq = int(e["seq"])
        if entry_hash(e["prev_hash"], seq, e["id"], e["fields"]) != e["hash"]:
            r.problems.append(_p("modified", seq, e["id"], f"entry seq {seq} does not match its hash"))
        if prev is not None and int(prev["seq"]) == seq - 1 and prev["hash"] != e["prev_hash"]:
            r.problems.append(_p("order", seq, e["id"], f"entry seq {seq} does not link to seq {seq - 1}"))
        r.entries += 1
        r.first_seq = seq if r.first_seq is None else r.first_seq
        r.last_seq, prev = seq, e
    for cp in cps:
        key = by_key.get(cp.key)
        if key is not None and not signature_ok(key, cp):
            r.problems.append(_p("bad_signature", cp.seq, None, f"checkpoint at seq {cp.seq}: invalid signature"))
    r.unsigned = REQUEST_NOTE if keys else f"checkpoints were not checked: {no_key}"
    return r


def _p(kind: str, seq: int | None, entry_id: str | None, message: str) -> Any:
    from bot.evidence.verify import Problem

    return Problem(kind, seq, entry_id, message)
