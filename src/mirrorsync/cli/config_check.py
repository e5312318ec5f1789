"""``mirrorsync config check``: is this configuration ready to run, before a timer runs it?

Parses and validates the file (a bad one is the usual one-line error, exit 2),
then does what the real commands will do, short of writing: opens the database
(PostgreSQL: connects and authenticates), create-tests the directories the
database, the metrics file and every copy would be made in (a file made and
removed at once), reads and decodes every webhook secret, and asks each source
what a sync would (a catalogue: fetched and parsed; a mirror: its v3 layout,
else its v2 index). One line per check; exit 0 if all pass, 2 if a local
setting is wrong, 1 if only a server could not be reached.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgspec

from mirrorsync.cli.render import human_size, plural, print_json
from mirrorsync.config import CatalogSource, Config, MirrorSource, RetryConfig, load_config
from mirrorsync.errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    DatabaseUnavailableError,
    MirrorsyncError,
    NoDatabaseError,
    NotFoundError,
    StoreError,
)
from mirrorsync.formats.catalog import parse_catalog
from mirrorsync.formats.oci import INDEX_TAG, is_oci_url
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
    checks = [await _database(config), *_metrics(config), *_copies(config), *_secrets(config)]
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
    """Why files cannot be made in ``path`` (or in the directories it would be made in).

    Tried, not guessed from permission bits (root passes every ``access`` test, and
    /proc refuses what they allow): a file is made in the nearest existing directory
    and removed at once."""
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(prefix=".mirrorsync-check-", dir=existing)
    except OSError as exc:
        return f"{existing}: cannot create a file there: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(probe)
    return None


async def _database(config: Config) -> Check:
    path = config.database_path.absolute()
    if isinstance(path, PostgresUrl):
        return await _postgres(path)
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


async def _postgres(url: PostgresUrl) -> Check:
    """Connect and authenticate as the commands will; read only, nothing written."""
    from mirrorsync.store import Store

    try:
        store = await Store.open_read_only(url)
    except NoDatabaseError:
        return Check("database", True, f"{url} (PostgreSQL, reached; empty until 'once')", True)
    except DatabaseUnavailableError as exc:  # the server: down, starting, full
        return Check("database", False, str(exc), False)
    except StoreError as exc:  # refused us: password, role, database name
        return Check("database", False, str(exc), True)
    async with store:
        return Check("database", True, f"{url} (PostgreSQL, reached)", True)


def _copies(config: Config) -> list[Check]:
    """Every copy's directory: there and writable, or creatable."""
    checks = []
    for copy in config.mirrors:
        if is_oci_url(copy.path):  # a registry repository: no directory to check
            where = redact_url(copy.path)
            checks.append(
                Check(f"mirror {copy.name}", True, f"{where} (OCI, pushed by 'mirror')", True)
            )
            continue
        target = Path(copy.path)
        problem = _writable_dir(target)
        detail = problem or (f"{target}" + ("" if target.exists() else " (created by 'mirror')"))
        checks.append(Check(f"mirror {copy.name}", problem is None, detail, True))
    return checks


def _metrics(config: Config) -> list[Check]:
    target = config.metrics.textfile_path
    if target is None:
        return []
    problem = _writable_dir(target.parent)
    return [Check("metrics.textfile", problem is None, problem or str(target), True)]


def _secrets(config: Config) -> list[Check]:
    if not config.webhooks:
        return []
    from mirrorsync.delivery.signing import load_credentials

    checks = []
    for hook in config.webhooks:
        what = f"webhook {hook.name} secret"
        try:
            credentials = load_credentials(config, hook)
        except MirrorsyncError as exc:
            checks.append(Check(what, False, str(exc), True))
        else:
            given = credentials.hmac, credentials.ed25519, credentials.token
            detail = (
                "read and decoded (not shown)"
                if any(v is not None for v in given)
                else f"none needed (format: {hook.format})"
            )
            checks.append(Check(what, True, detail, True))
    return checks


async def _sources(config: Config) -> list[Check]:
    from mirrorsync.fetch import Fetched, HttpClient

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
                    detail = await _mirror_layout(client, source)
                elif isinstance(source, CatalogSource):  # fetched and parsed, as a sync reads it
                    fetched = await client.get(
                        Url(source.url),
                        max_bytes=config.limits.cap("catalog"),
                        limit_name="limits.catalog",
                    )
                    assert isinstance(fetched, Fetched)  # asked without conditions
                    stacks = parse_catalog(fetched.content, source.url)
                    detail = (
                        f"{redact_url(source.url)}: a catalogue of {plural(len(stacks), 'stack')}"
                    )
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


async def _mirror_layout(client: object, source: MirrorSource) -> str:
    """The layout a sync would find: the paths it reads, and the same error when neither is."""
    from mirrorsync.fetch import HttpClient
    from mirrorsync.sync.index import V2_INDEX, Target, layout_not_found

    assert isinstance(client, HttpClient)
    root = Url(source.url).rstrip("/")
    if is_oci_url(root.address):  # Spack's OCI cache: its index image, as a sync reads it
        from mirrorsync.fetch.oci import OciRepository, oci_reference

        await OciRepository(client, oci_reference(root)).manifest(INDEX_TAG)
        return f"OCI build cache at {root} (its {INDEX_TAG} image)"
    v3_path = Target(root, None, view=source.view).manifest_path
    for layout, path in (("v3", v3_path), ("v2", V2_INDEX)):
        try:
            await client.head(root.join(path))
        except NotFoundError:
            continue
        return f"{layout} build cache at {root}"
    raise layout_not_found(root, v3_path)
