"""The Slack scopes hitl needs, derived from the Web API methods its code calls.

The code of `bot` and `handlers` is scanned for slack_sdk calls (`.chat_postMessage(`) and
`api_call(<name>)`); each method's bot scopes come from the shipped reference data
(`emulator/data/methods.json`): a token needs any one of a method's scopes. The `/hitl`
command adds `commands`. tests/test_doctor.py checks this scan agrees with the manifest test's.
"""

from __future__ import annotations

import itertools
import re
from functools import cache
from pathlib import Path

from emulator.reference import MethodSpec, Reference

SCANNED = ("bot", "handlers")
# slack_sdk methods whose Python name does not spell the Web API method(s) they call.
SDK_ALIASES: dict[str, tuple[str, ...]] = {
    "files_upload_v2": ("files.getUploadURLExternal", "files.completeUploadExternal"),
}
SDK_CALL = re.compile(r"\.([a-z]+(?:_[a-zA-Z0-9]+)+)\(")
API_CALL = re.compile(r"""(?:\bapi_call|\.call)\(\s*(?:api_method\s*=\s*)?["']([A-Za-z0-9_.]+)["']""")
EXTRA_SCOPES = {"commands": "the /hitl slash command"}


def sdk_methods(name: str, known: Reference) -> tuple[str, ...]:
    """`chat_postMessage` -> ("chat.postMessage",); names that are no Web API method -> ()."""
    if name in SDK_ALIASES:
        return SDK_ALIASES[name]
    parts = name.split("_")
    found = []
    for seps in itertools.product("._", repeat=len(parts) - 1):
        candidate = parts[0] + "".join(s + p for s, p in zip(seps, parts[1:], strict=True))
        if candidate in known:
            found.append(candidate)
    return tuple(found)


def _package_dirs() -> list[Path]:
    root = Path(__file__).resolve().parent.parent.parent
    return [root / pkg for pkg in SCANNED if (root / pkg).is_dir()]


@cache
def called_methods() -> dict[str, MethodSpec]:
    """Every Web API method the bot's code calls, with its facts."""
    ref = Reference.load()
    called: dict[str, MethodSpec] = {}
    for pkg in _package_dirs():
        for path in sorted(pkg.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            names = [m for n in SDK_CALL.findall(text) for m in sdk_methods(n, ref)]
            names += [n for n in API_CALL.findall(text) if n in ref]
            for name in names:
                spec = ref.get(name)
                if spec is not None:
                    called[name] = spec
    return called


def missing_scopes(granted: set[str]) -> list[tuple[tuple[str, ...], list[str]]]:
    """What is missing: (scopes of which one is needed, the methods or features needing it).

    [] when nothing is missing. Methods that accept the same scopes share one entry.
    """
    out: dict[tuple[str, ...], list[str]] = {}
    for name, spec in sorted(called_methods().items()):
        if not spec.granted_by(granted):
            out.setdefault(spec.bot_scopes, []).append(name)
    for scope, why in EXTRA_SCOPES.items():
        if scope not in granted:
            out.setdefault((scope,), []).append(why)
    return sorted(out.items())
