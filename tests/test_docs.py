"""What the docs show users to copy, run against the product: a snippet that drifts from the
code fails here, not in a user's hands."""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import hitl
import hitl.client
import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from bot.intake import Intake
from bot.routing import SingleChannelRouter
from store.models import Choice, Request, Route, Status, utcnow
from store.redis_store import Store
from store.transitions import vote
from tests.util import eventually, started

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _section(doc: str, heading: str) -> str:
    """The text of `doc` from `heading` to the next heading of any level."""
    text = (DOCS / doc).read_text()
    start = text.index(heading)
    nxt = re.search(r"^#+ ", text[start + len(heading):], re.M)
    return text[start:start + len(heading) + (nxt.start() if nxt else len(text))]


def _fenced(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)


# ---- docs/protocol.md: the Redis ACL for agents ---------------------------------------------

def _documented_acl() -> list[str]:
    """The `ACL SETUSER ...` arguments exactly as docs/protocol.md shows them."""
    (block,) = _fenced(_section("protocol.md", "## Redis ACLs for agents"))
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:2] == ["ACL", "SETUSER"], block
    return words


class _Router:
    def route(self, request: Request, *, first_use: bool = False, paused: bool = False) -> Route:
        return SingleChannelRouter().route(request)


@pytest.fixture
async def agent_url(redis_url: str, store: Store) -> AsyncIterator[str]:
    """A Redis user made by the documented ACL command, as a URL for the agent SDK."""
    words = _documented_acl()
    await store.redis.execute_command(*words)
    user, password = words[2], next(w[1:] for w in words if w.startswith(">"))
    yield redis_url.replace("redis://", f"redis://{user}:{password}@")
    await store.redis.execute_command("ACL", "DELUSER", user)


@pytest.fixture
async def intake(store: Store, redis_url: str) -> AsyncIterator[Intake]:
    router = _Router()
    async with started(Intake(store, lambda: router, redis_url=redis_url, consumer="c")) as i:
        yield i


async def _approve(store: Store, rid: str) -> None:
    await eventually(lambda: store.exists(rid), what="record")
    rec = await store.get(rid)
    await store.apply(vote(rec, user_id="U0ALICE", name="alice", choice=Choice.approve, now=utcnow()), utcnow())


async def test_the_documented_agent_acl_lets_the_sdk_ask_wait_and_read(
        store: Store, intake: Intake, agent_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hitl.client, "RECHECK_S", 0.0)  # also the lost-request check, at once
    async with hitl.AsyncClient.from_url(agent_url, name="billing-agent") as client:
        asked = asyncio.create_task(client.ask(agent="billing-agent", action="refund", summary="Refund $5",
                                               id="refund-4711", params={"amount": 5}, timeout=10))
        await _approve(store, "refund-4711")
        assert (await asked).status is Status.approved
        rid = await client.request(agent="billing-agent", action="refund", summary="Refund $6")
        with pytest.raises(hitl.DecisionTimeout):  # pending: waits, checks it is not lost, times out
            await client.wait(rid, timeout=0.3)
        await _approve(store, rid)
        assert (await client.wait(rid, timeout=10)).status is Status.approved
        decision = await client.decision("refund-4711")
        assert decision is not None and decision.status is Status.approved
        assert await client.messages("refund-4711") == []


async def test_the_documented_agent_acl_allows_nothing_else(store: Store, agent_url: str) -> None:
    agent = aioredis.Redis.from_url(agent_url)
    try:
        for command in (("XADD", "hitl:audit", "*", "a", "b"), ("HSET", "hitl:req:x", "a", "b"),
                        ("XADD", "hitl:results:other", "*", "a", "b"), ("XDEL", "hitl:requests", "1-1"),
                        ("XREADGROUP", "GROUP", "hitl", "c", "STREAMS", "hitl:requests", ">"),
                        ("GET", "hitl:secret:sample"), ("DEL", "hitl:requests")):
            with pytest.raises(NoPermissionError):
                await agent.execute_command(*command)
    finally:
        await agent.aclose()


# ---- `/hitl` commands named anywhere in the docs exist ----------------------------------------

def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), ROOT / "examples" / "README.md"]


def test_every_slash_command_the_docs_name_exists() -> None:
    from blocks.commands import COMMANDS

    usage = {u.split()[0]: u for u, _ in COMMANDS}
    wrong = []
    for path in _doc_files():
        # Slack's own error line for an app that did not answer is not a command of ours
        text = re.sub(r"`/hitl failed\s+with the error", "", path.read_text())
        for m in re.finditer(r"(?<![\w/.])/hitl\s+([a-z]+)(?:\s+([a-z]+))?", text):
            sub, word = m.groups()
            if sub not in usage or (word and word not in re.findall(r"[a-z]+", usage[sub])):
                wrong.append(f"{path.relative_to(ROOT)}: {' '.join(m.group(0).split())}")
    assert not wrong, f"commands /hitl does not have (see /hitl help): {wrong}"


# ---- docs/commands.md: the /metrics table lists every family the bot exports -------------------

def test_the_metrics_table_lists_every_metric_family() -> None:
    emitted = {m for f in (ROOT / "bot").rglob("*.py")
               for m in re.findall(r'(?:_family|histogram)\(\s*"(hitl_[a-z_]+)"', f.read_text())}
    assert len(emitted) > 20, "the scan found the families"
    table = _section("commands.md", "## `GET /metrics`")
    documented = {m for row in table.splitlines() if row.startswith("| `hitl_")
                  for m in re.findall(r"`(hitl_[a-z_]+)(?:\{[^}]*\})?`", row.split("|")[1])}
    assert emitted - documented == set(), "exported but not in docs/commands.md's table"
    assert documented - emitted == set(), "in docs/commands.md's table but never exported"


# ---- policy snippets load with the real loader and route as the docs say -----------------------

def _yaml_snippets() -> list[tuple[str, str]]:
    out = []
    for path in _doc_files():
        text = path.read_text()
        for m in re.finditer(r"```yaml\n(.*?)```", text, re.S):
            out.append((f"{path.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}", m.group(1)))
    return out


@pytest.mark.parametrize(("where", "snippet"), _yaml_snippets(), ids=[w for w, _ in _yaml_snippets()])
def test_every_policy_snippet_in_the_docs_loads(where: str, snippet: str) -> None:
    import yaml

    from bot.policy import PolicyEngine

    data = yaml.safe_load(snippet)
    if "tiers" in data:  # a fragment showing some tiers: beside the default's, as a user adds them
        default = yaml.safe_load((ROOT / "bot" / "policy" / "default.yml").read_text())
        data["tiers"] = {**default["tiers"], **data["tiers"]}
    PolicyEngine.from_yaml(yaml.safe_dump(data, sort_keys=False))


def test_the_worked_examples_route_as_docs_policy_md_shows() -> None:
    import json

    from bot.policy import PolicyEngine

    engine = PolicyEngine.default()
    rows = [r for r in _section("policy.md", "## Worked examples").splitlines() if r.startswith("| ") and "`{" in r]
    assert len(rows) >= 15
    for i, row in enumerate(rows):
        case, request, mode, tier, rules, sampled = (c.strip() for c in row.strip().strip("|").split("|"))
        fields = {"agent": "a", "summary": "s", "id": f"example-{i}", **json.loads(request.split("`")[1])}
        route = engine.route(Request.model_validate(fields), first_use="first_use" in request)
        got = (route.mode.value, f"{route.tier} (quorum {route.quorum})", ", ".join(route.rules))
        assert got == (mode, tier, rules), case
        if route.mode.value != "auto":  # auto's sample picks by id; the doc's rows have none
            assert ("yes" if route.sampled else "no") == sampled, case


def test_every_cel_example_in_docs_policy_md_compiles() -> None:
    import yaml

    from bot.policy import PolicyEngine

    table = _section("policy.md", "## CEL conditions")
    examples = [ex for row in table.splitlines() if row.startswith("| ") and row.count("|") >= 3
                for ex in re.findall(r"`([^`]*request[^`]*)`", row.split("|")[2])]
    assert len(examples) >= 10
    for ex in examples:
        PolicyEngine.from_yaml(yaml.safe_dump({"rules": [{"name": "r", "when": ex, "tier": "high"}]}))


# ---- docs/protocol.md's field tables are the wire models' fields --------------------------------

def _table_names(section: str, column: int = 0) -> set[str]:
    rows = [r for r in section.splitlines() if r.startswith("| `")]
    return {n for r in rows for n in re.findall(r"`([a-z_]+)`", r.split("|")[column + 1])}


def test_the_protocol_tables_list_every_field_of_the_wire_models() -> None:
    from hitl.protocol import AgentMessage, Context, Decision, Metadata, Risk, Route

    request_table = _section("protocol.md", "## A request")
    assert _table_names(request_table) == set(Request.model_fields)
    row = {r.split("|")[1].strip(" `"): r for r in request_table.splitlines() if r.startswith("| `")}
    for name, model in (("risk", Risk), ("context", Context), ("metadata", Metadata)):
        assert set(model.model_fields) <= set(re.findall(r"`([a-z_]+)`", row[name].split("|")[3])), name
    decision_table = _section("protocol.md", "## A decision")
    assert _table_names(decision_table) == set(Decision.model_fields)
    route_row = next(r for r in decision_table.splitlines() if r.startswith("| `route`"))
    assert set(Route.model_fields) <= set(re.findall(r"`([a-z_]+)`", route_row)), "a route field the doc omits"
    assert _table_names(_section("protocol.md", "## Interim messages")) == set(AgentMessage.model_fields)


# ---- every `hitl <command> --flag` the docs show is a flag of that command ---------------------

def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser | None = action.choices.get(name)
            return found
    return None


def test_every_command_line_in_the_docs_uses_real_commands_and_flags() -> None:
    from hitl.cli import parser as agent_parser

    from bot.cli import _parser

    bot, agent = _parser(), agent_parser()
    wrong, seen = [], 0
    for path in _doc_files():
        for m in re.finditer(r"(?<![\w/.-])hitl ([a-z][a-z -]*)([^`\n]*)", path.read_text()):
            words = m.group(1).split()
            top = agent if words[0] in ("mcp", "hook") else bot
            command, parser = [], top
            for word in words:
                sub = _subparser(parser, word)
                if sub is None:
                    break
                command.append(word)
                parser = sub
            if not command:
                continue  # prose ("hitl sits between ...")
            seen += 1
            options = {o for a in parser._actions for o in a.option_strings}
            wrong += [f"{path.relative_to(ROOT)}: hitl {' '.join(command)} {flag}"
                      for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", m.group(0)) if flag not in options]
    assert seen > 50
    assert not wrong, wrong
