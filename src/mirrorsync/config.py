"""Configuration: one YAML file, validated into typed, immutable settings.

Where the file is found: ``-c PATH``, else ``$MIRRORSYNC_CONFIG``, else
``./mirrorsync.yaml``, else ``/etc/mirrorsync/mirrorsync.yaml``. Unknown keys and
wrong types are errors that name the file, the key and what was expected.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import msgspec
import yaml

from mirrorsync.errors import ConfigError

DEFAULT_LOCATIONS = (Path("mirrorsync.yaml"), Path("/etc/mirrorsync/mirrorsync.yaml"))
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


class HttpConfig(_Strict):
    concurrency: PositiveInt = 16
    per_host_rate: PositiveFloat = 20.0
    timeout: PositiveFloat = 30.0  # seconds, or a duration: 30s, 2m (see _read_durations)
    retries: RetryConfig = msgspec.field(default_factory=RetryConfig)
    # Requests in flight to one host (scheme, name and port); default half of
    # ``concurrency``, so one dead host never holds every slot.
    per_host_concurrency: PositiveInt | None = None

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
    insecure: bool = False  # skip TLS certificate checks (logged as a warning on every run)

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
    manifests: ManifestPolicy = "new"
    verify_signatures: bool = False
    insecure: bool = False  # skip TLS certificate checks (logged as a warning on every run)


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


Source = CatalogSource | MirrorSource | PagesSource

EventType = Literal[
    "spec.added",
    "spec.removed",
    "stack.added",
    "stack.removed",
    "release.added",
    "release.removed",
    "spec.manifest_missing",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
_DURATION_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d)?$")
_URL_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_SQLITE_URL = "sqlite://"  # sqlite:///abs/path or sqlite://rel/path: the path after it
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class WebhookFilter(_Strict):
    """Globs an event must match to be sent; an absent list matches everything."""

    releases: list[str] | None = None
    stacks: list[str] | None = None
    packages: list[str] | None = None


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

    def __repr__(self) -> str:  # the inline secret never reaches a log or traceback
        return f"WebhookConfig(name={self.name!r}, url={self.url!r})"

    @property
    def max_age_seconds(self) -> float:
        """``max_age`` in seconds (validated by ``parse_config``)."""
        return _duration(self.max_age)


class MetricsConfig(_Strict):
    """Prometheus metrics, written at the end of every run."""

    textfile: str | None = None  # node_exporter textfile collector file, e.g. .../mirrorsync.prom

    @property
    def textfile_path(self) -> Path | None:
        return Path(os.path.expanduser(self.textfile)) if self.textfile else None


class Config(_Strict):
    sources: list[Source]
    database: str | None = None
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    webhooks: list[WebhookConfig] = []
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    path: str = ""  # where this configuration was read from (set by load_config)

    @property
    def database_path(self) -> Path:
        """The configured database, else ``$STATE_DIRECTORY`` (systemd), else ``./``."""
        if self.database:
            return Path(os.path.expanduser(self.database.removeprefix(_SQLITE_URL)))
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

    def webhook_key(self, name: str) -> str:
        """The configuration key of a webhook, ``webhooks[i]``, for error messages."""
        for i, hook in enumerate(self.webhooks):
            if hook.name == name:
                return f"webhooks[{i}]"
        names = ", ".join(h.name for h in self.webhooks) or "none configured"
        raise ConfigError(self.path, "webhooks", f"no webhook named {name!r} (have: {names})")

    def webhook(self, name: str) -> WebhookConfig:
        return self.webhooks[int(self.webhook_key(name)[len("webhooks[") : -1])]


def find_config(explicit: str | None) -> Path:
    """Pick the configuration file by the documented order."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("MIRRORSYNC_CONFIG")
    if env:
        return Path(env)
    for candidate in DEFAULT_LOCATIONS:
        if candidate.exists():
            return candidate
    tried = ", ".join(str(p) for p in DEFAULT_LOCATIONS)
    raise ConfigError(
        "mirrorsync",
        None,
        f"no configuration file: give -c PATH or MIRRORSYNC_CONFIG (looked at {tried})",
    )


def load_config(explicit: str | None = None) -> Config:
    path = find_config(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc}") from None
    return parse_config(text, str(path))


def parse_config(text: str, path: str = "<config>") -> Config:
    """Validate YAML text into a Config; ConfigError names the key and the expectation."""
    try:
        raw = yaml.safe_load(text)
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
        key, problem = _explain(str(exc))
        raise ConfigError(path, key, problem) from None
    _check(config)
    return config


_AT_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_KEY_AT_RE = re.compile(r"^(?P<msg>.*?) - at `key` in `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]*)`$")
_MISSING_RE = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")


def _explain(message: str) -> tuple[str | None, str]:
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
            return key, problem
    msg = msg.replace("`", "")
    if msg.startswith("Invalid value") and path.endswith("kind"):
        msg += " (expected one of: catalog, mirror, pages)"
    elif msg.startswith("Invalid enum value") and re.search(r"\.events\[\d+\]$", path):
        msg += f" (expected one of: {', '.join(EVENT_TYPES)})"
    elif msg.startswith("Invalid enum value") and path.endswith(".manifests"):
        msg += f" (expected one of: {', '.join(get_args(ManifestPolicy))})"
    elif msg.startswith("Expected `str` matching regex") or "matching regex" in msg:
        msg = "expected a name of letters, digits, '.', '_' and '-'"
    return path or None, msg[0].lower() + msg[1:] if msg else msg


def _check(config: Config) -> None:
    path = config.path
    _check_database(config)
    for kind in ("catalog", "manifest", "index"):
        try:
            setattr(config.limits, kind, parse_size(getattr(config.limits, kind)))
        except ValueError as exc:
            raise ConfigError(path, f"limits.{kind}", str(exc)) from None
    if not config.sources:
        raise ConfigError(path, "sources", "expected at least one source")
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
        _check_url(path, f"{key}.url", source.url)
        if isinstance(source, CatalogSource):
            for bucket, base in source.bucket_urls.items():
                _check_url(path, f"{key}.bucket_urls.{bucket}", base)
            for field in ("releases", "exclude_releases", "stacks", "exclude_stacks"):
                for j, glob in enumerate(getattr(source, field) or []):
                    _check_glob(path, f"{key}.{field}[{j}]", glob)
    _check_webhooks(config)


def _check_webhooks(config: Config) -> None:
    path = config.path
    seen: set[str] = set()
    for i, hook in enumerate(config.webhooks):
        key = f"webhooks[{i}]"
        if hook.name in seen:
            raise ConfigError(path, f"{key}.name", f"duplicate webhook name {hook.name!r}")
        seen.add(hook.name)
        _check_url(path, f"{key}.url", hook.url)
        given = [k for k in ("secret_env", "secret_file", "secret") if getattr(hook, k) is not None]
        if len(given) != 1:
            problem = "give exactly one of secret_env, secret_file or secret"
            raise ConfigError(path, key, f"{problem} (got {', '.join(given) or 'none'})")
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
        try:
            age = _duration(hook.max_age)
        except ValueError:
            age = 0.0
        if age <= 0:
            raise ConfigError(
                path,
                f"{key}.max_age",
                f"expected seconds or a duration such as 3d, 12h, 30m, got {hook.max_age!r}",
            )


def _check_inline_secret(path: str, key: str, secret: str) -> None:
    """An inline secret is accepted only from a file nobody but its owner can read."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise ConfigError(
            path,
            key,
            "an inline secret needs a configuration file that is readable by its owner only",
        ) from None
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
    """A file path, or ``sqlite:///PATH``; any other URL is refused, naming its scheme."""
    database = config.database
    if database is None:
        return
    if not database.strip() or "\x00" in database:
        raise ConfigError(config.path, "database", f"expected a file path, got {database!r}")
    match = _URL_SCHEME_RE.match(database)
    if match and not database.startswith(_SQLITE_URL):
        scheme = match["scheme"]
        raise ConfigError(
            config.path,
            "database",
            f"{scheme}:// databases are not supported (yet): give a SQLite file path"
            " such as /var/lib/mirrorsync/mirrorsync.db, or sqlite:///PATH",
        )
    if database == _SQLITE_URL or database == _SQLITE_URL + "/":
        raise ConfigError(config.path, "database", f"expected sqlite:///PATH, got {database!r}")


def _check_page_urls(path: str, key: str, urls: list[str]) -> None:
    if not urls:
        raise ConfigError(path, f"{key}.urls", "expected at least one page URL")
    seen: set[str] = set()
    for j, url in enumerate(urls):
        _check_url(path, f"{key}.urls[{j}]", url)
        if url in seen:
            raise ConfigError(path, f"{key}.urls[{j}]", f"duplicate URL {url!r}")
        seen.add(url)


def _check_url(path: str, key: str, url: str) -> None:
    if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
        raise ConfigError(path, key, f"expected an http:// or https:// URL, got {url!r}")


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
    return result
