"""`REDIS_URL` forms: what each names, and the clear error each mistake gets."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings
from store.connect import BadRedisUrl, Target, check_prefix, hash_tag, parse, same_slot


@pytest.mark.parametrize(("url", "target"), [
    ("redis://localhost:6379/0", Target("single")),
    ("rediss://u:p@redis.internal:6380/2", Target("single", tls=True)),
    ("unix:///run/redis.sock?db=1", Target("single")),
    ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/",
     Target("cluster", (("10.0.0.1", 7000), ("10.0.0.2", 7001)))),
    ("rediss+cluster://bot:s%40cret@node-a,[::1]:7002,[::1]/",
     Target("cluster", (("node-a", 6379), ("::1", 7002), ("::1", 6379)), True, "bot", "s@cret")),
    ("redis+sentinel://s1:26379,s2:5000/mymaster/3",
     Target("sentinel", (("s1", 26379), ("s2", 5000)), service="mymaster", db=3)),
    ("redis+sentinel://:pw@s1/mymaster?sentinel_password=x",
     Target("sentinel", (("s1", 26379),), password="pw", service="mymaster",
            options={"sentinel_password": "x"})),
])
def test_url_forms(url: str, target: Target) -> None:
    assert parse(url) == target


@pytest.mark.parametrize(("url", "says"), [
    ("localhost:6379", "must start with redis://"),
    ("http://x/", "unknown scheme 'http'"),
    ("redis+shard://a:1/", "unknown scheme"),
    ("redis+cluster://a:1/3", "only database 0"),
    ("redis+cluster://a:notaport/", "'a:notaport' is not host:port"),
    ("redis+cluster://a:70000/", "is not host:port"),
    ("redis+cluster://a:1/?timeout=3", "takes no options"),
    ("redis+sentinel://s1:26379/", "<service_name>"),
    ("redis+sentinel://s1:26379/mymaster/zero", "<service_name>"),
    ("redis+sentinel://s1/mymaster?password=x", "unknown option password"),
])
def test_bad_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(BadRedisUrl) as e:
        parse(url)
    assert says in str(e.value)


def test_hash_tags_follow_redis_rules() -> None:
    assert hash_tag("{hitl}") == "hitl" and hash_tag("team:{a}:x{b}") == "a"
    assert hash_tag("hitl") is None and hash_tag("{}hitl") is None and hash_tag("{hitl") is None
    assert same_slot("{hitl}:requests", "agent:{hitl}:inbox")
    assert not same_slot("{hitl}:requests", "{team-b}:requests")


def test_a_cluster_prefix_needs_a_hash_tag() -> None:
    check_prefix("redis://localhost/0", "hitl")  # one server: any prefix
    check_prefix("redis+cluster://a:1/", "{hitl}")
    with pytest.raises(BadRedisUrl, match="must contain a hash tag"):
        check_prefix("redis+cluster://a:1/", "hitl")


def test_settings_name_the_variable_at_fault() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(redis_url="redis+sentinel://s1/")
    assert "REDIS_URL: write redis+sentinel://host:port" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_settings(redis_url="redis+cluster://a:1/", prefix="hitl")
    assert "HITL_PREFIX: on a Redis Cluster the key prefix must contain a hash tag" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_settings(redis_url="redis+cluster://a:1/", prefix="{hitl}", redis_wait_replicas=1)
    assert "HITL_REDIS_WAIT_REPLICAS: not available with redis+cluster://" in str(e.value)
    ok = load_settings(redis_url="redis+sentinel://s1/mymaster", redis_wait_replicas=1)
    assert ok.redis_wait_replicas == 1
