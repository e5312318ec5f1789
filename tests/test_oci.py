"""OCI registries as sources and copy targets, against a real registry and a real Spack.

One Spack (the builder) installs the packages of ``tests/spack/`` and pushes the
same specs to a repository of Debian's ``docker-registry`` (``spack buildcache
push --unsigned oci+http://...``: Spack signs nothing it pushes to a registry) and,
signed, to a directory cache (read with ``verify_signatures``). mirrorsync syncs both
(real CLI processes); the OCI source must give the same events as the directory.
mirrorsync then copies the directory cache into another repository of the same
registry, and a fresh Spack installs from that copy.

One module (one xdist worker): Spack is unpacked, the specs built and pushed, and
the registry started once.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import json_lines, run_cli, write_config
from mirrorsync.fixture.signing import fingerprints, stop_agent
from oci_gateway import Gateway
from registry import Registry
from spackcache import Spack, require_spack, unpack, warnings

pytestmark = pytest.mark.timeout(300)

SPECS = ("msapp@1.0", "msdata@1.0")


@dataclass
class World:
    tmp: Path
    spack: Path
    builder: Spack
    registry: Registry  # plain http: oci+http://
    tls: Registry  # the same storage over https (oci://), for Spack to read (see _reader)
    directory: Path  # the same specs pushed as a v3 directory cache, signed
    key: Path  # the builder's public key, exported


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tar = require_spack()
    tmp = tmp_path_factory.mktemp("oci")
    spack = unpack(tar, tmp / "dist")
    builder = Spack(spack, tmp / "builder")
    try:
        builder.run("gpg", "create", "--comment", "test", "Mirrorsync Test", "t@example.invalid")
        (fingerprint,) = fingerprints(builder.gnupghome)
        key = tmp / "key.pub"
        builder.run("gpg", "export", str(key))
        for spec in SPECS:
            builder.run("install", spec)
        plain = Registry(tmp / "registry")
        with plain as registry, Registry(tmp / "tls", tls=True, storage=plain.storage) as tls:
            directory = tmp / "dircache"
            # Spack pushes to a registry unsigned (it signs nothing there), to the
            # directory signed: the copy of the directory holds verified specs.
            for target, how in (
                (registry.url("cache"), ["--unsigned"]),
                (f"file://{directory}", ["--key", fingerprint]),
            ):
                builder.run(
                    "buildcache",
                    "push",
                    *how,
                    "--without-build-dependencies",
                    "--update-index",
                    target,
                    *SPECS,
                )
            yield World(tmp, spack, builder, registry, tls, directory, key)
    finally:
        stop_agent(builder.gnupghome)


def _config(world: World, name: str, body: str) -> Path:
    return write_config(world.tmp / f"{name}.yaml", f"database: {world.tmp / name}.db\n{body}")


def _dir_source(world: World) -> str:
    """Config lines of the signed directory cache as the source ``dir``."""
    return f"""  - name: dir
    kind: mirror
    url: file://{world.directory}
    manifests: all
    verify_signatures: true
    trusted_keys: [{world.key}]
"""


def _oci_source(world: World) -> str:
    """Config lines of the registry's copy of that cache as the source ``oci``."""
    return f"""  - name: oci
    kind: mirror
    url: {world.registry.url("cache")}
    manifests: all
"""


def _ok(config: Path, *args: str, cwd: Path, stdout: bool = False) -> str:
    """What a successful CLI run said (``stdout``: only its standard output)."""
    done = run_cli("-c", str(config), *args, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout if stdout else done.stdout + done.stderr


def _events(config: Path, cwd: Path) -> dict[str, set[tuple[Any, ...]]]:
    by_source: dict[str, set[tuple[Any, ...]]] = {}
    for e in json_lines(_ok(config, "events", "--json", cwd=cwd, stdout=True)):
        fields = (e["type"], e["release"], e["stack"], e["hash"], e["name"], e["version"])
        by_source.setdefault(e["source"], set()).add(fields)
    return by_source


def test_oci_source_gives_the_same_events_as_the_directory_cache(world: World) -> None:
    config = _config(
        world,
        "same",
        f"""sources:
{_dir_source(world)}{_oci_source(world)}""",
    )
    said = _ok(config, "-v", "once", cwd=world.tmp)
    assert "oci:default/root: 4 spec manifests fetched: 4 ok" in said, said
    events = _events(config, world.tmp)
    assert events["oci"] == events["dir"]
    assert {e[0] for e in events["oci"]} == {"stack.added", "spec.added"}
    assert len([e for e in events["oci"] if e[0] == "spec.added"]) == 4
    # The same sizes and tarball checksums as the directory's manifests say.
    assert _tarballs(config, "oci", world.tmp) == _tarballs(config, "dir", world.tmp)
    checked = _ok(config, "config", "check", cwd=world.tmp)
    assert f"OCI build cache at {world.registry.url('cache')} (its index.spack image)" in checked
    # A second run: the index tag's digest is unchanged, nothing happens.
    again = _ok(config, "once", cwd=world.tmp)
    assert "oci:default/root unchanged" in again, again
    assert _events(config, world.tmp) == events


def _tarballs(config: Path, source: str, cwd: Path) -> dict[str, tuple[Any, ...]]:
    said = _ok(
        config,
        "specs",
        "--source",
        source,
        "--release",
        "default",
        "--stack",
        "root",
        "--json",
        cwd=cwd,
        stdout=True,
    )
    return {
        s["hash"]: (s["manifest_status"], s["tarball_size"], s["tarball_checksum"])
        for s in json_lines(said)
    }


def test_verify_signatures_on_an_oci_source_is_a_configuration_error(world: World) -> None:
    config = _config(
        world,
        "signed",
        f"""sources:
  - name: oci
    kind: mirror
    url: {world.registry.url("cache")}
    verify_signatures: true
""",
    )
    done = run_cli("-c", str(config), "once", cwd=world.tmp)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sources[0].verify_signatures: an OCI build cache is unsigned" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_missing_repository_fails_its_stack_with_one_line(world: World) -> None:
    config = _config(
        world,
        "missing",
        f"""sources:
  - name: oci
    kind: mirror
    url: {world.registry.url("nothing/here")}
""",
    )
    done = run_cli("-c", str(config), "once", cwd=world.tmp)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "/v2/nothing/here/manifests/index.spack: HTTP 404" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


class _Reader(Spack):
    """A fresh Spack that trusts the test registry's certificate, with a download
    cache of its own (so every blob it installs comes from the registry)."""

    def __init__(self, spack: Path, home: Path, certificate: Path) -> None:
        super().__init__(spack, home)
        self.certificate = certificate
        config = home / "system" / "config.yaml"
        config.write_text(config.read_text() + f"  source_cache: {home / 'downloads'}\n")

    def env(self) -> dict[str, str]:
        return {**super().env(), "SSL_CERT_FILE": str(self.certificate)}


def _install(world: World, name: str, repository: str) -> tuple[list[str], str, Spack]:
    """What a site does with an OCI build cache: ``spack mirror add`` its oci:// URL,
    list it, install from it (each spec on its own, as the builder installed them).

    Read over https: Spack 1.1 reads the index of an ``oci://`` mirror only; with
    ``oci+http://`` its index lookup takes the URL for a plain build cache and fails
    ("unknown url type: oci+http"), so ``buildcache list`` shows nothing and
    ``install`` concretizes without the cache's specs."""
    spack = _Reader(world.spack, world.tmp / name, world.tls.certificate)
    said = [spack.run("mirror", "add", "--unsigned", "cache", world.tls.url(repository))]
    listed = spack.run("buildcache", "list", "-aLv")
    said.append(listed)
    for spec in SPECS:
        said.append(spack.run("install", "--cache-only", spec))
    return [line for done in said for line in warnings(done)], listed.stdout, spack


def _copy_config(world: World) -> Path:
    return _config(
        world,
        "copies",
        f"""sources:
{_dir_source(world)}{_oci_source(world)}mirrors:
  - name: from-dir
    path: {world.registry.url("copies/from-dir")}
    source: dir
    delete_after: 0
  - name: from-oci
    path: {world.registry.url("copies/from-oci")}
    source: oci
    delete_after: 0
""",
    )


@pytest.fixture(scope="module")
def copied(world: World) -> Path:
    """Both copies made once: the directory cache and the OCI cache, each into its
    own repository of the registry."""
    config = _copy_config(world)
    said = _ok(config, "once", cwd=world.tmp)
    assert "mirror from-dir published: version 1, 4 binaries" in said, said
    assert "mirror from-oci published: version 1, 4 binaries" in said, said
    return config


@pytest.mark.parametrize("mirror", ["from-dir", "from-oci"])
def test_spack_installs_from_mirrorsyncs_oci_copy(world: World, copied: Path, mirror: str) -> None:
    said, listed, spack = _install(world, f"reader-{mirror}", f"copies/{mirror}")
    assert said == []
    assert len([line for line in listed.splitlines() if line.strip() and " ms" in line]) == 4
    installed = {r["spec"]["name"] for r in spack.database().values() if r["installed"]}
    assert {"msapp", "msdata", "mslib"} <= installed
    # The images are Spack's: its tags, the spec file as config, the binary last;
    # from the signed directory cache too (its verified specs, unsigned: the reader's
    # mirror is --unsigned and Spack installed without a key).
    tags = world.registry.tags(f"copies/{mirror}")
    assert sorted(tags) == sorted(world.registry.tags("cache"))
    assert not (spack.gnupghome / "pubring.kbx").exists()


def test_a_second_copy_run_uploads_nothing(world: World, copied: Path) -> None:
    said = _ok(copied, "-vv", "mirror", cwd=world.tmp)
    requests = [line for line in said.splitlines() if "mirrorsync.http:" in line]
    assert not [line for line in requests if " PUT " in line or " POST " in line], requests
    assert "mirror from-dir unchanged" in said and "mirror from-oci unchanged" in said
    checked = _ok(copied, "config", "check", cwd=world.tmp)
    assert f"mirror from-dir: {world.registry.url('copies/from-dir')} (OCI" in checked, checked


def _sync_only(world: World, name: str, url: str, extra: str = "") -> Path:
    return _config(
        world,
        name,
        f"""sources:
  - name: oci
    kind: mirror
    url: {url}
    manifests: all
{extra}""",
    )


def test_anonymous_bearer_tokens_read_and_push(world: World) -> None:
    """A registry that asks for tokens (as ghcr.io does for public images): one
    anonymous token per repository and access, asked for once, never shown; its
    blobs redirected to another origin (a CDN, S3), which gets no token."""
    with Gateway(world.registry.host, cdn=True) as gateway:
        extra = f"""{_dir_source(world)}mirrors:
  - name: pushed
    path: {gateway.url("tokens/copy")}
    source: dir
"""
        config = _sync_only(world, "bearer", gateway.url("cache"), extra)
        said = _ok(config, "-vv", "once", cwd=world.tmp)
        assert "oci:default/root: 4 spec manifests fetched: 4 ok" in said, said
        assert "mirror pushed published: version 1, 4 binaries" in said, said
        assert sorted(world.registry.tags("tokens/copy")) == sorted(world.registry.tags("cache"))
    scopes = {scope for _, scope in gateway.tokens}
    assert scopes == {"repository:cache:pull", "repository:tokens/copy:pull,push"}, gateway.tokens
    assert len(gateway.tokens) <= 4, gateway.tokens  # logged in once per client, not per request
    assert "tok0" not in said and "Bearer" not in said
    assert gateway.cdn_requests, "the index blob was not redirected"
    assert all(given is None for _, given in gateway.cdn_requests), gateway.cdn_requests


def _docker_config(world: World, name: str, host: str, user: str, secret: str) -> Path:
    directory = world.tmp / name
    directory.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory


@pytest.fixture(scope="module")
def basic(world: World) -> Iterator[Registry]:
    """The same storage behind a registry that wants Basic credentials (htpasswd)."""
    directory = world.tmp / "basic"
    directory.mkdir()
    (directory / "htpasswd").write_text(f"alice:{_BCRYPT}\n")
    auth = f"auth:\n  htpasswd:\n    realm: test-realm\n    path: {directory / 'htpasswd'}\n"
    with Registry(directory, auth, storage=world.registry.storage) as registry:
        yield registry


#: bcrypt (cost 4, as the registry's htpasswd wants) of "s3cret-pass".
_BCRYPT = "$2b$04$/3Q3PAC6vHQ8vle99W1QDuf3/jdgtsKY7krJU1GBwmv97c6zYn8EO"


def test_basic_credentials_from_dockers_config(world: World, basic: Registry) -> None:
    docker = _docker_config(world, "docker-ok", basic.host, "alice", "s3cret-pass")
    config = _sync_only(world, "basic-ok", basic.url("cache"))
    done = run_cli("-c", str(config), "once", cwd=world.tmp, env={"DOCKER_CONFIG": str(docker)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    # verify: every blob of every image checked, with the same credentials.
    env = {"DOCKER_CONFIG": str(docker)}
    done = run_cli("-c", str(config), "verify", "--checksums", cwd=world.tmp, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 specs in 1 stack, 0 problems" in done.stdout + done.stderr


def test_refused_credentials_fail_with_one_line_and_no_secret(
    world: World, basic: Registry
) -> None:
    docker = _docker_config(world, "docker-bad", basic.host, "alice", "wrong-pass")
    config = _sync_only(world, "basic-bad", basic.url("cache"))
    done = run_cli("-c", str(config), "once", cwd=world.tmp, env={"DOCKER_CONFIG": str(docker)})
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("mirrorsync: failed")]
    assert len(failed) == 1, done.stderr
    assert "/v2/cache/manifests/index.spack: HTTP 401" in failed[0]
    assert "refused the credentials" in failed[0]
    assert "wrong-pass" not in done.stderr and "Traceback" not in done.stderr
    # Credentials in the URL instead: used, and masked wherever the URL is shown.
    inline = basic.url("cache").replace("://", "://alice:s3cret-pass@")
    config = _sync_only(world, "basic-inline", inline)
    said = _ok(config, "-vv", "once", cwd=world.tmp)
    assert "s3cret" not in said and "oci:default/root: 4 spec manifests fetched: 4 ok" in said


def test_chunked_and_monolithic_uploads(world: World) -> None:
    """Both upload forms against the real registry: one PUT, and PATCHes of a chunk
    each (the last one short) closed by a PUT; the registry holds the right bytes."""
    import hashlib

    import anyio

    from mirrorsync.config import HttpConfig
    from mirrorsync.fetch import HttpClient, Tally
    from mirrorsync.fetch.oci import OciRepository
    from mirrorsync.formats.oci import parse_reference

    big = bytes(range(256)) * (10 * 1024 + 7)  # 2.5 MiB and a bit
    small = b"small blob"

    async def main() -> tuple[bytes, bytes, int | None]:
        async with HttpClient(HttpConfig()) as client:
            repository = OciRepository(
                client, parse_reference(world.registry.url("uploads")), push=True
            )
            path = world.tmp / "big.blob"
            path.write_bytes(big)
            digest = hashlib.sha256(big).hexdigest()
            await repository.put_blob(digest, path, len(big), chunk_size=1 << 20, tally=Tally())
            other = hashlib.sha256(small).hexdigest()
            await repository.put_blob(other, small, len(small))
            return (
                await repository.blob(digest, len(big)),
                await repository.blob(other, len(small)),
                await repository.blob_size("0" * 64),
            )

    got_big, got_small, missing = anyio.run(main)
    assert got_big == big and got_small == small and missing is None


def test_tags_the_index_no_longer_lists_are_deleted(world: World) -> None:
    def config(packages: str) -> Path:
        return _config(
            world,
            "prune",
            f"""sources:
{_dir_source(world)}mirrors:
  - name: pruned
    path: {world.registry.url("prune")}
    source: dir
    delete_after: 0
{packages}""",
        )

    _ok(config(""), "once", cwd=world.tmp)
    assert len(world.registry.tags("prune")) == 5  # 4 binaries and the index
    said = _ok(config('    packages: ["msdata"]\n'), "mirror", cwd=world.tmp)
    assert "deleted 2 files" in said, said
    left = sorted(world.registry.tags("prune"))
    assert [t.split("-")[0] for t in left] == ["index.spack", "msdata", "msdata"], left


def test_a_long_reason_phrase_is_cut_in_the_error_line() -> None:
    """A registry's status line may run to kilobytes: its reason phrase is bounded
    in the one error line (and what is stored of it)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import anyio

    from mirrorsync.config import HttpConfig
    from mirrorsync.errors import FetchError
    from mirrorsync.fetch import HttpClient
    from mirrorsync.fetch.oci import OciRepository
    from mirrorsync.formats.oci import parse_reference

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(403, "Denied " + "x" * 4000)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"oci+http://127.0.0.1:{server.server_address[1]}/cache"

    async def main() -> str:
        async with HttpClient(HttpConfig()) as client:
            try:
                await OciRepository(client, parse_reference(url)).manifest("index.spack")
            except FetchError as exc:
                return str(exc)
        raise AssertionError("the manifest was fetched")

    try:
        said = anyio.run(main)
    finally:
        server.shutdown()
        server.server_close()
    assert "HTTP 403 Denied xxx" in said, said
    assert len(said) < 300, said


def test_a_tag_list_that_links_on_forever_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registry whose every tags/list page is empty and links to a next one: the
    listing stops at its page bound with a FetchError instead of asking for ever."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import anyio

    from mirrorsync.config import HttpConfig
    from mirrorsync.errors import FetchError
    from mirrorsync.fetch import HttpClient, oci
    from mirrorsync.formats.oci import parse_reference

    monkeypatch.setattr(oci, "MAX_TAG_PAGES", 3)
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = b'{"name": "cache", "tags": []}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.send_header("link", f'</v2/cache/tags/list?n=1000&last={len(asked)}>; rel="next"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"oci+http://127.0.0.1:{server.server_address[1]}/cache"

    async def main() -> str:
        async with HttpClient(HttpConfig()) as client:
            try:
                await oci.OciRepository(client, parse_reference(url)).tags()
            except FetchError as exc:
                return str(exc)
        raise AssertionError("the tag list ended")

    try:
        said = anyio.run(main)
    finally:
        server.shutdown()
        server.server_close()
    assert "the tag list goes on past 3 pages" in said, said
    assert len(asked) == 3
