"""Request bodies: a batch of events, or a ping."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mirrorsync.store.eventlog import Event

EVENTS_TYPE = "mirrorsync.events"
PING_TYPE = "mirrorsync.ping"


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def events_body(created_at: str, events: Sequence[Event]) -> bytes:
    """The same bytes on every attempt: the timestamp is when the batch was formed."""
    return _encode(
        {
            "type": EVENTS_TYPE,
            "timestamp": created_at,
            "data": {"events": [event.to_dict() for event in events]},
        }
    )


def ping_body(at: str, webhook: str) -> bytes:
    return _encode({"type": PING_TYPE, "timestamp": at, "data": {"webhook": webhook}})
