"""`@require_approval` for a plain Python tool function, and `ask_human`.

    @require_approval(action="refund", editable=["amount"], risk={"amount": 250, "currency": "USD"})
    def refund(order: str, amount: int) -> str: ...

A call blocks until people decide. Approved: the function runs, with the reviewer's edits
applied to its arguments. Otherwise it raises `Rejected` (with `reason` and `reason_code`),
`Expired` or `Denied`, and the function does not run.
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from hitl.client import AsyncClient
from hitl.errors import InvalidRequest, raise_unless_approved
from hitl.protocol import Decision
from hitl.sync import Client

F = TypeVar("F", bound=Callable[..., Any])
AnyClient = Client | AsyncClient
Summary = str | Callable[[dict[str, Any]], str] | None


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    # Arguments that are not JSON (a connection, a dataclass) are shown as text; only the
    # reviewer's edits flow back into the call, so the originals reach the function untouched.
    return cast(dict[str, Any], json.loads(json.dumps(params, default=repr)))


def _summary(summary: Summary, action: str, params: dict[str, Any]) -> str:
    if callable(summary):
        return summary(params)
    if summary:
        return summary.format(**params)
    shown = ", ".join(f"{k}={json.dumps(v, default=repr)}" for k, v in params.items())
    text = f"{action}({shown})"
    return text if len(text) <= 3000 else text[:2997] + "..."


class _Gate:
    """What one decorated function asks; the client is made on first use when none was given."""

    def __init__(self, fn: Callable[..., Any], client: AnyClient | None, fields: dict[str, Any],
                 summary: Summary, request_id: Callable[[dict[str, Any]], str] | None,
                 wait_timeout: float | None) -> None:
        self.signature = inspect.signature(fn)
        self.client = client
        self.fields = fields
        self.summary = summary
        self.request_id = request_id
        self.wait_timeout = wait_timeout
        self._lock = threading.Lock()
        for name in fields.get("editable", []):
            if name not in self.signature.parameters:
                raise ValueError(f"@require_approval: editable names '{name}', which is not a "
                                 f"parameter of {fn.__qualname__}")

    def prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[inspect.BoundArguments, dict[str, Any]]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        params = _jsonable({k: v for k, v in bound.arguments.items() if k not in ("self", "cls")})
        fields = {**self.fields, "params": params,
                  "summary": _summary(self.summary, self.fields["action"], params)}
        if self.request_id is not None:
            fields["id"] = self.request_id(params)
        return bound, fields

    def sync_client(self) -> Client:
        with self._lock:  # tools may be called from several threads at once: make one client
            if self.client is None:
                self.client = Client()
        if not isinstance(self.client, Client):
            raise TypeError("@require_approval on a sync function needs a hitl.Client, not an AsyncClient")
        return self.client

    async def aask(self, fields: dict[str, Any]) -> Decision:
        client = self.client or self.sync_client()
        if isinstance(client, AsyncClient):
            return await client.ask(timeout=self.wait_timeout, **fields)
        return await client.arun(client.aio.ask(timeout=self.wait_timeout, **fields))


def _opaque(value: Any) -> bool:
    """Whether a value is shown as text (`repr`) because it is not JSON: its text may differ
    from one process to the next (an object's address), so it is not compared."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return True
    return False


def _same_call(bound: inspect.BoundArguments, request: dict[str, Any], decision: Decision) -> Decision:
    """`decision`, when people decided this very call; InvalidRequest when the request stored
    under the call's chosen id holds other arguments (a `request_id` that leaves an argument
    out, or a fixed `id`): the function must not run with arguments nobody saw."""
    if "id" not in request:
        return decision
    reviewed = {**decision.params, **{k: c.before for k, c in decision.changes.items() if k in decision.params}}
    params: dict[str, Any] = request["params"]
    differ = [k for k in params if not _opaque(bound.arguments[k])
              and (k not in reviewed or json.dumps(reviewed[k], sort_keys=True) != json.dumps(params[k], sort_keys=True))]
    differ += [k for k in reviewed if k not in params]
    if differ:
        shown = "; ".join(f"{k}: {json.dumps(reviewed.get(k), default=repr)[:80]}, not "
                          f"{json.dumps(params.get(k), default=repr)[:80]}" for k in differ[:5])
        raise InvalidRequest(f"request {decision.request_id} was decided for other arguments ({shown}); "
                             "the function did not run. A request_id must differ for calls with different arguments")
    return decision


def _edited(bound: inspect.BoundArguments, decision: Decision) -> inspect.BoundArguments:
    """The call's arguments with each field a reviewer changed replaced by its new value."""
    for name in decision.changes:
        if name in bound.arguments and name in decision.params:
            bound.arguments[name] = decision.params[name]
    return bound


def require_approval(action: str | None = None, *, editable: Iterable[str] = (),
                     risk: dict[str, Any] | None = None, summary: Summary = None,
                     client: AnyClient | None = None, agent: str | None = None,
                     timeout_s: int | None = None, wait_timeout: float | None = None,
                     request_id: Callable[[dict[str, Any]], str] | None = None,
                     **fields: Any) -> Callable[[F], F]:
    """Gate a tool function (sync or async) behind a decision in Slack.

    `summary` is a format string over the arguments (`"Refund {amount} to {customer}"`) or a
    function of them; `timeout_s` is when hitl expires the request (deny by default);
    `wait_timeout` bounds this call's wait (`DecisionTimeout`; the request stays open);
    `request_id(params)` makes the id stable, so a restarted agent finds its earlier request.
    Other keyword arguments are request fields (`confidence`, `context`, `batch_key`, ...)."""

    def decorate(fn: F) -> F:
        base: dict[str, Any] = {**fields, "action": action or fn.__name__, "editable": list(editable)}
        if risk is not None:
            base["risk"] = risk
        if agent is not None:
            base["agent"] = agent
        if timeout_s is not None:
            base["timeout_s"] = timeout_s
        gate = _Gate(fn, client, base, summary, request_id, wait_timeout)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_call(*args: Any, **kwargs: Any) -> Any:
                bound, request = gate.prepare(args, kwargs)
                decision = _same_call(bound, request, raise_unless_approved(await gate.aask(request)))
                bound = _edited(bound, decision)
                return await fn(*bound.args, **bound.kwargs)

            return cast(F, async_call)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            bound, request = gate.prepare(args, kwargs)
            decision = _same_call(bound, request, raise_unless_approved(
                gate.sync_client().ask(timeout=wait_timeout, **request)))
            bound = _edited(bound, decision)
            return fn(*bound.args, **bound.kwargs)

        return cast(F, call)

    return decorate


def ask_human(question: str, options: list[str] | None = None, *, client: Client | None = None,
              timeout: float | None = None, **fields: Any) -> str:
    """Ask people in Slack and return the answer (blocking). `Expired` when nobody answers."""
    if client is not None:
        return client.ask_human(question, options, timeout=timeout, **fields)
    with Client() as own:
        return own.ask_human(question, options, timeout=timeout, **fields)


async def ask_human_async(question: str, options: list[str] | None = None, *,
                          client: AsyncClient | None = None, timeout: float | None = None,
                          **fields: Any) -> str:
    """`ask_human` for async code."""
    if client is not None:
        return await client.ask_human(question, options, timeout=timeout, **fields)
    async with AsyncClient.from_url() as own:
        return await own.ask_human(question, options, timeout=timeout, **fields)


__all__ = ["ask_human", "ask_human_async", "require_approval"]
