"""CEL conditions: compiled once at load, evaluated against one activation per request.

Conditions see one variable, `request`: the Request model as JSON (`model_dump(mode="json",
exclude_none=True)`), so an absent optional field is *missing* from the map (test it with
`has(request.risk.amount)`), and empty lists and maps are present. We use the Rust-backed
`common-expression-language` package (see docs/policy.md for the comparison with cel-python).

Converting a Python dict to CEL values is the expensive step (about 1 µs per value), so
the activation is built once per request and holds only the request fields that some
condition names (`request.risk.amount` -> `risk.amount`); a condition that uses `request`
in any other way (`request["risk"]`, `size(request)`) makes the whole request visible.
"""

from __future__ import annotations

import re
from typing import Any

import cel

from store.models import Request

_LOCATION = re.compile(r"<input>:(\d+):(\d+): (?:Syntax error: )?(.*)")
_LONG_EXPECT = re.compile(r"expecting \{[^}]{40,}\}")
_PATH = re.compile(r"(?<![\w.])request((?:\s*\.\s*[A-Za-z_]\w*)*)(\s*\()?")
# Request fields that are models: a condition naming a sub-field needs only that sub-field.
_NESTED = frozenset({"risk", "context", "metadata"})

Include = dict[str, Any]

FUNCTIONS = frozenset({
    "contains", "startsWith", "endsWith", "matches", "size", "int", "uint", "double", "string",
    "bytes", "type", "dyn", "duration", "timestamp", "getDate", "getDayOfMonth", "getDayOfWeek",
    "getDayOfYear", "getFullYear", "getHours", "getMilliseconds", "getMinutes", "getMonth",
    "getSeconds",
})
"""Named functions the runtime defines (the macros has/all/exists/exists_one/map/filter are
expanded by the parser). Anything else compiles but fails on every request: refused at load."""
_TYPE_NAMES = frozenset({"int", "uint", "double", "string", "bytes", "bool", "list", "map",
                         "null_type", "type"})
_IDENT = re.compile(r"[A-Za-z]\w*")
# Variables bound by a comprehension macro: `.exists(t, ...)`, `.map(k, v, ...)`.
_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,"
                    r"(?:\s*([A-Za-z_]\w*)\s*,)?")


class ConditionSyntaxError(ValueError):
    """A `when` expression that does not compile; the message says where and why."""


class ConditionError(Exception):
    """A condition that could not be evaluated on one request (missing field, type error)."""


def compile_condition(source: str) -> cel.Program:
    """The compiled program, or ConditionSyntaxError naming the line and column."""
    if not source.strip():
        raise ConditionSyntaxError("empty condition")
    try:
        program = cel.compile(source)
    except ValueError as e:
        raise ConditionSyntaxError(_syntax_message(source, str(e))) from None
    _check_names(program, source)
    return program


def _check_names(program: cel.Program, source: str) -> None:
    """ConditionSyntaxError for a function the runtime lacks or a variable other than
    `request`: such a condition compiles, but fails on every request, so its rule would
    never fire (a deny that never denies)."""
    unknown = sorted(f for f in program.functions() if _IDENT.fullmatch(f) and f not in FUNCTIONS)
    if unknown:
        raise ConditionSyntaxError(
            f"unknown function {unknown[0]}(): conditions may call {', '.join(sorted(FUNCTIONS))} "
            "(and the macros has, all, exists, exists_one, map, filter)")
    bound = {name for match in _BOUND.finditer(source) for name in match.groups() if name}
    names = sorted(set(program.variables()) - {"request"} - _TYPE_NAMES - bound)
    if names:
        raise ConditionSyntaxError(
            f"unknown name {names[0]!r}: a condition sees one variable, request")


def _syntax_message(source: str, raw: str) -> str:
    match = _LOCATION.search(raw)
    if match is None:
        return f"CEL syntax error: {raw.splitlines()[0] if raw else 'unknown'}"
    line, column = int(match[1]), int(match[2])
    what = _LONG_EXPECT.sub("expecting a value", match[3])
    where = f"column {column}" if "\n" not in source else f"line {line}, column {column}"
    return f"CEL syntax error at {where}: {what}"


def referenced_fields(sources: list[str]) -> Include | None:
    """The `include` spec of the request fields the conditions name; None means all of them."""
    include: Include = {}
    for source in sources:
        paths = read_paths(source)
        if paths is None:
            return None  # `request` used as a whole
        for top, *rest in paths:
            if top in _NESTED and rest:
                current = include.get(top)
                if current is not True:
                    include[top] = (current or set()) | {rest[0]}
            else:
                include[top] = True
    return include


def request_data(request: Request, include: Include | None) -> dict[str, Any]:
    """What a condition sees of `request` (restricted to `include` when given)."""
    return request.model_dump(mode="json", exclude_none=True, include=include)


def activation(request: Request, include: Include | None, data: dict[str, Any] | None = None) -> cel.Context:
    """The CEL context holding `request` (or its `data`, already dumped), restricted to `include`."""
    return cel.Context(variables={"request": request_data(request, include) if data is None else data})


def read_paths(source: str) -> list[tuple[str, ...]] | None:
    """The request fields a condition reads, as paths (`request.params.amount` ->
    `("params", "amount")`); None when it uses `request` as a whole (`request["risk"]`)."""
    out: list[tuple[str, ...]] = []
    for match in _PATH.finditer(source):
        names = [n.strip() for n in match[1].split(".") if n.strip()]
        if match[2] and names:
            names.pop()  # `request.summary.contains(` calls a method on summary
        if not names:
            return None
        out.append(tuple(names))
    return out


def reads_none(data: dict[str, Any], paths: list[tuple[str, ...]] | None) -> bool:
    """Whether none of the fields on `paths` is in `data` (each missing or null): a condition
    that cannot be decided on such a request is about other requests."""
    if paths is None:  # `request` used as a whole: it reads what is there
        return False
    for path in paths:
        value: Any = data
        for name in path:
            if not isinstance(value, dict):
                return False  # a value of another shape than the path expects is there
            value = value.get(name)
        if value is not None:
            return False
    return True


def evaluate(program: cel.Program, context: cel.Context) -> bool:
    """Whether the condition holds; ConditionError when it cannot be evaluated."""
    try:
        result = program.execute(context)
    # The Rust bindings raise KeyError (no such field), TypeError (no such overload),
    # RuntimeError (unknown function) and ValueError; any failure of a condition on one
    # request is the rule's to answer for (bot.policy.engine), never a stop of intake.
    except Exception as e:
        raise ConditionError(_runtime_message(e)) from e
    if not isinstance(result, bool):
        raise ConditionError(f"returned {type(result).__name__} {result!r}, not true or false")
    return result


def _runtime_message(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"no field {error.args[0]!r} in the request"
    text = str(error).split(". ")[0]
    return f"{type(error).__name__}: {text}"
