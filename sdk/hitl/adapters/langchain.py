"""LangChain / LangGraph: answer `HumanInTheLoopMiddleware` interrupts (and plain `interrupt()`s)
with decisions people make in Slack.

    agent = create_agent(model, tools, middleware=[HumanInTheLoopMiddleware({...})],
                         checkpointer=InMemorySaver())
    result = run_with_approvals(agent, {"messages": [...]}, config, client=hitl.Client())

Each action of a `HITLRequest` becomes one hitl request (several in one interrupt share a
batch_key: one batch card); the graph resumes with `Command(resume={"decisions": [...]})`:
approve -> `{"type": "approve"}`, edit -> `{"type": "edit", "edited_action": {...}}`,
reject -> `{"type": "reject", "message": ...}`, and a tool that allows only `respond` is asked
as a question whose answer comes back as `{"type": "respond", "message": ...}`. A tool whose
`allowed_decisions` lack `edit` gets a card with nothing editable.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.types import Command, Interrupt

from hitl.adapters._run import blocking, with_client
from hitl.client import AsyncClient
from hitl.errors import NotApproved
from hitl.review import ToolCall, Verdict, review
from hitl.sync import Client

DECISIONS = ("approve", "edit", "reject", "respond")


def _allowed(config: dict[str, Any] | None, schema: Any = None) -> set[str]:
    if config and "allowed_decisions" in config:
        return set(config["allowed_decisions"])
    if isinstance(schema, dict):  # per-call mode: the interrupt's JSON Schema names them
        return _schema_decisions(schema)
    return set(DECISIONS)


def _schema_decisions(schema: dict[str, Any]) -> set[str]:
    """The decision types a per-call `response_schema` accepts: its discriminator's mapping, or
    the `type` const of its one decision (or of each member of a union). Never a word found
    elsewhere in it: an edit branch carries the tool's own argument schema, whose names and
    enum values may be 'reject' or 'approve'."""
    mapping = (schema.get("discriminator") or {}).get("mapping")
    if isinstance(mapping, dict):
        return {d for d in mapping if d in DECISIONS}
    defs = schema.get("$defs") or {}

    def const(member: Any) -> str | None:
        if isinstance(member, dict) and isinstance(member.get("$ref"), str):
            member = defs.get(member["$ref"].rsplit("/", 1)[-1])
        if not isinstance(member, dict):
            return None
        kind = (member.get("properties") or {}).get("type") or {}
        value = kind.get("const") if "const" in kind else next(iter(kind.get("enum") or []), None)
        return value if value in DECISIONS else None

    members = schema.get("oneOf") or schema.get("anyOf") or [schema]
    found = {c for c in (const(m) for m in members) if c}
    if found:
        return found
    text = json.dumps(schema)  # a schema of some other shape: the names it holds
    return {d for d in DECISIONS if f'"{d}"' in text}


def _calls(interrupt: Interrupt) -> list[tuple[ToolCall, set[str]]]:
    value = interrupt.value
    if isinstance(value, dict) and "action_requests" in value:  # HITLRequest (batched mode)
        configs = {c["action_name"]: c for c in value.get("review_configs", [])}
        out = []
        for i, action in enumerate(value["action_requests"]):
            allowed = _allowed(configs.get(action["name"]))
            out.append((_tool_call(f"{interrupt.id}.{i}", action["name"], action.get("args") or {},
                                   action.get("description"), allowed), allowed))
        return out
    if isinstance(value, dict) and value.get("type") == "tool_approval":  # per-call mode
        allowed = _allowed(None, interrupt.response_schema)
        return [(_tool_call(str(value.get("tool_call_id") or interrupt.id), value["name"],
                            value.get("args") or {}, value.get("description"), allowed), allowed)]
    return [(_plain_call(interrupt), {"plain"})]


def _tool_call(call_id: str, name: str, args: dict[str, Any], description: str | None,
               allowed: set[str]) -> ToolCall:
    question = allowed == {"respond"}
    return ToolCall(call_id, name, args, description, can_edit="edit" in allowed, question=question)


def _plain_call(interrupt: Interrupt) -> ToolCall:
    """A plain `interrupt(value)`: a question (a string, or {"question", "options"}) or an action
    to approve ({"action" or "name", "args", "description"})."""
    value = interrupt.value
    if isinstance(value, dict) and ("action" in value or "name" in value) and "question" not in value:
        return ToolCall(interrupt.id, str(value.get("action") or value.get("name")),
                        dict(value.get("args") or {}), value.get("description"),
                        can_edit=bool(value.get("editable", True)))
    if isinstance(value, dict):
        text = str(value.get("question") or json.dumps(value, default=repr))
        return ToolCall(interrupt.id, "question", {}, text, question=True,
                        options=[str(o) for o in value.get("options") or []])
    return ToolCall(interrupt.id, "question", {}, str(value), question=True)


def _answer(verdict: Verdict, allowed: set[str]) -> dict[str, Any]:
    """One decision in the middleware's own format, within what the tool allows."""
    call = verdict.call
    if verdict.outcome == "answer":
        return {"type": "respond", "message": verdict.message}
    if "edit" in allowed and (verdict.outcome == "edit" or (verdict.outcome == "approve" and "approve" not in allowed)):
        # an approval of a tool that allows edit but not approve: the edit that changes nothing
        return {"type": "edit", "edited_action": {"name": call.name, "args": verdict.args}}
    if verdict.outcome in ("approve", "edit") and "approve" in allowed:
        return {"type": "approve"}
    if verdict.outcome == "reject" and "reject" in allowed:
        return {"type": "reject", "message": verdict.message}
    if verdict.outcome == "reject" and "respond" in allowed:
        return {"type": "respond", "message": verdict.message}
    raise NotApproved(verdict.decision)


def _plain_answer(verdict: Verdict) -> Any:
    if verdict.call.question:
        if verdict.outcome != "answer":
            return {"answered": False, "reason": verdict.message}
        return verdict.message
    if verdict.outcome == "reject":
        return {"approved": False, "reason": verdict.message, "status": verdict.decision.status.value}
    return {"approved": True, "args": verdict.args, "edited": verdict.outcome == "edit"}


async def aresume_command(interrupts: list[Interrupt] | tuple[Interrupt, ...], client: Client | AsyncClient | None = None,
                          *, timeout: float | None = None, **fields: Any) -> Command[Any]:
    """The `Command(resume=...)` that answers these interrupts with people's decisions.

    `timeout` bounds the wait (`DecisionTimeout`; calling again resumes the same requests).
    Other keyword arguments are request fields for every call (`agent`, `risk`, `context`, ...)."""

    async def step(aio: AsyncClient) -> Command[Any]:
        answers: dict[str, Any] = {}
        for interrupt in interrupts:
            calls = _calls(interrupt)
            verdicts = await review(aio, [c for c, _ in calls], framework="langgraph",
                                    scope=interrupt.id, timeout=timeout, **fields)
            if calls and calls[0][1] == {"plain"}:
                answers[interrupt.id] = _plain_answer(verdicts[0])
            elif isinstance(interrupt.value, dict) and "action_requests" in interrupt.value:
                answers[interrupt.id] = {"decisions": [_answer(v, a) for v, (_, a) in zip(verdicts, calls, strict=True)]}
            else:
                answers[interrupt.id] = _answer(verdicts[0], calls[0][1])
        if len(answers) == 1:
            return Command(resume=next(iter(answers.values())))
        return Command(resume=answers)

    return await with_client(client, step)


def resume_command(interrupts: list[Interrupt] | tuple[Interrupt, ...], client: Client | None = None,
                   *, timeout: float | None = None, **fields: Any) -> Command[Any]:
    """`aresume_command` for sync code."""
    return blocking(client, lambda aio: aresume_command(interrupts, aio, timeout=timeout, **fields))


def _check_edits(values: Any, interrupts: list[Interrupt] | tuple[Interrupt, ...], command: Command[Any]) -> None:
    """RuntimeError (nothing resumed) when an edit would not reach its call. In batched mode the
    middleware keeps an edit by tool call id: a call with no id runs with the model's own
    arguments, and calls sharing an id all run with the one edit."""
    answers = {interrupts[0].id: command.resume} if len(interrupts) == 1 else dict(command.resume or {})
    edited = [i for i in interrupts if isinstance(i.value, dict) and "action_requests" in i.value
              and any(isinstance(d, dict) and d.get("type") == "edit"
                      for d in (answers.get(i.id) or {}).get("decisions", []))]
    messages = values.get("messages") if isinstance(values, dict) else None
    last = next((m for m in reversed(messages or []) if isinstance(m, AIMessage)), None)
    if not edited or last is None:
        return
    ids = [c.get("id") for c in last.tool_calls]
    if all(ids) and len(set(ids)) == len(ids):
        return
    raise RuntimeError(
        f"a reviewer edited a tool call LangChain cannot apply the edit to: the model's tool calls have "
        f"{'a missing' if not all(ids) else 'a shared'} id ({ids}), and HumanInTheLoopMiddleware (batched) "
        "keeps edits by id, so the model's own arguments (or another call's edit) would run. Nothing was "
        "resumed. Use interrupt_mode='per_call', or a model that gives each tool call its own id")


def run_with_approvals(graph: Any, graph_input: Any, config: dict[str, Any], *, client: Client | None = None,
                       timeout: float | None = None, max_rounds: int = 50, **fields: Any) -> Any:
    """`graph.invoke` until it stops asking: each interrupt goes to people, then the graph resumes."""
    result = graph.invoke(graph_input, config)
    for _ in range(max_rounds):
        state = graph.get_state(config)
        if not state.interrupts:
            return result
        command = resume_command(state.interrupts, client, timeout=timeout, **fields)
        _check_edits(state.values, state.interrupts, command)
        result = graph.invoke(command, config)
    raise RuntimeError(f"the graph was still interrupted after {max_rounds} rounds")


async def arun_with_approvals(graph: Any, graph_input: Any, config: dict[str, Any], *,
                              client: Client | AsyncClient | None = None, timeout: float | None = None,
                              max_rounds: int = 50, **fields: Any) -> Any:
    """`graph.ainvoke` until it stops asking (async)."""
    result = await graph.ainvoke(graph_input, config)
    for _ in range(max_rounds):
        state = await graph.aget_state(config)
        if not state.interrupts:
            return result
        command = await aresume_command(state.interrupts, client, timeout=timeout, **fields)
        _check_edits(state.values, state.interrupts, command)
        result = await graph.ainvoke(command, config)
    raise RuntimeError(f"the graph was still interrupted after {max_rounds} rounds")
