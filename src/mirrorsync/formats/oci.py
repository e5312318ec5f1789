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
from mirrorsync.ociref import (
    CONFIG_MEDIA_TYPE,
    DESCRIPTION,
    DOCKER_MANIFEST_MEDIA_TYPE,
    INDEX_TAG,
    LAYER_MEDIA_TYPE,
    MANIFEST_ACCEPT,
    MANIFEST_CAP,
    MANIFEST_MEDIA_TYPE,
    Reference,
    is_oci_url,
    is_tag,
    parse_reference,
    spec_tag,
    valid_tag,
)

#: Layers of one image: a spec's link/run dependencies and itself.
MAX_LAYERS = 10_000
_MAX_SIZE = 1 << 53
#: The names below the formats layer (``mirrorsync.ociref``) are re-exported here.
__all__ = [
    "CONFIG_MEDIA_TYPE",
    "DESCRIPTION",
    "DOCKER_MANIFEST_MEDIA_TYPE",
    "INDEX_TAG",
    "LAYER_MEDIA_TYPE",
    "MANIFEST_ACCEPT",
    "MANIFEST_CAP",
    "MANIFEST_MEDIA_TYPE",
    "MAX_LAYERS",
    "Descriptor",
    "ImageManifest",
    "Reference",
    "digest_hex",
    "goarch",
    "is_oci_url",
    "is_tag",
    "manifest_bytes",
    "parse_image_manifest",
    "parse_reference",
    "spec_config",
    "spec_tag",
    "valid_tag",
]

_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")


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
