"""What the ``webhooks`` commands do: list, retry, test (ping) and replay."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mirrorsync.config import Config
from mirrorsync.delivery import formats
from mirrorsync.delivery.outbox import Outbox, WebhookResult
from mirrorsync.delivery.sender import Answer, Sender, origin, shown_url
from mirrorsync.delivery.signing import load_credentials
from mirrorsync.errors import UsageError
from mirrorsync.redact import redact_url
from mirrorsync.store import Store, utcnow, webhooks


@dataclass(frozen=True, slots=True)
class Listing:
    """One webhook as configured and as the store knows it."""

    name: str
    url: str  # display form: credentials and secret-looking query values masked
    state: str  # enabled | disabled | not registered yet | not in config
    pending_events: int = 0
    pending_deliveries: int = 0
    dead_events: int = 0
    dead_deliveries: int = 0
    oldest_dead_at: str | None = None
    failures: int = 0
    next_attempt_at: str | None = None
    last_success_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    disabled_reason: str | None = None

    @property
    def current_error(self) -> str | None:
        """Why it is disabled, else the last error unless a delivery has succeeded since."""
        if self.disabled_reason:
            return self.disabled_reason
        if self.last_error_at and (
            not self.last_success_at or self.last_error_at > self.last_success_at
        ):
            return self.last_error
        return None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


async def _open(config: Config) -> Store:
    """For the commands that deliver (and so write): migrated, never created."""
    return await Store.open(config.database_path, create=False)


async def list_webhooks(config: Config) -> list[Listing]:
    """Configured webhooks in configuration order, then any the configuration dropped."""
    if config.database_path.exists():
        async with await Store.open_read_only(config.database_path) as store:
            known = {s.name: s for s in await webhooks.summaries(store)}
    else:
        known = {}
    listings = []
    for hook in config.webhooks:
        summary = known.pop(hook.name, None)
        if summary is None:
            listings.append(Listing(hook.name, shown_url(hook), "not registered yet"))
        else:
            listings.append(_listing(summary, shown_url(hook)))
    listings += [_listing(s, redact_url(s.url)) for s in known.values()]  # stored masked
    return listings


def _listing(s: webhooks.WebhookSummary, url: str) -> Listing:
    state = "not in config" if not s.configured else "enabled" if s.enabled else "disabled"
    return Listing(
        s.name,
        url,
        state,
        s.pending_events,
        s.pending_deliveries,
        s.dead_events,
        s.dead_deliveries,
        s.oldest_dead_at,
        s.failures,
        s.next_attempt_at,
        s.last_success_at,
        s.last_error,
        s.last_error_at,
        s.disabled_reason,
    )


async def retry(
    config: Config, name: str | Sequence[str] | None, *, dead: bool
) -> list[WebhookResult]:
    """Deliver everything pending now, whatever the schedule says.

    Naming webhooks (one, or several) also enables them again if a 410 disabled them.
    """
    named = [name] if isinstance(name, str) else list(name or ())
    names = named or [h.name for h in config.webhooks]
    async with await _open(config) as store:
        outbox = await Outbox.open(config, store, names)
        return await outbox.deliver(force=True, dead=dead, enable=bool(named))


async def replay(
    config: Config, name: str, since: int
) -> tuple[webhooks.Replayed, list[WebhookResult]]:
    """Enqueue every matching event above ``since`` again, and deliver now."""
    if since < 0:
        raise UsageError(f"--since must be an event id (0 or more), not {since}")
    async with await _open(config) as store:
        outbox = await Outbox.open(config, store, [name])
        row = await webhooks.get(store, name)
        assert row is not None
        if not row.enabled:
            raise UsageError(
                f"webhook {name} is disabled ({row.disabled_reason}); "
                f"'mirrorsync webhooks retry --name {name}' enables it again"
            )
        replayed = await webhooks.replay(store, row.id, since)
        return replayed, await outbox.deliver(force=True)


@dataclass(frozen=True, slots=True)
class Ping:
    name: str
    origin: str
    message_id: str
    answer: Answer


async def ping(config: Config, name: str) -> Ping:
    """One signed ``mirrorsync.ping`` request (a test message in a chat format), not
    retried, not recorded."""
    hook = config.webhook(name)
    credentials = load_credentials(config, hook)
    message_id = f"msg_{secrets.token_hex(16)}"
    request = formats.render_ping(hook, message_id, utcnow())
    async with Sender(config.http.retries, config.http.proxy) as sender:
        answer = await sender.post(hook, credentials, message_id, request, retry=False)
    return Ping(hook.name, origin(hook.url), message_id, answer)
