"""Configuration: defaults, lookup order, and one-line errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirrorsync.config import CatalogSource, MirrorSource, find_config, load_config, parse_config
from mirrorsync.errors import EXIT_USAGE, ConfigError

FULL = """
database: ./state/mirrorsync.db
sources:
  - name: spack-public
    kind: catalog
    url: https://binaries.spack.io/cache_spack_io_index.json
    bucket_urls: {other: https://other.example.org/}
    releases: ["develop", "v1.*"]
    exclude_stacks: ["*-rocm"]
    manifests: new
  - name: site
    kind: mirror
    url: https://mirror.example.org/spack
    release: local
    stack: root
http:
  concurrency: 16
  per_host_rate: 20
  timeout: 30
  retries: {attempts: 5, backoff_initial: 0.5, backoff_max: 60}
"""


def test_full_example_parses_into_typed_sources() -> None:
    config = parse_config(FULL, "x.yaml")
    catalog, mirror = config.sources
    assert isinstance(catalog, CatalogSource) and isinstance(mirror, MirrorSource)
    assert catalog.buckets() == {
        "spack-binaries": "https://binaries.spack.io/",
        "other": "https://other.example.org/",
    }
    assert catalog.wants("develop", "e4s") and catalog.wants("v1.0.2", "root")
    assert not catalog.wants("v0.23.1") and not catalog.wants("develop", "ml-linux-x86_64-rocm")
    assert (mirror.release, mirror.stack) == ("local", "root")
    assert config.http.retries.backoff_max == 60
    assert config.database_path == Path("state/mirrorsync.db")


def test_defaults_for_a_minimal_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = parse_config("sources: [{name: a, kind: mirror, url: 'http://h/m'}]")
    source = config.sources[0]
    assert isinstance(source, MirrorSource)
    assert (source.release, source.stack, source.manifests) == ("default", "root", "new")
    assert config.http.concurrency == 16 and config.http.per_host_rate == 20
    assert config.database_path == Path("mirrorsync.db")


def test_database_defaults_to_systemd_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/mirrorsync:/other")
    config = parse_config("sources: [{name: a, kind: catalog}]")
    assert config.database_path == Path("/var/lib/mirrorsync/mirrorsync.db")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sources: [{name: a, kind: catalog, colour: red}]",
            "f.yaml: sources[0].colour: unknown key",
        ),
        ("sources: [{name: a, kind: mirror}]", "f.yaml: sources[0].url: required key is missing"),
        (
            "sources: [{name: a, kind: mirror, url: 'http://x'}]\nhttp: {concurrency: many}",
            "f.yaml: http.concurrency: expected int, got str",
        ),
        (
            "sources: [{name: a, kind: mirror, url: 'http://x'}]\nhttp: {retries: {attempts: 0}}",
            "f.yaml: http.retries.attempts: expected a number from 1 to 100",
        ),
        (
            "sources: [{name: a, kind: s3, url: 'http://x'}]",
            "f.yaml: sources[0].kind: invalid value 's3' (expected one of: catalog, mirror, pages)",
        ),
        (
            "sources: [{name: a, kind: mirror, url: 'ftp://x'}]",
            "f.yaml: sources[0].url: expected an http://, https://, file:///, s3://, oci:// or "
            "oci+http:// URL, got 'ftp://x'",
        ),
        (
            "sources: [{name: a, kind: catalog, releases: ['[dev']}]",
            "f.yaml: sources[0].releases[0]: glob '[dev' has an unclosed '['",
        ),
        (
            "sources:\n - {name: a, kind: catalog}\n - {name: a, kind: catalog}",
            "f.yaml: sources[1].name: duplicate source name 'a'",
        ),
        ("- just a list", "f.yaml: expected a mapping with at least a 'sources' list"),
        ("sources: [", "f.yaml: invalid YAML at line 1, column 11"),
        ("path: x\nsources: []", "f.yaml: path: unknown key"),
        (
            "sources: [{name: a, kind: catalog}]\nhttp: {deadline: soon}",
            "f.yaml: http.deadline: expected seconds or a duration such as 30s, 5m, 12h or 3d,"
            " got 'soon'",
        ),
        (
            "sources: [{name: a, kind: catalog}]\nhttp: {deadline: .nan}",
            "f.yaml: http.deadline: expected a number above 0 and at most 86400 (seconds; 1d)",
        ),
        (
            "sources: [{name: a, kind: catalog}]\nhttp: {run_deadline: .inf}",
            "f.yaml: http.run_deadline: expected a number above 0 and at most 604800",
        ),
        (
            "sources: [{name: a, kind: catalog}]\nhttp: {run_deadline: 0}",
            "f.yaml: http.run_deadline: expected a number above 0 and at most 604800",
        ),
        (
            "sources: [{name: a, kind: catalog, manifests: some}]",
            "f.yaml: sources[0].manifests: invalid enum value 'some'"
            " (expected one of: new, all, none)",
        ),
        (
            "sources: [{name: a, kind: catalog}]\nhttp: {timeout: soon}",
            "f.yaml: http.timeout: expected seconds or a duration such as 30s, 5m, 12h or 3d,"
            " got 'soon'",
        ),
        (
            "sources: [{name: a, kind: catalog}]\nhttp: {timeout: 0s}",
            "f.yaml: http.timeout: expected a number above 0 and at most 3600 (seconds)",
        ),
        (
            "database: mysql://db.example.org/m\nsources: [{name: a, kind: catalog}]",
            "f.yaml: database: mysql:// databases are not supported",
        ),
        (
            "database: postgresql://u:pw@db.example.org\nsources: [{name: a, kind: catalog}]",
            "f.yaml: database: expected postgresql://HOST:PORT/DBNAME, got postgresql://***@db.example.org",
        ),
        (
            "database: {url: postgresql://h/d, password_env: A, password_file: /p}\n"
            "sources: [{name: a, kind: catalog}]",
            "f.yaml: database: give at most one of password_env or password_file",
        ),
    ],
)
def test_bad_configuration_is_one_line_naming_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "f.yaml")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIRRORSYNC_CONFIG", raising=False)
    (tmp_path / "mirrorsync.yaml").write_text("sources: [{name: local, kind: catalog}]")
    env_file = tmp_path / "env.yaml"
    env_file.write_text("sources: [{name: env, kind: catalog}]")
    assert find_config(None) == "mirrorsync.yaml"
    monkeypatch.setenv("MIRRORSYNC_CONFIG", str(env_file))
    assert load_config(None).sources[0].name == "env"
    assert load_config(str(tmp_path / "mirrorsync.yaml")).sources[0].name == "local"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_deadlines_take_the_same_durations_as_max_age() -> None:
    base = "sources: [{name: a, kind: catalog}]\n"
    defaults = parse_config(base).http
    assert (defaults.deadline_seconds, defaults.run_deadline_seconds) == (15 * 60, 5 * 3600)
    given = parse_config(base + "http: {deadline: 90s, run_deadline: 2h}").http
    assert (given.deadline_seconds, given.run_deadline_seconds) == (90, 7200)
    assert parse_config(base + "http: {deadline: 2.5}").http.deadline_seconds == 2.5


def test_one_duration_syntax_for_every_duration_key() -> None:
    config = parse_config(
        "sources: [{name: a, kind: catalog}]\nhttp: {timeout: 30s}\n"
        "webhooks: [{name: w, url: 'http://127.0.0.1:1/h', secret_env: S, timeout: 1m,"
        " max_age: 3d}]",
        "f.yaml",
    )
    assert config.http.timeout == 30.0
    assert config.webhooks[0].timeout == 60.0 and config.webhooks[0].max_age_seconds == 3 * 86400
    assert (
        parse_config("sources: [{name: a, kind: catalog}]\nhttp: {timeout: '90'}").http.timeout
        == 90
    )
