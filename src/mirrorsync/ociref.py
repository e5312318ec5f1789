"""Where a Spack build cache lives in an OCI registry: the repository reference
(``oci://host/name``, ``oci+http://``), Spack's tags, and the protocol's media types.

Names only, no I/O and no parsing of registry answers (``formats/oci.py`` parses
image manifests): the configuration checks a copy's or source's URL with it, and
the fetch client builds registry requests with it, both below the formats layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INDEX_TAG = "index.spack"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_ACCEPT = f"{MANIFEST_MEDIA_TYPE}, {DOCKER_MANIFEST_MEDIA_TYPE}"
DESCRIPTION = "org.opencontainers.image.description"

#: An image manifest is a few KiB; a registry's own limit is 4 MiB.
MANIFEST_CAP = 4 << 20

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
