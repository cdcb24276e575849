"""PolicyHolder: the policy in force, reloaded from its file; a bad file never replaces it."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from bot.policy.canaries import load_canaries
from bot.policy.engine import PolicyEngine
from bot.policy.load import PolicyError, default_text

log = logging.getLogger("hitl.policy")


class PolicyHolder:
    """Keeps the current engine; calling the holder returns it (intake's router factory)."""

    def __init__(self, path: Path | None = None) -> None:
        """Load `path` (or the built-in default); PolicyError at start if it is invalid."""
        self.path = path
        self._salt = b""
        self._engine, self.digest = self._load()
        self.last_error: PolicyError | None = None

    @property
    def sample_salt(self) -> bytes:
        """The deployment's secret that sampling and canary picks are keyed by (read from
        Redis when intake starts), for the engine in force and every one installed later."""
        return self._salt

    @sample_salt.setter
    def sample_salt(self, value: bytes) -> None:
        self._salt = value
        self._engine.sample_salt = value

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    def __call__(self) -> PolicyEngine:
        return self._engine

    def _load(self) -> tuple[PolicyEngine, str]:
        if self.path is None:
            text = default_text()
            return PolicyEngine.from_yaml(text, "built-in default policy"), _digest(text)
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise PolicyError(str(self.path), [f"cannot read the file: {e}"]) from None
        engine = PolicyEngine.from_yaml(text, str(self.path))
        engine.canaries = load_canaries(engine, self.path)
        return engine, _digest(text)

    def reload(self) -> bool:
        """Re-read the file; True if the policy changed. An invalid file keeps the old policy,
        is logged, kept in `last_error`, and raised as PolicyError."""
        found = self.candidate()
        if found is None:
            return False
        self.install(*found)
        return True

    def candidate(self) -> tuple[PolicyEngine, str] | None:
        """The file's policy and digest when it differs from the one in force (None when it is
        the same), not yet in force: `install` it. An invalid file is logged, kept in
        `last_error`, and raised as PolicyError."""
        try:
            engine, digest = self._load()
        except PolicyError as e:
            self.last_error = e
            log.error("policy reload failed, keeping the policy in force (%s): %s",
                      self.digest[:12], e)
            raise
        self.last_error = None
        return None if digest == self.digest else (engine, digest)

    def install(self, engine: PolicyEngine, digest: str) -> None:
        """Put a `candidate` in force."""
        engine.sample_salt = self._salt
        self._engine, self.digest = engine, digest
        log.info("policy reloaded from %s (%s)", engine.source, digest[:12])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
