"""Configuration: one YAML file, validated into typed, immutable settings.

Where the file is found: ``-c PATH``, else ``$MIRRORSYNC_CONFIG``, else
``./mirrorsync.yaml``, else ``/etc/mirrorsync/mirrorsync.yaml``. Unknown keys and
wrong types are errors that name the file, the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import msgspec
import msgspec.inspect
import yaml

from mirrorsync.config_file import DEFAULT_LOCATIONS as DEFAULT_LOCATIONS
from mirrorsync.config_file import MAX_CONFIG_BYTES as MAX_CONFIG_BYTES
from mirrorsync.config_file import consult, read_config_text, unrepeatable
from mirrorsync.config_file import find_config as find_config
from mirrorsync.errors import ConfigError
from mirrorsync.location import Location, PostgresUrl, is_postgres_url
from mirrorsync.ociref import parse_reference
from mirrorsync.paths import expand_path as expand_path
from mirrorsync.paths import read_regular_file as read_regular_file
from mirrorsync.redact import redact_url
from mirrorsync.vocab import EVENT_TYPES as EVENT_TYPES
from mirrorsync.vocab import EventType as EventType
from mirrorsync.vocab import did_you_mean as did_you_mean

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
    timeout: PositiveFloat = 30.0  # seconds, or a duration: 30s, 2m (see _read_durations)
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
        return _duration(self.deadline)

    @property
    def run_deadline_seconds(self) -> float:
        """``run_deadline`` in seconds (validated by ``parse_config``)."""
        return _duration(self.run_deadline)

    @property
    def revalidate_after_seconds(self) -> float:
        """``revalidate_after`` in seconds (validated by ``parse_config``)."""
        return _duration(self.revalidate_after)

    @property
    def host_concurrency(self) -> int:
        if self.per_host_concurrency is not None:
            return min(self.per_host_concurrency, self.concurrency)
        return max(1, self.concurrency // 2)


_SIZE_RE = re.compile(r"^\s*(?P<n>\d+)\s*(?P<unit>(?:[KMGT]i?)?B?)\s*$", re.IGNORECASE)
ByteSize = Annotated[int, msgspec.Meta(ge=1)] | str
LimitKind = Literal["catalog", "manifest", "index", "page"]


def parse_size(value: int | str) -> int:
    """``1048576``, ``"1 MiB"``, ``"16MB"``, ``"4GiB"`` -> bytes (ValueError if not a size)."""
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(f"expected a size such as 1048576, 64 MiB or 2 GB, got {value!r}")
    unit = match["unit"].upper().rstrip("B")
    power = "_KMGT".index(unit[:1] or "_")
    base = 1024 if unit.endswith("I") else 1000
    size = int(match["n"]) * int(pow(base, power))
    if size < 1:
        raise ValueError(f"expected a size of at least 1 byte, got {value!r}")
    return size


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """The values a number of the configuration may take (README, Configuration)."""

    low: float
    high: float
    low_open: bool = False  # ``low`` itself is refused (a timeout of 0 means nothing)
    unit: str = ""

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return math.isfinite(value) and above and value <= self.high

    def __str__(self) -> str:
        low = (
            f"above {_number(self.low)} and at most"
            if self.low_open
            else f"from {_number(self.low)} to"
        )
        return f"a number {low} {_number(self.high)}{self.unit}"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


_DAY = 86400.0
#: Every number in the configuration, by key (``webhooks[]``: each webhook). No NaN,
#: no infinity: nothing accepted may mean "never", hang the run or exhaust memory.
RANGES: dict[str, Range] = {
    "http.concurrency": Range(1, 1024),
    "http.per_host_concurrency": Range(1, 1024),
    "http.per_host_rate": Range(0, 100_000, low_open=True, unit=" (requests per second)"),
    "http.timeout": Range(0, 3600, low_open=True, unit=" (seconds)"),
    "http.deadline": Range(0, _DAY, low_open=True, unit=" (seconds; 1d)"),
    "http.run_deadline": Range(0, 7 * _DAY, low_open=True, unit=" (seconds; 7d)"),
    "http.revalidate_after": Range(0, 365 * _DAY, low_open=True, unit=" (seconds; 365d)"),
    "http.retries.attempts": Range(1, 100),
    "http.retries.backoff_initial": Range(0, 3600, unit=" (seconds)"),
    "http.retries.backoff_max": Range(0, _DAY, unit=" (seconds)"),
    "limits.catalog": Range(1, 1024**4, unit=" (bytes; 1 TiB)"),
    "limits.manifest": Range(1, 1024**4, unit=" (bytes; 1 TiB)"),
    "limits.index": Range(1, 1024**4, unit=" (bytes; 1 TiB)"),
    "limits.page": Range(1, 1024**4, unit=" (bytes; 1 TiB)"),
    "webhooks[].max_batch": Range(1, 10_000),
    "webhooks[].timeout": Range(0, 3600, low_open=True, unit=" (seconds)"),
    "webhooks[].max_age": Range(0, 365 * _DAY, low_open=True, unit=" (seconds; 365d)"),
    "webhooks[].keep_delivered": Range(0, 3650 * _DAY, low_open=True, unit=" (seconds; 3650d)"),
    "webhooks[].keep_dead": Range(0, 3650 * _DAY, low_open=True, unit=" (seconds; 3650d)"),
}


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


_VARIABLE_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _unset_variable(text: str) -> str | None:
    """The first ``$VAR``/``${VAR}`` in ``text`` not set in the environment, if any."""
    for match in _VARIABLE_RE.finditer(text):
        name = match[1] or match[2]
        if name not in os.environ:
            return name
    return None


_DURATION_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d)?$")
_URL_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_SQLITE_URL = "sqlite://"  # sqlite:///abs/path or sqlite://rel/path: the path after it
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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
    timeout: PositiveFloat = 10.0  # seconds, or a duration: 10s, 1m (see _read_durations)
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
        return _duration(self.max_age)

    @property
    def keep_delivered_seconds(self) -> float:
        return _duration(self.keep_delivered)

    @property
    def keep_dead_seconds(self) -> float:
        return _duration(self.keep_dead)


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
        return _duration(self.delete_after)

    @property
    def keep_seconds(self) -> float | None:
        """``keep`` as a duration (validated by ``parse_config``); None: upstream or selected."""
        return None if self.keep in ("upstream", "selected") else _duration(self.keep)

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
            return PostgresUrl(self.database.url, _database_password(self, self.database))
        if self.database and is_postgres_url(self.database):
            return PostgresUrl(self.database)
        if self.database:
            return expand_path(self.database.removeprefix(_SQLITE_URL))
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


def load_config(explicit: str | None = None) -> Config:
    path = find_config(explicit)
    return parse_config(read_config_text(path), str(path))


#: A password or webhook secret file holds one line; anything this large is not one.
MAX_SECRET_BYTES = 64 * 1024


def unreadable(exc: OSError | ValueError) -> str:
    """An unreadable file's reason, one phrase."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)


def read_secret_file(path: Path) -> str:
    """A password or secret file's text (regular, small, UTF-8); ValueError or OSError."""
    return read_regular_file(path, MAX_SECRET_BYTES, "larger than 64 KiB, not a secret").decode()


class _OnceEach(yaml.constructor.SafeConstructor):
    """YAML's safe constructor, refusing a key given twice in one mapping (PyYAML keeps
    the last silently: ``verify_signatures: true`` then ``false`` would turn checks off)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue  # keys merged in with << may be overridden, as YAML intends
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _Loader(_OnceEach, yaml.SafeLoader):
    """The safe loader with :class:`_OnceEach`, in Python: its errors say where and what."""


try:
    from yaml import CSafeLoader as _LibYaml
except ImportError:  # PyYAML built without libyaml: the Python parser only
    from yaml import SafeLoader as _LibYaml  # type: ignore[assignment]


class _FastLoader(_OnceEach, _LibYaml):
    """The same on libyaml's parser: a tenth of the time (3 ms of each command's start)."""


def _load(text: str) -> Any:
    """The document, parsed by libyaml; a document it refuses is parsed again by the
    Python parser, so that the error (its line, column and words) is the one it always
    was. The constructor, and so every value and check, is the same Python code."""
    try:
        return yaml.load(text, Loader=_FastLoader)
    except Exception:  # the Python parser says what is wrong, as it always did
        pass
    return yaml.load(text, Loader=_Loader)


def parse_config(text: str, path: str = "<config>") -> Config:
    """Validate YAML text into a Config; ConfigError names the key and the expectation."""
    try:
        raw = _load(text)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, None, f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(path, None, "invalid YAML: nested too deeply") from None
    except Exception as exc:  # PyYAML raises ValueError for dates such as 2024-02-30, ...
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(path, None, f"invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, None, "expected a mapping with at least a 'sources' list")
    if "path" in raw:
        raise ConfigError(path, "path", "unknown key")
    try:
        config = msgspec.convert({**_read_durations(raw, path), "path": path}, Config, strict=True)
    except msgspec.ValidationError as exc:
        key, problem = _explain(str(exc), raw)
        raise ConfigError(path, key, problem) from None
    _check(config)
    return config


_AT_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_KEY_AT_RE = re.compile(r"^(?P<msg>.*?) - at `key` in `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]*)`$")
_MISSING_RE = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")


def _explain(message: str, raw: object = None) -> tuple[str | None, str]:
    """Turn msgspec's ``Expected `int`, got `str` - at `$.http.timeout``` into key + problem."""
    key_match = _KEY_AT_RE.match(message)
    if key_match:  # a mapping key of the wrong type, e.g. ``1: x``
        where = key_match["path"].lstrip(".") or None
        return where, f"keys must be strings ({key_match['msg'].replace('`', '').lower()})"
    match = _AT_RE.match(message)
    assert match is not None  # the pattern matches any string
    msg, path = match["msg"], (match["path"] or "").lstrip(".")
    for pattern, problem in (
        (_UNKNOWN_RE, "unknown key"),
        (_MISSING_RE, "required key is missing"),
    ):
        field = pattern.match(msg)
        if field:
            key = f"{path}.{field['field']}" if path else field["field"]
            if pattern is _UNKNOWN_RE:
                problem += did_you_mean(field["field"], _known_keys(path, raw))
            return key, problem
    msg = msg.replace("`", "")
    if re.match(r"Expected array( \| null)?, got ", msg):  # a list field given one value
        what = _LIST_OF.get(path.rsplit(".", 1)[-1], "names")
        msg = f"expected a list of {what}, got {msg.rsplit(' ', 1)[-1]}"
    number = RANGES.get(re.sub(r"\[\d+\]", "[]", path))
    if number is not None and re.match(r"Expected (int|float) [<>]", msg):
        return path, f"expected {number}"  # the whole range, not only the bound crossed
    if msg.startswith("Invalid value") and path.endswith("kind"):
        msg += " (expected one of: catalog, mirror, pages)"
    elif msg.startswith("Invalid enum value") and re.search(r"\.events\[\d+\]$", path):
        msg += f" (expected one of: {', '.join(EVENT_TYPES)})"
    elif msg.startswith("Invalid enum value") and re.search(r"^webhooks\[\d+\]\.format$", path):
        value = msg.removeprefix("Invalid enum value").strip().strip("'\"")
        msg += f" (expected one of: {', '.join(WEBHOOK_FORMATS)}){did_you_mean(value, WEBHOOK_FORMATS)}"
    elif msg.startswith("Invalid enum value") and path.endswith(".manifests"):
        msg += f" (expected one of: {', '.join(get_args(ManifestPolicy))})"
    elif msg.startswith("Expected `str` matching regex") or "matching regex" in msg:
        msg = "expected a name of letters, digits, '.', '_' and '-'"
    return path or None, msg[0].lower() + msg[1:] if msg else msg


#: What a list field holds, where it is not names (or globs on names).
_LIST_OF = {"urls": "URLs", "files": "paths", "environments": "paths"}


def _known_keys(path: str, raw: object) -> list[str]:
    """The keys allowed at a configuration path (``sources[0]``, ``http.retries``) of
    the raw document: of a tagged source, only its kind's keys."""
    types: list[msgspec.inspect.Type] = [msgspec.inspect.type_info(Config)]
    for part in re.findall(r"[^.\[\]]+", path):
        if part.isdigit():
            raw = raw[int(part)] if isinstance(raw, list) and int(part) < len(raw) else None
            continue
        found: list[msgspec.inspect.Type] = []
        for struct in _structs(types, raw):
            found += [f.type for f in struct.fields if f.encode_name == part]
        types, raw = found, raw.get(part) if isinstance(raw, dict) else None
    structs = _structs(types, raw)
    keys = {f.encode_name for struct in structs for f in struct.fields}
    keys |= {struct.tag_field for struct in structs if struct.tag_field}
    return sorted(keys - {"path"})


def _flatten(types: list[msgspec.inspect.Type]) -> list[msgspec.inspect.Type]:
    out: list[msgspec.inspect.Type] = []
    for t in types:
        out += _flatten(list(t.types)) if isinstance(t, msgspec.inspect.UnionType) else [t]
    return out


def _structs(types: list[msgspec.inspect.Type], raw: object) -> list[msgspec.inspect.StructType]:
    """The structs among these types (a list's items included) that can be ``raw``:
    a tagged one only when ``raw`` carries its tag."""
    flat = _flatten(types)
    flat += _flatten([t.item_type for t in flat if isinstance(t, msgspec.inspect.ListType)])
    structs = [t for t in flat if isinstance(t, msgspec.inspect.StructType)]
    tagged = [
        t
        for t in structs
        if t.tag_field and isinstance(raw, dict) and raw.get(t.tag_field) == t.tag
    ]
    return tagged or structs


def _check(config: Config) -> None:
    path = config.path
    _check_database(config)
    _check_path_variables(config)
    for kind in ("catalog", "manifest", "index", "page"):
        try:
            setattr(config.limits, kind, parse_size(getattr(config.limits, kind)))
        except ValueError as exc:
            raise ConfigError(path, f"limits.{kind}", str(exc)) from None
    _check_ranges(config)
    _check_bundle(config)
    for name in ("deadline", "run_deadline", "revalidate_after"):
        _check_duration(path, f"http.{name}", getattr(config.http, name))
    if config.http.proxy is not None and config.http.proxy.strip().lower() != "none":
        from mirrorsync.proxies import check_proxy_url

        try:
            check_proxy_url(config.http.proxy)
        except ValueError as exc:
            raise ConfigError(path, "http.proxy", str(exc)) from None
    textfile = config.metrics.textfile
    if textfile is not None and not textfile.endswith(".prom"):
        raise ConfigError(
            path,
            "metrics.textfile",
            f"expected a file name ending in .prom (node_exporter reads only those), got {textfile!r}",
        )
    seen: set[str] = set()
    for i, source in enumerate(config.sources):
        key = f"sources[{i}]"
        if source.name in seen:
            raise ConfigError(path, f"{key}.name", f"duplicate source name {source.name!r}")
        seen.add(source.name)
        if isinstance(source, PagesSource):
            _check_page_urls(path, key, source.urls)
            continue
        mirror = isinstance(source, MirrorSource)
        if isinstance(source, MirrorSource) and source.url.startswith(("oci://", "oci+")):
            _check_oci_source(path, key, source)
        else:
            _check_url(path, f"{key}.url", source.url, files=mirror, s3=mirror, oci=mirror)
        _check_trusted_keys(path, key, source)
        urls = list(source.bucket_urls.values()) if isinstance(source, CatalogSource) else []
        _add_s3(config, path, key, source.s3, [source.url, *urls])
        if isinstance(source, CatalogSource):
            for bucket, base in source.bucket_urls.items():
                _check_url(path, f"{key}.bucket_urls.{bucket}", base, s3=True)
            for field in ("releases", "exclude_releases", "stacks", "exclude_stacks"):
                for j, glob in enumerate(getattr(source, field) or []):
                    _check_glob(path, f"{key}.{field}[{j}]", glob)
    _check_webhooks(config)
    _check_mirrors(config)


def _check_mirrors(config: Config) -> None:
    path = config.path
    names: set[str] = set()
    directories: dict[str, str] = {}  # real path -> mirrors[i]
    for i, copy in enumerate(config.mirrors):
        key = f"mirrors[{i}]"
        if copy.name in names:
            raise ConfigError(path, f"{key}.name", f"duplicate mirror name {copy.name!r}")
        names.add(copy.name)
        if copy.path.startswith(("oci://", "oci+")):
            _check_oci_copy(path, key, copy)
        if not copy.path.strip() or "\x00" in copy.path:
            raise ConfigError(path, f"{key}.path", f"expected a directory, got {copy.path!r}")
        if copy.path.startswith("file:"):
            _check_url(path, f"{key}.path", copy.path, files=True)
        if copy.path.startswith("s3:"):
            _check_s3_url(path, f"{key}.path", copy.path)
        _add_s3(config, path, key, copy.s3, [copy.path])
        if not copy.is_directory:  # an object store's or registry's: compared as URLs
            where = copy.path.rstrip("/") + "/"
            for other, other_key in directories.items():
                if where.startswith(other) or other.startswith(where):
                    raise ConfigError(
                        path,
                        f"{key}.path",
                        f"{copy.path!r} and {other_key}.path are the same or nested: each "
                        "copy deletes what its index does not list",
                    )
            directories[where] = key
            _check_copy(config, path, key, copy)
            continue
        directory = str(consult("realpath", str(copy.directory)))  # links resolved: real trees
        if directory in directories:
            raise ConfigError(path, f"{key}.path", f"another mirror already writes {copy.path!r}")
        for other, other_key in directories.items():
            if _nested(directory, other):
                raise ConfigError(
                    path,
                    f"{key}.path",
                    f"{copy.path!r} ({directory}) and {other_key}.path ({other}) are nested: "
                    "each copy deletes what its index does not list, so copies need "
                    "directories of their own, neither inside the other",
                )
        directories[directory] = key
        for j, upstream in enumerate(config.sources):
            root = _file_root(upstream)
            if root is not None and (root == directory or _nested(directory, root)):
                raise ConfigError(
                    path,
                    f"{key}.path",
                    f"{copy.path!r} ({directory}) overlaps the directory of source "
                    f"{upstream.name!r} (sources[{j}].url, {root}): a copy deletes what its "
                    "index does not list, so it never shares a directory tree with a source",
                )
        _check_copy(config, path, key, copy)


def _check_copy(config: Config, path: str, key: str, copy: MirrorCopy) -> None:
    """What every copy needs, wherever it is written: its source, release, filters."""
    # None: received by 'bundle import' (no source; its filters are the sender's)
    source = next((s for s in config.sources if s.name == copy.source), None)
    if copy.source is not None and (source is None or isinstance(source, PagesSource)):
        have = ", ".join(s.name for s in config.sources if not isinstance(s, PagesSource))
        raise ConfigError(
            path,
            f"{key}.source",
            f"expected a catalog or mirror source, got {copy.source!r} (have: {have or 'none'})",
        )
    if isinstance(source, CatalogSource) and not copy.release:
        raise ConfigError(path, f"{key}.release", "required for a catalog source")
    if isinstance(source, MirrorSource) and copy.release not in (None, source.release):
        raise ConfigError(
            path,
            f"{key}.release",
            f"a mirror source has one release ({source.release!r}); leave it out",
        )
    for field in ("stacks", "packages", "exclude_packages", "os", "targets", "platforms"):
        globs = getattr(copy, field)
        if globs is not None and not globs and field != "exclude_packages":
            raise ConfigError(path, f"{key}.{field}", "expected at least one glob")
        for j, glob in enumerate(globs or []):
            _check_glob(path, f"{key}.{field}[{j}]", glob)
    try:
        after = _duration(copy.delete_after)
    except ValueError:
        after = -1.0
    if after < 0:
        raise ConfigError(
            path,
            f"{key}.delete_after",
            f"expected seconds or a duration such as 2d, 12h, 0, got {copy.delete_after!r}",
        )
    if not re.fullmatch(r"0?[0-7]{3}", copy.mode) or not int(copy.mode, 8) & 0o400:
        raise ConfigError(
            path,
            f"{key}.mode",
            f"expected file permissions in octal, readable by their owner, such as "
            f'"0644" or "0640", got {copy.mode!r}',
        )
    if isinstance(source, CatalogSource | MirrorSource) and source.manifests == "none":
        raise ConfigError(
            path,
            f"{key}.source",
            f"source {source.name!r} has manifests: none; a copy holds only specs whose "
            "manifests the sync verified: set manifests: new or all on it",
        )
    _check_selection(path, key, copy)
    if copy.sign_index:
        raise ConfigError(
            path,
            f"{key}.sign_index",
            "Spack never signs v3 index manifests, so neither does mirrorsync; the spec "
            "manifests keep upstream's signatures. Leave it out or set it to false",
        )


def _nested(a: str, b: str) -> bool:
    """Whether one of two real, absolute paths is the other or lies inside it."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _file_root(source: Source) -> str | None:
    """The real path of a ``file://`` mirror source's root (None for any other source)."""
    if not isinstance(source, MirrorSource) or not source.url.startswith("file:///"):
        return None
    return str(consult("realpath", urllib.parse.unquote(urllib.parse.urlsplit(source.url).path)))


def _check_selection(path: str, key: str, copy: MirrorCopy) -> None:
    """``environments``, ``hashes`` and ``keep``; every lockfile and keeplist is read."""
    if copy.environments is not None and not copy.environments:
        raise ConfigError(path, f"{key}.environments", "expected at least one path")
    if isinstance(copy.hashes, list) and not copy.hashes:
        raise ConfigError(path, f"{key}.hashes", "expected at least one hash, or a keeplist file")
    if copy.keep not in ("upstream", "selected"):
        try:
            seconds = _duration(copy.keep)
        except ValueError:
            seconds = -1.0
        if seconds <= 0:
            raise ConfigError(
                path,
                f"{key}.keep",
                f"expected upstream, selected or a duration such as 90d, got {copy.keep!r}",
            )
    if copy.keep == "selected" and copy.environments is None and copy.hashes is None:
        raise ConfigError(
            path, f"{key}.keep", "keep: selected needs environments or hashes to keep"
        )
    from mirrorsync.mirrors.wanted import wanted  # a copy's lockfiles, read as it reads them

    if copy.environments is not None or isinstance(copy.hashes, str):
        unrepeatable()  # files read: the compiled configuration is not cached

    wanted(copy, path, key)


def _check_webhooks(config: Config) -> None:
    path = config.path
    seen: set[str] = set()
    for i, hook in enumerate(config.webhooks):
        key = f"webhooks[{i}]"
        if hook.name in seen:
            raise ConfigError(path, f"{key}.name", f"duplicate webhook name {hook.name!r}")
        seen.add(hook.name)
        if hook.format == "email":
            _check_email(path, key, hook)
        else:
            _check_url(path, f"{key}.url", hook.url)
        _check_webhook_format(path, key, hook)
        if hook.secret_env is not None and not hook.secret_env:
            raise ConfigError(path, f"{key}.secret_env", "expected an environment variable name")
        if hook.secret_file is not None and not hook.secret_file:
            raise ConfigError(path, f"{key}.secret_file", "expected a file path")
        if hook.secret is not None:
            _check_inline_secret(path, f"{key}.secret", hook.secret)
        if hook.events is not None and not hook.events:
            raise ConfigError(path, f"{key}.events", "expected at least one event type")
        for field in ("releases", "stacks", "packages"):
            globs = getattr(hook.filter, field)
            if globs is not None and not globs:
                raise ConfigError(path, f"{key}.filter.{field}", "expected at least one glob")
            for j, glob in enumerate(globs or []):
                _check_glob(path, f"{key}.filter.{field}[{j}]", glob)
                if "[^" in glob:  # fnmatch reads ^ literally, SQL GLOB as negation
                    raise ConfigError(
                        path,
                        f"{key}.filter.{field}[{j}]",
                        "write [!...] to negate a set, not [^...]",
                    )
        for field in ("max_age", "keep_delivered", "keep_dead"):
            _check_duration(path, f"{key}.{field}", getattr(hook, field))


#: The placeholders a webhook's ``link`` template may hold.
LINK_FIELDS = ("release", "stack")
_LINK_FIELD_RE = re.compile(r"\{([^{}]*)\}")


def _check_webhook_format(path: str, key: str, hook: WebhookConfig) -> None:
    """Signing keys, tokens and the keys of a format: a ``standard`` webhook is signed
    (a ``whsec_`` secret, an ed25519 key or both); a chat format needs no secret."""
    given = [k for k in ("secret_env", "secret_file", "secret") if getattr(hook, k) is not None]
    if len(given) > 1 or (
        not given
        and hook.format == "standard"
        and hook.ed25519_key_env is None
        and hook.ed25519_key_file is None
    ):
        problem = "give exactly one of secret_env, secret_file or secret"
        if not given:
            problem += " (or an ed25519_key_file or ed25519_key_env for v1a signatures)"
        raise ConfigError(path, key, f"{problem} (got {', '.join(given) or 'none'})")
    for pair in (("ed25519_key_env", "ed25519_key_file"), ("token_env", "token_file")):
        values = [getattr(hook, k) for k in pair]
        if all(v is not None for v in values):
            raise ConfigError(path, key, f"give one of {pair[0]} or {pair[1]}, not both")
        for name, value in zip(pair, values, strict=True):
            if value is not None and not value.strip():
                what = "an environment variable name" if name.endswith("_env") else "a file path"
                raise ConfigError(path, f"{key}.{name}", f"expected {what}")
    if hook.format == "matrix":
        if not hook.room or not hook.room.startswith("!") or ":" not in hook.room:
            raise ConfigError(
                path,
                f"{key}.room",
                f"format: matrix needs the room ID to post to (!abc:example.org), got {hook.room!r}",
            )
        if hook.token_env is None and hook.token_file is None:
            raise ConfigError(
                path, key, "format: matrix needs an access token: token_env or token_file"
            )
    elif hook.room is not None:
        raise ConfigError(path, f"{key}.room", "room is for format: matrix only")
    if hook.format != "email":
        for name, value in (("to", hook.to), ("from", hook.from_)):
            if value is not None:
                raise ConfigError(path, f"{key}.{name}", f"{name} is for format: email only")
    if hook.link is not None:
        fields = _LINK_FIELD_RE.findall(hook.link)
        for field in fields:
            if field not in LINK_FIELDS:
                raise ConfigError(
                    path,
                    f"{key}.link",
                    f"unknown placeholder {{{field}}} (expected {{release}} or {{stack}})"
                    + did_you_mean(field, LINK_FIELDS),
                )
        _check_url(path, f"{key}.link", _LINK_FIELD_RE.sub("x", hook.link))


_ADDRESS_RE = re.compile(r"^[^\s@<>,;:\"()\[\]\\]+@[A-Za-z0-9.-]+$")


def _check_email(path: str, key: str, hook: WebhookConfig) -> None:
    """An SMTP URL, a sender and at least one recipient, each a plain address."""
    parsed = urllib.parse.urlsplit(hook.url)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname or port == -1:
        raise ConfigError(
            path,
            f"{key}.url",
            f"format: email needs smtp://[user@]host[:port] or smtps://..., got {redact_url(hook.url)!r}",
        )
    if parsed.password is not None:
        raise ConfigError(
            path,
            f"{key}.url",
            "a password in the URL is refused: give it with token_env or token_file",
        )
    if not hook.to:
        raise ConfigError(path, f"{key}.to", "format: email needs a list of recipient addresses")
    for j, address in enumerate(hook.to):
        if not _ADDRESS_RE.match(address):
            raise ConfigError(
                path,
                f"{key}.to[{j}]",
                f"expected an address such as ops@example.org, got {address!r}",
            )
    if hook.from_ is None or not _ADDRESS_RE.match(hook.from_):
        raise ConfigError(
            path,
            f"{key}.from",
            f"format: email needs a sender address such as mirrorsync@example.org, got {hook.from_!r}",
        )


def _check_duration(path: str, key: str, value: float | str) -> None:
    try:
        seconds = _duration(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):  # NaN fails this too
        raise ConfigError(path, key, f"expected {DURATION_HINT}, got {value!r}")


#: Keys whose values are durations (seconds, or 30s / 15m / 12h / 3d).
_DURATIONS = frozenset(
    {"deadline", "run_deadline", "revalidate_after", "max_age", "keep_delivered", "keep_dead"}
)


def _check_ranges(config: Config) -> None:
    """Every number against RANGES: one place, so a new key cannot forget its bounds."""
    for key, allowed in RANGES.items():
        section, _, field = key.rpartition(".")
        if section == "webhooks[]":
            owners = [(f"webhooks[{i}]", hook) for i, hook in enumerate(config.webhooks)]
        else:
            owner: Any = config
            for part in section.split("."):
                owner = getattr(owner, part)
            owners = [(section, owner)]
        for where, obj in owners:
            value = getattr(obj, field)
            if value is None:
                continue
            if field in _DURATIONS and isinstance(value, str):  # numbers (NaN too) as they are
                try:
                    value = _duration(value)
                except ValueError:
                    continue  # _check_duration names the expected form
            if not allowed.holds(value):
                raise ConfigError(
                    config.path, f"{where}.{field}", f"expected {allowed}, got {value!r}"
                )


def _check_inline_secret(path: str, key: str, secret: str) -> None:
    """An inline secret is accepted only from a file nobody but its owner can read."""
    mode = consult("mode", path)
    if not isinstance(mode, int):
        raise ConfigError(
            path,
            key,
            "an inline secret needs a configuration file that is readable by its owner only",
        )
    if mode & 0o077:
        raise ConfigError(
            path,
            key,
            f"an inline secret is refused: the file is mode {mode & 0o777:04o}, readable by others; "
            "chmod 600 it, or use secret_env or secret_file",
        )
    if not secret.startswith("whsec_") or len(secret) <= len("whsec_"):
        raise ConfigError(path, key, "expected a whsec_... secret (value not shown)")


def parse_duration(value: float | str) -> float:
    """Seconds from a number of seconds or ``<number>[s|m|h|d]`` (``90``, ``30s``, ``3d``).

    The one duration syntax of the configuration and the command line; ValueError
    for anything else, including NaN and infinity.
    """
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(value.strip())
        if not match:
            raise ValueError(value)
        seconds = float(match["n"]) * _DURATION_UNITS[match["unit"] or "s"]
    if not math.isfinite(seconds):
        raise ValueError(value)
    return seconds


_duration = parse_duration
DURATION_HINT = "seconds or a duration such as 30s, 5m, 12h or 3d"


def _read_durations(raw: dict[Any, Any], path: str) -> dict[Any, Any]:
    """The raw mapping with each duration key written as text (``30s``) in seconds.

    Numbers pass as they are, for the schema's own range checks; text that is not
    a duration is refused here, naming the key and the syntax.
    """

    def convert(owner: Any, name: str, key: str) -> Any:
        if not isinstance(owner, dict) or not isinstance(owner.get(name), str):
            return owner
        try:
            seconds = parse_duration(owner[name])
        except ValueError:
            raise ConfigError(path, key, f"expected {DURATION_HINT}, got {owner[name]!r}") from None
        return {**owner, name: seconds}

    raw = dict(raw)
    if "http" in raw:
        raw["http"] = convert(raw["http"], "timeout", "http.timeout")
    hooks = raw.get("webhooks")
    if isinstance(hooks, list):
        raw["webhooks"] = [
            convert(hook, "timeout", f"webhooks[{i}].timeout") for i, hook in enumerate(hooks)
        ]
    return raw


def _check_database(config: Config) -> None:
    """A file path, ``sqlite:///PATH`` or a PostgreSQL URL (also as a mapping with its
    password's source); any other URL is refused, naming its scheme."""
    database = config.database
    if database is None:
        return
    if isinstance(database, DatabaseConfig):
        if not is_postgres_url(database.url):
            raise ConfigError(
                config.path,
                "database.url",
                f"expected postgresql://HOST:PORT/DBNAME, got {PostgresUrl(database.url)}",
            )
        _check_postgres_url(config.path, "database.url", database.url)
        if database.password_env is not None and database.password_file is not None:
            raise ConfigError(
                config.path, "database", "give at most one of password_env or password_file"
            )
        if database.password_env is not None and not database.password_env:
            raise ConfigError(
                config.path, "database.password_env", "expected an environment variable name"
            )
        if database.password_file is not None and not database.password_file:
            raise ConfigError(config.path, "database.password_file", "expected a file path")
        return
    if is_postgres_url(database):
        _check_postgres_url(config.path, "database", database)
        return
    if not database.strip() or "\x00" in database:
        raise ConfigError(config.path, "database", f"expected a file path, got {database!r}")
    match = _URL_SCHEME_RE.match(database)
    if match and not database.startswith(_SQLITE_URL):
        scheme = match["scheme"]
        raise ConfigError(
            config.path,
            "database",
            f"{scheme}:// databases are not supported: give a SQLite file path"
            " such as /var/lib/mirrorsync/mirrorsync.db, sqlite:///PATH,"
            " or postgresql://HOST:PORT/DBNAME",
        )
    if database == _SQLITE_URL or database == _SQLITE_URL + "/":
        raise ConfigError(config.path, "database", f"expected sqlite:///PATH, got {database!r}")


def _check_path_variables(config: Config) -> None:
    """Every path a command needs names only environment variables that are set: an
    unset one is a ConfigError naming the key, not a directory called ``${HOME}``."""
    paths: list[tuple[str, str]] = []
    if isinstance(config.database, str) and not is_postgres_url(config.database):
        paths.append(("database", config.database))
    if config.metrics.textfile:
        paths.append(("metrics.textfile", config.metrics.textfile))
    for i, copy in enumerate(config.mirrors):
        paths.append((f"mirrors[{i}].path", copy.path))
        paths += [
            (f"mirrors[{i}].environments[{j}]", e) for j, e in enumerate(copy.environments or [])
        ]
        if isinstance(copy.hashes, str):
            paths.append((f"mirrors[{i}].hashes", copy.hashes))
    for i, source in enumerate(config.sources):
        for j, entry in enumerate(getattr(source, "trusted_keys", None) or []):
            if trusted_fingerprint(entry) is None:
                paths.append((f"sources[{i}].trusted_keys[{j}]", entry))
    for key, text in paths:
        if (name := _unset_variable(text)) is not None:
            raise ConfigError(config.path, key, f"environment variable {name} is not set")


def _check_postgres_url(path: str, key: str, url: str) -> None:
    """A PostgreSQL URL names a database on a host; libpq reads the rest (sslmode...)."""
    shown = PostgresUrl(url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(path, key, f"bad PostgreSQL URL {shown}: {exc}") from None
    if not parts.path.strip("/"):
        raise ConfigError(path, key, f"expected postgresql://HOST:PORT/DBNAME, got {shown}")


def _database_password(config: Config, database: DatabaseConfig) -> str | None:
    """The password ``password_env`` or ``password_file`` names, if either is given."""
    if database.password_env is not None:
        value = os.environ.get(database.password_env)
        if value is None:
            raise ConfigError(
                config.path,
                "database.password_env",
                f"environment variable {database.password_env} is not set",
            )
        return value
    if database.password_file is not None:
        file = expand_path(database.password_file)
        try:
            return read_secret_file(file).rstrip("\r\n")
        except (OSError, ValueError) as exc:  # a FIFO never blocks; UnicodeDecodeError too
            reason = unreadable(exc)
            raise ConfigError(
                config.path, "database.password_file", f"cannot read {file}: {reason}"
            ) from None
    return None


def _check_page_urls(path: str, key: str, urls: list[str]) -> None:
    if not urls:
        raise ConfigError(path, f"{key}.urls", "expected at least one page URL")
    seen: set[str] = set()
    for j, url in enumerate(urls):
        _check_url(path, f"{key}.urls[{j}]", url)
        if url in seen:
            raise ConfigError(path, f"{key}.urls[{j}]", f"duplicate URL {url!r}")
        seen.add(url)


def _check_url(
    path: str, key: str, url: str, *, files: bool = False, s3: bool = False, oci: bool = False
) -> None:
    """An http(s) URL; with ``files``, a ``file:///absolute/path`` too; with ``s3``,
    an ``s3://bucket/prefix`` too (``oci``: the message names oci:// URLs, checked
    before this)."""
    if s3 and url.startswith("s3:"):
        _check_s3_url(path, key, url)
        return
    if files and url.startswith("file:"):
        if not url.startswith("file:///") or len(url) <= len("file:///"):
            raise ConfigError(path, key, f"expected file:///absolute/path, got {url!r}")
        return
    if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
        kinds = "an http://, https:// or file:///" if files else "an http:// or https://"
        if s3:
            kinds = kinds.replace(" or ", ", ") + " or s3://"
        if oci:
            kinds = kinds.replace(" or ", ", ") + ", oci:// or oci+http://"
        raise ConfigError(path, key, f"expected {kinds} URL, got {url!r}")


def require_sources(config: Config) -> None:
    """ConfigError unless the configuration has a source (what syncing needs; a receiving
    site of ``bundle import`` may have none)."""
    if not config.sources:
        raise ConfigError(
            config.path,
            "sources",
            "expected at least one source to sync (a site that only receives bundles "
            "runs 'mirrorsync bundle import')",
        )


def _check_bundle(config: Config) -> None:
    entries = config.bundle.trusted_keys
    if entries is None:
        return
    if not entries:
        raise ConfigError(config.path, "bundle.trusted_keys", "expected at least one key")
    for j, entry in enumerate(entries):
        if trusted_fingerprint(entry) is None and not consult("isfile", str(expand_path(entry))):
            raise ConfigError(
                config.path,
                f"bundle.trusted_keys[{j}]",
                f"expected a 40-hex key fingerprint or a public key file, got {entry!r} "
                "(no such file)",
            )


def _check_oci_copy(path: str, key: str, copy: MirrorCopy) -> None:
    """A copy into a registry repository (``oci://`` / ``oci+http://``)."""
    try:
        parse_reference(copy.path)
    except ValueError as exc:
        raise ConfigError(path, f"{key}.path", f"{exc} (got {redact_url(copy.path)!r})") from None
    if copy.keep != "upstream":
        raise ConfigError(
            path,
            f"{key}.keep",
            "an OCI copy keeps what upstream lists (keep: upstream); kept specs are "
            "supported for directory copies only",
        )


def _check_oci_source(path: str, key: str, source: MirrorSource) -> None:
    """An ``oci://`` / ``oci+http://`` registry repository, read as Spack pushes to one:
    unsigned (Spack signs nothing it pushes there and reads no keys from it), no views."""
    try:
        parse_reference(source.url)
    except ValueError as exc:
        raise ConfigError(path, f"{key}.url", f"{exc} (got {redact_url(source.url)!r})") from None
    if source.verify_signatures or source.trusted_keys is not None:
        raise ConfigError(
            path,
            f"{key}.verify_signatures",
            "an OCI build cache is unsigned (Spack pushes it without signatures and reads "
            "no keys from oci://): remove verify_signatures and trusted_keys",
        )
    if source.view is not None:
        raise ConfigError(path, f"{key}.view", "an OCI build cache has no index views")


_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _check_s3_url(path: str, key: str, url: str) -> None:
    """``s3://bucket[/prefix]``: a bucket name as S3 allows it, a plain prefix."""
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not url.startswith("s3://") or not _S3_BUCKET.match(bucket):
        raise ConfigError(path, key, f"expected s3://bucket/prefix, got {url!r}")
    if any(c in prefix for c in "?#\\") or ".." in prefix.split("/") or "//" in prefix:
        raise ConfigError(path, key, f"expected a plain prefix after the bucket, got {url!r}")


def _add_s3(
    config: Config, path: str, key: str, settings: S3Settings | None, urls: list[str]
) -> None:
    """An entry's ``s3:`` applies to its own s3:// URLs (``http.s3``, by prefix)."""
    if settings is None:
        return
    if not any(u.startswith("s3://") for u in urls):
        raise ConfigError(path, f"{key}.s3", "applies to s3:// URLs only; this entry has none")
    if settings.endpoint_url is not None:
        _check_url(path, f"{key}.s3.endpoint_url", settings.endpoint_url)
    for url in urls:
        if url.startswith("s3://"):
            config.http.s3[url.rstrip("/")] = settings


def _check_trusted_keys(path: str, key: str, source: CatalogSource | MirrorSource) -> None:
    entries = source.trusted_keys
    if entries is None:
        return
    if not source.verify_signatures:
        raise ConfigError(path, f"{key}.trusted_keys", "trusted_keys needs verify_signatures: true")
    if not entries:
        raise ConfigError(path, f"{key}.trusted_keys", "expected at least one key")
    for j, entry in enumerate(entries):
        if trusted_fingerprint(entry) is not None:
            continue
        if not consult("isfile", str(expand_path(entry))):
            raise ConfigError(
                path,
                f"{key}.trusted_keys[{j}]",
                f"expected a 40-hex key fingerprint or a public key file, got {entry!r} "
                "(no such file)",
            )


def _check_glob(path: str, key: str, glob: str) -> None:
    if not glob:
        raise ConfigError(path, key, "expected a non-empty glob")
    depth = 0
    for ch in glob:  # fnmatch silently treats an unclosed [ literally; say so instead
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
    if depth:
        raise ConfigError(path, key, f"glob {glob!r} has an unclosed '['")


def _selected(name: str, include: list[str] | None, exclude: list[str]) -> bool:
    if include is not None and not any(fnmatch.fnmatchcase(name, g) for g in include):
        return False
    return not any(fnmatch.fnmatchcase(name, g) for g in exclude)


def config_to_dict(config: Config) -> dict[str, Any]:
    """A plain mapping of the effective settings (for ``--dry-run`` and debugging)."""
    result: dict[str, Any] = msgspec.to_builtins(config)
    for hook in result.get("webhooks", []):
        if hook.get("secret") is not None:
            hook["secret"] = "<redacted>"
        hook["url"] = redact_url(hook["url"])
        if hook.get("format") in ("slack", "discord", "teams", "ntfy"):  # the path is the token
            parts = urllib.parse.urlsplit(hook["url"])
            hook["url"] = f"{parts.scheme}://{parts.netloc}/<redacted>"
    database = result.get("database")
    if isinstance(database, str):
        result["database"] = redact_url(database)
    elif isinstance(database, dict):
        database["url"] = redact_url(database["url"])
    return result
