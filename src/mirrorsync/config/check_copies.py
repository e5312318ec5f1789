"""The checks of ``mirrors:`` (local copies): unique names, paths that neither nest nor
overlap a source's, a catalog or mirror source, filters, selection and ``keep``.
"""

from __future__ import annotations

import re
import urllib.parse

from mirrorsync.config.check_values import add_s3, check_glob, check_s3_url, check_url
from mirrorsync.config.numbers import parse_duration
from mirrorsync.config.schema import (
    CatalogSource,
    Config,
    MirrorCopy,
    MirrorSource,
    PagesSource,
    Source,
)
from mirrorsync.config_file import consult, unrepeatable
from mirrorsync.errors import ConfigError
from mirrorsync.ociref import parse_reference
from mirrorsync.redact import redact_url


def check_mirrors(config: Config) -> None:
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
            check_url(path, f"{key}.path", copy.path, files=True)
        if copy.path.startswith("s3:"):
            check_s3_url(path, f"{key}.path", copy.path)
        add_s3(config, path, key, copy.s3, [copy.path])
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
            check_glob(path, f"{key}.{field}[{j}]", glob)
    try:
        after = parse_duration(copy.delete_after)
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
            seconds = parse_duration(copy.keep)
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
