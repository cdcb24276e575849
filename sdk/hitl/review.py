"""Tool calls under review: the one path every framework adapter takes to hitl and back.

An adapter turns its framework's pending tool calls into `ToolCall`s, `review()` submits them
(several at once share a batch_key, so reviewers see one batch) and waits for every decision,
and the adapter turns each `Verdict` into its framework's own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from hitl.client import AsyncClient, entry
from hitl.config import stable_id
from hitl.errors import DecisionTimeout, describe
from hitl.protocol import Decision, Kind, Status

MAX_EDITABLE = 20
MAX_EDITABLE_NAME = 100


@dataclass
class ToolCall:
    """One tool call a framework holds back until people decide."""

    call_id: str
    name: str
    args: dict[str, Any]
    description: str | None = None
    can_edit: bool = True
    """False when the framework (or the tool's config) cannot apply edited arguments: the card
    then offers Approve / Reject only."""
    question: bool = False
    """A question for people (its answer is the tool's result), not an action to approve."""
    options: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    """What people decided about one tool call, in the terms adapters need."""

    call: ToolCall
    decision: Decision
    outcome: Literal["approve", "edit", "reject", "answer"]
    args: dict[str, Any]
    """The arguments to run with (the reviewer's edits applied)."""
    message: str
    """For a reject: text for the model (why, and that the tool did not run); for an answer, the
    answer."""


def editable_name(name: str) -> bool:
    """Whether a request's `editable` can name this argument: at most 100 characters, and not
    `draft` (that name means the request's own draft field, not a param)."""
    return name != "draft" and len(name) <= MAX_EDITABLE_NAME


def editable_args(args: dict[str, Any]) -> list[str]:
    """Arguments a reviewer can change: text, numbers and booleans (not objects or lists) whose
    names `editable` can take (`editable_name`); the others are still shown and reviewed."""
    return [k for k, v in args.items() if not isinstance(v, dict | list) and editable_name(k)][:MAX_EDITABLE]


def summary(call: ToolCall) -> str:
    if call.description:
        return call.description[:3000]
    text = f"{call.name}({', '.join(f'{k}={json.dumps(v, default=repr)}' for k, v in call.args.items())})"
    return text if len(text) <= 3000 else text[:2997] + "..."


def fields_for(call: ToolCall, *, framework: str, scope: str, batch_key: str | None,
               extra: dict[str, Any]) -> dict[str, Any]:
    """The hitl request for one tool call (its id is stable: a retry finds the same request)."""
    args = json.loads(json.dumps(call.args, default=repr))
    fields: dict[str, Any] = {
        **extra,
        "id": stable_id(framework, scope, call.call_id, call.name, args),
        "action": call.name[:100] or "tool",
        "summary": call.description[:3000] if call.question and call.description else summary(call),
        "params": args,
        "editable": editable_args(args) if call.can_edit and not call.question else [],
    }
    if call.question:
        fields["kind"] = Kind.question
        fields["options"] = call.options
    if batch_key:
        fields["batch_key"] = batch_key
    metadata = dict(extra.get("metadata") or {})
    metadata.setdefault("framework", framework)
    metadata.setdefault("tool_call_id", call.call_id[:300])
    fields["metadata"] = metadata
    return fields


def verdict(call: ToolCall, decision: Decision) -> Verdict:
    """A decision in adapter terms; anything but an approval means the tool does not run."""
    if call.question and decision.status in (Status.answered, Status.resolved):
        answer = decision.answer if decision.answer is not None else str(decision.option or "")
        return Verdict(call, decision, "answer", call.args, answer)
    if decision.approved:
        args = {**call.args, **{k: decision.params[k] for k in decision.changes if k in decision.params}}
        return Verdict(call, decision, "edit" if decision.changes else "approve", args, "")
    if decision.status is Status.expired:
        text = f"Nobody approved the call to `{call.name}` in time, so it was not run."
    elif decision.status is Status.denied:
        text = f"Policy denied the call to `{call.name}`; it was not run."
    elif decision.status is Status.rejected:
        text = f"A reviewer rejected the call to `{call.name}`; it was not run."
    elif decision.status is Status.answered:
        text = f"A person took the call to `{call.name}` over and handed it back with instructions; it was not run."
    elif decision.status is Status.resolved:
        text = f"A person took the call to `{call.name}` over and resolved the case; it was not run."
    else:
        text = f"The call to `{call.name}` was not approved; it was not run."
    return Verdict(call, decision, "reject", call.args, f"{text} ({describe(decision)})")


async def review(client: AsyncClient, calls: list[ToolCall], *, framework: str, scope: str = "",
                 timeout: float | None = None, **extra: Any) -> list[Verdict]:
    """Submit every call, wait for every decision, in order. Several calls become one batch.

    `timeout` bounds the wait: `DecisionTimeout` names the open request ids, and calling again
    with the same calls and scope resumes them (the ids are stable)."""
    if not calls:
        return []
    batch_key = extra.pop("batch_key", None)
    if batch_key is None and len(calls) > 1:
        batch_key = stable_id(framework, scope, [c.call_id for c in calls])
    requests = [fields_for(c, framework=framework, scope=scope, batch_key=batch_key, extra=extra) for c in calls]
    built = [client.build(**r) for r in requests]
    for b in built:  # every call checked before any is sent
        entry(b)
    ids = [await client.submit(b) for b in built]
    try:
        decisions = await asyncio.gather(*(client.wait(i, timeout) for i in ids))
    except DecisionTimeout as e:
        open_ids = ids
        with contextlib.suppress(Exception):  # a short look only: the timeout is already over
            async with asyncio.timeout(2):
                open_ids = [i for i in ids if await client.decision(i) is None]
        raise DecisionTimeout(f"no decision within {timeout}s for {', '.join(open_ids)}; "
                              "run the same review again to resume", open_ids) from e
    return [verdict(c, d) for c, d in zip(calls, decisions, strict=True)]
