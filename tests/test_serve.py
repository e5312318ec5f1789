"""``mirrorsync serve`` over a database made by real syncs, as a real process: pages,
the JSON API, feeds (Atom checked by feedparser, JSON Feed 1.1 by its fields),
/metrics, /healthz, untrusted names, refused writes, a read-only database."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import feedparser  # type: ignore[import-untyped]
import pytest

import webview
from conftest import EVENT_FIELDS, REPO, json_lines, run_cli
from dbstate import select
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from webview import SCRIPT_NAME, XSS_NAME, Served, WebDb


@pytest.fixture(scope="module")
def webdb(tmp_path_factory: pytest.TempPathFactory) -> WebDb:
    return webview.build(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def served(webdb: WebDb) -> Iterator[Served]:
    running = Served(webdb.config, webdb.config.parent)
    yield running
    code, err = running.stop()
    assert code == 0, err  # SIGTERM: a clean stop


def text(served: Served, path: str, status: int = 200) -> str:
    code, _headers, body = served.get(path)
    assert code == status, (path, code, body[:300])
    return body.decode("utf-8")


def api(served: Served, path: str) -> Any:
    code, headers, body = served.get(path)
    assert code == 200, (path, code, body[:300])
    assert headers["Content-Type"].startswith("application/json")
    return json.loads(body)


STACK = "/stacks/test/develop/root"
PAGES = [
    "/",
    STACK,
    "/stacks/test/develop/e4s",
    f"{STACK}/diff?from=1&to=3",
    f"{STACK}/diff?from=2026-01-01&to=3",
    "/packages/pkg1",
    f"/packages/{quote(XSS_NAME, safe='')}",
    f"/packages/{quote(SCRIPT_NAME, safe='')}",
    "/events",
    "/events?type=spec.added&limit=5",
    "/events/1",
    "/search?q=pk",
    "/search?q=%3C",
]


def test_every_page_answers_and_names_its_feeds(served: Served) -> None:
    for path in PAGES:
        page = text(served, path)
        head = page.split("</head>")[0]
        assert re.search(
            r'<link rel="alternate" type="application/atom\+xml"[^>]* href="/feeds/', head
        ), path
        assert re.search(
            r'<link rel="alternate" type="application/feed\+json"[^>]* href="/feeds/', head
        ), path
    home = text(served, "/").split("</head>")[0]
    assert 'href="/feeds/all.atom"' in home and 'href="/feeds/all.json"' in home
    stack = text(served, STACK).split("</head>")[0]
    assert 'href="/feeds/stacks/test/develop/root.atom"' in stack


def test_overview_links_every_stack_to_its_page(served: Served) -> None:
    page = text(served, "/")
    for name in ("root", "e4s"):
        assert f'<a href="/stacks/test/develop/{name}">{name}</a>' in page
    # The copy `mirror` published and the webhook, with their states.
    copies = page.split("<h2>Copies</h2>")[1].split("</table>")[0]
    assert re.search(r'<td>local</td><td>develop</td><td class="n">v\d+</td>.*"state">ok<', copies)
    hooks = page.split("<h2>Webhooks</h2>")[1].split("</table>")[0]
    assert '<td>hook</td><td class="state">enabled</td><td class="n">0</td>' in hooks
    text(served, "/stacks/test/develop/nope", status=404)


def test_stack_page_lists_every_version_with_its_counts(served: Served, webdb: WebDb) -> None:
    page = text(served, STACK)
    history = json.loads(
        run_cli("-c", str(webdb.config), "history", "--release", "develop", "--stack", "root",
                "--json", cwd=webdb.config.parent).stdout
    )  # fmt: skip
    rows = re.findall(
        r'<tr class="version" data-version="(\d+)">.*?class="n added">\+(\d+)</td>\s*'
        r'<td class="n removed">-(\d+)</td>',
        page,
        re.S,
    )
    assert sorted((int(v), int(a), int(r)) for v, a, r in rows) == [
        (h["version"], h["added"], h["removed"]) for h in history
    ]
    points = re.findall(r'<circle class="point"[^>]* data-version="(\d+)" data-specs="(\d+)"', page)
    assert [(int(v), int(n)) for v, n in points] == [
        (h["version"], h["spec_count"]) for h in history
    ]


def test_untrusted_names_are_text_on_every_page_that_lists_them(served: Served) -> None:
    escaped_xss = "x&amp;amp;&#34;&#39;&gt;&lt;img src=x onerror=alert(28)&gt;"
    escaped_script = "&lt;script&gt;alert(29)&lt;/script&gt;"
    for path in (
        f"{STACK}/diff?from=1&to=2",
        "/events?package=" + quote(XSS_NAME, safe=""),
        "/events?type=spec.added",
        f"/packages/{quote(XSS_NAME, safe='')}",
        f"/packages/{quote(SCRIPT_NAME, safe='')}",
        "/search?q=" + quote("<", safe=""),
        "/search?q=x",
    ):
        page = text(served, path)
        assert "<img" not in page and "<script" not in page, path
        assert escaped_xss in page or escaped_script in page, path
    assert escaped_xss in text(served, f"/packages/{quote(XSS_NAME, safe='')}")
    assert escaped_script in text(served, f"/packages/{quote(SCRIPT_NAME, safe='')}")
    # In the JSON API the name is the name, as written.
    assert api(served, f"/api/packages/{quote(XSS_NAME, safe='')}")["name"] == XSS_NAME


def test_no_write_endpoint(served: Served) -> None:
    for path in ("/", STACK, "/api/status", "/events", "/feeds/all.atom", "/nowhere"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            code, headers, _body = served.get(path, method=method)
            assert code == 405, (method, path, code)
            assert headers["Allow"] == "GET, HEAD"
    code, headers, _ = served.get("/", method="HEAD")
    assert code == 200 and "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_bad_input_answers_400_or_404_in_one_line(served: Served) -> None:
    for path, status in (
        (f"{STACK}/diff?from=99&to=1", 400),
        (f"{STACK}/diff?from=2026-13-45", 400),
        ("/events?type=nope", 400),
        ("/events?package=nothing-is-called-so", 400),
        ("/events?since=" + "9" * 300, 400),
        ("/events/999999", 404),
        ("/packages/nothing-is-called-so", 404),
        ("/feeds/types/nope.atom", 404),
        # Control characters in names from the URL: in the page, never in a header.
        ("/stacks/a%0D%0ASet-Cookie:%20x/develop/root", 404),
        ("/packages/%0D%0Aevil%00", 404),
        ("/events?package=%0D%0A%00", 400),
        ("/search?q=%00%0A", 200),
        ("/feeds/packages/%0D%0A%00.atom", 200),
        ("/api/packages/%0A", 404),
    ):
        code, _headers, body = served.get(path)
        assert code == status, (path, code)
        assert b"Traceback" not in body
    assert api(served, "/api/") and "error" in json.loads(served.get("/api/events?type=x")[2])


def test_ids_past_a_64_bit_integer_name_nothing(served: Served) -> None:
    """An id of 19 digits above what the database stores: 404 or an empty page, not 500."""
    too_big = "9" * 19
    assert served.get(f"/events/{too_big}")[0] == 404
    assert api(served, f"/api/events?since={too_big}")["events"] == []
    assert "Traceback" not in text(served, f"/events?since={too_big}")


def test_api_speaks_the_cli_json_vocabulary(served: Served, webdb: WebDb) -> None:
    cwd, cfg = webdb.config.parent, str(webdb.config)
    index = api(served, "/api/")
    assert "status" in index["endpoints"]
    status = json.loads(run_cli("-c", cfg, "status", "--json", cwd=cwd).stdout)
    served_status = api(served, "/api/status")
    assert [{k: s[k] for k in status[0]} for s in served_status] == status
    assert all(s["url"].startswith("/stacks/test/develop/") for s in served_status)

    events = json_lines(run_cli("-c", cfg, "events", "--json", cwd=cwd).stdout)
    page = api(served, "/api/events?limit=500")
    assert page["events"] == list(reversed(events))
    assert all(set(e) - {"mirror"} == EVENT_FIELDS for e in page["events"])
    assert any(e["type"] == "mirror.updated" for e in page["events"])

    diff = json.loads(
        run_cli("-c", cfg, "diff", "--release", "develop", "--stack", "root", "1", "3",
                "--json", cwd=cwd).stdout
    )  # fmt: skip
    served_diff = api(served, "/api/stacks/test/develop/root/diff?from=1&to=3")
    for key in ("added", "removed"):
        assert [{k: s[k] for k in diff[key][0]} for s in served_diff[key]] == diff[key]
        assert served_diff[f"{key}_count"] == len(diff[key])
    stack = api(served, "/api/stacks/test/develop/root")
    assert [h["version"] for h in stack["history"]] == [1, 2, 3]
    found = api(served, "/api/search?q=pkg")["packages"]
    assert [p["name"] for p in found] == [f"pkg{i}" for i in range(5)]


def test_diff_between_any_two_versions_names_the_right_hashes(served: Served) -> None:
    """Forwards, backwards, and a spec that left and came back (e4s: pkg1@1.1)."""
    for stack in ("root", "e4s"):
        truth = {0: set(), **{v: webview.held(v - 1, stack) for v in (1, 2, 3)}}
        for a in truth:
            for b in truth:
                found = api(served, f"/api/stacks/test/develop/{stack}/diff?from={a}&to={b}")
                assert {s["hash"] for s in found["added"]} == truth[b] - truth[a], (stack, a, b)
                assert {s["hash"] for s in found["removed"]} == truth[a] - truth[b], (stack, a, b)
                assert found["added_count"] == len(truth[b] - truth[a])


def test_events_are_paged_with_a_bounded_page_size(served: Served, webdb: WebDb) -> None:
    total = len(json_lines(run_cli("-c", str(webdb.config), "events", "--json",
                                   cwd=webdb.config.parent).stdout))  # fmt: skip
    assert api(served, "/api/events?limit=1000000")["limit"] == 500
    seen: list[int] = []
    before = ""
    while True:
        page = api(served, f"/api/events?limit=7{before}")
        seen += [e["id"] for e in page["events"]]
        if page["next_before"] is None:
            break
        before = f"&before={page['next_before']}"
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == total
    html = text(served, "/events?limit=7")
    assert html.count('<tr class="event">') == 7 and 'rel="next"' in html


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
FEEDS = [
    "all",
    "releases/test/develop",
    "stacks/test/develop/root",
    f"packages/{quote(XSS_NAME, safe='')}",
    "types/spec.removed",
]


@pytest.mark.parametrize("scope", FEEDS)
def test_atom_feed_validates_and_links_to_pages(served: Served, scope: str) -> None:
    code, headers, body = served.get(f"/feeds/{scope}.atom")
    assert code == 200 and headers["Content-Type"].startswith("application/atom+xml")
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.id and parsed.feed.title and RFC3339.match(parsed.feed.updated)
    assert parsed.entries
    for entry in parsed.entries:
        assert entry.id and entry.title and RFC3339.match(entry.updated)
        assert entry.link.startswith(served.url + "/events/")
        assert served.get(entry.link[len(served.url) :])[0] == 200
        (content,) = entry.content
        assert content.type == "text/html"
    if scope.startswith("packages/"):
        assert all(XSS_NAME in e.title for e in parsed.entries)
        raw = body.decode()
        # type="html": the HTML (name escaped once) escaped once more as XML text.
        assert "&amp;lt;img src=x onerror=alert(28)&amp;gt;" in raw and "<img" not in raw
        assert "&lt;img src=x" in parsed.entries[0].content[0].value
    if scope.startswith("types/"):
        assert {e.tags[0].term for e in parsed.entries} == {"spec.removed"}


@pytest.mark.parametrize("scope", FEEDS)
def test_json_feed_has_the_1_1_fields(served: Served, scope: str) -> None:
    code, headers, body = served.get(f"/feeds/{scope}.json")
    assert code == 200 and headers["Content-Type"].startswith("application/feed+json")
    feed = json.loads(body)
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert isinstance(feed["title"], str) and feed["title"]
    assert feed["feed_url"] == f"{served.url}/feeds/{scope}.json"
    assert feed["items"]
    for item in feed["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert isinstance(item["content_html"], str) and item["content_html"]
        assert RFC3339.match(item["date_published"])
        assert set(item) <= {"id", "url", "title", "content_html", "date_published", "tags",
                             "_mirrorsync"}  # fmt: skip
    if scope.startswith("packages/"):
        html = feed["items"][0]["content_html"]
        assert "&lt;img src=x onerror=alert(28)&gt;" in html and "<img" not in html


def test_metrics_are_the_metrics_file_families(served: Served) -> None:
    code, headers, body = served.get("/metrics")
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = body.decode().splitlines()
    sample = re.compile(r'^(mirrorsync_[a-z_]+)(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+Inf]+$')
    for line in lines:
        assert line.startswith(("# HELP mirrorsync_", "# TYPE mirrorsync_")) or sample.match(
            line
        ), line
    assert 'mirrorsync_stack_specs{source="test",release="develop",stack="root"} 15' in lines
    assert "mirrorsync_healthy 1" in lines
    assert any(line.startswith("mirrorsync_build_info{") for line in lines)


def test_healthz_answers_200_when_healthy(served: Served) -> None:
    assert served.get("/healthz")[:1] == (200,)


def test_healthz_answers_503_with_the_problems(webdb: WebDb, tmp_path: Path) -> None:
    broken = tmp_path / "c.yaml"
    broken.write_text(  # one more source, never synced: a problem
        webdb.config.read_text().replace(
            "sources:\n",
            "sources:\n  - {name: other, kind: mirror, url: 'http://127.0.0.1:9/x',"
            " release: r, stack: s}\n",
        )
    )
    nothing = tmp_path / "none.yaml"
    nothing.write_text(broken.read_text().replace(str(webdb.database), str(tmp_path / "no.db")))
    for config, expected in ((broken, b"source other: never synced"), (nothing, b"no database")):
        server = Served(config, tmp_path)
        try:
            code, _headers, body = server.get("/healthz")
            assert code == 503 and expected in body, body
            metrics = server.get("/metrics")
            assert metrics[0] == 200 and b"mirrorsync_healthy 0" in metrics[2]
            if config is nothing:
                assert server.get("/")[0] == 503
        finally:
            assert server.stop()[0] == 0


def _as_reader() -> list[str]:
    """The command prefix that runs a process as a user who may only read the files:
    as root, root without the capabilities that pass over file permissions."""
    if os.geteuid() != 0:
        return []
    tool = shutil.which("setpriv")
    if tool is None:
        pytest.fail("setpriv (util-linux) is needed to drop root's file capabilities")
    return [tool, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def test_read_only_database_is_served_and_left_byte_for_byte(webdb: WebDb, tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    shutil.copy(webdb.database, directory / "state.db")
    config = tmp_path / "ro.yaml"
    config.write_text(
        webdb.config.read_text().replace(str(webdb.database), str(directory / "state.db"))
    )
    (directory / "state.db").chmod(0o444)
    directory.chmod(0o555)
    before = hashlib.sha256((directory / "state.db").read_bytes()).hexdigest()
    listing = sorted(p.name for p in directory.iterdir())
    try:
        server = Served(config, tmp_path, prefix=_as_reader())
        try:
            for path in [*PAGES, "/feeds/all.atom", "/feeds/all.json", "/metrics", "/healthz", "/api/status"]:  # fmt: skip
                code, _h, body = server.get(path)
                assert code == 200, (path, code, body[:300])
        finally:
            code, err = server.stop()
        assert code == 0 and "stopped (terminated)" in err, err
        # status reads it so too (the same read-only open).
        done = subprocess.run(
            [*_as_reader(), sys.executable, "-m", "mirrorsync", "-c", str(config), "status"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    finally:
        directory.chmod(0o755)
    assert hashlib.sha256((directory / "state.db").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in directory.iterdir()) == listing
    assert stat.S_IMODE((directory / "state.db").stat().st_mode) == 0o444


def test_sizes_in_chart_equal_the_manifests(served: Served, webdb: WebDb) -> None:
    """Each version's bytes are the sizes of the specs it held (a second reading of the rows)."""
    page = text(served, STACK)
    points = re.findall(r'data-version="(\d+)" data-specs="\d+" data-bytes="(\d+)"', page)
    for version, shown in points:
        (total,) = select(
            webdb.database,
            "SELECT coalesce(sum(sm.tarball_size), 0) FROM memberships m"
            " JOIN stacks st ON st.id = m.stack_id JOIN spec_manifests sm"
            " ON sm.stack_id = m.stack_id AND sm.spec_id = m.spec_id"
            " WHERE st.name = 'root' AND m.entered <= ? AND (m.left IS NULL OR m.left > ?)",
            (int(version), int(version)),
        )[0]
        assert int(shown) == total > 0


def test_served_from_postgresql(
    webdb: WebDb, served: Served, postgres_url: str, tmp_path: Path
) -> None:
    """The same pages over the same history moved to PostgreSQL (read-only transactions)."""
    done = run_cli("-c", str(webdb.config), "db", "migrate-to", postgres_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "pg.yaml"
    config.write_text(webdb.config.read_text().replace(str(webdb.database), postgres_url))
    server = Served(config, tmp_path)
    try:
        for path in [
            *PAGES,
            "/feeds/all.atom",
            "/feeds/packages/pkg1.json",
            "/metrics",
            "/healthz",
        ]:
            code, _h, body = server.get(path)
            assert code == 200, (path, code, body[:300])
        truth = {1: webview.held(0, "e4s"), 3: webview.held(2, "e4s")}
        found = api(server, "/api/stacks/test/develop/e4s/diff?from=3&to=1")
        assert {s["hash"] for s in found["removed"]} == truth[3] - truth[1]
        assert api(server, "/api/status") == api(served, "/api/status")
        assert api(server, "/api/events?limit=500") == api(served, "/api/events?limit=500")
        assert text(server, STACK).count('<circle class="point"') == 3
    finally:
        assert server.stop()[0] == 0


#: Names with a NUL byte in every place a URL gives the store one, and the answer.
NUL_NAMES = (
    ("/stacks/a%00b/develop/root", 404),
    ("/stacks/test/develop/ro%00ot", 404),
    ("/stacks/test/dev%00elop/root/diff", 404),
    ("/api/stacks/test/develop/root%00", 404),
    ("/packages/pkg1%00", 404),
    ("/api/packages/%00", 404),
    ("/search?q=pkg%00", 200),
    ("/api/search?q=%00", 200),
    ("/events?package=pkg1%00", 400),
    ("/events?stack=r*%00", 400),
    ("/api/events?source=test%00", 400),
    ("/feeds/packages/pkg1%00.atom", 200),
    ("/feeds/stacks/test/develop/root%00.json", 200),
    ("/feeds/releases/te%00st/develop.atom", 200),
)


def test_a_name_with_a_nul_byte_matches_nothing_on_both_backends(
    webdb: WebDb, served: Served, postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL's text holds no NUL (psycopg refuses one in a parameter: it was a
    503): the store answers "no such name" without asking, as SQLite always did."""
    done = run_cli("-c", str(webdb.config), "db", "migrate-to", postgres_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "pg.yaml"
    config.write_text(webdb.config.read_text().replace(str(webdb.database), postgres_url))
    server = Served(config, tmp_path)
    try:
        for path, status in NUL_NAMES:
            for backend, running in (("sqlite", served), ("postgresql", server)):
                code, _h, body = running.get(path)
                assert code == status, (backend, path, code, body[:300])
                assert b"Traceback" not in body
                if path.endswith(".atom"):  # an empty feed
                    assert b"<feed" in body and b"<entry>" not in body
                elif path.endswith(".json"):
                    assert json.loads(body)["items"] == []
                elif path.startswith("/api/search"):
                    assert json.loads(body)["packages"] == []
                elif path.startswith("/search"):
                    assert b'href="/packages/pkg1"' not in body
    finally:
        assert server.stop()[0] == 0


@pytest.mark.parametrize("reader", ["writable", "read-only directory"])
def test_a_sync_shows_without_a_restart(webdb: WebDb, tmp_path: Path, reader: str) -> None:
    """A sync commits while serve runs: its pages show the new version. Also where
    serve may not write the directory (read then ``immutable``): a writer is noticed."""
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(webdb.database, live / "state.db")
    docroot = tmp_path / "www"
    shutil.copytree(webdb.docroot, docroot)
    with FixtureServer(docroot) as upstream:
        text_ = re.sub(r"http://127\.0\.0\.1:\d+", upstream.url, webdb.config.read_text())
        text_ = re.sub(r"(?m)^(mirrors|webhooks): .*\n", "", text_)  # the stacks only
        config = tmp_path / "live.yaml"
        config.write_text(text_.replace(str(webdb.database), str(live / "state.db")))
        prefix: list[str] = []
        if reader != "writable":
            (live / "state.db").chmod(0o444)
            live.chmod(0o555)
            prefix = _as_reader()
        server = Served(config, tmp_path, prefix=prefix)
        try:
            assert [s["version"] for s in api(server, "/api/status")] == [3, 3]
            assert text(server, STACK).count('<circle class="point"') == 3
            state = {"root": [0, 1], "e4s": [0]}
            build_catalog_from_specs(docroot, {"develop": webview.nodes(state, 0)})
            done = run_cli("-c", str(config), "once", cwd=tmp_path)  # as the writer
            assert done.returncode == 0, done.stderr
            assert [s["version"] for s in api(server, "/api/status")] == [4, 4]
            page = text(server, STACK)
            assert (
                page.count('<circle class="point"') == 4
                and '<tr class="version" data-version="4">' in page
            )
            assert api(server, "/api/stacks/test/develop/root")["spec_count"] == 2
            assert server.get("/healthz")[0] == 200
        finally:
            live.chmod(0o755)
            assert server.stop()[0] == 0


def test_the_web_stack_is_imported_only_by_serve(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mirrorsync", "--version"],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and done.stdout.startswith("mirrorsync ")
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "mirrorsync.cli" in imported  # the check sees the imports
    assert not {"aiohttp.web", "jinja2", "mirrorsync.serve"} & imported


def test_a_bad_listen_address_is_a_usage_error(webdb: WebDb, tmp_path: Path) -> None:
    import socket

    cfg = str(webdb.config)
    done = run_cli("-c", cfg, "serve", "--listen", "nowhere", cwd=tmp_path)
    assert done.returncode == 2 and "--listen 'nowhere': expected HOST:PORT" in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("-c", cfg, "serve", "--listen", f"127.0.0.1:{port}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"mirrorsync: error: --listen 127.0.0.1:{port}: cannot listen there")
    )
    assert "Traceback" not in done.stderr
