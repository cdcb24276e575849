"""Slack's Web API method reference: which methods exist, their required arguments and tiers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "HITL_SLACK_REFERENCE"


@dataclass(frozen=True)
class MethodSpec:
    name: str
    required: tuple[str, ...]
    tier: str


# Used when the reference data is not on disk (a pip-installed `hitl demo`): the methods the
# bot and the emulator's own driver use, with Slack's required arguments and rate tiers.
BUILTIN: dict[str, tuple[tuple[str, ...], str]] = {
    "auth.test": ((), "t5"),
    "chat.postMessage": (("channel",), "t5"),
    "chat.update": (("ts", "channel"), "t3"),
    "chat.delete": (("ts", "channel"), "t3"),
    "chat.postEphemeral": (("user", "channel"), "t4"),
    "chat.getPermalink": (("channel", "message_ts"), "t5"),
    "conversations.history": (("channel",), "t3"),
    "conversations.replies": (("channel", "ts"), "t3"),
    "conversations.info": (("channel",), "t3"),
    "conversations.list": ((), "t2"),
    "conversations.join": (("channel",), "t3"),
    "conversations.open": ((), "t3"),
    "users.info": (("user",), "t4"),
    "users.list": ((), "t2"),
    "usergroups.list": ((), "t2"),
    "usergroups.users.list": (("usergroup",), "t2"),
    "views.open": (("view",), "t4"),
    "views.update": (("view",), "t4"),
    "views.push": (("view",), "t4"),
    "views.publish": (("user_id", "view"), "t4"),
    "files.getUploadURLExternal": (("length", "filename"), "t4"),
    "files.completeUploadExternal": (("files",), "t4"),
    "files.info": (("file",), "t4"),
    "reactions.add": (("name", "timestamp", "channel"), "t3"),
}


class Reference:
    """The set of known methods, loaded once."""

    def __init__(self, methods: dict[str, MethodSpec], source: Path | None) -> None:
        self.methods = methods
        self.source = source

    def get(self, name: str) -> MethodSpec | None:
        return self.methods.get(name)

    @classmethod
    def builtin(cls) -> Reference:
        return cls({n: MethodSpec(n, req, tier) for n, (req, tier) in BUILTIN.items()}, None)

    @classmethod
    def from_dir(cls, methods_dir: Path) -> Reference:
        """Read every `<method>.json`; `token` is never required (it travels in a header)."""
        methods: dict[str, MethodSpec] = {}
        for path in sorted(methods_dir.glob("*.json")):
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("args"), dict):
                continue  # methods.json is an index, not a method
            required = tuple(r for r in data.get("args", {}).get("required", []) if r != "token")
            methods[path.stem] = MethodSpec(path.stem, required, str(data.get("rate_limits", "t3")))
        return cls(methods, methods_dir)

    @classmethod
    def load(cls, reference_dir: Path | None = None) -> Reference:
        """From `reference_dir`, `$HITL_SLACK_REFERENCE`, the repository, or the built-in table."""
        found = find_methods_dir(reference_dir)
        return cls.from_dir(found) if found else cls.builtin()


def _methods_dir(candidate: Path) -> Path | None:
    for p in (candidate, candidate / "methods", candidate / "slack-reference" / "methods"):
        if p.is_dir() and any(p.glob("*.json")):
            return p
    return None


def find_methods_dir(explicit: Path | None = None) -> Path | None:
    """Locate `shared/slack-reference/methods`, walking up from the cwd and this package."""
    if explicit is not None:
        return _methods_dir(Path(explicit))
    env = os.environ.get(ENV_VAR)
    if env:
        return _methods_dir(Path(env))
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for base in (start, *start.parents):
            for cand in (
                base / "shared" / "slack-reference",
                base.parent / "shared" / "slack-reference",
            ):
                found = _methods_dir(cand)
                if found:
                    return found
    return None
