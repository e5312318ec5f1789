"""A real webhook receiver on 127.0.0.1 that checks signatures like the README says.

Signatures are checked with the ``verify`` function from the README's Python
example, so the tests also prove that the documented receiver code works.
A request whose signature does not verify is answered 401; the others get the
receiver's scripted answers, then its default status.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STALLED = 0  # the status recorded for a request that was held open and never answered in time


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def readme_verify() -> Callable[[str, dict[str, str], bytes], bool]:
    """The ``verify`` function of the README's receiver example."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify(" in b)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    verify: Callable[[str, dict[str, str], bytes], bool] = namespace["verify"]
    return verify


@dataclass(frozen=True)
class Received:
    webhook_id: str
    timestamp: str
    content_type: str
    body: bytes
    valid: bool  # the signature verified with the receiver's secret
    status: int  # what the receiver answered (STALLED if held open)
    method: str = "POST"
    path: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # lower-case names

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.payload["data"]["events"]
        return events

    @property
    def event_ids(self) -> list[int]:
        return [int(e["id"]) for e in self.events]

    @property
    def acknowledged(self) -> bool:
        return self.valid and 200 <= self.status < 300


class Receiver:
    """``with Receiver(secret) as r:`` serves ``r.url`` until the block ends."""

    def __init__(
        self, secret: str | None, *, status: int = 200, answers: Iterable[int] = ()
    ) -> None:
        """``secret`` None: a chat service's endpoint, which takes unsigned requests."""
        self.secret = secret or ""
        self.signed = secret is not None  # unsigned requests get 401
        self.status = status  # the default answer; may be changed while running
        self.retry_after: str | None = None  # sent as Retry-After with every 4xx/5xx answer
        self._answers = list(answers)
        self._verify = readme_verify()
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._stall_after: int | None = None
        self.stalled = threading.Event()  # set when a request is being held open
        self.release = threading.Event()  # set to let a held request finish
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.receiver = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/hooks/mirrorsync"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def stall_after(self, acknowledged: int) -> None:
        """Hold the first valid request after ``acknowledged`` acknowledged ones open."""
        self._stall_after = acknowledged

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def acknowledged(self) -> list[Received]:
        return [r for r in self.received if r.acknowledged]

    def acknowledged_ids(self) -> list[int]:
        return [i for r in self.acknowledged for i in r.event_ids]

    def _handle(
        self, headers: dict[str, str], body: bytes, method: str = "POST", path: str = ""
    ) -> int:
        """Record a request and return the status to answer (STALLED: hold it open)."""
        valid = not self.signed or (
            all(k in headers for k in ("webhook-id", "webhook-timestamp", "webhook-signature"))
            and self._verify(self.secret, headers, body)
        )
        with self._lock:
            if not valid:
                status = 401
            elif self._stall_after is not None and self._stall_after == sum(
                1 for r in self._received if r.acknowledged
            ):
                self._stall_after = None
                status = STALLED
            else:
                status = self._answers.pop(0) if self._answers else self.status
            self._received.append(
                Received(
                    headers.get("webhook-id", ""),
                    headers.get("webhook-timestamp", ""),
                    headers.get("content-type", ""),
                    body,
                    valid,
                    status,
                    method,
                    path,
                    headers,
                )
            )
        if status == STALLED:
            self.stalled.set()
            self.release.wait(60)
        return status


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status = receiver._handle(headers, body, self.command, self.path)
        if status == STALLED:
            self.close_connection = True
            return
        reply = b"ok" if status < 300 else b"no"
        try:
            self.send_response(status)
            self.send_header("content-length", str(len(reply)))
            if receiver.retry_after is not None and status >= 400:
                self.send_header("retry-after", receiver.retry_after)
            self.end_headers()
            self.wfile.write(reply)
        except OSError:
            pass

    do_PUT = do_POST  # Matrix's send endpoint is a PUT
