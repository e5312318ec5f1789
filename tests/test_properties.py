"""Property-based tests: whatever comes in, every parser returns a valid record or raises
the project's own error, never anything else (completing test_formats.py and test_pages.py)."""

from __future__ import annotations

import contextlib
import copy
import json
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorsync.config import CatalogSource, Config, PagesSource, parse_config
from mirrorsync.errors import ConfigError, FormatError
from mirrorsync.fixture.build import SEED_DIR, clearsign
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.formats import all_parsers
from mirrorsync.formats._common import DIGEST_LENGTHS, is_lower_hex, is_spec_hash
from mirrorsync.formats.catalog import blob_url, locate_index, parse_catalog
from mirrorsync.formats.index import Index, parse_index
from mirrorsync.formats.manifest import hash_from_manifest_name, parse_manifest
from mirrorsync.formats.pages import Page, parse_page
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
    # No source at all is valid: a site that only receives bundles (bundle import).
    assert all(u.startswith(("http://", "https://")) for u in urls)
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


# -- every parser, from one list ----------------------------------------------------------
#
# formats.all_parsers() lists every parser; each needs a good document here to mutate.
# Whatever a mutation makes of it, only FormatError naming the URL may come out.

URL = "https://mirror.example/doc"
_NODE = spec_node("zlib", "1.3", H, parameters={"shared": True, "patches": ["ab" * 32]})
_INDEX = json.dumps(
    {
        "database": {
            "version": "8",
            "installs": {
                H: {"spec": _NODE, "ref_count": 1, "in_buildcache": True},
                fake_hash("q"): {
                    "spec": spec_node("cmake", "3.30.1", fake_hash("q"), compiler=("gcc", "12")),
                    "in_buildcache": False,
                },
            },
        }
    }
)
_SPEC_MANIFEST = json.dumps(
    {
        "version": 3,
        "data": [
            {**RECORD, "mediaType": "application/vnd.spack.install.v2.tar+gzip"},
            RECORD,
        ],
    },
    indent=0,
)
_INDEX_MANIFEST = json.dumps(
    {"version": 3, "data": [{**RECORD, "mediaType": "application/vnd.spack.db.v8+json"}]}
)
SEEDS: dict[str, bytes] = {
    "catalogue": json.dumps(
        {
            "develop": [
                {"label": "root", "url": "s3://spack-binaries/develop/build_cache/index.json"},
                {"label": "e4s", "url": "https://h.example/d/e4s/blobs/sha256/ab/" + "ab" * 32},
            ],
            "v1.0.0": [],
        }
    ).encode(),
    "build cache index": _INDEX.encode(),
    "build cache index, read lazily": _INDEX.encode(),
    "manifest": clearsign(_SPEC_MANIFEST).encode(),
    "index manifest": _INDEX_MANIFEST.encode(),
    "spec manifest": clearsign(_SPEC_MANIFEST).encode(),
    "v2 spec file": clearsign(
        json.dumps(
            {
                "spec": {"_meta": {"version": 4}, "nodes": [_NODE]},
                "binary_cache_checksum": {"hash_algorithm": "sha256", "hash": "ab" * 32},
            },
            indent=2,
        )
    ).encode(),
    "key index": json.dumps({"keys": {"2C8DD3224EF3573A42BD221FA8E0CA3C1C2ADA2F": {}}}).encode(),
    "spack.lock": json.dumps(
        {
            "_meta": {"file-type": "spack-lockfile", "lockfile-version": 6},
            "roots": [{"hash": H, "spec": "zlib"}],
            "concrete_specs": {
                H: spec_node("zlib", "1.3", H, dependencies=[("cmake", fake_hash("q"))]),
                fake_hash("q"): spec_node("cmake", "3.30.1", fake_hash("q")),
            },
        }
    ).encode(),
    "keeplist": f"{H}\n/{fake_hash('q')}\n".encode(),
    "cache page": SEED,
    "spec metadata": json.dumps(
        {"spec": {"_meta": {"version": 5}, "nodes": [{"name": "zlib", "hash": "a" * 32}]}}
    ).encode(),
}
PARSER_NAMES = sorted(all_parsers())
DEEP = 2100


def test_every_parser_is_fuzzed_from_a_good_document() -> None:
    """A new parser is in all_parsers() by its @parser declaration: it needs a seed here."""
    assert set(PARSER_NAMES) == set(SEEDS)
    for name in PARSER_NAMES:
        exhaust(all_parsers()[name](SEEDS[name], URL))  # the seed itself is accepted


def exhaust(result: object) -> object:
    """What a caller would go on to read: a lazy index decodes its nodes on demand."""
    if isinstance(result, Index):
        return list(result.infos(sorted(result.hashes)))
    return result


def parse_or_format_error(name: str, data: bytes) -> object | None:
    try:
        return exhaust(all_parsers()[name](data, URL))
    except FormatError as exc:
        assert exc.url == URL and "\n" not in str(exc), str(exc)
        return None


def _points(data: bytes, byte: int) -> list[int]:
    return [i for i, c in enumerate(data) if c == byte] or [0]


@FAST
@given(
    st.sampled_from(PARSER_NAMES),
    st.sampled_from(["not-utf8", "control", "truncate", "flip", "deep", "deep-list", "repeat"]),
    st.integers(0, 10**6),
    latin,
)
def test_every_parser_only_raises_format_error(
    name: str, mutation: str, where: int, raw: bytes
) -> None:
    seed = SEEDS[name]
    if mutation == "not-utf8":
        data = inject(seed, where, raw)
    elif mutation == "control":  # an escaped control character inside a string
        data = inject(seed, where, b"\\u00%02x" % (raw[0] % 32))
    elif mutation == "truncate":
        data = seed[: where % len(seed)]
    elif mutation == "flip":
        i = where % len(seed)
        data = seed[:i] + bytes([seed[i] ^ raw[0]]) + seed[i + 1 :]
    elif mutation in ("deep", "deep-list"):  # nesting in an unknown field of some object
        at = _points(seed, ord("{"))
        i = at[where % len(at)] + 1
        open_, close = (b"[", b"]") if mutation == "deep-list" else (b'{"a":', b"}")
        data = seed[:i] + b'"zz":' + open_ * DEEP + b"1" + close * DEEP + b"," + seed[i:]
    else:  # a member of some object named a second time
        members = [m.start() + 1 for m in re.finditer(rb'[{,]\s*"', seed)]
        if not members:
            return
        i = members[where % len(members)]
        end = seed.find(b",", i)
        member = seed[i:end] if end > 0 else b""
        data = (
            seed[:i] + member + b"," + seed[i:]
            if member.rstrip().endswith((b'"', b"e", b"1"))
            else seed
        )
    parse_or_format_error(name, data)


@pytest.mark.parametrize("name", [n for n in PARSER_NAMES if n != "keeplist"])  # JSON ones
def test_deep_nesting_in_an_unknown_field_is_a_format_error(name: str) -> None:
    seed = SEEDS[name]
    i = seed.rindex(b"{") + 1  # the innermost object: an unknown field of some record
    for open_, close in ((b"[", b"]"), (b'{"a":', b"}")):
        data = seed[:i] + b'"zz":' + open_ * DEEP + b"1" + close * DEEP + b"," + seed[i:]
        with pytest.raises(FormatError) as caught:
            exhaust(all_parsers()[name](data, URL))
        assert caught.value.url == URL
        # libyaml stops a page at its own depth limit, in its own words.
        says = "nest" if name == "cache page" else "nested too deeply to decode"
        assert says in caught.value.problem, caught.value.problem


@pytest.mark.parametrize("name", [n for n in PARSER_NAMES if n not in ("cache page", "keeplist")])
def test_a_top_level_key_named_twice_is_refused(name: str) -> None:
    """Decoders keep the last of two equal keys: a document could hide what it lists."""
    seed = SEEDS[name]
    body = (
        seed.split(b"\n\n", 1)[1].split(b"\n-----BEGIN PGP SIGNATURE", 1)[0]
        if seed.startswith(b"-----")
        else seed
    )
    document = json.loads(body)
    first = next(iter(document))
    i = body.rindex(b"}")  # the same member again, at the end: the same content, twice
    member = f',"{first}":{json.dumps(document[first])}'.encode()
    data = seed.replace(body, body[:i] + member + body[i:])
    with pytest.raises(FormatError) as caught:
        exhaust(all_parsers()[name](data, URL))
    assert f"{first!r} is named twice" in caught.value.problem, caught.value.problem


def test_an_install_listed_twice_is_refused() -> None:
    """The second entry (not in the build cache) would have emptied the stack."""
    second = json.dumps({"spec": _NODE, "in_buildcache": False})
    data = _INDEX.replace('"installs": {', f'"installs": {{"{H}": {second}, ', 1).encode()
    data = _INDEX.replace(
        f'"{fake_hash("q")}": ', f'"{H}": {second}, "{fake_hash("q")}": ', 1
    ).encode()
    for lazy in (False, True):
        with pytest.raises(FormatError) as caught:
            parse_index(data, URL, lazy=lazy)
        assert caught.value.problem == f"install {H!r} is listed twice"


def test_a_page_naming_a_key_twice_is_refused() -> None:
    data = SEED.replace(b"\nspec_details:", b"\nspec_details: []\nspec_details:", 1)
    with pytest.raises(FormatError) as caught:
        parse_page(data, URL)
    assert caught.value.problem == "key 'spec_details' is named twice"


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@FAST
@given(st.integers(0, 10**6), st.sampled_from([0, 9, 10, 13, 27, 127, 133, 155]))
def test_accepted_specs_hold_no_control_characters(where: int, char: int) -> None:
    """Names, versions, arch, compiler and variants are stored and printed: a control
    character anywhere in them refuses the document."""
    for name in ("build cache index", "build cache index, read lazily", "cache page"):
        seed = SEEDS[name]
        data = inject(seed, where, b"\\u%04x" % char)
        result = parse_or_format_error(name, data)
        if isinstance(result, Page):
            texts = [result.package, result.release]
            for spec in result.specs:
                texts += [spec.version, spec.compiler, spec.os, spec.platform, spec.target]
                texts += [*spec.variants, *spec.stacks]
        elif isinstance(result, list):
            texts = []
            for info in result:
                texts += [info.name, info.version, info.platform, info.os, info.target]
                texts += [info.compiler or "", *info.variants]
        else:
            continue
        assert not any(CONTROL.search(text) for text in texts), texts


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("name", "zlib\u001b[2J", "name 'zlib\\x1b[2J' holds control characters"),
        ("version", "1.3\nERROR forged", "version '1.3\\nERROR forged' holds control characters"),
        ("name", "z" * 5_000_000, "name is longer than 256 characters"),
        ("version", "1" * 257, "version is longer than 256 characters"),
        ("platform", "linux\u009b31m", "holds control characters"),
    ],
)
def test_index_refuses_names_with_control_characters_or_megabytes(
    field: str, value: str, says: str
) -> None:
    node = spec_node("zlib", "1.3", H)
    if field == "platform":
        node["arch"]["platform"] = value
    else:
        node[field] = value
    data = json.dumps(
        {"database": {"version": "8", "installs": {H: {"spec": node, "in_buildcache": True}}}}
    )
    for lazy in (False, True):
        with pytest.raises(FormatError) as caught:
            exhaust(parse_index(data.encode(), URL, lazy=lazy))
        problem = caught.value.problem
        assert says in problem, problem
        if "control" in says:  # the decoder checks lengths, naming the path, not the hash
            assert problem.startswith(f"install {H}: "), problem


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
