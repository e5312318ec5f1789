"""A real OCI registry for tests: Debian's ``docker-registry`` (CNCF distribution 2.8).

Started as its own process on a free loopback port, plain HTTP, with filesystem
storage in a temporary directory; stopped (and waited for) on exit. Under CI a
missing binary fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import pytest

BINARY = "docker-registry"


def require_registry() -> str:
    found = shutil.which(BINARY) or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None
    )
    if found is None:
        message = "needs Debian's docker-registry (apt-get install docker-registry)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Registry:
    """``with Registry(tmp) as r:`` a registry at ``r.host`` (127.0.0.1:PORT)."""

    def __init__(self, directory: Path, extra_config: str = "") -> None:
        self.directory = directory
        self.extra_config = extra_config
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, repository: str) -> str:
        """The ``oci+http://`` URL of a repository, as Spack and mirrorsync take it."""
        return f"oci+http://{self.host}/{repository}"

    def __enter__(self) -> Registry:
        binary = require_registry()
        storage = self.directory / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n" + self.extra_config
        )
        log = (self.directory / "registry.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    return self
            except urllib.error.HTTPError:
                return self  # answering (a 401 when auth is configured)
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    text = (self.directory / "registry.log").read_text(errors="replace")
                    raise RuntimeError(f"docker-registry did not start: {text[-2000:]}") from None
                time.sleep(0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
