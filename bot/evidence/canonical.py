"""RFC 8785 (JCS) canonical JSON for the values the chain hashes, and the hash rules.

The chain hashes only strings, integers and objects of them (audit fields are strings),
so the JCS rules needed are: keys sorted by UTF-16 code units, no whitespace, strings
escaped as ECMAScript's JSON.stringify does, integers in decimal. Floats are refused
rather than risk a number form JCS would write differently.

An entry that is not UTF-8 (written by someone else: hitl never writes one) is read with its
bad bytes as lone surrogates (`store.chain.text`). JCS has no form for a lone surrogate; the
chain writes each as the escape `\\udcXX` (lowercase hex), which is what ECMAScript's
well-formed JSON.stringify writes. A valid string never holds a lone surrogate, so no valid
entry hashes like a damaged one; every valid entry hashes exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import re
from json.encoder import encode_basestring as _q
from typing import Any

from store.chain_models import GENESIS

_SURROGATE = re.compile("[\ud800-\udfff]")


def _utf8(text: str) -> bytes:
    """UTF-8 of canonical JSON text, lone surrogates written as `\\uXXXX` escapes."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


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
    return _utf8("".join(out))


def entry_body(seq: int, entry_id: str, fields: dict[str, str]) -> bytes:
    """JCS({"fields", "id", "seq"}). The sealer's hot path: with ASCII keys and string values
    (every audit entry) code-point order is UTF-16 order and json's C string escaper writes
    exactly JCS's escapes, so the bytes are built directly; anything else takes `canonical`."""
    try:
        if "".join(fields).isascii():
            inner = ",".join([_q(k) + ":" + _q(fields[k]) for k in sorted(fields)])
            return f'{{"fields":{{{inner}}},"id":{_q(entry_id)},"seq":{int(seq)}}}'.encode()
    except (TypeError, UnicodeEncodeError):  # UnicodeEncodeError: a value that was not UTF-8
        pass
    return canonical({"seq": seq, "id": entry_id, "fields": fields})


def entry_hash(prev_hash: str, seq: int, entry_id: str, fields: dict[str, str]) -> str:
    """hash = SHA-256(prev_hash bytes || JCS({"fields", "id", "seq"})), as lowercase hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + entry_body(seq, entry_id, fields)).hexdigest()


def chain_hashes(prev_hash: str, seq: int, rows: list[tuple[str, dict[str, str]]]) -> list[str]:
    """The hashes of `rows` (entry id, fields) numbered from `seq`, chained from `prev_hash`."""
    prev, out, sha = bytes.fromhex(prev_hash), [], hashlib.sha256
    for entry_id, fields in rows:
        prev = sha(prev + entry_body(seq, entry_id, fields)).digest()
        out.append(prev.hex())
        seq += 1
    return out


def checkpoint_message(seq: int, hash_: str, time_ms: int) -> bytes:
    """The bytes a checkpoint signs: JCS({"hash", "seq", "time"})."""
    return canonical({"seq": seq, "hash": hash_, "time": time_ms})


__all__ = ["GENESIS", "canonical", "checkpoint_message", "entry_hash"]
