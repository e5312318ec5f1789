"""The checks of ``sources:``: unique names, each kind's URLs (pages, oci://, s3://),
trusted keys, release and stack globs.
"""

from __future__ import annotations

from mirrorsync.config.check_values import add_s3, check_glob, check_url
from mirrorsync.config.schema import (
    CatalogSource,
    Config,
    MirrorSource,
    PagesSource,
    trusted_fingerprint,
)
from mirrorsync.config_file import consult
from mirrorsync.errors import ConfigError
from mirrorsync.ociref import parse_reference
from mirrorsync.paths import expand_path
from mirrorsync.redact import redact_url


def check_sources(config: Config) -> None:
    path = config.path
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
            check_url(path, f"{key}.url", source.url, files=mirror, s3=mirror, oci=mirror)
        _check_trusted_keys(path, key, source)
        urls = list(source.bucket_urls.values()) if isinstance(source, CatalogSource) else []
        add_s3(config, path, key, source.s3, [source.url, *urls])
        if isinstance(source, CatalogSource):
            for bucket, base in source.bucket_urls.items():
                check_url(path, f"{key}.bucket_urls.{bucket}", base, s3=True)
            for field in ("releases", "exclude_releases", "stacks", "exclude_stacks"):
                for j, glob in enumerate(getattr(source, field) or []):
                    check_glob(path, f"{key}.{field}[{j}]", glob)


def _check_page_urls(path: str, key: str, urls: list[str]) -> None:
    if not urls:
        raise ConfigError(path, f"{key}.urls", "expected at least one page URL")
    seen: set[str] = set()
    for j, url in enumerate(urls):
        check_url(path, f"{key}.urls[{j}]", url)
        if url in seen:
            raise ConfigError(path, f"{key}.urls[{j}]", f"duplicate URL {url!r}")
        seen.add(url)


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
