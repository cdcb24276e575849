"""Settings from the environment, named exactly as the public contract names them."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.env import ConfigError, check_redis_url, redacted
from bot.env import check_prefix as check_prefix_text
from store.connect import BadRedisUrl, check_prefix
from store.connect import parse as parse_redis_url

SLACK_API_DEFAULT = "https://slack.com/api/"
SECRETS = {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"}
"""Never echoed back in a configuration error, not even in part."""

__all__ = ["ConfigError", "Settings", "load_settings"]


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    """Every setting the bot reads; values are checked when the bot starts."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    slack_bot_token: str | None = Field(None, validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: str | None = Field(None, validation_alias=_env("SLACK_SIGNING_SECRET"))
    slack_app_token: str | None = Field(None, validation_alias=_env("SLACK_APP_TOKEN"))
    slack_api_url: str = Field(SLACK_API_DEFAULT, validation_alias=_env("SLACK_API_URL"))
    redis_url: str = Field("redis://localhost:6379/0", validation_alias=_env("REDIS_URL"))
    prefix: str = Field("hitl", validation_alias=_env("HITL_PREFIX"))
    policy: Path | None = Field(None, validation_alias=_env("HITL_POLICY"))
    port: int = Field(3000, ge=0, le=65535, validation_alias=_env("HITL_PORT"))
    # Extensions of the contract (documented in README.md, "Configuration").
    host: str = Field("0.0.0.0", validation_alias=_env("HITL_HOST"))
    consumer: str = Field(default_factory=socket.gethostname, validation_alias=_env("HITL_CONSUMER"))
    claim_idle_s: float = Field(30.0, gt=0, validation_alias=_env("HITL_CLAIM_IDLE_S"))
    max_deliveries: int = Field(5, ge=1, validation_alias=_env("HITL_MAX_DELIVERIES"))
    post_rate: float = Field(1.0, gt=0, le=100, validation_alias=_env("HITL_POST_RATE"))
    post_burst: float = Field(1.0, ge=1, le=100, validation_alias=_env("HITL_POST_BURST"))
    backlog_at: int = Field(10, ge=2, validation_alias=_env("HITL_BACKLOG_AT"))
    dead_max_len: int = Field(10_000, ge=1, validation_alias=_env("HITL_DEAD_MAX_LEN"))
    dead_max_age_s: float = Field(30 * 86400, gt=0, validation_alias=_env("HITL_DEAD_MAX_AGE_S"))
    # REST API and webhooks (docs/api.md)
    api_rate: float = Field(20.0, gt=0, validation_alias=_env("HITL_API_RATE"))
    api_burst: float = Field(40.0, ge=1, validation_alias=_env("HITL_API_BURST"))
    api_submit_wait_s: float = Field(5.0, gt=0, le=60, validation_alias=_env("HITL_API_SUBMIT_WAIT_S"))
    webhook_hosts: str = Field("", validation_alias=_env("HITL_WEBHOOK_HOSTS"))
    webhook_secret: str | None = Field(None, validation_alias=_env("HITL_WEBHOOK_SECRET"))
    webhook_retry_s: float = Field(1.0, gt=0, validation_alias=_env("HITL_WEBHOOK_RETRY_S"))
    webhook_give_up_s: float = Field(86400.0, gt=0, validation_alias=_env("HITL_WEBHOOK_GIVE_UP_S"))
    redis_wait_replicas: int = Field(0, ge=0, le=16, validation_alias=_env("HITL_REDIS_WAIT_REPLICAS"))
    # where the audit sealer and the stats projector run (bot.housekeeping)
    housekeeping: Literal["process", "inline", "off"] = Field("process", validation_alias=_env("HITL_HOUSEKEEPING"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("HITL_LOG_LEVEL")
    )

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("xoxb-"):
            raise ValueError("must be a bot token starting with 'xoxb-'")
        return v

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("xapp-"):
            raise ValueError("must be an app-level token starting with 'xapp-'")
        return v or None

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        return v if v.endswith("/") else v + "/"

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        check_redis_url(v)
        parse_redis_url(v)  # BadRedisUrl is a ValueError: its text says the expected form
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return check_prefix_text(v)

    @model_validator(mode="after")
    def _redis_deployment(self) -> Settings:
        try:
            check_prefix(self.redis_url, self.prefix)
        except BadRedisUrl as e:
            raise ValueError(f"HITL_PREFIX: {e}") from e
        if self.redis_wait_replicas and parse_redis_url(self.redis_url).kind == "cluster":
            raise ValueError("HITL_REDIS_WAIT_REPLICAS: not available with redis+cluster:// (the cluster "
                             "client cannot send WAIT on the connection that wrote); set it to 0")
        return self

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"no policy file at {v}")
        return v

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def require_for_run(self) -> None:
        """Raise ConfigError naming every value `hitl run` needs and does not have."""
        missing = []
        if not self.slack_bot_token:
            missing.append("SLACK_BOT_TOKEN: required (the bot token, xoxb-...)")
        if not self.socket_mode and not self.slack_signing_secret:
            missing.append(
                "SLACK_SIGNING_SECRET: required in HTTP mode (set SLACK_APP_TOKEN for Socket Mode)"
            )
        if missing:
            raise ConfigError("configuration error:\n  " + "\n  ".join(missing))


_NAMES = {
    "slack_bot_token": "SLACK_BOT_TOKEN", "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "slack_app_token": "SLACK_APP_TOKEN", "slack_api_url": "SLACK_API_URL",
    "redis_url": "REDIS_URL", "prefix": "HITL_PREFIX", "policy": "HITL_POLICY", "port": "HITL_PORT",
    "host": "HITL_HOST", "consumer": "HITL_CONSUMER", "claim_idle_s": "HITL_CLAIM_IDLE_S",
    "max_deliveries": "HITL_MAX_DELIVERIES", "log_level": "HITL_LOG_LEVEL",
    "post_rate": "HITL_POST_RATE", "post_burst": "HITL_POST_BURST", "backlog_at": "HITL_BACKLOG_AT",
    "dead_max_len": "HITL_DEAD_MAX_LEN", "dead_max_age_s": "HITL_DEAD_MAX_AGE_S",
    "api_rate": "HITL_API_RATE", "api_burst": "HITL_API_BURST", "api_submit_wait_s": "HITL_API_SUBMIT_WAIT_S",
    "webhook_hosts": "HITL_WEBHOOK_HOSTS", "webhook_secret": "HITL_WEBHOOK_SECRET",
    "webhook_retry_s": "HITL_WEBHOOK_RETRY_S", "webhook_give_up_s": "HITL_WEBHOOK_GIVE_UP_S",
    "redis_wait_replicas": "HITL_REDIS_WAIT_REPLICAS", "housekeeping": "HITL_HOUSEKEEPING",
}


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and overrides), or ConfigError with one line per problem."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        lines = []
        for err in e.errors():
            if not err["loc"]:  # a check across settings names its variables in the message
                lines.append(err["msg"].removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
            name = _NAMES.get(field, field.upper())
            got = "" if name in SECRETS else f" (got {redacted(err.get('input'))})"
            lines.append(f"{name}: {err['msg'].removeprefix('Value error, ')}{got}")
        raise ConfigError("configuration error:\n  " + "\n  ".join(lines)) from e
