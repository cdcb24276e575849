"""A plain Python agent: a tool gated by @require_approval, and a question for people.

Run hitl first (`hitl demo` prints its REDIS_URL and HITL_PREFIX), then:
    REDIS_URL=... HITL_PREFIX=... python examples/decorator/agent.py
Approve, edit or reject the card in Slack (or the emulator page); this prints what ran.
"""

from __future__ import annotations

import sys

import hitl


def main() -> int:
    client = hitl.Client(agent="billing-agent")

    @hitl.require_approval(action="refund", editable=["amount"], risk={"amount": 250, "currency": "USD"},
                           summary="Refund ${amount} to {customer} for order {order}", client=client)
    def refund(order: str, customer: str, amount: int) -> str:
        return f"refunded {amount} on {order}"  # your real side effect goes here

    try:
        print(refund("A-17", "Ana", 250))
        print("note:", client.ask_human("Anything to tell Ana about her refund?"))
    except hitl.NotApproved as e:  # Rejected, Expired, Denied
        print(f"not run: {e}")
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
