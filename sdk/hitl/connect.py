"""Redis clients from one URL: a single server, a Redis Cluster, or a Sentinel-managed master.

URL forms (docs/redis.md):
  redis://[user:pass@]host:port/db, rediss://..., unix:///path.sock?db=0  one server
  redis+cluster://[user:pass@]host[:port][,host[:port]...]/            a Redis Cluster
  redis+sentinel://[user:pass@]host:port[,host:port...]/<service>[/<db>]  Sentinel's master
The `rediss+` forms use TLS. Shared by the agent SDK's clients and the bot's store. On a cluster every multi-key script needs all its keys in one
slot, so the key prefix must carry a hash tag (`{hitl}`): `check_prefix` refuses it otherwise.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Kind = Literal["single", "cluster", "sentinel"]
SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


class BadRedisUrl(ValueError):
    """A `REDIS_URL` that cannot name a Redis deployment; the message says how to write it."""


@dataclass(frozen=True)
class Target:
    """What a URL names: the kind of deployment, its seed nodes and credentials."""

    kind: Kind
    nodes: tuple[tuple[str, int], ...] = ()
    tls: bool = False
    username: str | None = None
    password: str | None = None
    service: str | None = None
    db: int = 0
    options: dict[str, str] = field(default_factory=dict)


def reconnecting(retries: int = 8) -> Retry:
    """Retries across a Redis restart or failover (8 tries over about 9 s). Every write path is
    idempotent (version checks, XACK guards, lease checks), so a write sent twice changes nothing."""
    return Retry(ExponentialBackoff(cap=2.0, base=0.05), retries)


def _nodes(netloc: str, what: str, default_port: int) -> tuple[tuple[str, int], ...]:
    nodes = []
    for part in netloc.split(","):
        part = part.strip()
        host, sep, port = part.rpartition(":")
        if not sep or part.endswith("]"):  # no port (an IPv6 address is in brackets)
            host, port = part, str(default_port)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadRedisUrl(f"{what}: {part.strip()!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return tuple(nodes)


def parse(url: str) -> Target:
    """The deployment a URL names, or BadRedisUrl saying what is wrong and the expected form."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise BadRedisUrl("must start with redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://")
    if scheme in SINGLE_SCHEMES:
        if scheme != "unix":
            try:
                _ = urlsplit(url).port  # what redis-py reads; a bad port or bracket would raise there
            except ValueError as e:
                raise BadRedisUrl(f"not a usable URL ({e}): write {scheme}://[user:password@]host:port/db") from None
        return Target("single", tls=scheme == "rediss")
    base, _, mode = scheme.partition("+")
    if base not in ("redis", "rediss") or mode not in ("cluster", "sentinel"):
        raise BadRedisUrl(f"unknown scheme {scheme!r}: use redis, rediss, unix, redis+cluster, "
                          "rediss+cluster, redis+sentinel or rediss+sentinel")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(pw) if colon else None)
    options = dict(parse_qsl(query))
    if mode == "cluster":
        if path.strip("/") not in ("", "0"):
            raise BadRedisUrl("a Redis Cluster has only database 0: write redis+cluster://host:port[,host:port]/")
        if options:
            raise BadRedisUrl(f"redis+cluster:// takes no options (got {', '.join(options)})")
        return Target("cluster", _nodes(hosts, "redis+cluster://", 6379), base == "rediss", username, password)
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise BadRedisUrl("write redis+sentinel://host:port[,host:port]/<service_name>[/<db>], "
                          "for example redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/mymaster/0")
    unknown = sorted(set(options) - set(SENTINEL_OPTIONS))
    if unknown:
        raise BadRedisUrl(f"unknown option {', '.join(unknown)}: redis+sentinel:// takes "
                          f"{' and '.join(SENTINEL_OPTIONS)}")
    return Target("sentinel", _nodes(hosts, "redis+sentinel://", 26379), base == "rediss", username, password,
                  unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0, options)


def hash_tag(key: str) -> str | None:
    """The part of `key` Redis Cluster hashes (`{...}`'s content), or None when it has no tag."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1:end] if end > start + 1 else None


def same_slot(a: str, b: str) -> bool:
    """True when both keys hash to the same Redis Cluster slot (so one script may touch both)."""
    return bool(key_slot(a.encode()) == key_slot(b.encode()))


def check_prefix(url: str, prefix: str) -> None:
    """Refuse a cluster URL whose key prefix would spread one request's keys over several slots."""
    if parse(url).kind == "cluster" and hash_tag(prefix) is None:
        raise BadRedisUrl(
            f"on a Redis Cluster the key prefix must contain a hash tag, for example "
            f"HITL_PREFIX='{{{prefix}}}': every state change is one Lua script over several keys, "
            f"and a script may only touch keys of one slot (prefix {prefix!r} has no {{...}})")


class KeepsCancellation(AbstractConnection):
    """A connection whose send never loses its caller's cancellation.

    redis-py sends each command through `asyncio.wait_for`, which on Python 3.11 returns the
    send's result when the caller is cancelled as the send completes: the command then read
    its reply as if nothing had happened. A cancelled wait (a task cancelled at shutdown, an
    `asyncio.wait_for` or an MCP call bounding it, its own timeout) read on for ever, holding
    a connection, and enough of them left every later command waiting for one. Here the
    cancellation goes on after the send, as it would have from the read (the connection is
    closed: its reply is never read)."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        await super().send_packed_command(command, check_health)
        if task is not None and task.cancelling() > cancels:
            await self.disconnect(nowait=True)
            raise asyncio.CancelledError


_CANCELLABLE: dict[type[Any], type[Any]] = {}


def cancellable(connection_class: type[Any]) -> type[Any]:
    """`connection_class` that keeps its caller's cancellation (KeepsCancellation)."""
    if issubclass(connection_class, KeepsCancellation):
        return connection_class
    if connection_class not in _CANCELLABLE:
        _CANCELLABLE[connection_class] = type(f"Cancellable{connection_class.__name__}",
                                              (KeepsCancellation, connection_class), {})
    return _CANCELLABLE[connection_class]


class FollowMaster(KeepsCancellation, SentinelManagedConnection):
    """Asks the sentinels for the master on every (re)connect, one attempt each.

    redis-py 8.1's connection reconnects inside a command retry straight to the address it had,
    so a client would keep knocking on the dead master after a failover; this one follows it."""

    async def connect_check_health(self, check_health: bool = True,
                                   retry_socket_connect: bool = True) -> None:
        if not self.is_connected and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health, retry_socket_connect=False)

    async def connect_to(self, address: tuple[str, int]) -> None:
        self.host, self.port = address  # just asked for by the pool: no second question
        await super().connect_check_health(self.connection_pool.check_connection, retry_socket_connect=False)


class FollowMasterTLS(FollowMaster, SSLConnection):
    pass


_gated: contextvars.ContextVar[bool] = contextvars.ContextVar("hitl_cluster_gated", default=False)
"""Set while a command or pipeline holds its place (a pipeline retrying a redirected command
through the client must not wait for a second one)."""


class WaitingCluster(RedisCluster):
    """A cluster client that learns the slots before its first commands go out, and whose
    commands wait for a free connection, as a single server's blocking pool does, instead of
    failing.

    redis-py's cluster client raises MaxConnectionsError at once when a node's pool is
    exhausted, and all of one prefix's keys are on one master: a burst of more concurrent
    commands than `max_connections` (an agent's many asks, intake's accepts side by side)
    failed as if Redis were unreachable. Here at most `max_connections` commands or pipelines
    are in flight, each holding at most one connection per node."""

    def __init__(self, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._gate = asyncio.Semaphore(max_connections)
        # every node's connections keep a cancellation (the nodes found later are made from
        # these kwargs, shared with the nodes manager)
        keeps = cancellable(self.connection_kwargs["connection_class"])
        self.connection_kwargs["connection_class"] = keeps
        for node in self.startup_nodes:
            node.connection_class = keeps

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if _gated.get():
            return await super().execute_command(*args, **kwargs)
        if self._initialize:
            # learn the slots first (one caller at a time, under redis-py's lock): commands that
            # start together on a new client (or after a node failed) otherwise pick their node
            # before the slots are known, and the redirections that follow close connections
            # other commands are using, which fails some and sends others twice
            await self.initialize()
        async with self._gate:
            token = _gated.set(True)
            try:
                return await super().execute_command(*args, **kwargs)
            finally:
                _gated.reset(token)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused there, in redis-py's words
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]  # (as redis-py's own)


class _WaitingPipeline(ClusterPipeline):
    """A pipeline that waits for its place among the client's `max_connections`."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        if _gated.get() or not isinstance(client, WaitingCluster):
            return await super().execute(raise_on_error, allow_redirections)
        async with client._gate:
            token = _gated.set(True)
            try:
                return await super().execute(raise_on_error, allow_redirections)
            finally:
                _gated.reset(token)


class SentinelRedis(aioredis.Redis):
    """The master's client; closing it also closes its connections to the sentinels."""

    sentinel_clients: tuple[aioredis.Redis, ...] = ()
    """Kept apart from `Sentinel.sentinels`, whose order redis-py swaps without a lock: concurrent
    lookups during a failover can leave a client out of that list (and so unclosed)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            await asyncio.gather(*(s.aclose() for s in self.sentinel_clients), return_exceptions=True)


def connect(url: str, *, socket_timeout: float | None = 5.0, retry: bool | Retry = True, retries: int = 8,
            max_connections: int = 64, **kwargs: Any) -> Any:
    """A decoding client for whatever `url` names, with explicit timeouts.

    `retry` retries commands across a restart or failover (every write path is idempotent), or
    is the redis `Retry` to use as given; blocking reads pass a `socket_timeout` longer than
    their BLOCK and `retry=False`."""
    t = parse(url)
    opts: dict[str, Any] = {"decode_responses": True, "socket_timeout": socket_timeout,
                            "socket_connect_timeout": 5}
    if retry:
        opts.update(retry=retry if isinstance(retry, Retry) else reconnecting(retries),
                    retry_on_error=[RedisConnectionError, RedisTimeoutError])
    opts.update(kwargs)
    if t.kind == "single":
        # A blocking pool: a burst waits for a free connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=10, **opts)
        pool.connection_class = cancellable(pool.connection_class)
        return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
    creds: dict[str, Any] = {"username": t.username, "password": t.password, "ssl": t.tls}
    if t.kind == "cluster":
        return WaitingCluster(startup_nodes=[ClusterNode(h, p) for h, p in t.nodes],
                              max_connections=max_connections, **creds, **opts)
    sentinel_kwargs = {"socket_timeout": 5, "socket_connect_timeout": 5, "ssl": t.tls,
                       "username": t.options.get("sentinel_username"),
                       "password": t.options.get("sentinel_password")}
    sentinel = Sentinel(list(t.nodes), sentinel_kwargs=sentinel_kwargs)
    client: SentinelRedis = sentinel.master_for(
        t.service or "", redis_class=SentinelRedis, db=t.db,
        connection_class=FollowMasterTLS if t.tls else FollowMaster, **creds, **opts)
    client.sentinel_clients = tuple(sentinel.sentinels)
    return client
