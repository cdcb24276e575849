"""Settings of the evidence features, from the environment (documented in docs/audit.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.config import ConfigError
from bot.evidence.signing import Signer, load_signer


class EvidenceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    key_file: Path | None = Field(None, validation_alias=AliasChoices("HITL_AUDIT_KEY_FILE"))
    key: str | None = Field(None, validation_alias=AliasChoices("HITL_AUDIT_KEY"), repr=False)
    checkpoint_s: float = Field(60.0, gt=0, validation_alias=AliasChoices("HITL_AUDIT_CHECKPOINT_S"))
    """Seconds between signed checkpoints (while the chain grows)."""
    checkpoint_every: int = Field(10000, ge=1, validation_alias=AliasChoices("HITL_AUDIT_CHECKPOINT_EVERY"))
    """...or after this many new entries, whichever comes first."""
    retention_days: float | None = Field(None, gt=0, validation_alias=AliasChoices("HITL_AUDIT_RETENTION_DAYS"))
    """Archived entries older than this are dropped from Redis (never unarchived ones)."""
    archive_url: str | None = Field(None, validation_alias=AliasChoices("HITL_AUDIT_ARCHIVE_URL"), repr=False)
    """postgresql://...: the sealing leader archives sealed entries there continuously."""
    archive_s: float = Field(60.0, gt=0, validation_alias=AliasChoices("HITL_AUDIT_ARCHIVE_S"))
    pseudonym_key: str | None = Field(None, validation_alias=AliasChoices("HITL_PSEUDONYM_KEY"), repr=False)
    """HMAC key of `hitl feedback export --pseudonymize`."""

    def signer(self) -> Signer | None:
        return load_signer(self.key_file, self.key)


def load_evidence_settings() -> EvidenceSettings:
    try:
        return EvidenceSettings()
    except ValidationError as e:
        lines = [f"{str(err['loc'][0]).upper()}: {err['msg']}" for err in e.errors()]
        raise ConfigError("configuration error:\n  " + "\n  ".join(lines)) from e
