#!/usr/bin/env python3
"""Verify a `hitl audit export --format jsonl` file offline, with only the public key.

    python verify_audit_export.py audit.jsonl pubkey.pem     # exit 0: verified, 1: broken

Needs only the `cryptography` package. PUBKEY is what `hitl audit pubkey` prints (PEM or base64).
Checks each entry's hash = SHA-256(prev_hash || canonical JSON of {seq, id, fields}), each
link between consecutive entries, and each checkpoint's Ed25519 signature over {seq, hash, time}.
"""
import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key


def jcs(v):  # RFC 8785 for what the chain hashes: ASCII keys, strings and integers
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def main(export, keyfile):
    text = Path(keyfile).read_text().strip()
    key = load_pem_public_key(text.encode()) if text.startswith("-----") else (
        Ed25519PublicKey.from_public_bytes(base64.b64decode(text)))
    rows = [json.loads(line) for line in Path(export).read_text("utf-8").splitlines() if line.strip()]
    head, bad = rows[0], []
    entries = {e["seq"]: e for e in rows if e["type"] == "entry"}
    prev = head.get("prev") or {"seq": 0, "hash": "0" * 64}
    for seq, e in sorted(entries.items()):
        body = jcs({"seq": seq, "id": e["id"], "fields": e["fields"]})
        if hashlib.sha256(bytes.fromhex(e["prev_hash"]) + body).hexdigest() != e["hash"]:
            bad.append(f"seq {seq}: the entry does not match its hash")
        before = entries.get(seq - 1, prev if seq - 1 == prev["seq"] else None)
        if before is not None and before["hash"] != e["prev_hash"]:
            bad.append(f"seq {seq}: not linked to seq {seq - 1}")
        elif before is None and head.get("request") is None:
            bad.append(f"seq {seq - 1} is missing")
    signed = 0
    for c in (r for r in rows if r["type"] == "checkpoint"):
        try:
            key.verify(base64.b64decode(c["sig"]), jcs({"seq": c["seq"], "hash": c["hash"], "time": c["time"]}))
        except Exception:
            bad.append(f"checkpoint {c['seq']}: invalid signature")
            continue
        if c["seq"] in entries and entries[c["seq"]]["hash"] != c["hash"]:
            bad.append(f"checkpoint {c['seq']}: the chain was rewritten")
        elif c["seq"] in entries and head.get("request") is None:
            signed = max(signed, c["seq"])
    for line in bad:
        print("BROKEN:", line)
    last = max(entries, default=prev["seq"])
    print(f"{len(entries)} entries, {'broken' if bad else 'intact'}; signed through seq {signed or '-'} of {last}")
    return 1 if bad or (head.get("request") is None and signed < last) else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
