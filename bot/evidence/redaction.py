"""Redaction of the audit trail: named params and values matching patterns never reach it.

Redaction happens before an entry is written (and so before it is hashed): the stream holds
only the redacted form, the chain hashes that form, and verify and exports stay valid. The
cost is that the original value is gone from the audit trail for good; the request record
(what the bot needs to act) keeps it until the record expires.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

MASK = "[redacted]"


class Redactor:
    """Masks every value under a key named in `params` (any depth) and every pattern match."""

    def __init__(self, params: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        self.params = frozenset(p.lower() for p in params)
        self.patterns = [re.compile(p) for p in patterns]

    def __bool__(self) -> bool:
        return bool(self.params or self.patterns)

    def value(self, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: MASK if str(k).lower() in self.params else self.value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, str):
            for p in self.patterns:
                v = p.sub(MASK, v)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            # a number (an edited amount, an account number sent as JSON number) is matched as
            # it is written in the entry's JSON; any match masks the whole number
            text = str(v)
            if any(p.search(text) for p in self.patterns):
                return MASK
        return v

    def detail(self, detail: dict[str, Any]) -> dict[str, Any]:
        """The detail as it may be audited (a new dict; the input is unchanged)."""
        return self.value(detail) if self else detail


class PolicyRedactor:
    """The redactor of the policy in force, rebuilt only when the policy changes."""

    def __init__(self, current: Callable[[], tuple[tuple[str, ...], tuple[str, ...]]]) -> None:
        self.current = current
        self._key: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._redactor = Redactor()

    def __call__(self, detail: dict[str, Any]) -> dict[str, Any]:
        key = self.current()
        if key != self._key:
            self._key, self._redactor = key, Redactor(*key)
        return self._redactor.detail(detail)
