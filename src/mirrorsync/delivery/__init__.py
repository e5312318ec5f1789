"""Webhook delivery: signed, batched, durable, at-least-once POSTs of change events.

``signing`` makes Standard Webhooks signatures (``v1`` HMAC, ``v1a`` ed25519),
``schedule`` says when a failed delivery is tried again, ``payload`` builds the
standard request bodies, ``summary`` and ``formats`` the requests of the other
formats (chat services, ntfy, CloudEvents, email), ``sender`` sends with in-run
retries (``mail`` over SMTP), ``outbox`` drains the store's outbox endpoint by
endpoint, and ``manage`` backs the ``webhooks`` commands.
"""

from mirrorsync.delivery.outbox import Outbox, WebhookResult

__all__ = ["Outbox", "WebhookResult"]
