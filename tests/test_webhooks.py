"""Webhooks against real receivers on loopback: signed, batched, durable, at-least-once."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import EVENT_FIELDS, REPO, catalog_config_text, run_cli, sync
from mirrorsync.config import Config, load_config, parse_config
from mirrorsync.delivery import manage, schedule
from mirrorsync.delivery.signing import load_secret, parse_secret, sign
from mirrorsync.errors import ConfigError
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store import Store, eventlog
from mirrorsync.store import webhooks as store_webhooks
from receiver import Receiver, new_secret

# -- helpers -------------------------------------------------------------------


def specs(prefix: str, n: int, name: str = "zlib") -> list[dict[str, object]]:
    return [spec_node(name, f"1.{i}", fake_hash(f"{name}:{prefix}{i}")) for i in range(n)]


def publish(docroot: Path, releases: dict[str, dict[str, list[dict[str, object]]]]) -> None:
    """Serve these releases and stacks (no per-spec manifests: fast to build)."""
    build_catalog_from_specs(docroot, releases, manifests=False)


def hook(name: str, url: str, secret_file: Path, **extra: object) -> str:
    lines = [f"  - name: {name}", f"    url: {url}", f"    secret_file: {secret_file}"]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines)


def write_config(
    tmp_path: Path,
    server: FixtureServer,
    hooks: Sequence[str],
    *,
    attempts: int = 3,
    name: str = "mirrorsync.yaml",
) -> Path:
    path = tmp_path / name
    # The mirrors have no spec manifests: no crawl, no missing events.
    extra = "    manifests: none\n" + ("webhooks:\n" + "\n".join(hooks) if hooks else "")
    http = (
        "http:\n  timeout: 5\n"
        f"  retries: {{attempts: {attempts}, backoff_initial: 0.01, backoff_max: 0.05}}\n"
    )
    path.write_text(catalog_config_text(tmp_path, server, extra=extra, http=http))
    return path


@pytest.fixture
def secret(tmp_path: Path) -> str:
    return new_secret()


@pytest.fixture
def secret_file(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / "hook.secret"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def receiver(secret: str) -> Iterator[Receiver]:
    with Receiver(secret) as running:
        yield running


def all_events(config: Config) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with await Store.open(config.database_path, create=False) as store:
            return [e.to_dict() async for e in eventlog.events(store)]

    return anyio.run(read)


def summary(config: Config, name: str) -> store_webhooks.WebhookSummary:
    async def read() -> list[store_webhooks.WebhookSummary]:
        async with await Store.open(config.database_path, create=False) as store:
            return await store_webhooks.summaries(store)

    return next(s for s in anyio.run(read) if s.name == name)


def retry(config: Config, name: str | None = None, *, dead: bool = False) -> Any:
    return anyio.run(lambda: manage.retry(config, name, dead=dead))


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = run_cli("-c", str(config), *args, cwd=config.parent)
    assert "Traceback" not in done.stderr, done.stderr
    return done


# -- the "done when" of the issue ------------------------------------------------


@pytest.mark.usefixtures("backend")
def test_1200_events_arrive_in_signed_batches_and_a_wrong_secret_rejects_them(
    tmp_path: Path, docroot: Path, server: FixtureServer, receiver: Receiver, secret_file: Path
) -> None:
    publish(docroot, {"develop": {"root": specs("a", 1198)}})
    with Receiver(new_secret()) as stranger:  # checks with a secret mirrorsync does not have
        path = write_config(
            tmp_path,
            server,
            [
                hook("good", receiver.url, secret_file, max_batch=500),
                hook("wrong", stranger.url, secret_file, max_batch=500),
            ],
        )
        config = load_config(str(path))
        report = sync(config)

    events = all_events(config)
    assert report.events == len(events) == 1200  # release.added, stack.added, 1198 spec.added
    batches = receiver.acknowledged
    assert [len(b.events) for b in batches] == [500, 500, 200]
    assert len(receiver.received) == 3 and all(r.valid for r in receiver.received)
    assert len({b.webhook_id for b in batches}) == 3
    assert all(b.webhook_id.startswith("msg_") for b in batches)
    assert all(b.content_type == "application/json" for b in batches)
    assert all(abs(int(b.timestamp) - time.time()) < 300 for b in batches)
    # Every event, once, in id order, with exactly the fields of `events --json`.
    assert [e for b in batches for e in b.events] == events
    for b in batches:
        assert b.payload["type"] == "mirrorsync.events"
        assert b.payload["timestamp"].endswith("Z") and set(b.payload) == {
            "type",
            "timestamp",
            "data",
        }
        assert all(set(e) == EVENT_FIELDS for e in b.events)

    # The same deliveries, checked with the wrong secret, are all refused.
    assert stranger.received and not any(r.valid for r in stranger.received)
    assert stranger.acknowledged == []
    wrong = [line for line in report.failures if line.startswith("webhook wrong:")]
    assert len(wrong) == 1 and "HTTP 401" in wrong[0] and "1200 events pending" in wrong[0]
    assert report.exit_code == 1
    assert summary(config, "good").pending_events == 0
    assert summary(config, "wrong").pending_events == 1200


@pytest.mark.usefixtures("backend")
def test_receiver_down_then_retry_delivers_all_600_with_stable_webhook_ids(
    tmp_path: Path, docroot: Path, server: FixtureServer, receiver: Receiver, secret_file: Path
) -> None:
    publish(docroot, {"develop": {"root": specs("a", 598)}})
    path = write_config(tmp_path, server, [hook("chat", receiver.url, secret_file, max_batch=500)])
    config = load_config(str(path))
    receiver.status = 503

    report = sync(config)
    assert report.events == 600
    assert receiver.acknowledged == []
    failed = receiver.received
    assert len(failed) == 3  # http.retries.attempts, all for the first batch
    assert len({r.webhook_id for r in failed}) == 1 and all(r.valid for r in failed)
    assert len({r.body for r in failed}) == 1  # the same bytes on every attempt
    (line,) = report.failures
    where = receiver.url.removesuffix("/hooks/mirrorsync")  # the path is never shown
    assert line.startswith(
        f"webhook chat: {where}: HTTP 503 Service Unavailable after 3 attempts; "
        "600 events pending, next attempt after "
    )
    state = summary(config, "chat")
    assert state.pending_events == 600 and state.dead_events == 0 and state.failures == 1

    # Recovered, but the next attempt is scheduled a minute later: a run in
    # between syncs and does not knock.
    receiver.status = 200
    assert sync(config).webhooks[0].pending_events == 600
    assert len(receiver.received) == 3

    done = cli(path, "webhooks", "retry", "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["delivered_events"] == 600 and result["pending_events"] == 0
    batches = receiver.acknowledged
    assert [len(b.events) for b in batches] == [500, 100]
    assert batches[0].webhook_id == failed[0].webhook_id  # a redelivery keeps its id
    assert batches[0].body == failed[0].body
    assert batches[1].webhook_id != batches[0].webhook_id
    assert receiver.acknowledged_ids() == [e["id"] for e in all_events(config)]

    (listing,) = anyio.run(manage.list_webhooks, config)
    assert listing.pending_events == 0 and listing.last_success_at and listing.state == "enabled"


@pytest.mark.usefixtures("backend")
def test_killing_the_process_during_delivery_loses_nothing(
    tmp_path: Path, docroot: Path, server: FixtureServer, receiver: Receiver, secret_file: Path
) -> None:
    publish(docroot, {"develop": {"root": specs("a", 1198)}})
    path = write_config(tmp_path, server, [hook("chat", receiver.url, secret_file, max_batch=500)])
    receiver.stall_after(1)  # acknowledge the first batch, hold the second open
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync", "-c", str(path), "once"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert receiver.stalled.wait(60), "the second batch never arrived"
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()
        receiver.release.set()
    first, held = receiver.received
    assert first.acknowledged and len(first.events) == 500 and not held.acknowledged

    config = load_config(str(path))
    done = cli(path, "once")  # nothing changed upstream: only delivery is left to do
    assert done.returncode == 0, done.stderr
    ids = receiver.acknowledged_ids()
    assert sorted(set(ids)) == [e["id"] for e in all_events(config)]  # nothing missing
    assert len(ids) == 1200  # and, here, nothing twice either
    redelivered = receiver.acknowledged[1]
    assert redelivered.webhook_id == held.webhook_id and redelivered.body == held.body
    assert summary(config, "chat").pending_events == 0


@pytest.mark.usefixtures("backend")
def test_filters_and_event_types_send_only_matching_events(
    tmp_path: Path, docroot: Path, server: FixtureServer, secret: str, secret_file: Path
) -> None:
    def torch(prefix: str, n: int) -> list[dict[str, object]]:
        return specs(prefix, n, "py-torch")

    numpy, cmake = specs("n", 2, "py-numpy"), specs("c", 2, "cmake")
    before = {
        "develop": {
            "root": specs("r", 3) + torch("r", 2),
            "ml-cpu": torch("m", 3) + numpy + cmake,
            "ml-gpu": torch("g", 2),
        },
        "v1.0": {"ml-cpu": torch("v", 2) + specs("v", 1)},
    }
    after = {
        "develop": {
            "root": specs("r", 3) + torch("r", 2)[1:],
            "ml-cpu": torch("m", 3)[2:] + numpy + cmake[1:] + specs("s", 1, "py-scipy"),
        },
        "v1.0": {"ml-cpu": torch("v", 2)[1:] + specs("v", 1)},
    }
    wanted: dict[str, dict[str, Any]] = {
        "torch-leaves": {
            "events": ["spec.removed"],
            "filter": {"releases": ["develop"], "stacks": ["ml-*"], "packages": ["py-torch"]},
        },
        "py-added": {"events": ["spec.added"], "filter": {"packages": ["py-*"]}},
        "cpu-stacks": {
            "events": ["stack.added", "stack.removed"],
            "filter": {"stacks": ["ml-[!g]*"]},
        },
        "releases": {"events": ["release.added"]},
        "all": {},
    }
    with contextlib.ExitStack() as stack:
        receivers = {name: stack.enter_context(Receiver(secret)) for name in wanted}
        down = stack.enter_context(Receiver(secret, status=503))
        hooks = [hook(name, receivers[name].url, secret_file, **wanted[name]) for name in wanted]
        hooks.append(hook("torch-down", down.url, secret_file, **wanted["torch-leaves"]))
        path = write_config(tmp_path, server, hooks, attempts=1)
        config = load_config(str(path))
        publish(docroot, before)
        assert sync(config).events > 0
        publish(docroot, after)
        assert sync(config).events > 0

    def matches(event: dict[str, Any], spec: dict[str, Any]) -> bool:
        if "events" in spec and event["type"] not in spec["events"]:
            return False
        for key, field in (("releases", "release"), ("stacks", "stack"), ("packages", "name")):
            globs = spec.get("filter", {}).get(key)
            if globs is not None and (
                event[field] is None or not any(fnmatch.fnmatchcase(event[field], g) for g in globs)
            ):
                return False
        return True

    events = all_events(config)
    expected = {name: [e for e in events if matches(e, spec)] for name, spec in wanted.items()}
    assert len(expected["torch-leaves"]) == 2 + 2  # ml-cpu lost 2 py-torch, ml-gpu's 2 went
    assert len(expected["py-added"]) == 2 + 3 + 2 + 2 + 2 + 1
    assert len(expected["cpu-stacks"]) == 2  # develop/ml-cpu and v1.0/ml-cpu, not ml-gpu
    assert len(expected["releases"]) == 2
    assert expected["all"] == events
    for name, receiver in receivers.items():
        assert [e for r in receiver.acknowledged for e in r.events] == expected[name], name
        assert summary(config, name).pending_events == 0
    # The endpoint that is down holds exactly the matching events, no more.
    assert summary(config, "torch-down").pending_events == len(expected["torch-leaves"])
    assert not down.acknowledged


@pytest.mark.usefixtures("backend")
def test_410_gone_disables_the_webhook_until_it_is_retried_by_name(
    tmp_path: Path, docroot: Path, server: FixtureServer, receiver: Receiver, secret_file: Path
) -> None:
    publish(docroot, {"develop": {"root": specs("a", 3)}})
    path = write_config(tmp_path, server, [hook("old", receiver.url, secret_file)])
    config = load_config(str(path))
    receiver.status = 410
    report = sync(config)
    assert len(receiver.received) == 1  # 410 is final: not retried
    (line,) = report.failures
    assert "answered 410 Gone, so the webhook is disabled" in line
    assert "webhooks retry --name old" in line and "--since 5" in line
    state = summary(config, "old")
    assert not state.enabled and state.pending_events == 5

    # Disabled: new events are not queued for it and nothing is sent.
    publish(docroot, {"develop": {"root": specs("a", 3) + specs("b", 2)}})
    later = sync(config)
    assert later.events == 2 and len(receiver.received) == 1
    assert summary(config, "old").pending_events == 5
    assert later.webhooks[0].disabled and later.exit_code == 0

    receiver.status = 200
    (result,) = retry(config)  # without --name a disabled webhook stays disabled
    assert result.disabled and len(receiver.received) == 1
    (result,) = retry(config, "old")
    assert result.delivered_events == 5 and not result.disabled
    assert summary(config, "old").enabled
    replayed, _ = anyio.run(lambda: manage.replay(config, "old", 5))
    assert replayed.enqueued == 2
    assert receiver.acknowledged_ids() == [e["id"] for e in all_events(config)]


def test_two_endpoints_on_one_host_are_named_and_a_410_is_said_once_per_run(
    tmp_path: Path, docroot: Path, server: FixtureServer, receiver: Receiver, secret_file: Path
) -> None:
    from test_terminal import ANSI_RE, run_on_pty

    publish(docroot, {"develop": {"root": specs("a", 3)}})
    hooks = [hook(n, f"{receiver.url}/{n}", secret_file) for n in ("alpha", "beta")]
    where = receiver.url.removesuffix("/hooks/mirrorsync")  # a path may hold a token
    path = write_config(tmp_path, server, hooks)
    receiver.status = 410
    gone = "answered 410 Gone, so the webhook is disabled"
    first = cli(path, "once")  # off a terminal
    assert first.returncode == 1
    for name in ("alpha", "beta"):
        said = [line for line in first.stderr.splitlines() if f"webhook {name}: " in line]
        assert said == [
            f"mirrorsync: failed: webhook {name}: {where} {gone} and no events "
            f"are queued for it after event 5; fix its url, or run 'mirrorsync webhooks retry "
            f"--name {name}' to enable it again and 'mirrorsync webhooks replay --name {name} "
            "--since 5' for the events in between"
        ], first.stderr
    # Later runs (two delivery passes each) say once that it is disabled, at a terminal too.
    publish(docroot, {"develop": {"root": specs("a", 4)}})
    later = cli(path, "once")
    assert later.returncode == 0
    for name in ("alpha", "beta"):
        said = [line for line in later.stderr.splitlines() if gone in line]
        assert sum(f"webhook {name} is disabled: {where} " in s for s in said) == 1
    publish(docroot, {"develop": {"root": specs("a", 5)}})
    code, _, screen = run_on_pty(["-c", str(path), "once"], tmp_path)
    text = ANSI_RE.sub("", screen)
    assert code == 0 and text.count("answered 410 Gone") == 2, text  # once per webhook
    assert text.count("webhook alpha is disabled: ") == 1, text
    assert re.search(r"alpha\s.*disabled \(see below\)", text), text


def test_the_webhook_phase_counts_events_delivered_of_those_due(
    tmp_path: Path, docroot: Path, server: FixtureServer, secret: str, secret_file: Path
) -> None:
    """Progress of a run's deliveries: done/total in events; an endpoint that fails
    takes its events out of the total, so the phase still completes."""
    from mirrorsync.cli.progress_log import describe
    from mirrorsync.sync import RunProgress

    publish(docroot, {"develop": {"root": specs("a", 3)}})
    with Receiver(secret) as up, Receiver(secret, status=500) as down:
        hooks = [hook("up", up.url, secret_file), hook("down", down.url, secret_file)]
        config = load_config(str(write_config(tmp_path, server, hooks, attempts=1)))
        progress = RunProgress()
        report = sync(config, progress=progress)
    assert sum(r.delivered_events for r in report.webhooks) == report.events == 5
    assert (progress.webhooks.done, progress.webhooks.total) == (5, 5)
    assert progress.webhooks.complete
    assert re.search(r"webhooks 5/5 \([\d.]+/s, done\)", describe(progress)), describe(progress)


@pytest.mark.usefixtures("backend")
def test_failing_deliveries_older_than_max_age_die_and_retry_dead_sends_them(
    tmp_path: Path, docroot: Path, server: FixtureServer, receiver: Receiver, secret_file: Path
) -> None:
    publish(docroot, {"develop": {"root": specs("a", 8)}})
    path = write_config(
        tmp_path, server, [hook("chat", receiver.url, secret_file, max_batch=4, max_age="2s")]
    )
    config = load_config(str(path))
    receiver.status = 500
    sync(config)  # 10 events, young: pending
    assert summary(config, "chat").pending_events == 10
    time.sleep(2.1)
    (result,) = retry(config)
    assert result.newly_dead == 10 and result.pending_events == 0 and result.dead_events == 10
    state = summary(config, "chat")
    assert state.dead_events == 10 and state.dead_deliveries == 3

    status = cli(path, "status")
    assert status.returncode == 0
    assert "webhook chat: 10 events in 3 deliveries are dead" in status.stderr
    assert "webhooks retry --name chat --dead" in status.stderr
    assert "chat" in status.stdout  # a webhooks table after the stacks
    assert secret_file.read_text().strip().removeprefix("whsec_") not in status.stdout

    receiver.status = 200
    (result,) = retry(config)  # dead ones are not sent without --dead
    assert result.delivered_events == 0 and not receiver.acknowledged
    (result,) = retry(config, dead=True)
    assert result.delivered_events == 10 and result.dead_events == 0
    batches = receiver.acknowledged
    assert [len(b.events) for b in batches] == [4, 4, 2]
    assert batches[0].webhook_id == receiver.received[0].webhook_id
    assert receiver.acknowledged_ids() == [e["id"] for e in all_events(config)]


@pytest.mark.usefixtures("backend")
def test_between_runs_a_failing_endpoint_waits_longer_each_time(
    tmp_path: Path, docroot: Path, server: FixtureServer, receiver: Receiver, secret_file: Path
) -> None:
    assert [schedule.delay_after(n) for n in range(1, 8)] == [
        60,
        300,
        1800,
        7200,
        21600,
        21600,
        21600,
    ]
    publish(docroot, {"develop": {"root": specs("a", 1)}})
    path = write_config(tmp_path, server, [hook("chat", receiver.url, secret_file)], attempts=1)
    config = load_config(str(path))
    receiver.status = 500
    sync(config)
    waits = []
    for _ in range(3):
        state = summary(config, "chat")
        assert state.next_attempt_at and state.last_error_at
        waits.append(
            (
                schedule.parse(state.next_attempt_at) - schedule.parse(state.last_error_at)
            ).total_seconds()
        )
        retry(config)
    assert waits == [60, 300, 1800]
    assert summary(config, "chat").failures == 4
    assert len(receiver.received) == 4  # one request per attempt (attempts: 1)


def test_ping_replay_and_secrets_stay_out_of_output_and_database(
    tmp_path: Path, docroot: Path, server: FixtureServer, receiver: Receiver, secret: str
) -> None:
    publish(docroot, {"develop": {"root": specs("a", 4), "ml-cpu": specs("m", 2, "py-torch")}})
    path = write_config(tmp_path, server, [])
    text = path.read_text().replace(
        "http:\n",
        "webhooks:\n"
        f"  - name: chat\n    url: {receiver.url}\n    secret_env: HOOK_SECRET\n"
        "    filter: {packages: [py-torch]}\n"
        "http:\n",
    )
    path.write_text(text)
    env = {"HOOK_SECRET": secret}

    with pytest.raises(ConfigError) as caught:  # checked before anything is synced
        sync(load_config(str(path)))
    assert str(caught.value) == (
        f"{path}: webhooks[0].secret_env: environment variable HOOK_SECRET is not set"
    )
    assert not (tmp_path / "state.db").exists() or not all_events(load_config(str(path)))

    outputs = []
    for args in (
        ("-vv", "once", "--json"),
        ("webhooks", "test", "--name", "chat"),
        ("webhooks", "replay", "--name", "chat", "--since", "0", "--json"),
        ("webhooks", "list"),
    ):
        done = run_cli("-c", str(path), *args, cwd=tmp_path, env=env)
        assert done.returncode == 0, (args, done.stderr)
        outputs.append(done)
    once, ping, replay, listing = outputs
    assert "chat" in listing.stdout and "enabled" in listing.stdout
    assert json.loads(once.stdout)["webhooks"] == [
        {
            "name": "chat",
            "delivered_events": 2,
            "delivered_batches": 1,
            "requests": 1,
            "pending_events": 0,
            "dead_events": 0,
            "newly_dead": 0,
            "error": None,
            "disabled": None,
            "next_attempt_at": None,
            "elsewhere": None,
        }
    ]
    assert "webhook chat: delivered events" in once.stderr  # -vv logs each delivery
    pings = [r for r in receiver.received if r.payload["type"] == "mirrorsync.ping"]
    assert len(pings) == 1 and pings[0].acknowledged
    assert pings[0].payload["data"] == {"webhook": "chat"}
    assert f"acknowledged ping {pings[0].webhook_id} with HTTP 200" in ping.stdout

    batches = [r for r in receiver.acknowledged if r.payload["type"] == "mirrorsync.events"]
    first, again = batches  # the sync's, then the replay's
    assert [e["name"] for e in first.events] == ["py-torch", "py-torch"]
    assert again.events == first.events and again.webhook_id != first.webhook_id
    replay_report = json.loads(replay.stdout)
    assert replay_report["name"] == "chat" and replay_report["enqueued_events"] == 2
    (result,) = replay_report["webhooks"]
    assert result["delivered_events"] == 2

    key_b64 = secret.removeprefix("whsec_")
    for done in outputs:
        assert key_b64 not in done.stdout + done.stderr
    for file in tmp_path.glob("state.db*"):
        assert key_b64.encode() not in file.read_bytes()
        assert parse_secret(secret) not in file.read_bytes()
    with sqlite3.connect(tmp_path / "state.db") as db:
        dump = "\n".join(db.iterdump())
    assert key_b64 not in dump and "chat" in dump


@pytest.mark.usefixtures("backend")
def test_a_webhook_added_later_gets_events_from_then_on(
    tmp_path: Path, docroot: Path, server: FixtureServer, receiver: Receiver, secret_file: Path
) -> None:
    publish(docroot, {"develop": {"root": specs("a", 3)}})
    none = write_config(tmp_path, server, [], name="no-hooks.yaml")
    assert sync(load_config(str(none))).events == 5
    path = write_config(tmp_path, server, [hook("late", receiver.url, secret_file)])
    config = load_config(str(path))
    publish(docroot, {"develop": {"root": specs("a", 2)}})
    assert sync(config).events == 1
    assert receiver.acknowledged_ids() == [6]
    # Dropped from the configuration, it receives nothing new.
    publish(docroot, {"develop": {"root": specs("a", 1)}})
    assert sync(load_config(str(none))).events == 1
    assert len(receiver.received) == 1
    assert summary(config, "late").configured is False
    # A dry run delivers nothing, even to a configured webhook.
    publish(docroot, {"develop": {"root": []}})
    dry = sync(config, dry_run=True)
    assert dry.events == 1 and dry.webhooks == [] and len(receiver.received) == 1
    # Replay reaches back before the webhook existed.
    replayed, (result,) = anyio.run(lambda: manage.replay(config, "late", 0))
    assert replayed.enqueued == 7 and result.delivered_events == 7
    assert receiver.acknowledged_ids() == [6, 1, 2, 3, 4, 5, 6, 7]


# -- configuration and signing ---------------------------------------------------


def parse_hooks(tmp_path: Path, hooks: str, *, mode: int = 0o600) -> Config:
    path = tmp_path / "hooks.yaml"
    path.write_text(f"sources: [{{name: a, kind: catalog}}]\nwebhooks:\n{hooks}")
    path.chmod(mode)
    return parse_config(path.read_text(), str(path))


def config_error(tmp_path: Path, hooks: str, *, mode: int = 0o600) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_hooks(tmp_path, hooks, mode=mode)
    return str(caught.value)


def test_webhook_configuration_is_checked_naming_file_and_key(tmp_path: Path) -> None:
    where = tmp_path / "hooks.yaml"
    base = "  - name: h\n    url: https://example.org/h\n"
    assert config_error(tmp_path, base) == (
        f"{where}: webhooks[0]: give exactly one of secret_env, secret_file or secret "
        "(or an ed25519_key_file or ed25519_key_env for v1a signatures) (got none)"
    )
    assert "(got secret_env, secret_file)" in config_error(
        tmp_path, base + "    secret_env: A\n    secret_file: /b\n"
    )
    assert config_error(tmp_path, base + "    secret_env: A\n    events: [spec.changed]\n") == (
        f"{where}: webhooks[0].events[0]: invalid enum value 'spec.changed' (expected one of: "
        "spec.added, spec.removed, stack.added, stack.removed, release.added, release.removed, "
        "spec.manifest_missing, mirror.updated)"
    )
    assert config_error(tmp_path, base + "    secret_env: A\n    filter: {package: [x]}\n") == (
        f"{where}: webhooks[0].filter.package: unknown key; did you mean 'packages'?"
    )
    assert "webhooks[0].max_age: expected seconds or a duration" in config_error(
        tmp_path, base + "    secret_env: A\n    max_age: soon\n"
    )
    assert "webhooks[0].filter.stacks[0]: write [!...]" in config_error(
        tmp_path, base + "    secret_env: A\n    filter: {stacks: ['[^a]*']}\n"
    )
    assert "webhooks[1].name: duplicate webhook name 'h'" in config_error(
        tmp_path, base + "    secret_env: A\n" + base + "    secret_env: B\n"
    )
    assert "webhooks[0].url: expected an http:// or https:// URL" in config_error(
        tmp_path, "  - name: h\n    url: ftp://x\n    secret_env: A\n"
    )
    parsed = parse_hooks(tmp_path, base + "    secret_env: A\n    max_age: 12h\n")
    assert parsed.webhooks[0].max_age_seconds == 12 * 3600
    assert parsed.webhooks[0].max_batch == 500 and parsed.webhooks[0].timeout == 10


def test_inline_secret_only_from_an_owner_only_file_and_never_shown(tmp_path: Path) -> None:
    secret = new_secret()
    inline = f"  - name: h\n    url: https://example.org/h\n    secret: {secret}\n"
    error = config_error(tmp_path, inline, mode=0o644)
    assert error.startswith(f"{tmp_path / 'hooks.yaml'}: webhooks[0].secret: an inline secret")
    assert "mode 0644" in error and secret not in error
    config = parse_hooks(tmp_path, inline, mode=0o600)
    assert load_secret(config, config.webhooks[0]) == parse_secret(secret)
    assert secret not in repr(config) and secret not in str(config.webhooks)
    bad = "  - name: h\n    url: https://example.org/h\n    secret: whsec_not-base64!\n"
    config = parse_hooks(tmp_path, bad)
    with pytest.raises(ConfigError) as caught:
        load_secret(config, config.webhooks[0])
    assert "webhooks[0].secret: expected whsec_" in str(caught.value)
    assert "not-base64" not in str(caught.value)


def test_signature_follows_standard_webhooks(tmp_path: Path) -> None:
    # The example of the Standard Webhooks specification's reference libraries.
    key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    for bad in ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_???", "whsec_" + "QUJD"):
        with pytest.raises(ValueError):
            parse_secret(bad)


def test_secret_file_expands_the_systemd_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = new_secret()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "webhook-secret").write_text(secret + "\n")
    config = parse_config(
        "sources: [{name: s, kind: mirror, url: 'http://127.0.0.1:9/m'}]\n"
        "webhooks: [{name: h, url: 'http://127.0.0.1:9/hook',"
        " secret_file: '${CREDENTIALS_DIRECTORY}/webhook-secret'}]\n",
        str(tmp_path / "c.yaml"),
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert load_secret(config, config.webhooks[0]) == parse_secret(secret)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.secret_file: cannot read"):
        load_secret(config, config.webhooks[0])


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_webhook_timeout(
    tmp_path: Path, secret: str
) -> None:
    """``timeout`` bounds the whole request: an answer sent one byte every
    0.2 s never trips a read timeout, yet the ping ends after ``timeout``."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            try:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                    conn.sendall(bytes([byte]))
                    time.sleep(0.2)
            except OSError:  # mirrorsync hung up: what it should do
                pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    path = tmp_path / "c.yaml"
    path.write_text(
        f"database: {tmp_path / 'w.db'}\n"
        "sources: [{name: site, kind: mirror, url: 'http://127.0.0.1:9/m'}]\n"
        "webhooks:\n"
        f"  - {{name: chat, url: 'http://127.0.0.1:{port}/hook', secret_env: HOOK_SECRET,"
        " timeout: 1}\n"
    )
    started = time.monotonic()
    done = run_cli(
        "-c",
        str(path),
        "webhooks",
        "test",
        "--name",
        "chat",
        cwd=tmp_path,
        env={"HOOK_SECRET": secret},
    )
    seconds = time.monotonic() - started
    listener.close()
    assert done.returncode == 1, done.stderr
    assert f"mirrorsync: failed: webhook chat: http://127.0.0.1:{port}: timed out" in done.stderr
    assert seconds < 6, seconds  # the answer alone would take 7.6 s
