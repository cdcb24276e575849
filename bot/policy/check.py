"""`hitl policy check FILE [REQUEST.json ...]`: validate a policy, show how requests route."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.policy.engine import PolicyEngine
from bot.policy.fields import format_duration
from bot.policy.load import PolicyError
from store.models import Request, Route

OK, INVALID_POLICY, INVALID_REQUEST = 0, 1, 2


def check(policy_path: Path | None, request_files: list[Path], *,
          first_use: bool = False, paused: bool = False) -> tuple[int, str]:
    """Exit code (0 fine, 1 invalid policy, 2 an unreadable request) and a printable report."""
    try:
        engine = PolicyEngine.default() if policy_path is None else PolicyEngine.from_file(
            policy_path)
    except PolicyError as e:
        return INVALID_POLICY, str(e)
    lines = [summary(engine)]
    code = OK
    for path in request_files:
        lines.append("")
        try:
            requests = _requests(path)
        except (OSError, ValueError) as e:  # a ValueError names the file (and item) itself
            lines.append(str(e) if isinstance(e, ValueError) else f"{path}: {e}")
            code = INVALID_REQUEST
            continue
        for label, request in requests:
            route = engine.route(request, first_use=first_use, paused=paused)
            lines.append(f"{label}: {request.action} — {request.summary[:80]}")
            lines.extend(describe(route))
    skipped = ", ".join(f"{n} ({c}x)" for n, c in sorted(engine.skipped.items()))
    if skipped:
        lines += ["", f"rules skipped because their condition failed on a request without the fields it reads: {skipped}"]
    undecided = ", ".join(f"{n} ({c}x)" for n, c in sorted(engine.undecided.items()))
    if undecided:
        lines += ["", f"rules routed as if they fired because their condition could not be decided: {undecided}"]
    return code, "\n".join(lines)


def summary(engine: PolicyEngine) -> str:
    """One paragraph: the policy is valid, its tiers, rules and triggers."""
    p = engine.policy
    tiers = " < ".join(f"{t.name} ({t.mode.value})" for t in engine.tiers.values())
    on = [name for name, t in p.triggers if t.enabled]
    off = [name for name, t in p.triggers if not t.enabled]
    text = (f"{engine.source}: valid\n  tiers     {tiers}\n"
            f"  rules     {', '.join(r.name for r in p.rules) or 'none'}\n"
            f"  triggers  {', '.join(on) or 'none'}")
    if off:
        text += f"\n  off       {', '.join(off)}"
    return text


def describe(route: Route) -> list[str]:
    """The route as indented `field  value` lines, reasons one per line."""
    why = route.reasons or ["(no reason given)"]
    timeout = format_duration(route.timeout_s) if route.timeout_s else "none"
    lines = [
        f"  mode      {route.mode.value}",
        f"  tier      {route.tier}",
        f"  rules     {', '.join(route.rules) or 'none'}",
        f"  why       {why[0]}",
        *(f"            {r}" for r in why[1:]),
        f"  channel   {route.channel}",
        f"  approvers {', '.join(route.approvers) or 'anyone'}",
        f"  quorum    {route.quorum}",
        f"  timeout   {timeout}",
        f"  sampled   {'yes' if route.sampled else 'no'}",
    ]
    if route.paused:
        lines.append("  paused    yes")
    return lines


def _requests(path: Path) -> list[tuple[str, Request]]:
    """The requests in a JSON file: one request object or a list of them."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}): JSON must be UTF-8") from None
    except RecursionError:
        raise ValueError(f"{path}: not JSON this bot reads: nested too deep") from None
    items = data if isinstance(data, list) else [data]
    out = []
    for i, item in enumerate(items):
        label = str(path) if len(items) == 1 else f"{path}[{i}]"
        try:
            out.append((label, Request.model_validate(item)))
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "request"
            raise ValueError(f"{label}: invalid request: {where}: {first['msg']}") from None
    return out
