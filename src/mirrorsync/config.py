"""Configuration: one YAML file, validated into typed, immutable settings.

Where the file is found: ``-c PATH``, else ``$MIRRORSYNC_CONFIG``, else
``./mirrorsync.yaml``, else ``/etc/mirrorsync/mirrorsync.yaml``. Unknown keys and
wrong types are errors that name the file, the key and what was expected.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

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
    timeout: PositiveFloat = 30.0
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
LimitKind = Literal["catalog", "manifest", "index"]


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
    insecure: bool = False  # skip TLS certificate checks (logged as a warning on every run)


Source = CatalogSource | MirrorSource


class Config(_Strict):
    sources: list[Source]
    database: str | None = None
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    path: str = ""  # where this configuration was read from (set by load_config)

    @property
    def database_path(self) -> Path:
        """The configured database, else ``$STATE_DIRECTORY`` (systemd), else ``./``."""
        if self.database:
            return Path(os.path.expanduser(self.database))
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
        config = msgspec.convert({**raw, "path": path}, Config, strict=True)
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
        msg += " (expected one of: catalog, mirror)"
    elif msg.startswith("Expected `str` matching regex") or "matching regex" in msg:
        msg = "expected a name of letters, digits, '.', '_' and '-'"
    return path or None, msg[0].lower() + msg[1:] if msg else msg


def _check(config: Config) -> None:
    path = config.path
    if config.database is not None and (not config.database.strip() or "\x00" in config.database):
        raise ConfigError(path, "database", f"expected a file path, got {config.database!r}")
    for kind in ("catalog", "manifest", "index"):
        try:
            setattr(config.limits, kind, parse_size(getattr(config.limits, kind)))
        except ValueError as exc:
            raise ConfigError(path, f"limits.{kind}", str(exc)) from None
    if not config.sources:
        raise ConfigError(path, "sources", "expected at least one source")
    seen: set[str] = set()
    for i, source in enumerate(config.sources):
        key = f"sources[{i}]"
        if source.name in seen:
            raise ConfigError(path, f"{key}.name", f"duplicate source name {source.name!r}")
        seen.add(source.name)
        _check_url(path, f"{key}.url", source.url)
        if isinstance(source, CatalogSource):
            for bucket, base in source.bucket_urls.items():
                _check_url(path, f"{key}.bucket_urls.{bucket}", base)
            for field in ("releases", "exclude_releases", "stacks", "exclude_stacks"):
                for j, glob in enumerate(getattr(source, field) or []):
                    _check_glob(path, f"{key}.{field}[{j}]", glob)


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
    return result
