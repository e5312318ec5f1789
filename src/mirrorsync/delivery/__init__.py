"""Webhook delivery: signed, batched, durable, at-least-once POSTs of change events.

``signing`` makes Standard Webhooks signatures, ``schedule`` says when a failed
delivery is tried again, ``payload`` builds request bodies, ``sender`` POSTs
with in-run retries, ``outbox`` drains the store's outbox endpoint by endpoint,
and ``manage`` backs the ``webhooks`` commands.
"""

from mirrorsync.delivery.outbox import Outbox, WebhookResult

__all__ = ["Outbox", "WebhookResult"]
