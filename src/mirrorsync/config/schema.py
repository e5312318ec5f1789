"""The typed, immutable records a configuration file is converted into: each section's
keys, types and defaults (msgspec structs; unknown keys are refused), and what the
rest of mirrorsync asks of them (a source's selection, a copy's directory, durations
in seconds, the database's location).
"""

from __future__ import annotations

import fnmatch
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal, get_args

import msgspec

from mirrorsync.config.credentials import database_password
from mirrorsync.config.numbers import parse_duration, parse_size
from mirrorsync.errors import ConfigError
from mirrorsync.location import Location, PostgresUrl, is_postgres_url
from mirrorsync.paths import expand_path
from mirrorsync.vocab import EventType

DEFAULT_BUCKET_URLS: Mapping[str, str] = {"spack-binaries": "https://binaries.spack.io/"}
PUBLIC_CATALOG_URL = "https://binaries.spack.io/cache_spack_io_index.json"

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
ManifestPolicy = Literal["new", "all", "none"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class RetryConfig(_Strict):
    attempts: PositiveInt = 5
    backoff_initial: NonNegativeFloat = 0.5
    backoff_max: NonNegativeFloat = 60.0


class S3Settings(_Strict):
    """How to reach one S3 bucket (``s3:`` of a source or copy; unset keys: AWS's own
    configuration: ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, ``AWS_REGION``,
    ``AWS_PROFILE``, the shared files)."""

    endpoint_url: str | None = None  # an S3-compatible store (MinIO, Ceph RGW): path-style
    region: str | None = None
    profile: str | None = None  # a profile of ~/.aws/config and ~/.aws/credentials
    anonymous: bool = False  # unsigned requests (a public bucket); no credential lookup


class HttpConfig(_Strict):
    concurrency: PositiveInt = 16
    per_host_rate: PositiveFloat = 20.0
    timeout: PositiveFloat = 30.0  # seconds, or a duration: 30s, 2m (see parse._read_durations)
    retries: RetryConfig = msgspec.field(default_factory=RetryConfig)
    # Requests in flight to one host (scheme, name and port); default half of
    # ``concurrency``, so one dead host never holds every slot.
    per_host_concurrency: PositiveInt | None = None
    # Longest one request may take from getting its slot to its last byte, however
    # steadily the bytes trickle in (``timeout`` bounds each read only).
    deadline: float | str = "15m"
    # No request runs later than this after the run began: what is left fails
    # and the run ends (systemd/mirrorsync.service's TimeoutStartSec is longer).
    run_deadline: float | str = "5h"
    # A forward proxy for every http(s) request (``none``: no proxy, whatever the
    # environment says); unset: HTTP_PROXY/HTTPS_PROXY/ALL_PROXY. NO_PROXY applies.
    proxy: str | None = None
    # A document (catalogue, index manifest, index.json, page) last fetched in
    # full longer ago than this is asked for once without conditions: a server
    # whose validators lie cannot hide a change for longer (fetch/validators.py).
    revalidate_after: float | str = "1d"
    # S3 settings by ``s3://bucket[/prefix]`` (the longest prefix of a request's URL
    # applies); each source's and copy's ``s3:`` is added here for its own URLs.
    s3: dict[str, S3Settings] = {}

    @property
    def deadline_seconds(self) -> float:
        """``deadline`` in seconds (validated by ``parse_config``)."""
        return parse_duration(self.deadline)

    @property
    def run_deadline_seconds(self) -> float:
        """``run_deadline`` in seconds (validated by ``parse_config``)."""
        return parse_duration(self.run_deadline)

    @property
    def revalidate_after_seconds(self) -> float:
        """``revalidate_after`` in seconds (validated by ``parse_config``)."""
        return parse_duration(self.revalidate_after)

    @property
    def host_concurrency(self) -> int:
        if self.per_host_concurrency is not None:
            return min(self.per_host_concurrency, self.concurrency)
        return max(1, self.concurrency // 2)


ByteSize = Annotated[int, msgspec.Meta(ge=1)] | str
LimitKind = Literal["catalog", "manifest", "index", "page"]


class LimitsConfig(_Strict):
    """Size caps per kind of remote document: anything bigger is refused unread."""

    catalog: ByteSize = 16 * 1024**2  # cache_spack_io_index.json (a few tens of kB in 2026)
    manifest: ByteSize = 1024**2  # index/spec manifests and index.json.hash (a few kB)
    index: ByteSize = 4 * 1024**3  # an index blob or index.json (~200 MB in 2026)
    page: ByteSize = 16 * 1024**2  # a cache.spack.io package page (tens of kB)

    def cap(self, kind: LimitKind) -> int:
        value: int | str = getattr(self, kind)
        return parse_size(value)


class CatalogSource(_Strict, tag="catalog", tag_field="kind"):
    """A ``cache_spack_io_index.json`` catalogue of releases and their stacks."""

    kind: ClassVar[str] = "catalog"

    name: Name
    url: str = PUBLIC_CATALOG_URL
    bucket_urls: dict[str, str] = {}
    releases: list[str] | None = None
    exclude_releases: list[str] = []
    stacks: list[str] | None = None
    exclude_stacks: list[str] = []
    manifests: ManifestPolicy = "new"
    verify_signatures: bool = False
    trusted_keys: list[str] | None = None  # key files and/or fingerprints; None: the mirror's own
    insecure: bool = False  # skip TLS certificate checks (logged as a warning on every run)
    s3: S3Settings | None = None  # for its s3:// bucket_urls

    @property
    def manifest_policy(self) -> str:
        """Which spec manifests its syncs crawl (the health model reads this)."""
        return self.manifests

    def buckets(self) -> dict[str, str]:
        """The built-in bucket mapping, overridden by the configured one."""
        return {**DEFAULT_BUCKET_URLS, **self.bucket_urls}

    def wants(self, release: str, stack: str | None = None) -> bool:
        """Whether the include/exclude globs select this release (and stack)."""
        if not _selected(release, self.releases, self.exclude_releases):
            return False
        return stack is None or _selected(stack, self.stacks, self.exclude_stacks)


class MirrorSource(_Strict, tag="mirror", tag_field="kind"):
    """One build cache mirror root; layout v3 or v2 is detected."""

    kind: ClassVar[str] = "mirror"

    name: Name
    url: str
    release: str = "default"
    stack: str = "root"
    view: Name | None = None  # v3/manifests/index/<view>/index.manifest.json; None: top level
    manifests: ManifestPolicy = "new"
    verify_signatures: bool = False
    trusted_keys: list[str] | None = None  # key files and/or fingerprints; None: the mirror's own
    insecure: bool = False  # skip TLS certificate checks (logged as a warning on every run)
    s3: S3Settings | None = None  # for an s3:// url

    @property
    def manifest_policy(self) -> str:
        """Which spec manifests its syncs crawl (the health model reads this)."""
        return self.manifests


class PagesSource(_Strict, tag="pages", tag_field="kind"):
    """cache.spack.io package pages: each one package's specs in one release, per stack.

    A stack's content is the union, over every page of its release, of the
    hashes whose ``stacks`` name it. Pages name no mirror, so there are no spec
    manifests to crawl (hence no ``manifests`` key).
    """

    kind: ClassVar[str] = "pages"

    name: Name
    urls: list[str]
    insecure: bool = False  # skip TLS certificate checks (logged as a warning on every run)

    @property
    def manifest_policy(self) -> str:
        """Pages name no mirror: no spec manifests to crawl."""
        return "none"


Source = CatalogSource | MirrorSource | PagesSource

_FINGERPRINT_RE = re.compile(r"^[0-9A-F]{40}$")


def trusted_fingerprint(entry: str) -> str | None:
    """A ``trusted_keys`` entry as a key fingerprint (40 hex digits, spaces allowed as gpg
    prints them), upper case; None when the entry is a key file instead."""
    compact = entry.replace(" ", "").upper()
    return compact if _FINGERPRINT_RE.match(compact) else None


def split_trusted_keys(entries: list[str]) -> tuple[list[str], list[Path]]:
    """``trusted_keys`` as (fingerprints, key files), in the order given."""
    fingerprints: list[str] = []
    files: list[Path] = []
    for entry in entries:
        fingerprint = trusted_fingerprint(entry)
        if fingerprint is not None:
            fingerprints.append(fingerprint)
        else:
            files.append(expand_path(entry))
    return fingerprints, files


SQLITE_URL = "sqlite://"  # sqlite:///abs/path or sqlite://rel/path: the path after it


class WebhookFilter(_Strict):
    """Globs an event must match to be sent; an absent list matches everything."""

    releases: list[str] | None = None
    stacks: list[str] | None = None
    packages: list[str] | None = None


#: What a webhook's requests look like (delivery/formats.py): ``standard`` is the
#: signed mirrorsync payload; the others are a chat service's or CloudEvents' shape.
WebhookFormat = Literal[
    "standard", "slack", "discord", "teams", "matrix", "ntfy", "cloudevents", "email"
]
WEBHOOK_FORMATS: tuple[str, ...] = get_args(WebhookFormat)


class WebhookConfig(_Strict):
    """An HTTP endpoint that receives signed batches of change events."""

    name: Name
    url: str
    secret_env: str | None = None  # name of an environment variable holding whsec_...
    secret_file: str | None = None  # path of a file holding whsec_...
    secret: str | None = None  # inline; only in an owner-only configuration file
    events: list[EventType] | None = None  # default: every type
    filter: WebhookFilter = msgspec.field(default_factory=WebhookFilter)
    max_batch: PositiveInt = 500
    timeout: PositiveFloat = 10.0  # seconds, or a duration: 10s, 1m (see parse._read_durations)
    max_age: float | str = "3d"  # seconds, or a number with unit s/m/h/d
    keep_delivered: float | str = "7d"  # delivered batches' records are purged after this
    keep_dead: float | str = "30d"  # dead batches (and their events' outbox rows) likewise
    # Notifications (delivery/formats.py): the request's shape; a chat format needs no secret.
    format: WebhookFormat = "standard"
    link: str | None = None  # URL template of a summary's link: {release}, {stack}
    room: str | None = None  # format: matrix, the room ID (!abc:example.org) to post to
    token_env: str | None = None  # an access token sent as "Authorization: Bearer ..."
    token_file: str | None = None  # (matrix: required; others: optional)
    # format: email: the url is smtp://[user@]host[:port] or smtps://...; token_*: the password.
    to: list[str] | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    # Standard Webhooks' asymmetric signature (v1a, ed25519): a whsk_... or PEM private key.
    ed25519_key_env: str | None = None
    ed25519_key_file: str | None = None

    def __repr__(self) -> str:  # the inline secret never reaches a log or traceback
        return f"WebhookConfig(name={self.name!r}, url={self.url!r})"

    @property
    def max_age_seconds(self) -> float:
        """``max_age`` in seconds (validated by ``parse_config``)."""
        return parse_duration(self.max_age)

    @property
    def keep_delivered_seconds(self) -> float:
        return parse_duration(self.keep_delivered)

    @property
    def keep_dead_seconds(self) -> float:
        return parse_duration(self.keep_dead)


class MirrorCopy(_Strict):
    """A local v3 build cache made from synced stacks: filtered, verified, incremental."""

    name: Name
    path: str  # the directory that becomes the build cache
    #: A configured catalog or mirror source; None: a copy received by ``bundle import``
    #: (an air-gapped site's), which ``mirror`` leaves alone.
    source: str | None = None
    release: str | None = None  # required for a catalog source; a mirror source has its own
    stacks: list[str] | None = None  # globs; default: every stack of the release
    packages: list[str] | None = None  # globs on spec names
    exclude_packages: list[str] = []
    os: list[str] | None = None  # globs on arch.platform_os
    targets: list[str] | None = None  # globs on the target name
    platforms: list[str] | None = None
    delete_after: float | str = "2d"  # how long unreferenced files stay; 0 deletes at once
    sign_index: bool = False  # Spack never signs v3 index manifests; only false is accepted
    #: A spec left out (failed verification): fail keeps the last published state; skip
    #: publishes the rest.
    on_error: Literal["fail", "skip"] = "fail"
    #: Spack environment directories or spack.lock files: their roots' link/run closure.
    environments: list[str] | None = None
    #: Spec hashes: a list, or a keeplist file (``spack buildcache prune --keeplist``).
    hashes: list[str] | str | None = None
    #: What stays after upstream deletes it: upstream (after delete_after), selected
    #: (while environments/hashes name it) or a duration after it left upstream (90d).
    keep: str = "upstream"
    #: Permissions of the copy's files whatever the umask (octal); its directories
    #: get x wherever a file has r (0644 -> 0755, 0640 -> 0750).
    mode: str = "0644"
    s3: S3Settings | None = None  # for an s3:// path

    @property
    def directory(self) -> Path:
        """The directory of a directory copy (``/dir``, ``~/dir`` or ``file:///dir``)."""
        if self.path.startswith("file://"):
            return Path(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))
        return expand_path(self.path)

    @property
    def is_directory(self) -> bool:
        """Whether the copy is a directory (else an object store or registry URL)."""
        return "://" not in self.path or self.path.startswith("file://")

    @property
    def file_mode(self) -> int:
        """``mode`` as a number (validated by ``parse_config``)."""
        return int(self.mode, 8)

    @property
    def delete_after_seconds(self) -> float:
        """``delete_after`` in seconds (validated by ``parse_config``)."""
        return parse_duration(self.delete_after)

    @property
    def keep_seconds(self) -> float | None:
        """``keep`` as a duration (validated by ``parse_config``); None: upstream or selected."""
        return None if self.keep in ("upstream", "selected") else parse_duration(self.keep)

    @property
    def by_glob(self) -> bool:
        """Whether the globs choose specs: always, unless environments or hashes are
        given and no glob filter (packages, os, targets, platforms) is."""
        if self.environments is None and self.hashes is None:
            return True
        return any(g is not None for g in (self.packages, self.os, self.targets, self.platforms))

    def selects(self, name: str, os_name: str, target: str, platform: str) -> bool:
        """Whether a binary with these fields passes every filter given."""
        return (
            _selected(name, self.packages, self.exclude_packages)
            and _selected(os_name, self.os, [])
            and _selected(target, self.targets, [])
            and _selected(platform, self.platforms, [])
        )


class MetricsConfig(_Strict):
    """Prometheus metrics, written at the end of every run."""

    textfile: str | None = None  # node_exporter textfile collector file, e.g. .../mirrorsync.prom

    @property
    def textfile_path(self) -> Path | None:
        return expand_path(self.textfile) if self.textfile else None


class DatabaseConfig(_Strict):
    """``database:`` as a mapping: a PostgreSQL URL and where its password is read from
    (as webhook secrets are: an environment variable, or a file such as systemd's
    ``${CREDENTIALS_DIRECTORY}/...``). Without either, libpq's own ways apply: a
    password in the URL, ``PGPASSWORD``, ``~/.pgpass``."""

    url: str
    password_env: str | None = None
    password_file: str | None = None

    def __repr__(self) -> str:  # the URL may hold a password
        return f"DatabaseConfig(url={PostgresUrl(self.url)!s})"


class BundleConfig(_Strict):
    """``bundle:``: what ``bundle import`` accepts. With ``trusted_keys`` (public key files
    and/or fingerprints of keys a bundle carries), an unsigned bundle is refused."""

    trusted_keys: list[str] | None = None


class Config(_Strict):
    #: May be empty: a receiving site (``bundle import``) has no sources; commands that
    #: sync say so (``require_sources``).
    sources: list[Source] = []
    database: str | DatabaseConfig | None = None
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    webhooks: list[WebhookConfig] = []
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    mirrors: list[MirrorCopy] = []
    bundle: BundleConfig = msgspec.field(default_factory=BundleConfig)
    path: str = ""  # where this configuration was read from (set by load_config)

    @property
    def database_path(self) -> Location:
        """The configured database, else ``$STATE_DIRECTORY`` (systemd), else ``./``.

        A PostgreSQL URL is a :class:`PostgresUrl`, its password read from
        ``password_env``/``password_file`` if given (ConfigError naming the key)."""
        if isinstance(self.database, DatabaseConfig):
            return PostgresUrl(self.database.url, database_password(self, self.database))
        if self.database and is_postgres_url(self.database):
            return PostgresUrl(self.database)
        if self.database:
            return expand_path(self.database.removeprefix(SQLITE_URL))
        state_dirs = os.environ.get("STATE_DIRECTORY", "")
        if state_dirs:
            return Path(state_dirs.split(":")[0]) / "mirrorsync.db"
        return Path("mirrorsync.db")

    def source(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name:
                return source
        names = ", ".join(s.name for s in self.sources)
        raise ConfigError(self.path, "sources", f"no source named {name!r} (have: {names})")

    def mirror(self, name: str) -> MirrorCopy:
        for copy in self.mirrors:
            if copy.name == name:
                return copy
        names = ", ".join(m.name for m in self.mirrors) or "none configured"
        raise ConfigError(self.path, "mirrors", f"no mirror named {name!r} (have: {names})")

    def webhook_key(self, name: str) -> str:
        """The configuration key of a webhook, ``webhooks[i]``, for error messages."""
        for i, hook in enumerate(self.webhooks):
            if hook.name == name:
                return f"webhooks[{i}]"
        names = ", ".join(h.name for h in self.webhooks) or "none configured"
        raise ConfigError(self.path, "webhooks", f"no webhook named {name!r} (have: {names})")

    def webhook(self, name: str) -> WebhookConfig:
        return self.webhooks[int(self.webhook_key(name)[len("webhooks[") : -1])]


def _selected(name: str, include: list[str] | None, exclude: list[str]) -> bool:
    if include is not None and not any(fnmatch.fnmatchcase(name, g) for g in include):
        return False
    return not any(fnmatch.fnmatchcase(name, g) for g in exclude)
