"""Bounded JSON: the limits every value from outside (a queue entry, an edit) is held to.

The one copy: the bot reads every queue entry with `loads` (it re-exports this module as
`store.bounds`), and the SDK checks each request with `check_entry` before sending it, so a
request the SDK sends is one the bot can read.

A value that passes these checks can be stored, read back by every reader (pydantic, Lua's
cjson, JavaScript) and shown on a card; one that does not is refused with a reason in words,
before anything is stored. Python's `json` alone accepts `NaN`, `1e400` (as infinity), nesting
deep enough to exceed other parsers' limits, integers too long to convert back to text, and
`\\ud800` escapes that decode to half a surrogate pair: text no UTF-8 store can hold.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hitl.protocol import MAX_ENTRY_BYTES

MAX_DEPTH = 32
"""Nesting of objects and lists in one request (the request object itself is level 1)."""
MAX_NUMBER = 1e15
"""Largest magnitude of any number (risk.amount's cap; every integer up to it is exact as a
double, so JavaScript and Lua agents read the same value). Larger ids belong in strings."""
MAX_DIGITS = 16
"""Digits of an integer (len(str(10**15)))."""


class OutOfBounds(ValueError):
    """A value outside the limits; the message says which limit, in plain words."""


def check_number(value: float | int) -> float | int:
    """`value` itself when it is finite and within ±MAX_NUMBER, else OutOfBounds."""
    if isinstance(value, float) and not math.isfinite(value):
        raise OutOfBounds(f"{value} is not a finite number")
    if abs(value) > MAX_NUMBER:
        raise OutOfBounds(f"{_short(value)} is out of range (numbers are at most 1e15 in magnitude; "
                          "send larger ids as text)")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise OutOfBounds(f"the integer {_clip(text)} has {len(text.lstrip('-'))} digits "
                          f"(numbers are at most 1e15 in magnitude; send larger ids as text)")
    return int(check_number(int(text)))


def _float(text: str) -> float:
    return float(check_number(float(text)))


def _constant(text: str) -> Any:
    raise OutOfBounds(f"{text} is not a number JSON allows")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""Where a lone surrogate can come from: raw UTF-8 cannot hold one, only a JSON escape can."""


def loads(text: str | bytes) -> Any:
    """Parse JSON within MAX_DEPTH, MAX_NUMBER, finite numbers and text that is Unicode;
    OutOfBounds or json.JSONDecodeError (both ValueError) otherwise."""
    try:
        data = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError as e:  # nested far past MAX_DEPTH
        raise OutOfBounds(f"nested more than {MAX_DEPTH} levels deep") from e
    opened = text.count("{") + text.count("[") if isinstance(text, str) else MAX_DEPTH + 1
    if opened > MAX_DEPTH:  # otherwise it cannot nest deeper (brackets in strings only add)
        check_depth(data)
    if _SURROGATE_ESCAPE.search(text if isinstance(text, str) else text.decode("utf-8", "replace")):
        check_unicode(data)  # a pair (an emoji written as two escapes) is fine: it decodes whole
    return data


def check_unicode(data: Any) -> None:
    """OutOfBounds when a key or a text holds a lone surrogate (`\\ud800` without its pair)."""
    level = [data]
    while level:
        value = level.pop()
        texts = [*value.keys(), *value.values()] if isinstance(value, dict) else \
            value if isinstance(value, list) else [value]
        for t in texts:
            if isinstance(t, str):
                try:
                    t.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise OutOfBounds(f"text {_clip(t.encode('utf-8', 'backslashreplace').decode())!r} holds "
                                      f"{t[e.start].encode('unicode_escape').decode()}, half of a surrogate "
                                      "pair: not Unicode text") from e
            elif isinstance(t, dict | list) and t is not value:
                level.append(t)


def check_depth(data: Any) -> None:
    """OutOfBounds when lists and objects nest deeper than MAX_DEPTH."""
    level: list[tuple[Any, int]] = [(data, 1)]
    while level:
        value, depth = level.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    raise OutOfBounds(f"nested more than {MAX_DEPTH} levels deep")
                level.append((child, depth + 1))


def _clip(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:10]}...{text[-6:]}"


def _short(value: float | int) -> str:
    return _clip(str(value)) if isinstance(value, int) else f"{value:g}"


def check_value(data: Any) -> None:
    """OutOfBounds unless every number, the nesting and every text of `data` (Python values,
    the request object itself at level 1) are within the limits `loads` holds JSON to: one
    walk, on an agent's every call."""
    _check(data, 1)


def _check(value: Any, depth: int) -> None:
    if isinstance(value, str):
        if not value.isascii():
            check_unicode(value)
    elif isinstance(value, dict | list | tuple):
        if depth > MAX_DEPTH:
            raise OutOfBounds(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and not k.isascii():
                    check_unicode(k)
                _check(v, depth + 1)
        else:
            for v in value:
                _check(v, depth + 1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        check_number(value)


def check_entry(text: str) -> None:
    """OutOfBounds unless `text`, a queue entry's `request` field, is at most MAX_ENTRY_BYTES of
    UTF-8 (its values are held to `loads`' limits by `check_value` before it is written)."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_ENTRY_BYTES:
        raise OutOfBounds(f"the request is {size} bytes of JSON; the limit is {MAX_ENTRY_BYTES}")
