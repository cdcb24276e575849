"""The canary file: known-answer requests the owner writes, shaped like real ones.

One JSON object per line (or one JSON list): a request (`agent`, `action`, `summary`, ...) plus
`answer` (`approve` or `reject`) and an optional `why` the reviewer reads when they got it
wrong. The path is relative to the policy file; an invalid file refuses the policy, naming
the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.policy.load import PolicyError
from bot.policy.model import Policy
from store.models import Request

ANSWERS = ("approve", "reject")
MAX_CANARIES = 1000


def load_canaries(policy: Policy, policy_path: Path) -> list[dict[str, Any]]:
    """The validated canaries of `policy` (none without `trust.canaries.file`)."""
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
            Request.model_validate(canary)
        except ValidationError as e:
            problems.append(f"{where} item {i}: {e.errors()[0]['msg']}")
            continue
        out.append({"request": canary, "answer": answer, "why": why if isinstance(why, str) else None})
    if problems:
        raise PolicyError(str(policy_path), problems[:20])
    return out
