"""The canary file: known-answer requests the owner writes, shaped like real ones.

One JSON object per line (or one JSON list): a request (`agent`, `action`, `summary`, ...) plus
`answer` (`approve` or `reject`) and an optional `why` the reviewer reads when they got it
wrong. The path is relative to the policy file; an invalid file refuses the policy, naming
the line. So does a canary the policy itself would never show a person (routed `auto`,
`audit` or `deny` by its tier and rules): a card for it would be one no real request of its
route ever gets, which tells it apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bot.policy.load import PolicyError
from store.models import Mode, Request

if TYPE_CHECKING:
    from bot.policy.engine import PolicyEngine

ANSWERS = ("approve", "reject")
MAX_CANARIES = 1000
SHOWN = frozenset({Mode.approve, Mode.shadow, Mode.escalate})
"""Routes on which a person sees the request before it runs: the only ones a canary may have."""


def load_canaries(engine: PolicyEngine, policy_path: Path) -> list[dict[str, Any]]:
    """The validated canaries of `engine`'s policy (none without `trust.canaries.file`), each
    one the policy routes to a person."""
    policy = engine.policy
    name = policy.trust.canaries.file
    if not name:
        return []
    path = Path(name) if Path(name).is_absolute() else policy_path.parent / name
    where = f"trust.canaries.file ({path})"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(str(policy_path), [f"{where}: cannot read it: {e}"]) from None
    stripped = text.strip()
    try:
        rows = json.loads(stripped) if stripped.startswith("[") else [
            json.loads(line) for line in stripped.splitlines() if line.strip()]
    except ValueError as e:
        raise PolicyError(str(policy_path), [f"{where}: not JSON lines: {e}"]) from None
    except RecursionError:
        raise PolicyError(str(policy_path), [f"{where}: nested too deep"]) from None
    problems, out = [], []
    for i, row in enumerate(rows[:MAX_CANARIES], 1):
        if not isinstance(row, dict):
            problems.append(f"{where} item {i}: must be an object")
            continue
        canary = dict(row)
        answer, why = canary.pop("answer", None), canary.pop("why", None)
        if answer not in ANSWERS:
            problems.append(f"{where} item {i}: answer must be approve or reject, not {answer!r}")
            continue
        canary.pop("id", None)
        canary.pop("reply_to", None)
        try:
            request = Request.model_validate({**canary, "id": "canary"})
        except ValidationError as e:
            problems.append(f"{where} item {i}: {e.errors()[0]['msg']}")
            continue
        # as a known action's request, not paused (pausing sends real requests to people too)
        route = engine.route(request)
        if route.mode not in SHOWN:
            problems.append(f"{where} item {i}: the policy routes it to {route.mode.value} (tier {route.tier}: "
                            f"{'; '.join(route.reasons)}): no person would see it, and a card for it "
                            f"would be one no real request of that route gets")
            continue
        out.append({"request": canary, "answer": answer, "why": why if isinstance(why, str) else None})
    if problems:
        raise PolicyError(str(policy_path), problems[:20])
    return out
