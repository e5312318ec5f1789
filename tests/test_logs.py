"""Logs on stderr: one event per line, plain or JSON, journald priorities, -v/-q."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import QUICK_RETRIES, REPO, catalog_config_text, json_lines, run_cli
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node

STACK_FIELDS = {"source", "release", "stack", "status", "added", "removed", "bytes", "requests"}


def specs(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"{i}.0", fake_hash(f"{prefix}{i}")) for i in range(n)]


def write_config(tmp_path: Path, server: FixtureServer) -> Path:
    path = tmp_path / "mirrorsync.yaml"
    http = QUICK_RETRIES.replace("attempts: 2", "attempts: 3")
    path.write_text(catalog_config_text(tmp_path, server, http=http, database="l.db"))
    return path


def setup_run(tmp_path: Path, docroot: Path, server: FixtureServer) -> Path:
    """Two stacks; root's index manifest answers 503 once (a retry), e4s fails for good."""
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3), "e4s": specs("b", 2)}})
    server.add_fault("/develop/v3/manifests/index/*", "status", status=503, times=1)
    server.add_fault("/develop/e4s/*", "status", status=500, times=None)
    return write_config(tmp_path, server)


def test_json_logs_one_object_per_line_with_stack_figures(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config = setup_run(tmp_path, docroot, server)
    done = run_cli("-c", str(config), "--log-format", "json", "once", "--json", cwd=tmp_path)
    assert done.returncode == 1
    entries = json_lines(done.stderr)  # every line parses, or this raises
    assert len(entries) == len(done.stderr.splitlines())
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)

    stacks = [e for e in entries if e.get("event") == "stack"]
    assert sorted((e["stack"], e["level"], e["status"]) for e in stacks) == [
        ("e4s", "error", "failed"),
        ("root", "info", "changed"),
    ]
    report = {s["stack"]: s for s in json.loads(done.stdout)["stacks"]}
    for entry in stacks:
        assert set(entry) >= STACK_FIELDS
        figures = report[entry["stack"]]
        for field in ("added", "removed", "bytes", "requests"):
            assert entry[field] == figures[field], (entry["stack"], field)
    assert stacks[0]["seconds"] >= 0 and report["root"]["added"] == 3

    retries = [e for e in entries if e.get("event") == "retry"]
    assert retries and all(e["level"] == "warning" for e in retries)
    root_retry = [e for e in retries if "/develop/v3/" in e["url"]]
    assert len(root_retry) == 1 and root_retry[0]["reason"] == "HTTP 503 Service Unavailable"
    assert root_retry[0]["attempt"] == 1

    run = [e for e in entries if e.get("event") == "run"]
    assert len(run) == 1 and run[0]["failures"] == 1 and run[0]["changed"] == 1
    # The closing failure line is JSON too, at error level.
    failed = [e for e in entries if e["message"].startswith("mirrorsync: failed:")]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert "test:develop/e4s" in failed[0]["message"]


def test_plain_logs_each_stack_once_and_retries_as_warnings(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config = setup_run(tmp_path, docroot, server)
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert "\x1b" not in done.stderr  # no terminal codes in logs
    root = [line for line in lines if line.startswith("INFO mirrorsync.sync: test:develop/root ")]
    assert len(root) == 1
    assert "changed: version 1, 3 specs, +3 -0," in root[0] and " requests, " in root[0]
    # Sizes and durations in the one human form, as in the tables (no raw byte counts).
    human = r"\d+ requests?, \d+(\.\d)? (B|kB|MB), \d+(ms|\.\ds)$"
    assert re.search(human, root[0]), root[0]
    (run,) = [line for line in lines if line.startswith("INFO mirrorsync.sync: run finished: ")]
    assert re.search(r"2 stacks .* 1 failure, 5 events, " + human, run), run
    e4s = [line for line in lines if "test:develop/e4s failed" in line]
    assert len(e4s) == 1 and e4s[0].startswith("ERROR mirrorsync.sync: ")
    warnings = [line for line in lines if line.startswith("WARNING mirrorsync.fetch: retrying ")]
    assert any(
        "/develop/v3/" in w and "(attempt 1 failed: HTTP 503 Service Unavailable)" in w
        for w in warnings
    )
    assert lines[-1].startswith("mirrorsync: failed: test:develop/e4s: ")

    quiet = run_cli("-c", str(config), "once", "-q", cwd=tmp_path)
    assert not any(line.startswith("INFO ") for line in quiet.stderr.splitlines())
    assert any(line.startswith("ERROR ") for line in quiet.stderr.splitlines())
    verbose = run_cli("-c", str(config), "once", "-v", cwd=tmp_path)
    assert f"DEBUG mirrorsync.lock: holding the run lock {tmp_path / 'l.db.lock'}" in verbose.stderr


def run_with_stderr_file(args: list[str], cwd: Path, stderr: Path, journal: bool) -> str:
    """Run the CLI with stderr on a file, claiming that file is the journal or not."""
    with stderr.open("w") as err:
        st = os.fstat(err.fileno())
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        # systemd sets JOURNAL_STREAM=device:inode of the stream it connected.
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino if journal else st.st_ino + 1}"
        subprocess.run(
            [sys.executable, "-m", "mirrorsync", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=60,
        )
    return stderr.read_text()


def test_syslog_priority_prefixes_only_when_stderr_is_the_journal(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config = setup_run(tmp_path, docroot, server)
    args = ["-c", str(config), "once"]
    journal = run_with_stderr_file(args, tmp_path, tmp_path / "journal.txt", journal=True)
    lines = journal.splitlines()
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), journal
    assert any(line.startswith("<6>INFO mirrorsync.sync: test:develop/root") for line in lines)
    assert any(line.startswith("<4>WARNING mirrorsync.fetch: retrying") for line in lines)
    assert any(line.startswith("<3>ERROR mirrorsync.sync: test:develop/e4s") for line in lines)
    assert lines[-1].startswith("<3>mirrorsync: failed: test:develop/e4s")

    other = run_with_stderr_file(args, tmp_path, tmp_path / "other.txt", journal=False)
    assert other and not any(line.startswith("<") for line in other.splitlines())


def test_status_sets_logging_up_late_and_says_the_same(tmp_path: Path) -> None:
    """status (no event loop) configures logging only when something logs; its own
    lines still carry the journal's priority (or none off the journal), whether the
    configuration is read in full or from its cache."""
    config = tmp_path / "c.yaml"
    db = tmp_path / "none.db"
    config.write_text(
        f"sources: [{{name: s, kind: catalog, url: 'http://127.0.0.1:9/c.json'}}]\ndatabase: {db}\n"
    )
    for journal, prefix in ((True, "<3>"), (False, "")):
        for _ in range(2):  # the configuration read in full, then from its cache
            said = run_with_stderr_file(
                ["-c", str(config), "status"], tmp_path, tmp_path / "err.txt", journal=journal
            )
            assert said == (
                f"{prefix}mirrorsync: error: no database yet at {db}; run 'mirrorsync once' first\n"
            )


def test_errors_are_json_in_json_mode(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{name: a, kind: catalog}]\nhttp: {concurrency: many}\n")
    done = run_cli("--log-format", "json", "-c", str(bad), "status", cwd=tmp_path)
    assert done.returncode == 2
    (entry,) = json_lines(done.stderr)
    assert entry["level"] == "error"
    assert entry["message"] == f"mirrorsync: error: {bad}: http.concurrency: expected int, got str"


def test_json_logs_mask_credentials_in_every_field_whoever_logs_them() -> None:
    """A field holding a raw URL (a caller forgetting to pass the display form,
    a library's error) is masked like the message: in strings, nested lists
    and mappings, and values rendered with str()."""
    script = (
        "import logging\n"
        "from mirrorsync.logs import fields, setup_logging\n"
        "setup_logging(log_format='json')\n"
        "url = 'https://user:pa55w0rd@h.example/x?X-Amz-Signature=pa55w0rd'\n"
        "class Thing:\n"
        "    def __str__(self): return url\n"
        "logging.getLogger('mirrorsync.test').warning(\n"
        "    'plain message', extra=fields(url=url, nested={'urls': [url]}, thing=Thing()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    (entry,) = json_lines(done.stderr)
    masked = "https://***@h.example/x?X-Amz-Signature=***"
    assert entry["url"] == masked
    assert entry["nested"] == {"urls": [masked]}
    assert entry["thing"] == masked
    assert "pa55w0rd" not in done.stderr
    # Plain lines too, the exception's own text included.
    plain = script.replace("log_format='json'", "log_format='plain'").replace(
        "'plain message', extra=", "'failed', exc_info=ValueError(url), extra="
    )
    done = subprocess.run(
        [sys.executable, "-c", plain],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    # (the mask takes the closing parenthesis with the query value: no harm done)
    assert done.stderr == f"WARNING mirrorsync.test: failed (ValueError: {masked}\n"


def test_vv_logs_every_http_request_in_one_line_without_credentials(
    tmp_path: Path, docroot: Path
) -> None:
    """-vv: one line per request (fetches and webhook POSTs alike) with the method, the
    URL's display form, the status, the bytes and the time; -v has none of them."""
    from receiver import Receiver, new_secret

    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3), "e4s": specs("b", 2)}})
    secret = new_secret()
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    with (
        FixtureServer(docroot, auth=("ops", "s3cret")) as server,
        Receiver(secret) as receiver,
    ):
        base = server.url.replace("http://", "http://ops:s3cret@")

        def config(name: str) -> Path:
            path = tmp_path / f"{name}.yaml"
            path.write_text(
                f"database: {tmp_path / name}.db\n"
                "sources:\n  - name: test\n    kind: catalog\n"
                f"    url: {base}/cache_spack_io_index.json\n"
                f"    bucket_urls: {{spack-binaries: {base}/}}\n"
                f"webhooks:\n  - name: team\n    url: {receiver.url}/team?token=t0ken\n"
                f"    secret_file: {secret_file}\n" + QUICK_RETRIES
            )
            return path

        verbose = run_cli("-c", str(config("v")), "-v", "once", cwd=tmp_path)
        server.add_fault("/develop/e4s/v3/manifests/spec/*", "status", status=404, times=1)
        posted_before = len(receiver.received)
        very = run_cli("-c", str(config("vv")), "-vv", "once", "--json", cwd=tmp_path)
    assert verbose.returncode == 0 and very.returncode == 0, very.stderr
    assert "DEBUG mirrorsync.lock" in verbose.stderr  # -v is DEBUG...
    assert "mirrorsync.http" not in verbose.stderr  # ...without the requests

    lines = [line for line in very.stderr.splitlines() if "mirrorsync.http" in line]
    line_re = re.compile(
        r"DEBUG mirrorsync\.http: (?P<method>GET|HEAD|POST) (?P<url>http://\S+)"
        r"(?P<hook> \(webhook \w+\))? -> HTTP (?P<status>\d{3}), "
        r"\d+(\.\d)? (B|kB|MB), \d+(ms|\.\ds)"
    )
    parsed = [line_re.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m]
    fetches = [m for m in parsed if m and m["method"] != "POST"]
    report = json.loads(very.stdout)
    assert len(fetches) == report["requests"]  # every request the run counted, once
    assert all(m["url"].startswith("http://***@127.0.0.1:") for m in fetches)  # display form
    assert any(
        m["status"] == "404" and "/develop/e4s/v3/manifests/spec/" in m["url"] for m in fetches
    )
    assert any(m["url"].endswith("/cache_spack_io_index.json") for m in fetches)
    # A webhook's line gives its origin and name, like its other lines: a path can hold a token.
    posts = [m for m in parsed if m and m["method"] == "POST"]
    assert len(posts) == len(receiver.received) - posted_before >= 1
    origin = receiver.url.removesuffix("/hooks/mirrorsync")
    assert all(
        (m["url"], m["hook"], m["status"]) == (origin, " (webhook team)", "200") for m in posts
    )
    assert "s3cret" not in very.stderr and "t0ken" not in very.stderr
