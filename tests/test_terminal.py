"""A person at a terminal: live progress and a summary table on stderr, via a real pty."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from conftest import REPO, catalog_config_text
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def specs(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"{i}.0", fake_hash(f"{prefix}{i}")) for i in range(n)]


def run_on_pty(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (120x40) and stdout on a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TERM": "xterm-256color"}
    for name in ("NO_COLOR", "MIRRORSYNC_CONFIG", "COLUMNS", "LINES"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    while True:  # drain the terminal until the child closes it (EIO on Linux)
        try:
            data = os.read(master, 65536)
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            break
        if not data:
            break
        chunks.append(data)
        assert time.monotonic() < deadline, "the run did not finish"
    os.close(master)
    assert proc.stdout is not None
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(timeout=30), stdout, b"".join(chunks).decode("utf-8", "replace")


def test_terminal_gets_progress_then_a_summary_table(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3), "e4s": specs("b", 2)}})
    # e4s's index is slow, so the display is drawn while one stack is done and one is not;
    # spec manifests are slow too, so it is drawn during the crawl.
    server.add_fault("/develop/e4s/v3/manifests/index/*", "delay", delay=1.0)
    server.add_fault("*.spec.manifest.json", "delay", delay=0.5, times=None)
    config = tmp_path / "mirrorsync.yaml"
    config.write_text(catalog_config_text(tmp_path, server, http="", database="t.db"))
    code, stdout, screen = run_on_pty(["-c", str(config), "once"], tmp_path)
    assert code == 0, screen
    assert stdout == ""  # human output is for the terminal on stderr only
    text = ANSI_RE.sub("", screen)
    assert "\x1b[" in screen  # a live display moves the cursor; logs never do
    # A row per phase with its bar, done/total, rate and time left: the indexes, drawn
    # while e4s's was still being fetched...
    rate_eta = r"\s+\d+(\.\d)?/s\s+(\?|\d+(ms|\.\ds|s|m\d\ds)) left"
    assert re.search(r"indexes\s+\S+\s+1/2" + rate_eta, text), text
    # ...and the spec manifests, whose total grows as each stack's crawl begins (3, then 5).
    assert re.search(r"manifests\s+\S+\s+[0-4]/5" + rate_eta, text), text
    # Below them, the run's figures.
    assert re.search(r"\d+ requests? · [\d.]+ (B|kB) · [\d.]+ (B|kB)/s · [\d.ms]+ elapsed", text)
    # The summary table: one row per stack with +added/-removed.
    assert re.search(r"stack\s+status\s+version\s+specs\s+\+added\s+-removed", text), text
    assert re.search(r"develop/root\s+changed\s+1\s+3\s+\+3\s+-0", text), text
    assert re.search(r"develop/e4s\s+changed\s+1\s+2\s+\+2\s+-0", text), text
    # At a terminal the per-stack INFO lines give way to the table (-v brings them back).
    assert "INFO mirrorsync.sync" not in text

    code, stdout, screen = run_on_pty(["-c", str(config), "once", "--json", "-v"], tmp_path)
    assert code == 0
    assert '"stacks"' in stdout  # --json still goes to stdout
    text = ANSI_RE.sub("", screen)
    assert "INFO mirrorsync.sync: test:develop/root unchanged" in text
    assert "+added" not in text  # no table with --json


def test_terminal_shows_the_copies_live_and_in_the_summary(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """``once`` updates the local copies: at a terminal they get a row in the live display
    while they are copied and a table of their own after the stacks' (issue 30)."""
    build_catalog_from_specs(docroot, {"develop": {"root": specs("c", 3)}})
    # Spec manifests are slow, so the display is drawn while the copy fetches them.
    server.add_fault("*.spec.manifest.json", "delay", delay=0.5, times=None)
    copy = (
        f"mirrors:\n  - {{name: local, path: {tmp_path / 'copy'}, source: test, release: develop}}"
    )
    config = tmp_path / "mirrorsync.yaml"
    config.write_text(catalog_config_text(tmp_path, server, extra=copy, http="", database="t.db"))
    code, _, screen = run_on_pty(["-c", str(config), "once"], tmp_path)
    assert code == 0, screen
    text = ANSI_RE.sub("", screen)
    assert re.search(r"copies\s+\S+\s+0/1", text), text
    assert re.search(r"mirror\s+status\s+version\s+binaries\s+size\s+\+added\s+-removed", text)
    assert re.search(r"local\s+published\s+1\s+3\s+[\d.]+ (B|kB)\s+\+3\s+-0", text), text
