"""The policy: file format, CEL rules, built-in triggers and the router (PolicyEngine)."""

from bot.policy.check import check
from bot.policy.engine import PolicyEngine, ResolvedTier, sample_point
from bot.policy.holder import PolicyHolder
from bot.policy.load import PolicyError, default_text, load_policy
from bot.policy.model import Policy

__all__ = [
    "Policy",
    "PolicyEngine",
    "PolicyError",
    "PolicyHolder",
    "ResolvedTier",
    "check",
    "default_text",
    "load_policy",
    "sample_point",
]
