"""Hostile input (issue 25, items 6 and 7): numbers out of range, terminal escapes.

- A number from upstream is range-checked where it is parsed (sizes 0 to 2**53):
  a manifest with ``contentLength`` 2**63, or a v2 tarball whose HEAD declares
  that ``Content-Length``, marks that one spec's manifest malformed; the crawl
  goes on and the rest of the stack syncs (without the check, the database write
  raised OverflowError and stopped the stack's crawl every run).
- The command line refuses numbers and dates the database cannot hold with a
  usage error, one line, exit 2 (not a traceback).
- Values from outside are stored as received (bounded) and shown escaped: a
  reason phrase carrying ESC/OSC sequences, spec names with bidi overrides,
  line separators, zero-width characters and a BOM never reach the terminal raw.
"""

from __future__ import annotations

import fnmatch
import json
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import catalog_config, json_lines, run_cli, sync, write_config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.formats.clearsign import is_clearsigned, split_clearsigned
from mirrorsync.text import MAX_STORED, bounded, escape, escape_output
from receiver import new_secret

QUICK = "http: {timeout: 5, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}\n"
HUGE = 2**63


# -- a server that says what a test tells it to ------------------------------------------


class Hostile:
    """Loopback HTTP/1.1: files under ``docroot``, except requests a rule answers with
    raw bytes (a status line and headers no well-behaved server would send)."""

    def __init__(self, docroot: Path) -> None:
        self.docroot = docroot
        self.rules: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                for method, pattern, raw in outer.rules:
                    if method in ("*", self.command) and fnmatch.fnmatchcase(path, pattern):
                        self.wfile.write(raw)
                        return
                target = outer.docroot / path.lstrip("/")
                if not target.is_file():
                    self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    return
                data = target.read_bytes()
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data)
                self.wfile.write(head + (b"" if self.command == "HEAD" else data))

            do_GET = do_HEAD = do_POST = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def rule(self, pattern: str, raw: bytes, method: str = "*") -> None:
        self.rules.append((method, pattern, raw))

    def __enter__(self) -> Hostile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def hostile(docroot: Path) -> Iterator[Hostile]:
    with Hostile(docroot) as running:
        yield running


def config_text(tmp_path: Path, url: str, extra: str = "") -> str:
    return (
        f"database: {tmp_path / 'state.db'}\n"
        "sources:\n"
        "  - name: test\n    kind: catalog\n"
        f"    url: {url}/cache_spack_io_index.json\n"
        f"    bucket_urls: {{spack-binaries: {url}/}}\n"
        f"{extra}{QUICK}"
    )


def nodes(prefix: str, n: int, **kwargs: object) -> list[dict[str, object]]:
    return [
        spec_node(f"pkg-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}"), **kwargs)  # type: ignore[arg-type]
        for i in range(n)
    ]


def manifest_rows(db: Path) -> dict[str, tuple[str, str | None, int | None]]:
    """hash -> (status, problem, tarball_size) of every spec manifest."""
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT s.hash, sm.status, sm.problem, sm.tarball_size FROM spec_manifests sm"
            " JOIN specs s ON s.id = sm.spec_id"
        ).fetchall()
    return {h: (status, problem, size) for h, status, problem, size in found}


# -- 6. numbers out of range ---------------------------------------------------------------


def test_a_manifest_with_content_length_2_63_is_malformed_and_the_rest_syncs(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = nodes("big", 6)
    infos = build_catalog_from_specs(docroot, {"develop": {"root": specs}})["develop"]["root"]
    victim = str(specs[2]["hash"])
    path = docroot / infos.spec_files[victim]
    data = path.read_bytes()
    body = split_clearsigned(data, "manifest").body if is_clearsigned(data) else data
    manifest = json.loads(body)
    for record in manifest["data"]:
        if record["mediaType"].startswith("application/vnd.spack.install"):
            record["contentLength"] = HUGE
    path.write_text(json.dumps(manifest))
    config = catalog_config(tmp_path, server, extra="    manifests: all")

    report = sync(config)
    assert report.exit_code == 0, report.failures  # a malformed manifest is no failure
    recorded = manifest_rows(tmp_path / "state.db")
    assert len(recorded) == 6
    status, problem, size = recorded[victim]
    assert (status, size) == ("malformed", None)
    assert problem is not None and "contentLength 9223372036854775808 is out of range" in problem
    assert {v[0] for h, v in recorded.items() if h != victim} == {"ok"}
    # The next run reads it again (not ok yet) and still ends well.
    assert sync(config).exit_code == 0


def test_a_v2_head_with_a_huge_content_length_marks_that_spec_and_the_rest_syncs(
    tmp_path: Path, docroot: Path, hostile: Hostile
) -> None:
    specs = nodes("v2big", 5, compiler=("gcc", "11.4.0"), db_version=7)
    infos = build_catalog_from_specs(docroot, {"v0.23.1": {"root": specs}}, layout="v2")
    victim = str(specs[1]["hash"])
    tarball = infos["v0.23.1"]["root"].tarballs[victim]
    hostile.rule(
        f"/{tarball}", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE, method="HEAD"
    )
    config = write_config(tmp_path / "c.yaml", config_text(tmp_path, hostile.url))

    done = run_cli("-c", str(config), "once", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    recorded = manifest_rows(tmp_path / "state.db")
    assert len(recorded) == 5
    status, problem, size = recorded[victim]
    assert (status, size) == ("malformed", None)
    assert problem is not None and "Content-Length 9223372036854775808 is out of range" in problem
    others = {h: v for h, v in recorded.items() if h != victim}
    for spec_hash, (status, _, size) in others.items():
        real = docroot / infos["v0.23.1"]["root"].tarballs[spec_hash]
        assert (status, size) == ("ok", real.stat().st_size)


@pytest.mark.parametrize(
    "args",
    [
        ("events", "--since", "100000000000000000000"),
        ("events", "--limit", "100000000000000000000"),
        ("webhooks", "replay", "--name", "chat", "--since", "100000000000000000000"),
        ("history", "--release", "r", "--stack", "s", "--limit", "100000000000000000000"),
        ("events", "--since", "0001-01-01T00:00:00+14:00"),
        ("events", "--since", "9999-12-31T23:59:59-14:00"),
        ("events", "--until", "0001-01-01T00:00:00+14:00"),
        ("events", "--until", "9999-12-31T23:59:59-14:00"),
        ("at", "--release", "r", "--stack", "s", "0001-01-01T00:00:00+14:00"),
        ("at", "--release", "r", "--stack", "s", "9999-12-31T23:59:59-14:00"),
        ("at", "--release", "r", "--stack", "s", "100000000000000000000"),
        ("diff", "--release", "r", "--stack", "s", "0001-01-01T00:00:00+14:00", "1"),
        ("diff", "--release", "r", "--stack", "s", "1", "9999-12-31T23:59:59-14:00"),
        ("once", "--wait", "nan"),
        ("once", "--wait", "1e400"),
    ],
)
def test_cli_numbers_and_dates_out_of_range_are_usage_errors(
    synced: Path, args: tuple[str, ...]
) -> None:
    """``1e20`` as written was refused already; its digits reached the database
    (OverflowError), and dates at the calendar's ends overflowed in astimezone."""
    done = run_cli("-c", str(synced), *args, cwd=synced.parent)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "error: argument" in done.stderr
    assert done.stdout == ""


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A configuration whose database has synced once (a query would be reached)."""
    tmp_path = tmp_path_factory.mktemp("synced")
    docroot = tmp_path / "www"
    docroot.mkdir()
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("cli", 2)}}, manifests=False)
    with FixtureServer(docroot) as server:
        config = write_config(
            tmp_path / "c.yaml",
            config_text(tmp_path, server.url, "    manifests: none\n")
            + f"webhooks:\n  - name: chat\n    url: {server.url}/hook\n"
            f"    secret_file: {secret(tmp_path)}\n",
        )
        done = run_cli("-c", str(config), "once", cwd=tmp_path)
        assert done.returncode == 1, done.stderr  # only the webhook failed: no receiver
        assert "HTTP 404" in done.stderr and (tmp_path / "state.db").exists()
        yield config


def secret(tmp_path: Path) -> Path:
    path = tmp_path / "hook.secret"
    path.write_text(new_secret() + "\n")
    path.chmod(0o600)
    return path


# -- 7. terminal escapes -----------------------------------------------------------------------

#: A reason phrase that sets the window title (OSC), clears the screen (CSI) and,
#: in 8-bit form (C1 CSI as one byte), turns text red: on a terminal, all three act.
EVIL_REASON = b"Nope \x1b]0;pwned\x07\x1b[2J\x9b31mRED" + b"x" * 3000
RAW_CONTROLS = ("\x1b", "\x07", "\x9b")


def test_escapes_in_a_reason_phrase_are_stored_bounded_and_shown_escaped(
    tmp_path: Path, docroot: Path, hostile: Hostile
) -> None:
    build_catalog_from_specs(
        docroot, {"develop": {"root": nodes("r", 2), "e4s": nodes("e", 2)}}, manifests=False
    )
    hostile.rule(
        "/develop/e4s/v3/manifests/index/*",
        b"HTTP/1.1 403 " + EVIL_REASON + b"\r\nContent-Length: 0\r\n\r\n",
    )
    hostile.rule("/hook", b"HTTP/1.1 500 " + EVIL_REASON + b"\r\nContent-Length: 0\r\n\r\n")
    config = write_config(
        tmp_path / "c.yaml",
        config_text(tmp_path, hostile.url, "    manifests: none\n")
        + f"webhooks:\n  - name: chat\n    url: {hostile.url}/hook\n"
        f"    secret_file: {secret(tmp_path)}\n",
    )

    once = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert once.returncode == 1
    for output in (once.stdout, once.stderr):
        assert not any(c in output for c in RAW_CONTROLS), output
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in once.stderr

    with sqlite3.connect(tmp_path / "state.db") as conn:
        (stored,) = conn.execute(
            "SELECT last_error FROM stacks WHERE last_error IS NOT NULL"
        ).fetchone()
        (hook_error,) = conn.execute("SELECT last_error FROM webhooks").fetchone()
    # Stored as received (the controls kept, for the record), cut to the bound.
    assert "\x1b]0;pwned\x07" in stored and len(stored) <= MAX_STORED
    assert len(hook_error) <= MAX_STORED

    status = run_cli("-c", str(config), "status", cwd=tmp_path)
    test = run_cli("-c", str(config), "webhooks", "test", "--name", "chat", cwd=tmp_path)
    retry = run_cli("-c", str(config), "webhooks", "retry", cwd=tmp_path)
    listing = run_cli("-c", str(config), "webhooks", "list", cwd=tmp_path)
    for done in (status, test, retry, listing):
        shown = done.stdout + done.stderr
        assert not any(c in shown for c in RAW_CONTROLS), shown
    assert "\\x1b]0;pwned\\x07" in status.stdout + status.stderr
    assert "\\x1b]0;pwned\\x07" in test.stdout + test.stderr


#: Names that read differently from what they are: a bidi override, a line
#: separator (splits a line in many viewers), a zero-width space, a BOM.
TRICKY = {
    "\u202e": "pkg-evil\u202egpj",
    "\u2028": "pkg-two\u2028lines",
    "\u200b": "pkg-zero\u200bwidth",
    "\ufeff": "pkg-bom\ufeffname",
}


def test_spec_names_with_bidi_separators_and_zero_width_print_escaped_one_line_each(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = [
        spec_node(name, "1.0", fake_hash(f"tricky{i}")) for i, name in enumerate(TRICKY.values())
    ]
    build_catalog_from_specs(docroot, {"develop": {"root": specs}}, manifests=False)
    config = write_config(
        tmp_path / "c.yaml", config_text(tmp_path, server.url, "    manifests: none\n")
    )
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0

    events = run_cli("-c", str(config), "events", "--type", "spec.added", cwd=tmp_path)
    assert events.returncode == 0, events.stderr
    lines = events.stdout.split("\n")
    assert lines[-1] == ""
    body = lines[2:-1]  # after the header and its rule
    assert len(body) == len(TRICKY), events.stdout
    for char, name in TRICKY.items():
        assert char not in events.stdout
        assert sum(escape(name) in line for line in body) == 1
    assert "pkg-evil\\u202egpj" in events.stdout
    specs_out = run_cli(
        "-c", str(config), "specs", "--release", "develop", "--stack", "root", cwd=tmp_path
    )
    assert specs_out.returncode == 0, specs_out.stderr
    assert not any(char in specs_out.stdout for char in TRICKY)
    # Stored as received: JSON output keeps the real names (escaped by JSON itself).
    listed = run_cli("-c", str(config), "events", "--type", "spec.added", "--json", cwd=tmp_path)
    assert {e["name"] for e in json_lines(listed.stdout)} == set(TRICKY.values())


# -- the sanitiser itself ----------------------------------------------------------------------


def test_escape_shows_every_hidden_character_and_leaves_text_alone() -> None:
    assert escape("plain text, ünïcödé, 漢字") == "plain text, ünïcödé, 漢字"
    assert escape("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert escape("a\nb\tc\rd") == "a\\x0ab\\x09c\\x0dd"
    assert escape("\x9b\x85\x7f") == "\\x9b\\x85\\x7f"
    assert escape("\u202a\u202e\u2066\u2069\u200e\u061c") == (
        "\\u202a\\u202e\\u2066\\u2069\\u200e\\u061c"
    )
    assert escape("\u2028\u2029\u200b\u200c\u200d\u2060\ufeff") == (
        "\\u2028\\u2029\\u200b\\u200c\\u200d\\u2060\\ufeff"
    )
    assert escape(escape("a\x1bb")) == escape("a\x1bb")  # idempotent
    assert escape_output("line one\n\tcell\x1b]0;t\x07\u2028\n") == (
        "line one\n\tcell\\x1b]0;t\\x07\\u2028\n"
    )
    assert bounded("x" * 5000) == "x" * (MAX_STORED - 3) + "..."
    assert bounded("short") == "short"
