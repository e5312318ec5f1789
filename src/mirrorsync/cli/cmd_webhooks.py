"""``webhooks list|test|retry|replay``."""

from __future__ import annotations

import argparse

from mirrorsync.cli.common import is_glob, matching, refresh_metrics
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
    verbatim,
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
                    verbatim(w.name),
                    verbatim(w.url),
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
                f"webhook {verbatim(w.name)}: last error: {w.current_error}"
                for w in listings
                if w.current_error
            ]
        )
        return EXIT_OK
    configured = [h.name for h in config.webhooks]
    # --name: a name or a glob; one matching no configured webhook is a usage error (2).
    names = matching(args.name, configured, "webhook", config.path) if args.name else []
    several = bool(args.name) and is_glob(args.name)  # a glob answers with a list
    if action == "test":
        code = EXIT_OK
        documents: list[dict[str, object]] = []
        for name in names:
            ping = await manage.ping(config, name)
            answer = ping.answer
            documents.append(
                {
                    "name": ping.name,
                    "webhook_id": ping.message_id,
                    "status": answer.status,
                    "ok": answer.acknowledged,
                    "error": answer.problem,
                    "seconds": round(answer.seconds, 3),
                }
            )
            if answer.acknowledged and not args.json:
                say(
                    f"webhook {verbatim(ping.name)}: {verbatim(ping.origin)} acknowledged ping "
                    f"{verbatim(ping.message_id)} "
                    f"with HTTP {answer.status} in {human_duration(answer.seconds)}"
                )
            if not answer.acknowledged:
                print_line(
                    f"mirrorsync: failed: webhook {verbatim(ping.name)}: {verbatim(ping.origin)}: "
                    f"{answer.problem}"
                )
                code = EXIT_PARTIAL
        if args.json:
            print_json(documents if several else documents[0])
        return code
    # Delivering writes the outbox: never at the same time as a run (or another retry).
    replays: list[dict[str, object]] = []
    if action == "retry":  # no database yet: nothing to deliver, no lock file made
        async with hold(config.database_path, wait=args.wait, create=False):
            results = await manage.retry(config, names or None, dead=args.dead)
            metrics_error = await refresh_metrics(config)
    elif action == "replay":
        results = []
        async with hold(config.database_path, wait=args.wait, create=False):
            for name in names:
                replayed, delivered = await manage.replay(config, name, args.since)
                results += delivered
                replays.append(
                    {
                        "name": name,
                        "enqueued_events": replayed.enqueued,
                        "pending_events": replayed.waiting,
                        "dead_events": replayed.dead,
                        "webhooks": [r.to_dict() for r in delivered],
                    }
                )
                if not args.json:
                    say(
                        f"webhook {verbatim(name)}: {plural(replayed.enqueued, 'event')} queued again"
                        f" ({replayed.waiting} already pending, {replayed.dead} dead:"
                        " --dead on retry)"
                    )
            metrics_error = await refresh_metrics(config)
    else:  # pragma: no cover - argparse allows only the actions above
        raise UsageError(f"unknown webhooks action {action!r}")
    if args.json and action == "replay":
        print_json(replays if several else replays[0])
    elif args.json:
        print_json([r.to_dict() for r in results])
    else:
        print_webhook_results(results)
    failures = [line for r in results if (line := r.failure_line(verbatim))]
    failures += [metrics_error] if metrics_error else []
    for line in failures:
        print_line(f"mirrorsync: failed: {line}")
    return EXIT_PARTIAL if failures else EXIT_OK
