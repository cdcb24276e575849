#!/usr/bin/env python3
"""Regenerate the project's Slack reference data from a slack-reference folder.

    python3 scripts/derive_slack_reference.py --from /path/to/slack-reference [--to emulator/data]

The folder holds `manifest/manifest.schema.1.0.0.json` (Slack's app manifest JSON Schema,
github.com/slackapi/manifest-schema, MIT) and `methods/<method>.json`, one file per Web API
method (github.com/slack-ruby/slack-api-ref, MIT), each with its license file. This writes:

- `methods.json`: method name -> {"required": [...], "tier": "t1".."t5" or null,
  "bot": [scopes], "user": [scopes], "http": "GET"|"POST"}, sorted, one method per line;
  `required` never lists `token` (it travels in the Authorization header); a bot or user
  scope list means "any one of these";
- `manifest.schema.json`: the manifest schema, unchanged;
- `LICENSE-manifest-schema`, `LICENSE-slack-api-ref` and `NOTICE.md`: where each came from.

Nothing in the project reads the source folder at run or test time; only this script does.
Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

SCHEMA = Path("manifest") / "manifest.schema.1.0.0.json"
LICENSES = {
    Path("manifest") / "LICENSE": "LICENSE-manifest-schema",
    Path("methods") / "LICENSE.md": "LICENSE-slack-api-ref",
}
TIERS = ("t1", "t2", "t3", "t4", "t5")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "emulator" / "data"

NOTICE = """\
# Slack reference data

Derived by `scripts/derive_slack_reference.py` from a `slack-reference` folder; regenerate with
`python3 scripts/derive_slack_reference.py --from PATH`. Do not edit these files by hand.

| file | derived from | license |
|---|---|---|
| `manifest.schema.json` | Slack's JSON Schema for app manifests, github.com/slackapi/manifest-schema, `schemas/manifest.schema.1.0.0.json` (copied unchanged) | MIT, Copyright (c) Slack Technologies, LLC: `LICENSE-manifest-schema` |
| `methods.json` | one JSON per Web API method from github.com/slack-ruby/slack-api-ref, `docs.slack.dev/methods/` (a scrape of Slack's method reference); kept: required arguments, rate tier, bot and user scopes, HTTP method | MIT, Copyright (c) Daniel Doubrovkine, Artsy and Contributors: `LICENSE-slack-api-ref` |

`methods.json` holds {count} methods. Its fields: `required` (arguments Slack requires, without
`token`), `tier` (`t1`..`t4`, `t5` for chat.postMessage's special tier, `null` when the reference
names none), `bot` and `user` (the scopes of which a token needs any one; empty: none needed),
`http` (GET or POST).
"""


class ReferenceError_(Exception):
    """The source folder is not a usable slack-reference folder; the message says why."""


def _scopes(scope: Any, kind: str) -> list[str]:
    if not isinstance(scope, dict):
        return []  # "none" or missing: no scope needed
    return sorted(str(s) for s in scope.get(kind) or [])


def method_entry(data: dict[str, Any]) -> dict[str, Any]:
    """The compact facts of one method file."""
    args = data.get("args") if isinstance(data.get("args"), dict) else {}
    tier = data.get("rate_limits")
    return {
        "required": [str(r) for r in args.get("required", []) if r != "token"],
        "tier": tier if tier in TIERS else None,
        "bot": _scopes(data.get("scope"), "bot"),
        "user": _scopes(data.get("scope"), "user"),
        "http": str(data.get("http_method") or "POST").upper(),
    }


def read_methods(methods_dir: Path) -> dict[str, dict[str, Any]]:
    """Every `<method>.json` with an `args` object (the `methods.json` index has none)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(methods_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ReferenceError_(f"{path}: not readable JSON ({e})") from e
        if isinstance(data, dict) and isinstance(data.get("args"), dict):
            out[path.stem] = method_entry(data)
    if not out:
        raise ReferenceError_(f"{methods_dir}: no method files (<method>.json with `args`)")
    return out


def dump_methods(methods: dict[str, dict[str, Any]]) -> str:
    """One method per line: small diffs when Slack's reference changes."""
    lines = [f"  {json.dumps(name)}: {json.dumps(entry, separators=(',', ':'))}"
             for name, entry in sorted(methods.items())]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def derive(source: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Write the data files into `out` from the reference folder `source`; returns the methods."""
    for rel in (SCHEMA, *LICENSES):
        if not (source / rel).is_file():
            raise ReferenceError_(f"{source}: {rel} is missing")
    methods = read_methods(source / "methods")
    try:
        json.loads((source / SCHEMA).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReferenceError_(f"{source / SCHEMA}: not JSON ({e})") from e
    out.mkdir(parents=True, exist_ok=True)
    (out / "methods.json").write_text(dump_methods(methods), encoding="utf-8")
    shutil.copyfile(source / SCHEMA, out / "manifest.schema.json")
    for rel, name in LICENSES.items():
        shutil.copyfile(source / rel, out / name)
    (out / "NOTICE.md").write_text(NOTICE.format(count=len(methods)), encoding="utf-8")
    return methods


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", required=True, type=Path,
                   help="the slack-reference folder (with manifest/ and methods/)")
    p.add_argument("--to", dest="out", type=Path, default=DEFAULT_OUT,
                   help=f"where to write the data files (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    try:
        methods = derive(args.source, args.out)
    except ReferenceError_ as e:
        print(f"derive_slack_reference: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(methods)} methods and the manifest schema to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
