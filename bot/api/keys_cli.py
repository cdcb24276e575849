"""`hitl keys create | list | revoke`: API keys for the REST and HumanLayer APIs."""

from __future__ import annotations

import argparse
import sys

from bot.config import load_settings
from store.api_keys import ApiKeys
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
            if not await api_keys.revoke(args.key_id, utcnow()):
                print(f"hitl: no key with id {args.key_id!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
            return 0
        return 2
    finally:
        await store.close()


def _agent_ok(name: str) -> bool:
    try:
        Request(agent=name, action="x", summary="x")
    except ValueError:
        return False
    return bool(name.strip())
