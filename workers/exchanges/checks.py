"""Checks every adapter's ``validate`` starts with (pure)."""

from __future__ import annotations

from collections.abc import Collection

from control.topics import Topic, validate_account
from workers.exchanges.base import AdapterError


def check_owner_and_account(topic: Topic, exchange_id: str, private_channels: Collection[str]) -> bool:
    """The checks every adapter's ``validate`` starts with: AdapterError unless ``topic`` is ``exchange_id``'s, and,
    for a private channel, unless its symbol slot holds a valid account name (``control.topics.ACCOUNT_RE``).
    Returns True when ``topic`` is private (nothing more to check), False for a public topic."""
    if topic.exchange != exchange_id:
        raise AdapterError(f"topic {topic} is not a {exchange_id} topic")
    if topic.channel not in private_channels:
        return False
    try:
        validate_account(topic.symbol)
    except ValueError as exc:
        raise AdapterError(str(exc)) from None
    return True
