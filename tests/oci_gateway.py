"""A token-authenticating front for a test registry, as ghcr.io or Docker Hub answer.

Every registry request without a valid ``Authorization: Bearer`` token is answered
401 with ``WWW-Authenticate: Bearer realm=".../token",service="gateway",scope=...``;
``GET /token?service=...&scope=...`` issues a token for that scope (anonymous, or
for the Basic credentials given, if ``users`` lists any); a valid request is passed
on to the real registry behind it (a real loopback server, real sockets), its
``Location`` headers turned back to the gateway. ``tokens`` records what was
issued: (user or None, scope).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class Gateway:
    def __init__(
        self, upstream: str, users: dict[str, str] | None = None, *, cdn: bool = False
    ) -> None:
        self.upstream = upstream  # host:port of the registry (plain http)
        self.users = users or {}
        #: cdn: blob GETs are redirected to another origin that serves them as S3 serves
        #: a presigned URL (ghcr.io and Docker Hub do so): an Authorization header there
        #: is refused (400). What it was asked for, and with which Authorization.
        self.cdn_requests: list[tuple[str, str | None]] = []
        self.cdn = _Cdn(self) if cdn else None
        self.tokens: list[tuple[str | None, str]] = []
        self._issued: dict[str, str] = {}  # token -> scope
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _token(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                scope = query.get("scope", [""])[0]
                user = None
                given = self.headers.get("Authorization", "")
                if given.startswith("Basic "):
                    name, _, secret = base64.b64decode(given[6:]).decode().partition(":")
                    if gateway.users.get(name) != secret:
                        self._send(401, {}, b'{"errors":[{"code":"DENIED"}]}')
                        return
                    user = name
                elif gateway.users:
                    self._send(401, {}, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                    return
                token = f"tok{len(gateway.tokens)}"
                gateway.tokens.append((user, scope))
                gateway._issued[token] = scope
                body = json.dumps({"token": token, "expires_in": 300}).encode()
                self._send(200, {"Content-Type": "application/json"}, body)

            def _proxy(self) -> None:
                if self.path.startswith("/token"):
                    self._token()
                    return
                given = self.headers.get("Authorization", "")
                scope = gateway._issued.get(given.removeprefix("Bearer "))
                match = re.match(r"^/v2/(.+?)/(?:manifests|blobs|tags)/", self.path)
                name = match.group(1) if match else ""
                push = self.command in ("POST", "PUT", "PATCH", "DELETE")
                needed = f"repository:{name}:" if name else ""
                ok = scope is not None and (
                    not needed or (scope.startswith(needed) and (not push or "push" in scope))
                )
                if not ok:
                    realm = f"http://{self.headers.get('Host')}/token"
                    challenge = f'Bearer realm="{realm}",service="gateway"'
                    if needed:
                        challenge += f',scope="{needed}{"pull,push" if push else "pull"}"'
                    self._send(401, {"WWW-Authenticate": challenge}, b'{"errors":[]}')
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("authorization", "host", "connection")
                }
                conn = http.client.HTTPConnection(gateway.upstream, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    out = {
                        k: v
                        for k, v in answer.getheaders()
                        if k.lower() not in ("content-length", "connection", "transfer-encoding")
                    }
                finally:
                    conn.close()
                if (
                    gateway.cdn is not None
                    and self.command == "GET"
                    and "/blobs/sha256:" in self.path
                    and answer.status == 200
                ):
                    where = f"http://{gateway.cdn.host}{self.path}?X-Amz-Signature=abc"
                    self._send(307, {"Location": where})
                    return
                if "Location" in out:
                    out["Location"] = out["Location"].replace(
                        f"http://{gateway.upstream}", f"http://{self.headers.get('Host')}"
                    )
                self._send(answer.status, out, data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def url(self, repository: str) -> str:
        return f"oci+http://{self.host}/{repository}"

    def __enter__(self) -> Gateway:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        if self.cdn is not None:
            threading.Thread(target=self.cdn.server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.cdn is not None:
            self.cdn.server.shutdown()
            self.cdn.server.server_close()


class _Cdn:
    """Blobs from another origin, refusing any Authorization header (as S3 does)."""

    def __init__(self, gateway: Gateway) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                given = self.headers.get("Authorization")
                path = self.path.split("?", 1)[0]
                gateway.cdn_requests.append((path, given))
                if given is not None:
                    body = b"<Error>Only one auth mechanism allowed</Error>"
                    status = 400
                else:
                    conn = http.client.HTTPConnection(gateway.upstream, timeout=30)
                    try:
                        conn.request("GET", path)
                        answer = conn.getresponse()
                        body, status = answer.read(), answer.status
                    finally:
                        conn.close()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
