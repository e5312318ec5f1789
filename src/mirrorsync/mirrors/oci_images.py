"""What an OCI copy's images are made of, as pure functions: layers, layer order,
the image architecture of a Spack target, a layer's uncompressed digest."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

from mirrorsync.formats.oci import Descriptor, goarch
from mirrorsync.formats.rawindex import RawInstall
from mirrorsync.mirrors.download import SpecRefused
from mirrorsync.mirrors.plan import Selection
from mirrorsync.redact import redact_url

_STEP = 1 << 20


@dataclass(frozen=True, slots=True)
class Layer:
    """A binary's tarball as an image layer."""

    descriptor: Descriptor
    diff_id: str  # sha256:<hex> of the tarball unpacked


@dataclass(frozen=True, slots=True)
class Prepared:
    """One binary with its layer in the target; what its image needs besides."""

    record: RawInstall
    layer: Layer
    spec_file: dict[str, object] | None  # v3 source: the spec file, for the config
    verbatim: bytes | None = None  # OCI source: the image manifest, copied as it is


def _x86(target: str) -> bool:
    return target.startswith(("x86_64", "zen", "skylake", "icelake", "cascadelake")) or target in {
        "haswell", "broadwell", "ivybridge", "sandybridge", "nehalem", "westmere", "core2",
        "nocona", "k10", "bulldozer", "piledriver", "steamroller", "excavator",
        "cannonlake", "sapphirerapids", "mic_knl", "x86_64_v2", "x86_64_v3", "x86_64_v4",
    }  # fmt: skip


def architecture(target: str) -> str:
    """The image's architecture for a Spack target (Go's names, as Spack gives them)."""
    if _x86(target):
        return goarch("x86_64")
    if target.startswith(("aarch64", "neoverse", "a64fx", "graviton", "thunderx", "cortex", "m1")):
        return goarch("aarch64")
    return goarch(target)


def runtime_order(selection: Selection, root: str) -> list[str]:
    """The binary's link/run closure, dependencies before dependents, itself last
    (Spack's layer order: its topological traversal, reversed)."""
    order: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(root, False)]
    while stack:
        spec_hash, done = stack.pop()
        if done:
            order.append(spec_hash)
            continue
        if spec_hash in seen:
            continue
        seen.add(spec_hash)
        stack.append((spec_hash, True))
        record = selection.records.get(spec_hash)
        for dep in sorted(record.runtime_deps if record is not None else (), reverse=True):
            if dep not in seen:
                stack.append((dep, False))
    return order


def unpacked_sha256(path: Path, url: str) -> str:
    """The sha256 of a gzip file's content (an image layer's ``diff_id``), streamed."""
    digest = hashlib.sha256()
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        with path.open("rb") as f:
            while chunk := f.read(_STEP):
                data = chunk
                while data:
                    out = decoder.decompress(data, _STEP)
                    digest.update(out)
                    data = decoder.unconsumed_tail
                    if decoder.eof:
                        break
                if decoder.eof:
                    break
        if not decoder.eof:
            raise SpecRefused(f"tarball {redact_url(url)}: its gzip stream is cut short")
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise SpecRefused(f"tarball {redact_url(url)} is not gzip: {exc}") from None
    return digest.hexdigest()
