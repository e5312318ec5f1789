"""Spack's OCI layout as mirrorsync parses it: references, tags, manifests, auth headers.

Pure functions on untrusted bytes (what a registry or a configuration says): each
bad input is one FormatError or ValueError naming the problem, bounded in size.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from mirrorsync.errors import FormatError
from mirrorsync.fetch.oci import docker_credentials, parse_challenge
from mirrorsync.formats.oci import (
    INDEX_TAG,
    MAX_LAYERS,
    Descriptor,
    manifest_bytes,
    parse_image_manifest,
    parse_reference,
    spec_config,
    spec_tag,
)

D1 = "a" * 64
D2 = "b" * 64


def _manifest(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "schemaVersion": 2,
        "config": {"mediaType": "x", "digest": f"sha256:{D1}", "size": 10},
        "layers": [{"mediaType": "y", "digest": f"sha256:{D2}", "size": 20}],
    }
    doc.update(changes)
    return json.dumps(doc).encode()


def test_references_as_spack_reads_them() -> None:
    ref = parse_reference("oci://ghcr.io/Org/Repo/cache")
    assert (ref.scheme, ref.host, ref.name, ref.userinfo) == (
        "https",
        "ghcr.io",
        "org/repo/cache",
        "",
    )
    assert ref.api == "https://ghcr.io/v2/org/repo/cache"
    plain = parse_reference("oci+http://u:p@127.0.0.1:5000/cache/")
    assert (plain.scheme, plain.host, plain.name, plain.userinfo) == (
        "http",
        "127.0.0.1:5000",
        "cache",
        "u:p",
    )
    assert plain.url == "oci+http://127.0.0.1:5000/cache"  # no credentials


@pytest.mark.parametrize(
    "url",
    [
        "oci://ghcr.io",  # no repository
        "oci:///cache",  # no host
        "oci://ghcr.io/cache:latest",  # a tag
        "oci://ghcr.io/cache@sha256:" + D1,  # a digest
        "oci://ghcr.io/ca che",
        "oci://bad_host!/cache",
        "https://ghcr.io/cache",
        "oci://ghcr.io/" + "a" * 300,
    ],
)
def test_bad_references_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_reference(url)


def test_spec_tags_are_spacks() -> None:
    assert spec_tag("zlib", "1.3", "x" * 32) == f"zlib-1.3-{'x' * 32}.spack"
    # Characters a tag cannot hold become "_" (Spack's ensure_valid_tag) ...
    assert spec_tag("foo", "git.abc=1.0", "h" * 32) == f"foo-git.abc_1.0-{'h' * 32}.spack"
    # ... and a tag over 128 characters keeps its first and last 64.
    long = spec_tag("p" * 100, "1", "h" * 32)
    assert len(long) == 128 and long.endswith(f"{'h' * 32}.spack") and long.startswith("p" * 64)
    assert INDEX_TAG == "index.spack"


def test_a_spack_manifest_parses_and_renders_as_spack_writes_it() -> None:
    data = manifest_bytes(Descriptor("x", D1, 10), [Descriptor("y", D2, 20)], {"k": "v"})
    assert b" " not in data  # compact separators, as json.dumps(..., separators=(",", ":"))
    parsed = parse_image_manifest(data)
    assert parsed.config.sha256 == D1 and parsed.layers[-1].sha256 == D2
    assert parsed.layers[-1].size == 20 and parsed.annotations == {"k": "v"}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (_manifest(schemaVersion=1), "schemaVersion"),
        (_manifest(mediaType="application/vnd.oci.image.index.v1+json"), "not an image manifest"),
        (_manifest(layers=[]), "no layers"),
        (_manifest(config={"digest": "md5:abc", "size": 1}), "is not sha256"),
        (_manifest(config={"digest": f"sha256:{D1.upper()}", "size": 1}), "is not sha256"),
        (_manifest(config={"digest": f"sha256:{D1}", "size": -1}), "not a byte count"),
        (_manifest(config={"digest": f"sha256:{D1}", "size": True}), "not a byte count"),
        (_manifest(config={"digest": f"sha256:{D1}", "size": 1 << 60}), "not a byte count"),
        (_manifest(config="x"), "not an object"),
        (_manifest(annotations="x"), "annotations"),
        (
            _manifest(layers=[{"digest": f"sha256:{D2}", "size": 1}] * (MAX_LAYERS + 1)),
            "layers, over",
        ),
        (b" " * (4 << 20) + b"{}", "over"),
    ],
)
def test_hostile_manifests_are_one_format_error(data: bytes, problem: str) -> None:
    with pytest.raises(FormatError) as caught:
        parse_image_manifest(data, "http://r/v2/c/manifests/t")
    assert problem in str(caught.value)
    assert len(str(caught.value)) < 400


def test_the_config_is_the_spec_file_in_spacks_image_config() -> None:
    config = json.loads(spec_config({"spec": {"nodes": []}, "x": 1}, "amd64", [f"sha256:{D1}"]))
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{D1}"]}
    assert config["spec"] == {"nodes": []} and config["x"] == 1


def test_www_authenticate_challenges() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://ghcr.io/token",
        "service": "ghcr.io",
        "scope": "repository:a/b:pull",
    }
    assert parse_challenge('Basic realm="x \\"y\\""') == ("basic", {"realm": 'x "y"'})
    scheme, params = parse_challenge("Bearer " + "a=b," * 100_000)
    assert scheme == "bearer" and len(params) == 1  # bounded


def test_docker_config_credentials(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    auth = base64.b64encode(b"alice:pa:ss").decode()
    config.write_text(
        json.dumps(
            {
                "auths": {
                    "https://ghcr.io/v1/": {"auth": auth},
                    "registry.example": {"username": "bob", "password": "pw"},
                    "broken.example": {"auth": "!!!"},
                },
                "credsStore": "desktop",
            }
        )
    )
    assert docker_credentials("ghcr.io", config) == ("alice", "pa:ss")
    assert docker_credentials("registry.example", config) == ("bob", "pw")
    assert docker_credentials("broken.example", config) is None
    assert docker_credentials("other.example", config) is None
    assert docker_credentials("ghcr.io", tmp_path / "missing.json") is None
    config.write_text("{" * 10)
    assert docker_credentials("ghcr.io", config) is None
    big = tmp_path / "big.json"
    big.write_bytes(b" " * ((1 << 20) + 10))
    assert docker_credentials("ghcr.io", big) is None


def test_an_upload_answered_before_its_body_is_sent_is_one_error(tmp_path: Path) -> None:
    """A server that refuses an upload at once (a registry's 400, 413) while the file is
    still being sent: one FetchError naming the URL, nothing else raised."""
    import socket
    import threading

    import anyio

    from mirrorsync.config import HttpConfig, RetryConfig
    from mirrorsync.errors import FetchError
    from mirrorsync.fetch import HttpClient
    from mirrorsync.redact import Url

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)  # the request line and headers, not the body
                conn.sendall(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )

    threading.Thread(target=serve, daemon=True).start()
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 << 20))
    url = Url(f"http://127.0.0.1:{port}/v2/r/blobs/uploads/x")

    async def main() -> str:
        config = HttpConfig(retries=RetryConfig(attempts=1))
        async with HttpClient(config) as client:
            try:
                await client.send("PUT", url, content=big)
            except FetchError as exc:
                return str(exc)
        return "no error"

    try:
        said = anyio.run(main)
    finally:
        listener.close()
    assert said.startswith(str(url)), said


def test_layers_are_dependencies_first_the_binary_last() -> None:
    """Spack's layer order: its topological traversal of link/run dependencies,
    reversed (each once, the binary itself last)."""
    from mirrorsync.formats.rawindex import RawInstall
    from mirrorsync.mirrors.oci_images import architecture, runtime_order
    from mirrorsync.mirrors.plan import Selection

    def record(h: str, *deps: str) -> RawInstall:
        return RawInstall(h, b"{}", h, "1", "linux", "debian12", "x86_64", True, deps)

    records = {
        "app": record("app", "lib", "data"),
        "lib": record("lib", "base"),
        "data": record("data", "base"),
        "base": record("base"),
    }
    selection = Selection("8", records, {h: "root" for h in records}, 4, ())
    order = runtime_order(selection, "app")
    assert order[-1] == "app" and sorted(order) == sorted(records)
    assert order.index("base") < order.index("lib") and order.index("base") < order.index("data")
    assert runtime_order(selection, "base") == ["base"]
    assert architecture("x86_64_v3") == "amd64" and architecture("zen2") == "amd64"
    assert architecture("neoverse_v1") == "arm64" and architecture("ppc64le") == "ppc64le"
