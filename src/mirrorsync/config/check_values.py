"""Checks of single values that every section has: URLs (http, file, s3), globs,
durations, and an entry's ``s3:`` settings (added to ``http.s3`` for its URLs).
"""

from __future__ import annotations

import re

from mirrorsync.config.numbers import DURATION_HINT, parse_duration
from mirrorsync.config.schema import Config, S3Settings
from mirrorsync.errors import ConfigError


def check_duration(path: str, key: str, value: float | str) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):  # NaN fails this too
        raise ConfigError(path, key, f"expected {DURATION_HINT}, got {value!r}")


def check_url(
    path: str, key: str, url: str, *, files: bool = False, s3: bool = False, oci: bool = False
) -> None:
    """An http(s) URL; with ``files``, a ``file:///absolute/path`` too; with ``s3``,
    an ``s3://bucket/prefix`` too (``oci``: the message names oci:// URLs, checked
    before this)."""
    if s3 and url.startswith("s3:"):
        check_s3_url(path, key, url)
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


_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_s3_url(path: str, key: str, url: str) -> None:
    """``s3://bucket[/prefix]``: a bucket name as S3 allows it, a plain prefix."""
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not url.startswith("s3://") or not _S3_BUCKET.match(bucket):
        raise ConfigError(path, key, f"expected s3://bucket/prefix, got {url!r}")
    if any(c in prefix for c in "?#\\") or ".." in prefix.split("/") or "//" in prefix:
        raise ConfigError(path, key, f"expected a plain prefix after the bucket, got {url!r}")


def add_s3(
    config: Config, path: str, key: str, settings: S3Settings | None, urls: list[str]
) -> None:
    """An entry's ``s3:`` applies to its own s3:// URLs (``http.s3``, by prefix)."""
    if settings is None:
        return
    if not any(u.startswith("s3://") for u in urls):
        raise ConfigError(path, f"{key}.s3", "applies to s3:// URLs only; this entry has none")
    if settings.endpoint_url is not None:
        check_url(path, f"{key}.s3.endpoint_url", settings.endpoint_url)
    for url in urls:
        if url.startswith("s3://"):
            config.http.s3[url.rstrip("/")] = settings


def check_glob(path: str, key: str, glob: str) -> None:
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
