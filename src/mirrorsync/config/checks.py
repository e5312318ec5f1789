"""The validation of a converted configuration, run by ``parse_config``: each section's
checks in turn, and those across sections (limits, every number's range, durations,
environment variables in paths, the proxy, bundle keys).
"""

from __future__ import annotations

import os
import re
from typing import Any

from mirrorsync.config.check_copies import check_mirrors
from mirrorsync.config.check_database import check_database
from mirrorsync.config.check_sources import check_sources
from mirrorsync.config.check_values import check_duration
from mirrorsync.config.check_webhooks import check_webhooks
from mirrorsync.config.numbers import RANGES, parse_duration, parse_size
from mirrorsync.config.schema import Config, trusted_fingerprint
from mirrorsync.config_file import consult
from mirrorsync.errors import ConfigError
from mirrorsync.location import is_postgres_url
from mirrorsync.paths import expand_path


def check(config: Config) -> None:
    path = config.path
    check_database(config)
    _check_path_variables(config)
    for kind in ("catalog", "manifest", "index", "page"):
        try:
            setattr(config.limits, kind, parse_size(getattr(config.limits, kind)))
        except ValueError as exc:
            raise ConfigError(path, f"limits.{kind}", str(exc)) from None
    _check_ranges(config)
    _check_bundle(config)
    for name in ("deadline", "run_deadline", "revalidate_after"):
        check_duration(path, f"http.{name}", getattr(config.http, name))
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
    check_sources(config)
    check_webhooks(config)
    check_mirrors(config)


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
                    value = parse_duration(value)
                except ValueError:
                    continue  # check_duration names the expected form
            if not allowed.holds(value):
                raise ConfigError(
                    config.path, f"{where}.{field}", f"expected {allowed}, got {value!r}"
                )


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


_VARIABLE_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _unset_variable(text: str) -> str | None:
    """The first ``$VAR``/``${VAR}`` in ``text`` not set in the environment, if any."""
    for match in _VARIABLE_RE.finditer(text):
        name = match[1] or match[2]
        if name not in os.environ:
            return name
    return None


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
