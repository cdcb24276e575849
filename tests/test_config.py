"""Settings: the contract's names, checked at start with one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_API_URL", "REDIS_URL",
                 "HITL_PREFIX", "HITL_POLICY", "HITL_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_follow_the_contract() -> None:
    s = load_settings()
    assert s.redis_url == "redis://localhost:6379/0" and s.prefix == "hitl" and s.port == 3000
    assert s.slack_api_url == "https://slack.com/api/" and s.policy is None and not s.socket_mode


def test_values_come_from_the_contract_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    policy = tmp_path / "p.yml"
    policy.write_text("{}")
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "sec", "SLACK_APP_TOKEN": "xapp-1",
           "SLACK_API_URL": "http://127.0.0.1:9/api", "REDIS_URL": "redis://r:1/2", "HITL_PREFIX": "{hitl}",
           "HITL_POLICY": str(policy), "HITL_PORT": "8080"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert (s.slack_bot_token, s.slack_signing_secret, s.slack_app_token) == ("xoxb-1", "sec", "xapp-1")
    assert s.slack_api_url == "http://127.0.0.1:9/api/" and s.redis_url == "redis://r:1/2"
    assert s.prefix == "{hitl}" and s.policy == policy and s.port == 8080 and s.socket_mode


def test_every_malformed_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxp-user-token")
    monkeypatch.setenv("SLACK_APP_TOKEN", "nope")
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    monkeypatch.setenv("HITL_PORT", "http")
    monkeypatch.setenv("HITL_POLICY", "/nonexistent/policy.yml")
    monkeypatch.setenv("HITL_PREFIX", "has space")
    with pytest.raises(ConfigError) as e:
        load_settings()
    text = str(e.value)
    for line in ("SLACK_BOT_TOKEN: must be a bot token starting with 'xoxb-'",
                 "SLACK_APP_TOKEN: must be an app-level token starting with 'xapp-'",
                 "REDIS_URL: must start with redis://", "HITL_PORT:", "HITL_POLICY: no policy file at",
                 "HITL_PREFIX: must be 1-64 characters"):
        assert line in text, text


def test_run_names_what_is_missing() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings().require_for_run()
    assert "SLACK_BOT_TOKEN: required" in str(e.value) and "SLACK_SIGNING_SECRET: required" in str(e.value)
    # Socket Mode needs no signing secret
    load_settings(slack_bot_token="xoxb-1", slack_app_token="xapp-1").require_for_run()


def test_config_errors_never_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxp-1234-5678-secretpart")
    monkeypatch.setenv("SLACK_APP_TOKEN", "not-an-app-token-secretpart")
    monkeypatch.setenv("SLACK_API_URL", "xoxb-99-88-secretpart")  # a token pasted into the wrong variable
    monkeypatch.setenv("REDIS_URL", "http://user:hunter2@redis.example:6379")
    with pytest.raises(ConfigError) as e:
        load_settings()
    text = str(e.value)
    assert "SLACK_BOT_TOKEN: must be a bot token" in text and "SLACK_APP_TOKEN: must be an app-level" in text
    assert "SLACK_API_URL: must be an http(s) URL" in text and "(got 'xoxb-…')" in text
    assert "REDIS_URL: must start with redis://" in text and "redis.example:6379" in text
    for secret in ("secretpart", "hunter2", "1234", "99-88"):
        assert secret not in text, text
