"""Slack's Web API method reference: methods, required arguments, scopes and rate tiers.

One source: `emulator/data/methods.json`, derived from Slack's method reference by
`scripts/derive_slack_reference.py` (see `emulator/data/NOTICE.md`). It ships inside the
package, so the emulator, the tests and `hitl doctor` read the same facts from the
repository and never from outside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

DATA = "data"
METHODS_FILE = "methods.json"
MANIFEST_SCHEMA_FILE = "manifest.schema.json"


@dataclass(frozen=True)
class MethodSpec:
    """One Web API method. A token needs any one of `bot_scopes` (or `user_scopes`)."""

    name: str
    required: tuple[str, ...]
    tier: str  # "t1".."t4", "t5" for chat.postMessage's special tier, "" when none is listed
    bot_scopes: tuple[str, ...] = ()
    user_scopes: tuple[str, ...] = ()
    http: str = "POST"

    @property
    def user_only(self) -> bool:
        """Only a user token can call it: user scopes listed and no bot scope."""
        return bool(self.user_scopes) and not self.bot_scopes

    def granted_by(self, scopes: set[str] | frozenset[str]) -> bool:
        """Whether a bot token holding `scopes` may call this method."""
        return not self.bot_scopes or bool(scopes & set(self.bot_scopes))


def _spec(name: str, entry: dict[str, Any]) -> MethodSpec:
    return MethodSpec(
        name=name,
        required=tuple(entry.get("required") or ()),
        tier=str(entry.get("tier") or ""),
        bot_scopes=tuple(entry.get("bot") or ()),
        user_scopes=tuple(entry.get("user") or ()),
        http=str(entry.get("http") or "POST"),
    )


def data_text(name: str) -> str:
    """A file of the derived reference data shipped in `emulator/data/`."""
    return resources.files("emulator").joinpath(DATA, name).read_text(encoding="utf-8")


@cache
def manifest_schema() -> dict[str, Any]:
    """Slack's app manifest JSON Schema (draft-07)."""
    schema: dict[str, Any] = json.loads(data_text(MANIFEST_SCHEMA_FILE))
    return schema


class Reference:
    """The set of known methods, loaded once."""

    def __init__(self, methods: dict[str, MethodSpec], source: str) -> None:
        self.methods = methods
        self.source = source

    def get(self, name: str) -> MethodSpec | None:
        return self.methods.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.methods

    @classmethod
    def parse(cls, text: str, source: str) -> Reference:
        """From the text of a `methods.json` (name -> {required, tier, bot, user, http})."""
        data = json.loads(text)
        if not isinstance(data, dict) or not data:
            raise ValueError(f"{source}: not a non-empty JSON object of methods")
        return cls({name: _spec(name, entry) for name, entry in data.items()}, source)

    @classmethod
    def load(cls, methods_file: Path | None = None) -> Reference:
        """The shipped `emulator/data/methods.json`, or another file of the same shape."""
        if methods_file is not None:
            return cls.parse(Path(methods_file).read_text(encoding="utf-8"), str(methods_file))
        return shipped()


@cache
def shipped() -> Reference:
    """The reference shipped with the package (read once per process)."""
    return Reference.parse(data_text(METHODS_FILE), f"emulator/{DATA}/{METHODS_FILE}")
