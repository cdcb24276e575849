"""The Redis half of `hitl doctor`: reachable, version, persistence, eviction, the group."""

from __future__ import annotations

from hitl.config import shown_url

from bot.config import Settings
from bot.doctor.report import Check, Status
from store.health import GroupFacts, ProbeError, ServerFacts, group_facts, probe_store, server_facts

OK, WARN, ERROR = Status.ok, Status.warn, Status.error
MIN_VERSION = (6, 2)  # XAUTOCLAIM, which reclaims a crashed replica's entries
CONF = "(and the same line in redis.conf, or your provider's settings, so a restart keeps it)"


def _mb(n: int) -> str:
    return f"{n / 1_048_576:.1f} MB"


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(".")[:2])
    except ValueError:
        return (0,)


def version(url: str, f: ServerFacts) -> Check:
    detail = f"{url} answers: Redis {f.version} ({f.mode}), {_mb(f.used_memory)} used"
    if _version(f.version) < MIN_VERSION:
        return Check("redis.server", ERROR, detail + "; hitl needs Redis 6.2 or newer (XAUTOCLAIM)",
                     "upgrade Redis to 7.x")
    return Check("redis.server", OK, detail)


def persistence(f: ServerFacts) -> Check:
    name = "redis.persistence"
    if not (f.last_bgsave_ok and f.last_aof_write_ok):
        return Check(name, ERROR, "Redis reports its last write to disk failed "
                     f"(rdb_last_bgsave_status ok: {f.last_bgsave_ok}, aof_last_write_status ok: "
                     f"{f.last_aof_write_ok})", "read Redis's log: usually a full disk or permissions")
    if f.aof_enabled:
        return Check(name, OK, f"AOF on (appendfsync {f.aof_fsync or '?'})"
                     + (f", RDB snapshots too (save {f.rdb_save!r})" if f.rdb_save else ""))
    if f.persistent is None:
        return Check(name, WARN, "AOF is off and CONFIG GET is refused: cannot tell whether RDB "
                     "snapshots are on", "make sure your provider keeps AOF (preferred) or snapshots")
    if f.persistent:
        return Check(name, WARN, f"only RDB snapshots (save {f.rdb_save!r}): requests, votes and "
                     "audit entries since the last snapshot are lost if Redis stops",
                     f"CONFIG SET appendonly yes {CONF}")
    return Check(name, ERROR, "nothing is kept on disk (appendonly no, save \"\"): a Redis "
                 "restart loses every pending approval and the whole audit trail",
                 f"CONFIG SET appendonly yes {CONF}")


def eviction(f: ServerFacts) -> Check:
    name = "redis.eviction"
    if f.maxmemory_policy != "noeviction":
        return Check(name, ERROR, f"maxmemory-policy is {f.maxmemory_policy}: under memory "
                     "pressure Redis would silently delete pending approvals, records and audit "
                     "entries", f"CONFIG SET maxmemory-policy noeviction {CONF}; size memory as "
                     "docs/deploy.md says")
    if not f.maxmemory:
        return Check(name, OK, "noeviction, no maxmemory limit (the machine's memory is the limit)")
    share = f.used_memory / f.maxmemory
    detail = f"noeviction, {_mb(f.used_memory)} of maxmemory {_mb(f.maxmemory)} used ({share:.0%})"
    if share > 0.8:
        return Check(name, WARN, detail + ": at the limit Redis refuses writes and intake stops",
                     "raise maxmemory, or archive and trim the audit stream (README, Data kept)")
    return Check(name, OK, detail)


def group(prefix: str, claim_idle_s: float, g: GroupFacts) -> Check:
    name = "redis.group"
    stream = f"{prefix}:requests"
    if not g.stream_exists or not g.group_exists:
        what = "no stream" if not g.stream_exists else "the stream has no consumer group"
        return Check(name, WARN, f"{stream}: {what} yet", "start hitl run once: it creates both "
                     "(agents' entries added before that are read too)")
    lag = "" if g.lag is None else f", {g.lag} not yet read"
    detail = f"{stream}: {g.length} entries, {g.pending} pending{lag}"
    if g.pending and g.oldest_pending_idle_ms > claim_idle_s * 1000 * 10:
        holders = ", ".join(f"{c} ({n})" for c, n in sorted(g.consumers.items()))
        return Check(name, WARN, f"{detail}; the oldest was delivered "
                     f"{g.oldest_pending_idle_ms // 1000}s ago and is still not acknowledged "
                     f"(held by {holders})", "make sure a hitl run replica is running: "
                     "running replicas reclaim a stopped one's entries after HITL_CLAIM_IDLE_S")
    return Check(name, OK, detail)


async def redis_checks(settings: Settings) -> list[Check]:
    """Each Redis check; only the first when Redis does not answer."""
    # no retries: a Redis that does not answer is the finding, at once
    store = probe_store(settings.redis_url, settings.prefix)
    try:
        try:
            facts = await server_facts(store.redis, store.keys.requests)
        except (ProbeError, OSError) as e:
            return [Check("redis.server", ERROR, f"cannot reach Redis at {shown_url(settings.redis_url)}: {e}",
                          "start Redis, or set REDIS_URL to where it runs")]
        checks = [version(settings.redis_url, facts), persistence(facts), eviction(facts)]
        try:
            checks.append(group(settings.prefix, settings.claim_idle_s,
                                await group_facts(store.redis, store.keys)))
        except ProbeError as e:
            checks.append(Check("redis.group", ERROR, f"cannot read {settings.prefix}:requests: {e}",
                                "is the key a stream? another program may use the same prefix"))
        return checks
    finally:
        await store.close()
