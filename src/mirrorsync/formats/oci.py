"""Spack build caches in OCI registries: references, tags, image manifests (pure).

Spack 1.1 (``lib/spack/spack/oci/`` and ``binary_distribution.py``) pushes a
build cache to a registry repository as images:

- each binary is an image tagged ``<name>-<version>-<hash>.spack`` (characters
  outside ``[A-Za-z0-9_.-]`` made ``_``; over 128 characters: the first and
  last 64); its manifest (``application/vnd.oci.image.manifest.v1+json``) has
  the spec file as its *config* blob (the spec dict with the image config's
  ``architecture``, ``os``, ``rootfs.diff_ids`` and ``config.Env`` beside it),
  its link/run dependencies' tarballs then its own as *layers* (the last layer
  is the binary) and the annotation ``org.opencontainers.image.description``;
- the index is the image tagged ``index.spack``: an empty ``{}`` config and one
  layer, the index JSON (a Spack database, uncompressed, though labelled
  ``tar+gzip``).

Nothing is signed. Bytes from a registry are untrusted: digests must be
``sha256:`` and 64 hex digits, sizes bounded, tags and names as the
distribution spec allows them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mirrorsync.errors import FormatError

INDEX_TAG = "index.spack"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_ACCEPT = f"{MANIFEST_MEDIA_TYPE}, {DOCKER_MANIFEST_MEDIA_TYPE}"
DESCRIPTION = "org.opencontainers.image.description"

#: An image manifest is a few KiB; a registry's own limit is 4 MiB.
MANIFEST_CAP = 4 << 20
#: Layers of one image: a spec's link/run dependencies and itself.
MAX_LAYERS = 10_000
_MAX_SIZE = 1 << 53

_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
# The distribution spec's repository name: lower-case path components.
_NAME_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?$"
)
_UNSAFE_TAG_CHAR = re.compile(r"[^\w.-]", re.ASCII)


def is_oci_url(url: str) -> bool:
    """``oci://`` (https) or ``oci+http://`` (plain http), as Spack spells them."""
    return url.startswith(("oci://", "oci+http://"))


@dataclass(frozen=True, slots=True)
class Reference:
    """A registry repository: ``oci://host[:port]/name`` (https) or ``oci+http://``."""

    scheme: str  # "https" or "http"
    host: str  # host[:port], as given
    name: str  # the repository, lower-case as Spack makes it
    userinfo: str = ""  # "user:secret" given in the URL (the address only, never shown)

    @property
    def api(self) -> str:
        """``scheme://[userinfo@]host/v2/name``: the repository's API root."""
        auth = f"{self.userinfo}@" if self.userinfo else ""
        return f"{self.scheme}://{auth}{self.host}/v2/{self.name}"

    @property
    def url(self) -> str:
        """The ``oci://`` / ``oci+http://`` form (no credentials)."""
        prefix = "oci://" if self.scheme == "https" else "oci+http://"
        return f"{prefix}{self.host}/{self.name}"


def parse_reference(url: str) -> Reference:
    """``oci://host/name`` or ``oci+http://host/name``; ValueError naming the problem.

    A registry host is required (Spack's Docker Hub default is not guessed), and
    no tag or digest: the repository holds the whole cache."""
    if url.startswith("oci://"):
        scheme, rest = "https", url[len("oci://") :]
    elif url.startswith("oci+http://"):
        scheme, rest = "http", url[len("oci+http://") :]
    else:
        raise ValueError("expected oci://REGISTRY/REPOSITORY or oci+http://REGISTRY/REPOSITORY")
    rest = rest.rstrip("/")
    authority, _, name = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at:
        userinfo, host = "", authority
    if not host or not _HOST_RE.match(host):
        raise ValueError(f"no valid registry host in {url[:200]!r}")
    name = name.lower()  # as Spack does: GitHub's org/repo may have capitals
    if not name or len(name) > 255 or not _NAME_RE.match(name):
        raise ValueError(f"no valid repository name in {url[:200]!r}")
    if any(c in name for c in ":@"):
        raise ValueError("a repository URL names no tag or digest")
    return Reference(scheme, host, name, userinfo)


def valid_tag(tag: str) -> str:
    """A tag as Spack makes it valid (``spack.oci.image.ensure_valid_tag``)."""
    sanitized = _UNSAFE_TAG_CHAR.sub("_", tag)
    if len(sanitized) > 128:
        return sanitized[:64] + sanitized[-64:]
    return sanitized


def spec_tag(name: str, version: str, spec_hash: str) -> str:
    """The tag Spack gives a binary's image (``_oci_default_tag``)."""
    return valid_tag(f"{name}-{version}-{spec_hash}.spack")


def is_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag))


def digest_hex(value: object, what: str, url: str | None = None) -> str:
    """The hex of a ``sha256:<64 hex>`` digest; FormatError for anything else."""
    if isinstance(value, str):
        match = _DIGEST_RE.match(value)
        if match:
            return match.group(1)
    shown = repr(value)[:80]
    raise FormatError(what, f"digest {shown} is not sha256:<64 hex digits>", url)


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    sha256: str  # hex
    size: int

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str]


def _descriptor(value: object, what: str, url: str | None) -> Descriptor:
    if not isinstance(value, dict):
        raise FormatError(what, "a descriptor is not an object", url)
    media_type = value.get("mediaType", "")
    if not isinstance(media_type, str) or len(media_type) > 256:
        raise FormatError(what, "a descriptor's mediaType is not a short string", url)
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < _MAX_SIZE:
        raise FormatError(what, f"a descriptor's size {str(size)[:40]!r} is not a byte count", url)
    return Descriptor(media_type, digest_hex(value.get("digest"), what, url), size)


def parse_image_manifest(data: bytes, url: str | None = None) -> ImageManifest:
    """An image manifest (OCI or Docker v2 schema 2); FormatError otherwise
    (an image index too: Spack pushes none)."""
    what = "OCI image manifest"
    if len(data) > MANIFEST_CAP:
        raise FormatError(what, f"{len(data)} bytes, over {MANIFEST_CAP}", url)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(what, f"not JSON ({str(exc)[:80]})", url) from None
    if not isinstance(doc, dict):
        raise FormatError(what, "not a JSON object", url)
    if doc.get("schemaVersion") != 2:
        raise FormatError(what, "schemaVersion is not 2", url)
    media_type = doc.get("mediaType", MANIFEST_MEDIA_TYPE)
    if media_type not in (MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE):
        raise FormatError(what, f"mediaType {str(media_type)[:80]!r} is not an image manifest", url)
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise FormatError(what, "no layers", url)
    if len(layers) > MAX_LAYERS:
        raise FormatError(what, f"{len(layers)} layers, over {MAX_LAYERS}", url)
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise FormatError(what, "annotations is not an object", url)
    return ImageManifest(
        media_type,
        _descriptor(doc.get("config"), what, url),
        tuple(_descriptor(layer, what, url) for layer in layers),
        {str(k)[:256]: str(v)[:4096] for k, v in annotations.items()},
    )


def manifest_bytes(
    config: Descriptor, layers: list[Descriptor], annotations: dict[str, str] | None = None
) -> bytes:
    """An image manifest as Spack uploads one (``json.dumps``, compact separators)."""
    doc: dict[str, Any] = {
        "mediaType": MANIFEST_MEDIA_TYPE,
        "schemaVersion": 2,
        "config": config.as_json(),
        "layers": [layer.as_json() for layer in layers],
    }
    if annotations:
        doc["annotations"] = annotations
    return json.dumps(doc, separators=(",", ":")).encode()


def goarch(target_family: str) -> str:
    """Spack's ``_oci_archspec_to_gooarch``: x86_64 -> amd64, aarch64 -> arm64."""
    return {"aarch64": "arm64", "x86_64": "amd64"}.get(target_family, target_family)


def spec_config(spec_file: dict[str, Any], architecture: str, diff_ids: list[str]) -> bytes:
    """A binary's image config as Spack pushes it: the spec file (its ``spec``,
    ``buildcache_layout_version``, ``binary_cache_checksum``, ``archive_*``) merged
    into ``default_config(architecture, "linux")`` with the layers' uncompressed
    digests (``sha256:...``) as ``rootfs.diff_ids`` and Spack's default PATH."""
    config: dict[str, Any] = {
        "architecture": architecture,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "config": {"Env": ["PATH=/bin:/usr/bin"]},
    }
    config.update(spec_file)
    return json.dumps(config, separators=(",", ":")).encode()
