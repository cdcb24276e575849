#!/usr/bin/env python3
"""Verify a `hitl audit export --format jsonl` file offline, with only the public key(s).

    python verify_audit_export.py audit.jsonl pubkey.pem [old-pubkey.pem ...]

Exit 0: every entry intact and covered by a signed checkpoint; 1: broken (a changed, missing or
unlinked entry, a bad signature); 3: intact but not covered by a signature (the newest entries
of an open-ended export, or a `--request` export, which cannot prove that; a checkpoint by a
key not given is not checked and covers nothing). The same codes as `hitl audit verify --file`.

Needs only the `cryptography` package. Each PUBKEY is what `hitl audit pubkey` prints (PEM or
base64); give the old key too after a rotation (each checkpoint names its key by `key`).
Checks each entry's hash = SHA-256(prev_hash || canonical JSON of {seq, id, fields}), each
link between consecutive entries, and each checkpoint's Ed25519 signature over {seq, hash, time}.
"""
import base64
import hashlib
import json
import re
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

SURROGATE = re.compile("[\ud800-\udfff]")  # a byte that was not UTF-8: written as \udcXX


def jcs(v):  # RFC 8785 for what the chain hashes: ASCII keys, strings and integers
    text = json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


def load_key(path):
    text = Path(path).read_text().strip()
    key = load_pem_public_key(text.encode()) if text.startswith("-----") else (
        Ed25519PublicKey.from_public_bytes(base64.b64decode(text)))
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16], key  # the key id a checkpoint names


def main(export, *keyfiles):
    keys = dict(load_key(k) for k in keyfiles)
    # "\n" only: U+2028, U+0085 and the like may sit inside a field (str.splitlines would cut there)
    rows = [json.loads(line) for line in Path(export).read_text("utf-8").split("\n") if line.strip()]
    head, bad = rows[0], []
    request = head.get("request") is not None
    entries = {e["seq"]: e for e in rows if e["type"] == "entry"}
    prev = head.get("prev") or {"seq": 0, "hash": "0" * 64}
    for seq, e in sorted(entries.items()):
        body = jcs({"seq": seq, "id": e["id"], "fields": e["fields"]})
        if hashlib.sha256(bytes.fromhex(e["prev_hash"]) + body).hexdigest() != e["hash"]:
            bad.append(f"seq {seq}: the entry does not match its hash")
        before = entries.get(seq - 1, prev if seq - 1 == prev["seq"] else None)
        if before is not None and before["hash"] != e["prev_hash"]:
            bad.append(f"seq {seq}: not linked to seq {seq - 1}")
        elif before is None and not request:
            bad.append(f"seq {seq - 1} is missing")
    signed = 0
    for c in (r for r in rows if r["type"] == "checkpoint"):
        key = keys.get(c.get("key"))
        if key is None:  # an old key after a rotation? not checked, and it covers nothing
            print(f"note: checkpoint {c['seq']} is signed by key {c.get('key')}, not a key given: not checked")
            continue
        try:
            key.verify(base64.b64decode(c["sig"]), jcs({"seq": c["seq"], "hash": c["hash"], "time": c["time"]}))
        except Exception:
            bad.append(f"checkpoint {c['seq']}: invalid signature")
            continue
        if c["seq"] in entries and entries[c["seq"]]["hash"] != c["hash"]:
            bad.append(f"checkpoint {c['seq']}: the chain was rewritten")
        elif c["seq"] in entries and not request:
            signed = max(signed, c["seq"])
    for line in bad:
        print("BROKEN:", line)
    last = max(entries, default=prev["seq"])
    print(f"{len(entries)} entries, {'broken' if bad else 'intact'}; signed through seq {signed or '-'} of {last}")
    if bad:
        return 1
    if request:
        print("NOT SIGNED: a --request export cannot prove that no entry is missing, nor a signature")
        return 3
    if entries and signed < last:
        print(f"NOT SIGNED: entries seq {max(signed, prev['seq']) + 1}..{last} are not covered by a checkpoint")
        return 3
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print("usage:", __doc__.split("\n\n")[1].strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
