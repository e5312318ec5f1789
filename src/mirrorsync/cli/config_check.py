"""``mirrorsync config check``: is this configuration ready to run, before a timer runs it?

Parses and validates the file (a bad one is the usual one-line error, exit 2),
then checks, without writing anything: the database path and its directory,
the metrics file's directory, every webhook secret (read and decoded), and each
source's address with one request (a mirror: its v3 layout, else its v2 index).
One line per check; exit 0 if all pass, 2 if a local setting is wrong, 1 if
only a server could not be reached.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from mirrorsync.cli.render import human_size, print_json
from mirrorsync.config import CatalogSource, Config, MirrorSource, RetryConfig, load_config
from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, MirrorsyncError, NotFoundError
from mirrorsync.redact import Url, redact_url
from mirrorsync.store.location import PostgresUrl


@dataclass(frozen=True, slots=True)
class Check:
    what: str
    ok: bool
    detail: str
    local: bool  # a setting on this machine (exit 2), not a server (exit 1)


async def config_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    checks = [_database(config), *_metrics(config), *_secrets(config)]
    checks += await _sources(config)
    if args.json:
        print_json(
            {
                "config": config.path,
                "ok": all(c.ok for c in checks),
                "checks": [{"what": c.what, "ok": c.ok, "detail": c.detail} for c in checks],
            }
        )
    else:
        for c in checks:
            print(f"{'ok    ' if c.ok else 'FAILED'}  {c.what}: {c.detail}")
    if any(not c.ok and c.local for c in checks):
        return EXIT_USAGE
    return EXIT_PARTIAL if any(not c.ok for c in checks) else EXIT_OK


def _writable_dir(path: Path) -> str | None:
    """Why files cannot be made in ``path`` (or in the directories it would be made in)."""
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def _database(config: Config) -> Check:
    path = config.database_path.absolute()
    if isinstance(path, PostgresUrl):  # reached by the first command that opens it
        return Check("database", True, f"{path} (PostgreSQL)", True)
    if path.exists():
        if not path.is_file():
            return Check("database", False, f"{path} is not a file", True)
        if not os.access(path, os.R_OK | os.W_OK):
            return Check("database", False, f"{path} is not readable and writable", True)
        return Check("database", True, f"{path} ({human_size(path.stat().st_size)})", True)
    problem = _writable_dir(path.parent)
    if problem:
        return Check("database", False, f"{path} cannot be created: {problem}", True)
    return Check("database", True, f"{path} (created by the first 'mirrorsync once')", True)


def _metrics(config: Config) -> list[Check]:
    target = config.metrics.textfile_path
    if target is None:
        return []
    problem = _writable_dir(target.parent)
    return [Check("metrics.textfile", problem is None, problem or str(target), True)]


def _secrets(config: Config) -> list[Check]:
    if not config.webhooks:
        return []
    from mirrorsync.delivery.signing import load_secret

    checks = []
    for hook in config.webhooks:
        what = f"webhook {hook.name} secret"
        try:
            load_secret(config, hook)
        except MirrorsyncError as exc:
            checks.append(Check(what, False, str(exc), True))
        else:
            checks.append(Check(what, True, "read and decoded (not shown)", True))
    return checks


async def _sources(config: Config) -> list[Check]:
    from mirrorsync.fetch import HttpClient

    # One attempt each: a check says what is wrong now, it does not wait it out.
    http = msgspec.structs.replace(config.http, retries=RetryConfig(attempts=1))
    checks = []
    for source in config.sources:
        what = f"source {source.name}"
        async with HttpClient(http, verify=not source.insecure) as client:
            if isinstance(source, CatalogSource):
                urls = [source.url]
            elif isinstance(source, MirrorSource):
                urls = []
            else:
                urls = list(source.urls)
            try:
                if isinstance(source, MirrorSource):
                    detail = await _mirror_layout(client, source.url)
                else:
                    for url in urls:
                        await client.head(Url(url))
                    detail = f"{len(urls)} URL{'s' if len(urls) != 1 else ''} answered"
                    if len(urls) == 1:
                        detail = f"{redact_url(urls[0])} answered"
            except MirrorsyncError as exc:
                checks.append(Check(what, False, str(exc), False))
            else:
                checks.append(Check(what, True, detail, False))
    return checks


async def _mirror_layout(client: object, url: str) -> str:
    from mirrorsync.fetch import HttpClient

    assert isinstance(client, HttpClient)
    base = url.rstrip("/")
    v3, v2 = f"{base}/v3/layout.json", f"{base}/build_cache/index.json.hash"
    try:
        await client.head(Url(v3))
        return f"v3 build cache at {redact_url(base)}"
    except NotFoundError:
        pass
    try:
        await client.head(Url(v2))
        return f"v2 build cache at {redact_url(base)}"
    except NotFoundError:
        raise NotFoundError(
            base,
            f"neither a v3 nor a v2 build cache: {redact_url(v3)} and {redact_url(v2)} not found",
        ) from None
