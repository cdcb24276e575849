"""The checkpoint signing key: Ed25519 from HITL_AUDIT_KEY_FILE or HITL_AUDIT_KEY.

Either holds a PEM private key (`openssl genpkey -algorithm ed25519`) or the raw 32-byte
seed in base64. No key: checkpoints are off, and every surface says so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bot.evidence.canonical import checkpoint_message
from store.chain_models import Checkpoint

NO_KEY = "no signing key (set HITL_AUDIT_KEY_FILE or HITL_AUDIT_KEY)"


class SigningKeyError(Exception):
    """The configured key cannot be read or is not an Ed25519 key; the message says why."""


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, seq: int, hash_: str, time_ms: int) -> Checkpoint:
        sig = self.private.sign(checkpoint_message(seq, hash_, time_ms))
        return Checkpoint(seq, hash_, time_ms, base64.b64encode(sig).decode(), self.key_id)


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(public)).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _private(text: str, where: str) -> Ed25519PrivateKey:
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise SigningKeyError(f"{where}: not an Ed25519 key ({type(key).__name__})")
            return key
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError, binascii.Error) as e:
        raise SigningKeyError(f"{where}: not a PEM Ed25519 private key or a base64 32-byte seed ({e})") from None
    if len(raw) != 32:
        raise SigningKeyError(f"{where}: a raw key must be 32 bytes in base64, got {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_signer(key_file: Path | None, key_text: str | None) -> Signer | None:
    """The signer from the file (preferred) or the environment value; None when neither is set."""
    if key_file is not None:
        try:
            text = key_file.read_text()
        except OSError as e:
            raise SigningKeyError(f"HITL_AUDIT_KEY_FILE: cannot read {key_file}: {e.strerror or e}") from None
        return Signer(_private(text, f"HITL_AUDIT_KEY_FILE ({key_file})"))
    if key_text:
        return Signer(_private(key_text, "HITL_AUDIT_KEY"))
    return None


def load_public(text: str) -> Ed25519PublicKey:
    """A public key from PEM or raw base64 (what `hitl audit pubkey` prints)."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise SigningKeyError("not an Ed25519 public key")
            return key
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error) as e:
        raise SigningKeyError(f"not a PEM or base64 Ed25519 public key ({e})") from None


def signature_ok(public: Ed25519PublicKey, cp: Checkpoint) -> bool:
    try:
        public.verify(base64.b64decode(cp.sig), checkpoint_message(cp.seq, cp.hash, cp.time))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
