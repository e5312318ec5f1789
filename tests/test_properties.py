"""Property-based tests: whatever comes in, every parser returns a valid record or raises
the project's own error, never anything else (completing test_formats.py and test_pages.py)."""

from __future__ import annotations

import contextlib
import copy
import json
import re
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorsync.config import CatalogSource, Config, PagesSource, parse_config
from mirrorsync.errors import ConfigError, FormatError
from mirrorsync.fixture.build import SEED_DIR, clearsign
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.formats._common import DIGEST_LENGTHS, is_lower_hex, is_spec_hash
from mirrorsync.formats.catalog import blob_url, locate_index, parse_catalog
from mirrorsync.formats.index import parse_index
from mirrorsync.formats.manifest import hash_from_manifest_name, parse_manifest
from mirrorsync.formats.pages import parse_page
from mirrorsync.redact import scrub

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=16,
)
# Bytes that are not UTF-8 on their own.
latin = st.binary(min_size=1, max_size=3).map(lambda b: bytes(0x80 | c for c in b))


def inject(document: bytes, where: int, raw: bytes) -> bytes:
    """Put ``raw`` just inside one of the document's string literals."""
    quotes = [i for i, c in enumerate(document) if c == ord('"')]
    if not quotes:
        return raw + document
    i = quotes[where % len(quotes)] + 1
    return document[:i] + raw + document[i:]


# -- configuration ------------------------------------------------------------------


def parse_or_config_error(text: str) -> Config | None:
    try:
        return parse_config(text, "p.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("p.yaml") and "\n" not in str(exc)
        return None


@FAST
@given(st.text(max_size=300))
def test_config_random_text_only_raises_config_error(text: str) -> None:
    parse_or_config_error(text)


@FAST
@given(values)
def test_config_random_structures_only_raise_config_error(value: object) -> None:
    parse_or_config_error(yaml.safe_dump(value))
    parse_or_config_error(yaml.safe_dump({"sources": value}))
    parse_or_config_error(yaml.safe_dump({"sources": [value]}))


BASE: dict[str, Any] = {
    "database": "x.db",
    "sources": [
        {
            "name": "pub",
            "kind": "catalog",
            "url": "https://h.example/cache_spack_io_index.json",
            "bucket_urls": {"b": "https://h.example/"},
            "releases": ["develop", "v1.*"],
            "exclude_stacks": ["ml-*"],
            "manifests": "new",
            "insecure": False,
        },
        {"name": "site", "kind": "mirror", "url": "https://m.example/s", "release": "r"},
    ],
    "http": {
        "concurrency": 4,
        "per_host_rate": 2.5,
        "timeout": 3,
        "per_host_concurrency": 2,
        "retries": {"attempts": 2, "backoff_initial": 0.1, "backoff_max": 1},
    },
    "limits": {"catalog": "1 MiB", "manifest": 1000, "index": "2GiB"},
}


def _paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += _paths(child, (*prefix, i))
    return out


PATHS = _paths(BASE)


@FAST
@given(
    st.sampled_from(PATHS),
    st.sampled_from(["replace", "delete", "extra"]),
    values | st.dates() | st.sampled_from(["", "[", "0", "-1", "1e999", "s3://x", "ftp://h"]),
)
def test_config_with_one_key_changed_is_valid_or_one_config_error(
    path: tuple[object, ...], action: str, value: object
) -> None:
    document = copy.deepcopy(BASE)
    parent: Any = document
    for key in path[:-1]:
        parent = parent[key]
    last: Any = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[f"{last}_extra"] = value
    config = parse_or_config_error(yaml.safe_dump(document))
    if config is None:
        return
    # Whatever was accepted is usable as it stands.
    urls = [u for s in config.sources for u in (s.urls if isinstance(s, PagesSource) else [s.url])]
    assert config.sources and all(u.startswith(("http://", "https://")) for u in urls)
    assert 1 <= config.http.host_concurrency <= config.http.concurrency
    for kind in ("catalog", "manifest", "index", "page"):
        assert isinstance(getattr(config.limits, kind), int) and config.limits.cap(kind) >= 1
    for source in config.sources:
        if isinstance(source, CatalogSource):
            source.wants("develop", "e4s")


# -- manifests, plain and clear-signed ------------------------------------------------

RECORD: dict[str, Any] = {
    "contentLength": 1211,
    "mediaType": "application/vnd.spack.spec.v5+json",
    "compression": "gzip",
    "checksumAlgorithm": "sha256",
    "checksum": "c" * 64,
}


def check_manifest(data: bytes) -> None:
    try:
        manifest = parse_manifest(data, "https://m/x.json")
    except FormatError as exc:
        assert exc.url == "https://m/x.json"
        return
    for record in manifest.data:  # anything accepted is safe to turn into a blob address
        assert is_lower_hex(record.checksum, DIGEST_LENGTHS[record.checksum_algorithm])
        assert record.content_length >= 0
        assert blob_url("https://m", record.checksum_algorithm, record.checksum)


@FAST
@given(st.sampled_from(sorted(RECORD)), values, st.booleans())
def test_manifest_with_one_field_replaced(field: str, value: object, signed: bool) -> None:
    text = json.dumps({"version": 3, "data": [{**RECORD, field: value}]})
    check_manifest((clearsign(text) if signed else text).encode())


@FAST
@given(values, st.booleans())
def test_manifest_random_json_plain_and_signed(value: object, signed: bool) -> None:
    text = json.dumps(value)
    check_manifest((clearsign(text) if signed else text).encode())


ARMOUR_LINES = st.sampled_from(
    [
        "",
        "-----BEGIN PGP SIGNED MESSAGE-----",
        "-----BEGIN PGP SIGNATURE-----",
        "-----END PGP SIGNATURE-----",
        "Hash: SHA512",
        "- -----BEGIN PGP SIGNATURE-----",
        "- {",
        "}",
    ]
) | st.text(max_size=20)


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["delete", "insert", "replace", "duplicate"]),
            st.integers(0, 999),
            ARMOUR_LINES,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_clearsigned_manifest_with_broken_armour(edits: list[tuple[str, int, str]]) -> None:
    lines = clearsign(json.dumps({"version": 3, "data": [RECORD]}, indent=2)).split("\n")
    for action, at, text in edits:
        i = at % len(lines)
        if action == "delete" and len(lines) > 1:
            del lines[i]
        elif action == "insert":
            lines.insert(i, text)
        elif action == "replace":
            lines[i] = text
        else:
            lines.insert(i, lines[i])
    check_manifest("\n".join(lines).encode())


@FAST
@given(st.integers(0, 99), latin, st.booleans())
def test_manifest_with_bytes_that_are_not_utf8(where: int, raw: bytes, signed: bool) -> None:
    text = json.dumps({"version": 3, "data": [RECORD]})
    data = (clearsign(text) if signed else text).encode()
    check_manifest(inject(data, where, raw))


@FAST
@given(st.text(max_size=80))
def test_manifest_names_give_a_spec_hash_or_format_error(name: str) -> None:
    with contextlib.suppress(FormatError):
        assert is_spec_hash(hash_from_manifest_name(name))


# -- catalogue ------------------------------------------------------------------------

segments = st.sampled_from(["develop", "e4s", ".", "..", "%2e%2E", "a%2fb", "", "x\\..", "\n"])
checksums = st.sampled_from(["ab" * 32, "AB" * 32, "ab" * 31, "zz" * 32]) | st.text(max_size=70)
catalog_urls = st.builds(
    lambda scheme, segs, tail: scheme + "/".join(segs) + tail,
    st.sampled_from(["s3://spack-binaries/", "s3://other/", "https://h.example/", "ftp://h/", ""]),
    st.lists(segments, max_size=4),
    st.sampled_from(["/build_cache/index.json", "/blobs/sha256/ab/" + "ab" * 32, "/x"])
    | checksums.map(lambda c: f"/blobs/sha256/{c[:2]}/{c}"),
) | st.text(max_size=60)
entries = st.fixed_dictionaries({"label": st.text(max_size=12), "url": catalog_urls}) | values
BUCKETS = {"spack-binaries": "https://binaries.example/"}
DOTS = re.compile(r"(^|/)\.{1,2}(/|$)")


@FAST
@given(st.dictionaries(st.text(max_size=12), st.lists(entries, max_size=4) | values, max_size=3))
def test_catalogue_entries_locate_inside_their_mirror_or_raise_format_error(
    document: dict[str, Any],
) -> None:
    try:
        stacks = parse_catalog(json.dumps(document).encode(), "https://c/x.json")
    except FormatError as exc:
        assert exc.url == "https://c/x.json"
        return
    for stack in stacks:
        try:
            location = locate_index(stack.url, BUCKETS)
        except FormatError:
            continue
        assert location.mirror_root.startswith(("http://", "https://"))
        path = location.mirror_root.split("://", 1)[1].partition("/")[2]
        assert not DOTS.search(path.lower().replace("%2e", ".")), location
        if location.index_checksum is not None:
            assert (
                blob_url(location.mirror_root, "sha256", location.index_checksum)
                == location.index_url
            )


@FAST
@given(st.integers(0, 99), latin)
def test_catalogue_with_bytes_that_are_not_utf8(where: int, raw: bytes) -> None:
    data = json.dumps(
        {"develop": [{"label": "root", "url": "s3://spack-binaries/d/build_cache/index.json"}]}
    )
    with contextlib.suppress(FormatError):
        parse_catalog(inject(data.encode(), where, raw))


@FAST
@given(st.text(max_size=12), checksums)
def test_blob_url_only_builds_content_addresses(algorithm: str, checksum: str) -> None:
    try:
        url = blob_url("https://m/root", algorithm, checksum)
    except FormatError:
        return
    assert re.fullmatch(r"https://m/root/blobs/(sha256|sha512|sha1|md5)/[0-9a-f]{2}/[0-9a-f]+", url)


# -- index ----------------------------------------------------------------------------

H = fake_hash("p")


@FAST
@given(st.integers(0, 999), latin, st.booleans())
def test_index_with_bytes_that_are_not_utf8(where: int, raw: bytes, lazy: bool) -> None:
    node = spec_node("zlib", "1.3", H)
    data = json.dumps(
        {"database": {"version": "8", "installs": {H: {"spec": node, "in_buildcache": True}}}}
    )
    with contextlib.suppress(FormatError):
        index = parse_index(inject(data.encode(), where, raw), lazy=lazy)
        list(index.infos(index.hashes))


@FAST
@given(
    st.dictionaries(
        st.sampled_from([fake_hash(str(i)) for i in range(5)]) | st.text(max_size=34),
        st.fixed_dictionaries(
            {
                "spec": st.fixed_dictionaries(
                    {"name": st.text(max_size=8)},
                    optional={
                        "parameters": values,
                        "arch": values,
                        "version": values,
                        "hash": st.text(max_size=34),
                    },
                ),
                "in_buildcache": st.booleans(),
            }
        )
        | values,
        max_size=4,
    ),
    st.booleans(),
)
def test_accepted_index_holds_only_spec_hashes_with_usable_records(
    installs: dict[str, Any], lazy: bool
) -> None:
    data = json.dumps({"database": {"version": "8", "installs": installs}}).encode()
    try:
        index = parse_index(data, "https://m/i", lazy=lazy)
        infos = list(index.infos(sorted(index.hashes)))  # what a commit would store
    except FormatError as exc:
        assert exc.url == "https://m/i"
        return
    assert all(is_spec_hash(h) for h in index.hashes)
    for info in infos:
        assert info.name and isinstance(info.variants, tuple)
    cached = {
        h for h, v in installs.items() if isinstance(v, dict) and v.get("in_buildcache") is True
    }
    assert index.hashes == cached


# -- cache pages ----------------------------------------------------------------------

SEED = (SEED_DIR / "000_9321c0c32c47eeb7.txt").read_bytes()


@FAST
@given(st.integers(0, 10**6), latin)
def test_page_with_bytes_that_are_not_utf8(where: int, raw: bytes) -> None:
    i = where % len(SEED)
    try:
        parse_page(SEED[:i] + raw + SEED[i:], "https://cache/p")
    except FormatError as exc:
        assert "not UTF-8" in exc.problem or exc.url == "https://cache/p"


@FAST
@given(values)
def test_page_with_random_spec_details(details: object) -> None:
    text = f"---\ntitle: zlib\nlayout: cache\ncategories: [package, develop]\nmeta: {{}}\nspec_details: {json.dumps(details)}\n---\n"
    with contextlib.suppress(FormatError):
        parse_page(text.encode(), "https://cache/p")


# -- redaction -------------------------------------------------------------------------

UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
userinfo = st.text(UNRESERVED + "!$&'()*+,;=%", min_size=6, max_size=24)
query_value = st.text(UNRESERVED + "%", min_size=6, max_size=24)


@FAST
@given(
    userinfo,
    userinfo,
    query_value,
    st.sampled_from(
        ["", "/x/y.json?a=1", "/a?token=", "/p?b=2&X-Amz-Signature=", "/p;session_key="]
    ),
)
def test_scrub_removes_userinfo_and_signed_query_values(
    user: str, password: str, signature: str, tail: str
) -> None:
    url = f"https://{user}:{password}@host.example{tail}"
    if tail.endswith("="):
        url += signature
    clean = scrub(f"GET {url} failed: HTTP 500")
    assert clean.startswith(
        ("GET https://***@host.example/", "GET https://***@host.example failed")
    )
    rest = clean.removeprefix("GET https://***@host.example")
    # Exactly the path with every secret masked: a secret that happens to equal a
    # word of the message ("failed") cannot make this pass or fail by accident.
    masked_tail = tail + ("***" if tail.endswith("=") else "")
    assert rest == f"{masked_tail} failed: HTTP 500"
