"""Every Redis key the product uses, built from one prefix in one place.

Wrap the prefix in braces (`{hitl}`) to keep every key in one Redis Cluster slot, so the
multi-key Lua scripts stay valid there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hitl.keys import AgentKeys

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
"""The request id alphabet (`hitl.protocol.REQUEST_ID_PATTERN`): no `:`, so an id can never
reach into another key's name. Every key derived from an id is `{prefix}:<kind>:<id>`, and no
two kinds share a namespace."""


def is_request_id(value: object) -> bool:
    return isinstance(value, str) and REQUEST_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Keys:
    prefix: str = "hitl"

    @property
    def requests(self) -> str:
        """Stream agents XADD requests to."""
        return f"{self.prefix}:requests"

    @property
    def dead(self) -> str:
        """Dead-letter stream: raw entries that could not be accepted, with an `error`."""
        return f"{self.prefix}:requests:dead"

    @property
    def decisions(self) -> str:
        """Stream of every decision, whatever the request's `reply_to`."""
        return f"{self.prefix}:decisions"

    @property
    def messages(self) -> str:
        """Stream of every interim message to an agent (take over, reply, override), with
        `after`, the newest decision id when it was added: the HTTP API's event stream and
        webhooks read it (agents read theirs on `reply_to`)."""
        return f"{self.prefix}:messages"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    @property
    def pending(self) -> str:
        """Sorted set of undecided request ids by creation time."""
        return f"{self.prefix}:pending"

    @property
    def outbox(self) -> str:
        """Sorted set of Slack operations (`post:<id>`, `update:<id>`) by due time."""
        return f"{self.prefix}:outbox"

    @property
    def outbox_again(self) -> str:
        """Outbox members queued again while leased: each runs once more when its lease ends."""
        return f"{self.prefix}:outbox:again"

    @property
    def undeliverable(self) -> str:
        """Sorted set of request ids whose card Slack refused for good, by time."""
        return f"{self.prefix}:undeliverable"

    @property
    def deadlines(self) -> str:
        """Sorted set of timed events (`<kind>:<id>`) by due time."""
        return f"{self.prefix}:deadlines"

    @property
    def policy(self) -> str:
        """Hash naming the policy last audited as in force (`digest`, `source`, `at`)."""
        return f"{self.prefix}:policy"

    @property
    def actions_seen(self) -> str:
        return f"{self.prefix}:actions"

    @property
    def control(self) -> str:
        """Hash of switches shared by every replica (pause and its reason)."""
        return f"{self.prefix}:control"

    @property
    def results_prefix(self) -> str:
        return f"{self.prefix}:results:"

    def request(self, request_id: str) -> str:
        return f"{self.prefix}:req:{request_id}"

    def trail(self, request_id: str) -> str:
        """List of the audit entry ids of one request, oldest first."""
        return f"{self.prefix}:trail:{request_id}"

    def audit_once(self, key: str) -> str:
        """Marks an audit() call as done (by its idempotency key) so a retry adds nothing."""
        return f"{self.prefix}:auditonce:{key}"

    def slack_once(self, digest: str) -> str:
        """A Slack request already handled (handlers.once), kept ten minutes."""
        return f"{self.prefix}:slackonce:{digest}"

    def queued(self, request_id: str) -> str:
        """What the HTTP API queued under a request id that intake may not have taken yet: per
        agent its newest queue entry, and intake's refusal of such an entry (kept 7 days)."""
        return f"{self.prefix}:queued:{request_id}"

    def invalid(self, request_id: str) -> str:
        """The `invalid` decision of a request id that never became a request (kept 7 days)."""
        return f"{self.prefix}:invalid:{request_id}"

    def rate(self, bucket: str) -> str:
        """Token bucket pacing Slack calls (`post:<channel>`, `update`)."""
        return f"{self.prefix}:rate:{bucket}"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def batch_round(self, batch_id: str, name: str) -> str:
        """One round of a batch card's timed event (`reminded`, `level:<n>:<targets digest>`):
        which item sends it for the card (store/lua/batch_round.lua)."""
        return f"{self.prefix}:batch:{batch_id}:{name}"

    def batch_items(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}:items"

    def open_batch(self, channel: str, group: str) -> str:
        """The batch still collecting items for (channel, group), expiring with its window."""
        return f"{self.prefix}:batchopen:{channel}|{group}"

    def results(self, name: str) -> str:
        return f"{self.prefix}:results:{name}"

    def secret(self, name: str) -> str:
        """A random key of this deployment, shared by its replicas (`Store.secret`)."""
        return f"{self.prefix}:secret:{name}"

    def stats(self, name: str) -> str:
        return f"{self.prefix}:stats:{name}"

    def owns(self, key: str) -> bool:
        """True when `key` is one of the bot's own keys (agents may only write results): the SDK's
        rule (`hitl.keys.AgentKeys.owns`), so a client refuses what the bot would."""
        return AgentKeys(self.prefix).owns(key)
