"""A database made by real syncs for the web view's tests, and ``mirrorsync serve`` on it.

Three syncs of a catalogue (release ``develop``: stacks ``root`` and ``e4s``)
served by the fixture server, manifests crawled (so sizes are known): each sync
adds and removes specs. Two package names are hostile markup, exactly as an
upstream index could name them; the sync stores them as they are.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import REPO, catalog_config_text, run_cli, write_config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from receiver import Receiver, new_secret

#: Package names from upstream are untrusted: these must show as text everywhere.
XSS_NAME = "x&amp;\"'><img src=x onerror=alert(28)>"
SCRIPT_NAME = "<script>alert(29)</script>"

POOL = [spec_node(f"pkg{i % 5}", f"1.{i}", fake_hash(f"web{i}")) for i in range(30)]
HOSTILE = [
    spec_node(XSS_NAME, "1.0", fake_hash("web-xss")),
    spec_node(SCRIPT_NAME, "2.0", fake_hash("web-script")),
]
#: Per sync, per stack: which of POOL it holds (HOSTILE join root from the second sync).
STATES: list[dict[str, list[int]]] = [
    {"root": list(range(0, 10)), "e4s": list(range(0, 4))},
    {"root": [*range(2, 14)], "e4s": [0, 2, 3, 4, 5]},  # e4s: 1 leaves, and comes back next
    {"root": [*range(2, 12), 20, 21, 22], "e4s": [0, 1, 2, 3, 4, 5, 25]},
]


def nodes(state: dict[str, list[int]], step: int) -> dict[str, list[dict[str, Any]]]:
    out = {label: [POOL[i] for i in held] for label, held in state.items()}
    if step >= 1:
        out["root"] = [*out["root"], *HOSTILE]
    return out


def held(step: int, label: str) -> set[str]:
    """The hashes stack ``label`` holds after sync ``step`` (0-based)."""
    return {str(n["hash"]) for n in nodes(STATES[step], step)[label]}


@dataclass
class WebDb:
    config: Path
    database: Path
    docroot: Path


def build(tmp: Path) -> WebDb:
    """The database of three real syncs (``mirrorsync once`` processes)."""
    docroot = tmp / "www"
    docroot.mkdir()
    secret = new_secret()
    with FixtureServer(docroot) as server, Receiver(secret) as receiver:
        text = catalog_config_text(
            tmp,
            server,
            extra="    manifests: all",
            http="http: {concurrency: 8, per_host_rate: 1000, timeout: 10}\n",
        )
        # A local copy (published by `mirror`) and a webhook: the overview lists both.
        text += (
            f"mirrors: [{{name: local, path: '{tmp / 'copy'}', source: test, release: develop,"
            " packages: [pkg0, pkg1, pkg2, pkg3, pkg4]}]\n"
            f"webhooks: [{{name: hook, url: '{receiver.url}', secret_env: HOOK_SECRET}}]\n"
        )
        config = write_config(tmp / "c.yaml", text)
        env = {"HOOK_SECRET": secret}
        for step, state in enumerate(STATES):
            build_catalog_from_specs(docroot, {"develop": nodes(state, step)})
            done = run_cli("-c", str(config), "once", cwd=tmp, env=env)
            assert done.returncode == 0, done.stderr
            time.sleep(0.02)  # versions a little apart in time
        done = run_cli("-c", str(config), "mirror", cwd=tmp, env=env)
        assert done.returncode == 0, done.stderr
    return WebDb(config, tmp / "state.db", docroot)


SERVE_ARGS = ("--listen", "127.0.0.1:0")


class Served:
    """``mirrorsync serve`` as a real process on a free loopback port."""

    def __init__(self, config: Path, cwd: Path, *extra: str, prefix: Sequence[str] = ()) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        env.pop("MIRRORSYNC_CONFIG", None)
        self.process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "mirrorsync",
                "-c",
                str(config),
                "serve",
                *SERVE_ARGS,
                *list(extra),
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        said = ""
        found = None
        while found is None and (line := self.process.stderr.readline()):
            said += line  # a warning may come first
            found = re.search(r"listening on (http://\S+/)", line)
        if found is None:
            self.process.kill()
            rest = self.process.communicate(timeout=10)[1]
            raise AssertionError(f"mirrorsync serve did not start: {said}{rest}")
        self.url = found[1].rstrip("/")

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def stop(self) -> tuple[int, str]:
        """SIGTERM; its exit status and what it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _out, err = self.process.communicate(timeout=20)
        assert "Traceback" not in err, err
        return self.process.returncode, err
