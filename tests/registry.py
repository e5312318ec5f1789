"""A real OCI registry for tests: Debian's ``docker-registry`` (CNCF distribution 2.8).

Started as its own process on a free loopback port, plain HTTP, with filesystem
storage in a temporary directory; stopped (and waited for) on exit. Under CI a
missing binary fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
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
    """``with Registry(tmp) as r:`` a registry at ``r.host`` (127.0.0.1:PORT).

    ``tls``: https with a self-signed certificate made by ``openssl`` (its file is
    ``r.certificate``: give it as ``SSL_CERT_FILE``). ``storage``: another
    registry's storage directory, so that two processes (plain http and https)
    serve the same repositories."""

    def __init__(
        self,
        directory: Path,
        extra_config: str = "",
        *,
        tls: bool = False,
        storage: Path | None = None,
    ) -> None:
        self.directory = directory
        self.extra_config = extra_config
        self.tls = tls
        self.storage = storage or directory / "storage"
        self.certificate = directory / "cert.pem"
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, repository: str) -> str:
        """The ``oci+http://`` (``oci://`` with TLS) URL of a repository, as Spack and
        mirrorsync take it."""
        scheme = "oci" if self.tls else "oci+http"
        return f"{scheme}://{self.host}/{repository}"

    def tags(self, repository: str) -> list[str]:
        """A repository's tags, as the registry lists them."""
        scheme = "https" if self.tls else "http"
        context = ssl.create_default_context(cafile=self.certificate) if self.tls else None
        url = f"{scheme}://{self.host}/v2/{repository}/tags/list"
        with urllib.request.urlopen(url, timeout=10, context=context) as answer:
            tags: list[str] = json.load(answer)["tags"] or []
            return tags

    def __enter__(self) -> Registry:
        binary = require_registry()
        self.directory.mkdir(parents=True, exist_ok=True)
        storage = self.storage
        storage.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.yml"
        tls = ""
        if self.tls:
            key = self.directory / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-keyout", str(key), "-out", str(self.certificate), "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True,
            )  # fmt: skip
            tls = f"  tls:\n    certificate: {self.certificate}\n    key: {key}\n"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n" + tls + self.extra_config
        )
        log = (self.directory / "registry.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 20
        scheme = "https" if self.tls else "http"
        context = ssl.create_default_context(cafile=self.certificate) if self.tls else None
        while True:
            try:
                with urllib.request.urlopen(
                    f"{scheme}://{self.host}/v2/", timeout=1, context=context
                ):
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
