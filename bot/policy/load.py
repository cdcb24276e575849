"""Reading a policy file: YAML in, a validated Policy out, or errors that name the field."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.policy.fields import PATTERN_HINTS
from bot.policy.model import Policy


class PolicyError(ValueError):
    """An invalid policy file; `errors` holds one `field.path: what is wrong` line each."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"invalid policy {source}:\n{lines}")


def default_text() -> str:
    """The built-in default policy file (bot/policy/default.yml), comments included."""
    return resources.files("bot.policy").joinpath("default.yml").read_text(encoding="utf-8")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping. Plain YAML keeps the last
    one without a word: a second `rules:` block would silently drop every rule of the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: keys written after it override it, as YAML means
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: SafeLoader's own error names it
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first.line + 1}): "
                    "write each key once", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_policy(text: str, source: str = "file") -> Policy:
    """The validated policy in `text`, or PolicyError listing every problem found."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no Python objects
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise PolicyError(source, [f"{where}YAML error: {e.problem or e}"]) from None
    except yaml.YAMLError as e:
        raise PolicyError(source, [f"YAML error: {e}"]) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise PolicyError(source, ["YAML error: nested too deep"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(source, [f"the file must be a mapping of sections, not {_kind(data)}"])
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(source, format_errors(e)) from None


def load_file(path: Path) -> Policy:
    """The validated policy at `path`; PolicyError (with the path) if unreadable or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(str(path), [f"cannot read the file: {e}"]) from None
    return load_policy(text, str(path))


def format_errors(error: ValidationError) -> list[str]:
    """`rules[1].when: ...` lines from a pydantic error, in words a policy author reads."""
    out: list[str] = []
    for item in error.errors(include_url=False):
        path = _path(item["loc"])
        message = _message(item)
        if not path:  # cross-field checks already put the path in each line
            out.extend(message.splitlines())
        else:
            out.append(f"{path}: {message}")
    return out


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif str(part).startswith("function-") or part in ("str", "int", "float", "Reminder"):
            continue  # pydantic's names for union members and validators
        else:
            text += f".{part}" if text else str(part)
    return text


def _message(item: Any) -> str:
    kind, ctx, value = item["type"], item.get("ctx", {}), item.get("input")
    if kind == "value_error":
        return str(ctx.get("error", item["msg"]))
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see docs/policy.md)"
    if kind == "missing":
        return "required"
    if kind == "enum":
        what = "mode" if item["loc"][-1] == "mode" else "value"
        return f"unknown {what} {value!r}; use one of {ctx.get('expected', '')}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        word = "at least" if kind == "greater_than_equal" else "more than"
        return f"must be {word} {bound} (got {value!r})"
    if kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        word = "at most" if kind == "less_than_equal" else "less than"
        return f"must be {word} {bound} (got {value!r})"
    if kind == "string_pattern_mismatch":
        hint = PATTERN_HINTS.get(ctx.get("pattern", ""), "has the wrong form")
        return f"{value!r} {hint}"
    if kind in ("too_short", "too_long"):
        return item["msg"].replace("List", "list").replace("Dictionary", "mapping")
    return f"{item['msg']} (got {_kind(value)} {value!r})"


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}.get(
        type(value), type(value).__name__)
