"""`hitl keys create | list | revoke`: API keys for the REST and HumanLayer APIs."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys

from bot.config import load_settings
from store.api_keys import ApiKey, ApiKeys
from store.models import Request, utcnow
from store.redis_store import Store


async def keys(args: argparse.Namespace) -> int:
    settings = load_settings()
    store = Store.from_url(settings.redis_url, settings.prefix)
    api_keys = ApiKeys(store.redis, settings.prefix)
    try:
        if args.keys_command == "create":
            bad = [a for a in args.agent if not _agent_ok(a)]
            if bad:
                print(f"hitl: not a valid agent name: {', '.join(map(repr, bad))}", file=sys.stderr)
                return 2
            key, info = await api_keys.create(list(dict.fromkeys(args.agent)), utcnow(), args.name)
            try:
                await _audit(store, "api_key_created", info)
            except Exception:  # no key nobody can see in the trail: take it back, then fail
                await api_keys.revoke(info.id, utcnow())
                raise
            print(key)
            print(f"key id {info.id} for agents {', '.join(info.agents)}; it is shown only once: "
                  "store it now (hitl keeps only its hash)", file=sys.stderr)
            return 0
        if args.keys_command == "list":
            for k in await api_keys.list():
                state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
                print(f"{k.id}  {state:<24} created {k.created_at:%Y-%m-%d %H:%M}  "
                      f"agents={','.join(k.agents)}" + (f"  name={k.name}" if k.name else ""))
            return 0
        if args.keys_command == "revoke":
            before = await api_keys.get(args.key_id)
            if before is None or not await api_keys.revoke(args.key_id, utcnow()):
                print(f"hitl: no key with id {args.key_id!r}", file=sys.stderr)
                return 1
            if before.active:
                await _audit(store, "api_key_revoked", before)
            print(f"revoked {args.key_id}")
            return 0
        return 2
    finally:
        await store.close()


async def _audit(store: Store, event: str, key: ApiKey) -> None:
    """A system audit entry for a key created or revoked: its id, name and agents (never the
    key), by `cli` (no Slack user runs this), with the account and host that ran it."""
    detail = {"key_id": key.id, "name": key.name, "agents": list(key.agents),
              "os_user": _os_user(), "host": socket.gethostname()}
    await store.audit_system(event, "cli", detail, utcnow(), key=f"{event}:{key.id}")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER variable and no passwd entry (a bare container)
        return ""


def _agent_ok(name: str) -> bool:
    try:
        Request(agent=name, action="x", summary="x")
    except ValueError:
        return False
    return bool(name.strip())
