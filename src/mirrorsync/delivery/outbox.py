"""Drain the outbox: for each webhook, send its batches in event order until one fails.

Per endpoint, deliveries go one at a time, oldest first, so a receiver sees
events in id order. A batch is fixed in the store (events and message id) before
it is first sent, and acknowledged in the store only after a 2xx, so a crash at
any point loses nothing: the next run sends the unacknowledged batch again,
under the same ``webhook-id`` (at-least-once). When a batch fails after the
in-run retries, the endpoint waits on the schedule (1 min, 5 min, 30 min, 2 h,
then every 6 h) and nothing newer is sent to it before then.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import anyio

from mirrorsync.config import Config, WebhookConfig
from mirrorsync.delivery import formats, schedule
from mirrorsync.delivery.sender import Sender, origin, shown_url
from mirrorsync.delivery.signing import Credentials, load_credentials
from mirrorsync.phase import Phase
from mirrorsync.redact import Url
from mirrorsync.store import Store, claims, eventlog, utcnow, webhooks
from mirrorsync.units import Verbatim, human_duration, human_time

log = logging.getLogger("mirrorsync.delivery")

#: Times one pass takes an endpoint's claim again for events that came in meanwhile.
_CLAIM_ROUNDS = 10


@dataclass
class WebhookResult:
    """What delivery did for one webhook in one pass (or a whole run, merged)."""

    name: str
    delivered_events: int = 0
    delivered_batches: int = 0
    requests: int = 0
    pending_events: int = 0  # after this pass
    dead_events: int = 0
    newly_dead: int = 0
    error: str | None = None  # an attempt in this pass failed
    disabled: str | None = None  # why the webhook is disabled
    next_attempt_at: str | None = None  # pending events wait until then
    elsewhere: str | None = None  # another instance was delivering to it (who), so this one left it

    @property
    def failure(self) -> str | None:
        """One line for stderr when an attempt failed in this pass, else None."""
        return self.failure_line()

    def failure_line(self, shown: Callable[[str], str] = str) -> str | None:
        """:attr:`failure`, the webhook's name as ``shown`` gives it (``units.verbatim``)."""
        if self.error is None:
            return None
        if self.disabled:
            return f"webhook {shown(self.name)}: {self.error}"
        line = f"webhook {shown(self.name)}: {self.error}; {self.pending_events} events pending"
        if self.next_attempt_at:
            line += f", next attempt after {human_time(self.next_attempt_at)}"
        if self.dead_events:
            line += f"; {self.dead_events} events dead"
        return line

    def merge(self, later: WebhookResult) -> WebhookResult:
        """This pass followed by ``later``: counts add up, state is the later one's."""
        return WebhookResult(
            self.name,
            self.delivered_events + later.delivered_events,
            self.delivered_batches + later.delivered_batches,
            self.requests + later.requests,
            later.pending_events,
            later.dead_events,
            self.newly_dead + later.newly_dead,
            later.error or self.error,
            later.disabled,
            later.next_attempt_at,
            later.elsewhere,
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def merge_results(
    earlier: Sequence[WebhookResult], later: Sequence[WebhookResult]
) -> list[WebhookResult]:
    by_name = {r.name: r for r in earlier}
    merged = [by_name.pop(r.name).merge(r) if r.name in by_name else r for r in later]
    return list(by_name.values()) + merged


def registration(hook: WebhookConfig) -> webhooks.Registration:
    return webhooks.Registration(
        name=hook.name,
        url=Url(shown_url(hook)),  # a chat format's path is its token: not stored
        types=hook.events,
        releases=hook.filter.releases,
        stacks=hook.filter.stacks,
        packages=hook.filter.packages,
    )


class Outbox:
    """The configured webhooks of one store, registered and ready to deliver."""

    def __init__(self, config: Config, store: Store, keys: dict[str, Credentials]) -> None:
        self.config = config
        self.store = store
        self._keys = keys
        self._told_disabled: set[str] = set()  # webhooks whose being disabled was said
        self._progress: Phase | None = None

    @classmethod
    async def open(cls, config: Config, store: Store, names: Sequence[str] | None = None) -> Outbox:
        """Read the secrets, keys and tokens of the webhooks to deliver (ConfigError if
        one is missing or malformed), then register every configured webhook, so the
        events written from now on are enqueued for it."""
        hooks = [config.webhook(n) for n in names] if names is not None else config.webhooks
        keys = {hook.name: load_credentials(config, hook) for hook in hooks}
        await webhooks.register(store, [registration(h) for h in config.webhooks], utcnow())
        return cls(config, store, keys)

    async def deliver(
        self,
        *,
        force: bool = False,
        dead: bool = False,
        enable: bool = False,
        progress: Phase | None = None,
    ) -> list[WebhookResult]:
        """Send what is due to every webhook opened (``force``: also what is waiting).

        ``dead`` sends dead deliveries again; ``enable`` re-enables a webhook that a
        410 disabled. ``progress`` counts the events to send and those delivered.
        """
        self._progress = progress
        hooks = [self.config.webhook(name) for name in self._keys]
        if not hooks:  # no client (and no TLS context) for a run without webhooks
            return []
        results: dict[str, WebhookResult] = {}
        async with Sender(self.config.http.retries, self.config.http.proxy) as sender:

            async def one(hook: WebhookConfig) -> None:
                results[hook.name] = await self._webhook(hook, sender, force, dead, enable)

            async with anyio.create_task_group() as tg:
                for hook in hooks:
                    tg.start_soon(one, hook)
        return [results[hook.name] for hook in hooks]

    async def _webhook(
        self, hook: WebhookConfig, sender: Sender, force: bool, dead: bool, enable: bool
    ) -> WebhookResult:
        """One endpoint, claimed: never two instances sending to it at once, so its
        batches go out one at a time, in event order, whoever sends them."""
        result = WebhookResult(hook.name)
        found = await webhooks.get(self.store, hook.name)
        assert found is not None, f"webhook {hook.name} was registered"
        for _ in range(_CLAIM_ROUNDS):
            async with claims.claim(self.store, claims.Kind.WEBHOOK, found.id) as holder:
                if holder is not None:
                    result.elsewhere = holder
                    log.info(
                        "webhook %s: another instance is delivering to it (%s); left to it",
                        Verbatim(hook.name),
                        holder,
                    )
                    break
                result.elsewhere = None
                await self._claimed(hook, sender, force, dead, enable, result)
            # Events another instance committed while this one held the claim found
            # it taken and were left to this one: the last to let go looks again.
            if not await webhooks.due(self.store, found.id, utcnow()):
                break
            force = dead = enable = False
        await self._count(hook.name, result)
        return result

    async def _claimed(
        self,
        hook: WebhookConfig,
        sender: Sender,
        force: bool,
        dead: bool,
        enable: bool,
        result: WebhookResult,
    ) -> None:
        row = await webhooks.get(self.store, hook.name)
        assert row is not None, f"webhook {hook.name} was registered"
        if enable and not row.enabled:
            await webhooks.enable(self.store, row.id)
            log.info("webhook %s enabled again", Verbatim(hook.name))
            row = await webhooks.get(self.store, hook.name)
            assert row is not None
        if dead:
            revived = await webhooks.revive_dead(self.store, row.id)
            if revived:
                log.info(
                    "webhook %s: sending %d dead deliveries again", Verbatim(hook.name), revived
                )
        now = utcnow()
        latest = schedule.latest_attempt(now)
        if (row.next_attempt_at or "") > latest and await webhooks.cap_next_attempt(
            self.store, row.id, latest
        ):
            log.warning(
                "webhook %s: its next attempt was set for %s, further ahead than the longest "
                "wait: the clock was ahead when it failed; trying again after %s instead",
                Verbatim(hook.name),
                human_time(row.next_attempt_at),
                human_time(latest),
            )
            row = dataclasses.replace(row, next_attempt_at=latest)
        if not row.enabled:
            result.disabled = row.disabled_reason
            if hook.name not in self._told_disabled:  # once per run, not once per pass
                self._told_disabled.add(hook.name)
                log.warning("webhook %s is disabled: %s", Verbatim(hook.name), row.disabled_reason)
        elif force or row.next_attempt_at is None or row.next_attempt_at <= now:
            await self._drain(hook, row.id, sender, result)
        await self._purge(hook, row.id)

    async def _purge(self, hook: WebhookConfig, webhook_id: int) -> None:
        """Keep the outbox bounded: delivered and dead batches go after their retention."""
        now = utcnow()
        purged = await webhooks.purge(
            self.store,
            webhook_id,
            delivered_before=schedule.before(now, hook.keep_delivered_seconds),
            dead_before=schedule.before(now, hook.keep_dead_seconds),
        )
        if purged.delivered:
            log.info(
                "webhook %s: dropped the records of %d delivered batches (keep_delivered: %s)",
                Verbatim(hook.name),
                purged.delivered,
                hook.keep_delivered,
            )
        if purged.dead_deliveries:
            log.warning(
                "webhook %s: %d dead events in %d batches expired (keep_dead: %s) and will not "
                "be sent; 'mirrorsync webhooks replay --name %s --since ID' sends events again",
                Verbatim(hook.name),
                purged.dead_events,
                purged.dead_deliveries,
                hook.keep_dead,
                Verbatim(hook.name),
            )

    async def _drain(
        self, hook: WebhookConfig, webhook_id: int, sender: Sender, result: WebhookResult
    ) -> None:
        key = self._keys[hook.name]
        where = origin(hook.url)
        progress, expected = self._progress, 0
        if progress is not None:
            expected = await self._pending_events(hook.name)
            progress.add_work(expected)
        try:
            await self._send_due(hook, webhook_id, sender, result, key, where)
        finally:
            if progress is not None:  # what was not delivered will not be, this pass
                progress.add_work(min(result.delivered_events, expected) - expected)

    async def _pending_events(self, name: str) -> int:
        for summary in await webhooks.summaries(self.store):
            if summary.name == name:
                return summary.pending_events
        return 0

    async def _send_due(
        self,
        hook: WebhookConfig,
        webhook_id: int,
        sender: Sender,
        result: WebhookResult,
        key: Credentials,
        where: str,
    ) -> None:
        while delivery := await webhooks.next_delivery(
            self.store, webhook_id, hook.max_batch, utcnow()
        ):
            events = await webhooks.delivery_events(self.store, delivery.id)
            request = formats.render(hook, delivery.message_id, delivery.created_at, events)
            answer = await sender.post(hook, key, delivery.message_id, request)
            result.requests += answer.requests
            at = utcnow()
            if answer.acknowledged:
                await webhooks.acknowledge(self.store, delivery, at)
                result.delivered_events += delivery.event_count
                result.delivered_batches += 1
                if self._progress is not None:
                    self._progress.advance(delivery.event_count)
                log.info(
                    "webhook %s: delivered events %d-%d (%d) as %s, HTTP %s in %s",
                    Verbatim(hook.name),
                    delivery.first_event_id,
                    delivery.last_event_id,
                    delivery.event_count,
                    delivery.message_id,
                    answer.status,
                    human_duration(answer.seconds),
                )
                continue
            if answer.gone:
                last = await eventlog.last_event_id(self.store)
                reason = (
                    f"{where} answered 410 Gone, so the webhook is disabled and no events are "
                    f"queued for it after event {last}; fix its url, or run 'mirrorsync webhooks "
                    f"retry --name {hook.name}' to enable it again and 'mirrorsync webhooks "
                    f"replay --name {hook.name} --since {last}' for the events in between"
                )
                await webhooks.disable(self.store, webhook_id, reason, at)
                result.error = result.disabled = reason
                # Not logged here: the command's closing ``failed:`` line says it, once.
                self._told_disabled.add(hook.name)
                return
            row = await webhooks.get(self.store, hook.name)
            failures = (row.failures if row else 0) + 1
            next_at = schedule.next_attempt(at, failures)
            problem = f"{where}: {answer.problem}"
            newly_dead = await webhooks.record_failure(
                self.store,
                delivery,
                problem,
                at,
                next_attempt_at=next_at,
                dead_before=schedule.dead_before(at, hook.max_age_seconds),
                max_batch=hook.max_batch,
            )
            result.error, result.next_attempt_at = problem, next_at
            result.newly_dead += newly_dead
            log.warning(
                "webhook %s: %s (%s, events %d-%d); next attempt after %s",
                Verbatim(hook.name),
                problem,
                delivery.message_id,
                delivery.first_event_id,
                delivery.last_event_id,
                human_time(next_at),
            )
            if newly_dead:
                log.error(
                    "webhook %s: %d events are now dead (older than max_age); "
                    "'mirrorsync webhooks retry --name %s --dead' sends them again",
                    Verbatim(hook.name),
                    newly_dead,
                    Verbatim(hook.name),
                )
            return

    async def _count(self, name: str, result: WebhookResult) -> None:
        for summary in await webhooks.summaries(self.store):
            if summary.name == name:
                result.pending_events = summary.pending_events
                result.dead_events = summary.dead_events
                if summary.pending_events and summary.enabled:
                    result.next_attempt_at = summary.next_attempt_at
