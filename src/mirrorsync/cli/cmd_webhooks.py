"""``webhooks list|test|retry|replay``."""

from __future__ import annotations

import argparse

from mirrorsync.cli.common import refresh_metrics
from mirrorsync.cli.render import (
    ago,
    below_table,
    human_duration,
    human_time,
    plural,
    print_json,
    print_table,
    print_webhook_results,
    say,
)
from mirrorsync.config import load_config
from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL, UsageError
from mirrorsync.lock import hold
from mirrorsync.logs import print_line


async def webhooks(args: argparse.Namespace) -> int:
    from mirrorsync.delivery import manage  # only these commands need it

    config = load_config(args.config)
    action = args.webhooks_command
    if action == "list":
        listings = await manage.list_webhooks(config)
        if args.json:
            print_json([w.to_dict() for w in listings])
            return EXIT_OK
        print_table(
            [
                "name",
                "url",
                "state",
                "pending",
                "dead",
                "last success",
                "next attempt",
            ],
            [
                (
                    w.name,
                    w.url,
                    w.state,
                    w.pending_events,
                    w.dead_events,
                    ago(w.last_success_at),
                    human_time(w.next_attempt_at) if w.pending_events else "",
                )
                for w in listings
            ],
        )
        below_table(
            [
                f"webhook {w.name}: last error: {w.current_error}"
                for w in listings
                if w.current_error
            ]
        )
        return EXIT_OK
    if action == "test":
        ping = await manage.ping(config, args.name)
        answer = ping.answer
        if args.json:
            print_json(
                {
                    "name": ping.name,
                    "webhook_id": ping.message_id,
                    "status": answer.status,
                    "ok": answer.acknowledged,
                    "error": answer.problem,
                    "seconds": round(answer.seconds, 3),
                }
            )
        elif answer.acknowledged:
            say(
                f"webhook {ping.name}: {ping.origin} acknowledged ping {ping.message_id} "
                f"with HTTP {answer.status} in {human_duration(answer.seconds)}"
            )
        if not answer.acknowledged:
            print_line(f"mirrorsync: failed: webhook {ping.name}: {ping.origin}: {answer.problem}")
            return EXIT_PARTIAL
        return EXIT_OK
    # Delivering writes the outbox: never at the same time as a run (or another retry).
    if action == "retry":  # no database yet: nothing to deliver, no lock file made
        async with hold(config.database_path, wait=args.wait, create=False):
            results = await manage.retry(config, args.name, dead=args.dead)
            metrics_error = await refresh_metrics(config)
    elif action == "replay":
        async with hold(config.database_path, wait=args.wait, create=False):
            replayed, results = await manage.replay(config, args.name, args.since)
            metrics_error = await refresh_metrics(config)
        document = {
            "name": args.name,
            "enqueued_events": replayed.enqueued,
            "pending_events": replayed.waiting,
            "dead_events": replayed.dead,
        }
        if not args.json:
            say(
                f"webhook {args.name}: {plural(replayed.enqueued, 'event')} queued again"
                f" ({replayed.waiting} already pending, {replayed.dead} dead: --dead on retry)"
            )
    else:  # pragma: no cover - argparse allows only the actions above
        raise UsageError(f"unknown webhooks action {action!r}")
    if args.json and action == "replay":
        print_json({**document, "webhooks": [r.to_dict() for r in results]})
    elif args.json:
        print_json([r.to_dict() for r in results])
    else:
        print_webhook_results(results)
    failures = [r.failure for r in results if r.failure]
    failures += [metrics_error] if metrics_error else []
    for line in failures:
        print_line(f"mirrorsync: failed: {line}")
    return EXIT_PARTIAL if failures else EXIT_OK
