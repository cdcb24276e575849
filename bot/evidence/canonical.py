"""RFC 8785 (JCS) canonical JSON for the values the chain hashes, and the hash rules.

The chain hashes only strings, integers and objects of them (audit fields are strings),
so the JCS rules needed are: keys sorted by UTF-16 code units, no whitespace, strings
escaped as ECMAScript's JSON.stringify does, integers in decimal. Floats are refused
rather than risk a number form JCS would write differently.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from store.chain_models import GENESIS


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be")


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        # json.dumps escapes exactly what JCS escapes (", \, control characters; \u00xx lowercase)
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, bool) or value is None:
        out.append(json.dumps(value))
    elif isinstance(value, int):
        if abs(value) > 2**53:
            raise ValueError("integers beyond 2^53 have no exact JCS form")
        out.append(str(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16)):
            if not isinstance(key, str):
                raise TypeError("object keys must be strings")
            out.append("," if i else "")
            _encode(key, out)
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            out.append("," if i else "")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot canonicalize {type(value).__name__}")


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of `value` (strings, ints, bools, null, lists, objects)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def entry_hash(prev_hash: str, seq: int, entry_id: str, fields: dict[str, str]) -> str:
    """hash = SHA-256(prev_hash bytes || JCS({"fields", "id", "seq"})), as lowercase hex."""
    body = canonical({"seq": seq, "id": entry_id, "fields": fields})
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def checkpoint_message(seq: int, hash_: str, time_ms: int) -> bytes:
    """The bytes a checkpoint signs: JCS({"hash", "seq", "time"})."""
    return canonical({"seq": seq, "hash": hash_, "time": time_ms})


__all__ = ["GENESIS", "canonical", "checkpoint_message", "entry_hash"]
