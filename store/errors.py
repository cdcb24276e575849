"""The few exceptions the domain raises; `handlers.errors` turns them into words."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's domain errors."""


class NotFound(StoreError):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"no request with id {request_id!r}")
        self.request_id = request_id


class AlreadyDecided(StoreError):
    """The request has a decision; nothing was changed."""

    def __init__(self, record: object) -> None:
        super().__init__("already decided")
        self.record = record


class NotAllowed(StoreError):
    """The person may not do this; `reason` is a machine code, `message` plain words."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Conflict(StoreError):
    """The record changed between read and write; the caller re-reads and retries."""

