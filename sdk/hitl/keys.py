"""The Redis keys an agent touches (the bot's `store.keys.Keys` builds the same names;
tests/test_sdk.py checks they agree)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AgentKeys:
    prefix: str = "hitl"

    @property
    def requests(self) -> str:
        return f"{self.prefix}:requests"

    @property
    def dead(self) -> str:
        """Entries the bot refused (dead letters): the entry's own fields, and `error`."""
        return f"{self.prefix}:requests:dead"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}:decisions"

    def results(self, name: str) -> str:
        return f"{self.prefix}:results:{name}"

    def request(self, request_id: str) -> str:
        return f"{self.prefix}:req:{request_id}"

    def invalid(self, request_id: str) -> str:
        return f"{self.prefix}:invalid:{request_id}"

    def owns(self, key: str) -> bool:
        """True when `key` is one of the bot's own keys, which a request's `reply_to` may not name
        (the bot refuses such a request): anything under the prefix but `{prefix}:results:<name>`."""
        results = f"{self.prefix}:results:"
        if key.startswith(results) and len(key) > len(results):
            return False
        return key == self.prefix or key.startswith(f"{self.prefix}:")
