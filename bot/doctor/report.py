"""One line per check: its status, what was found, and how to fix it; as text or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum


class Status(StrEnum):
    ok = "ok"
    warn = "warn"  # works, but worth a look; does not fail the run
    error = "error"  # hitl will not work (or will lose approvals) until it is fixed
    skip = "skip"  # could not be checked because an earlier check failed


@dataclass(frozen=True)
class Check:
    """The outcome of one check. `fix` says what to do; empty when nothing is to be done."""

    name: str
    status: Status
    detail: str
    fix: str = ""


MARK = {Status.ok: "ok   ", Status.warn: "WARN ", Status.error: "ERROR", Status.skip: "skip "}


def text(checks: list[Check]) -> str:
    """`ERROR redis.eviction: maxmemory-policy is allkeys-lru -> fix: ...`, one line each."""
    lines = []
    for c in checks:
        fix = f" -> fix: {c.fix}" if c.fix and c.status is not Status.ok else ""
        lines.append(f"{MARK[c.status]} {c.name}: {c.detail}{fix}")
    errors = sum(c.status is Status.error for c in checks)
    warns = sum(c.status is Status.warn for c in checks)
    lines.append(f"{len(checks)} checks: {errors} error{'s' * (errors != 1)}, "
                 f"{warns} warning{'s' * (warns != 1)}"
                 + ("" if errors else " (hitl can run)"))
    return "\n".join(lines)


def as_json(checks: list[Check]) -> str:
    """`{"ok": bool, "checks": [{name, status, detail, fix}, ...]}` for automation."""
    return json.dumps({"ok": exit_code(checks) == 0,
                       "checks": [asdict(c) for c in checks]}, indent=2)


def exit_code(checks: list[Check]) -> int:
    """1 when any check is an error, else 0 (warnings do not fail)."""
    return 1 if any(c.status is Status.error for c in checks) else 0
