"""The OCI distribution API (registry HTTP API v2), over the one HTTP client.

Every request goes through :class:`~mirrorsync.fetch.client.HttpClient` (its
throttle, retries, deadlines, circuit breaker, ``-vv`` lines and masking); this
module adds what a registry needs on top: the ``Accept`` header of manifests,
digest checks, the token dance, and the upload protocol.

Authentication, as Spack's ``spack.oci.opener`` and Docker do it: requests go
out anonymously until one is answered 401; the registry's ``WWW-Authenticate``
challenge (asked of ``/v2/``) then says how to log in. ``Bearer realm=...,
service=...`` : a token is asked of the realm for ``repository:NAME:pull`` (and
``push`` for a copy target), with the credentials as Basic auth if there are any
(anonymous tokens are what public images on ghcr.io get). ``Basic``: the
credentials themselves. Credentials come from the URL (``oci://user:token@host/
repo``, masked wherever shown) or from Docker's ``config.json`` (``auths`` entry
of the registry host, base64 ``user:password``); a credential helper
(``credsStore``) is not run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio

from mirrorsync.errors import FetchError, FormatError, IntegrityError, NotFoundError
from mirrorsync.fetch.client import HttpClient
from mirrorsync.fetch.results import Answered, Fetched, Tally
from mirrorsync.ociref import (
    MANIFEST_ACCEPT,
    MANIFEST_CAP,
    MANIFEST_MEDIA_TYPE,
    Reference,
    is_tag,
    parse_reference,
)
from mirrorsync.redact import Url

T = TypeVar("T")

_TOKEN_CAP = 64 * 1024  # a token answer (JSON); a JWT is a few KiB
_DOCKER_CONFIG_CAP = 1 << 20
_TAGS_PAGE = 1000
_MAX_TAGS = 1_000_000
MAX_TAG_PAGES = 10_000  # a registry may link page to page without tags, for ever
_CHALLENGE_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def docker_credentials(host: str, path: Path | None = None) -> tuple[str, str] | None:
    """The ``auths`` entry of ``host`` in Docker's config file (None: none, or no
    readable file). Keys may be bare hosts or URLs (``https://host/v1/``)."""
    path = path or docker_config_path()
    try:
        with path.open("rb") as f:
            data = f.read(_DOCKER_CONFIG_CAP + 1)
    except OSError:
        return None
    if len(data) > _DOCKER_CONFIG_CAP:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if not isinstance(key, str) or not isinstance(entry, dict):
            continue
        name = key.split("://", 1)[-1].split("/", 1)[0]
        if name != host:
            continue
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                user, sep, secret = base64.b64decode(auth, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            if sep:
                return user, secret
        login, password = entry.get("username"), entry.get("password")
        if isinstance(login, str) and isinstance(password, str):
            return login, password
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate``'s first challenge: its scheme (lower case) and parameters."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in _CHALLENGE_RE.finditer(rest[:4096]):
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (bare or "")
        params.setdefault(match.group(1).lower(), value)
    return scheme.lower(), params


def oci_reference(url: Url) -> Reference:
    """The repository an ``oci://`` URL names (checked with the configuration: a
    FormatError here means a URL that did not come from it)."""
    try:
        return parse_reference(url.address)
    except ValueError as exc:
        raise FormatError("OCI repository URL", str(exc), url) from None


class OciRepository:
    """One registry repository, read (and, for a copy target, written) through ``client``."""

    def __init__(
        self,
        client: HttpClient,
        ref: Reference,
        *,
        push: bool = False,
        docker_config: Path | None = None,
    ) -> None:
        self.client = client
        self.ref = ref
        self.push = push
        self.base = f"{ref.scheme}://{ref.host}"
        self.api = Url(f"{self.base}/v2/{ref.name}")
        self.credentials: tuple[str, str] | None = None
        if ref.userinfo:
            user, _, secret = urllib.parse.unquote(ref.userinfo).partition(":")
            self.credentials = (user, secret)
        else:
            self.credentials = docker_credentials(ref.host, docker_config)
        self._authorization: str | None = None
        self._login_lock = anyio.Lock()

    # -- addresses -------------------------------------------------------------

    def manifest_url(self, reference: str) -> Url:
        return self.api.join(f"manifests/{reference}")

    def blob_url(self, sha256: str) -> Url:
        return self.api.join(f"blobs/sha256:{sha256}")

    # -- reading ---------------------------------------------------------------

    async def manifest(self, reference: str, tally: Tally | None = None) -> tuple[bytes, Url]:
        """The manifest tagged ``reference`` (or of that digest, checked): its bytes."""
        if not is_tag(reference) and not reference.startswith("sha256:"):
            raise FetchError(self.api, f"{reference[:140]!r} is not a valid tag")
        url = self.manifest_url(reference)

        async def get(headers: dict[str, str]) -> bytes:
            headers["accept"] = MANIFEST_ACCEPT
            result = await self.client.get(
                url,
                max_bytes=MANIFEST_CAP,
                limit_name="an OCI manifest's",
                tally=tally,
                headers=headers,
            )
            assert isinstance(result, Fetched)  # unconditional
            return result.content

        data = await self._authorized(url, get)
        if reference.startswith("sha256:") and hashlib.sha256(data).hexdigest() != reference[7:]:
            raise IntegrityError(url, "the manifest's sha256 is not the digest asked for")
        return data, url

    async def blob(
        self, sha256: str, size: int, tally: Tally | None = None, max_bytes: int | None = None
    ) -> bytes:
        """A small blob (a spec config) in memory, its length and digest checked."""
        url = self.blob_url(sha256)

        async def get(headers: dict[str, str]) -> bytes:
            result = await self.client.get(
                url,
                expected_length=size,
                expected_digest=sha256,
                max_bytes=max_bytes if max_bytes is not None else size,
                tally=tally,
                headers=headers,
            )
            assert isinstance(result, Fetched)
            return result.content

        return await self._authorized(url, get)

    async def download(
        self,
        sha256: str,
        size: int | None,
        dest: Path,
        *,
        tally: Tally | None = None,
        max_bytes: int | None = None,
        limit_name: str | None = None,
    ) -> None:
        """A blob to ``dest``, its length and digest checked."""
        url = self.blob_url(sha256)

        async def get(headers: dict[str, str]) -> None:
            await self.client.download(
                url,
                dest,
                expected_length=size,
                expected_sha256=sha256,
                max_bytes=max_bytes,
                limit_name=limit_name,
                promised_by="its digest",
                tally=tally,
                headers=headers,
            )

        await self._authorized(url, get)

    async def blob_size(self, sha256: str, tally: Tally | None = None) -> int | None:
        """The blob's size if the repository has it (HEAD); None if not."""
        url = self.blob_url(sha256)

        async def head(headers: dict[str, str]) -> int | None:
            try:
                return await self.client.head(url, tally=tally, headers=headers)
            except NotFoundError:
                return None

        return await self._authorized(url, head)

    async def tags(self, tally: Tally | None = None) -> list[str]:
        """Every tag of the repository (``tags/list``, page by page); [] if it has none."""
        found: list[str] = []
        url: Url | None = self.api.join(f"tags/list?n={_TAGS_PAGE}")
        pages = 0
        while url is not None and len(found) < _MAX_TAGS:
            pages += 1
            if pages > MAX_TAG_PAGES:
                raise FetchError(url, f"the tag list goes on past {MAX_TAG_PAGES} pages")
            page_url = url

            async def get(headers: dict[str, str], page_url: Url = page_url) -> Answered:
                return await self.client.send(
                    "GET", page_url, headers=headers, allow=frozenset({404}), tally=tally
                )

            reply = await self._authorized(page_url, get)
            if reply.status == 404:
                return found
            try:
                doc = json.loads(reply.content)
            except (ValueError, UnicodeDecodeError):
                raise FetchError(page_url, "the tag list is not JSON") from None
            tags = doc.get("tags") if isinstance(doc, dict) else None
            if not isinstance(tags, list):  # null when there are none; a string is no list
                tags = []
            found.extend(t for t in tags if isinstance(t, str) and is_tag(t))
            url = self._next_page(reply.headers.get("link", ""))
        return found

    def _next_page(self, link: str) -> Url | None:
        match = re.search(r'<([^>]*)>\s*;\s*rel="?next"?', link)
        if not match:
            return None
        target = urllib.parse.urljoin(self.base + "/", match.group(1))
        return Url(target) if target.startswith(f"{self.api.address}/tags/list") else None

    # -- writing ---------------------------------------------------------------

    async def put_blob(
        self,
        sha256: str,
        body: bytes | Path,
        size: int,
        *,
        tally: Tally | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """Upload a blob: POST an upload session, then one PUT (monolithic) or
        PATCHes of ``chunk_size`` bytes and a closing PUT (chunked)."""
        start = self.api.join("blobs/uploads/")

        async def post(headers: dict[str, str]) -> Answered:
            headers["content-length"] = "0"
            return await self.client.send("POST", start, headers=headers, content=b"", tally=tally)

        reply = await self._authorized(start, post)
        location = self._location(start, reply)
        digest = f"sha256:{sha256}"
        if chunk_size is not None and size > chunk_size:
            offset = 0
            while offset < size:
                piece = _read_range(body, offset, min(chunk_size, size - offset))
                at = location

                async def patch(
                    headers: dict[str, str],
                    at: Url = at,
                    piece: bytes = piece,
                    offset: int = offset,
                ) -> Answered:
                    headers["content-type"] = "application/octet-stream"
                    headers["content-range"] = f"{offset}-{offset + len(piece) - 1}"
                    return await self.client.send(
                        "PATCH", at, headers=headers, content=piece, tally=tally
                    )

                reply = await self._authorized(at, patch)
                location = self._location(at, reply)
                offset += len(piece)
            final: bytes | Path = b""
        else:
            final = body
        done = _with_query(location, "digest", digest)

        async def put(headers: dict[str, str]) -> Answered:
            headers["content-type"] = "application/octet-stream"
            return await self.client.send("PUT", done, headers=headers, content=final, tally=tally)

        reply = await self._authorized(done, put)
        if reply.status != 201:
            raise FetchError(done, f"upload not accepted: HTTP {reply.status}", reply.status)
        given = reply.headers.get("docker-content-digest")
        if given and given != digest:
            raise IntegrityError(done, f"the registry stored {given[:80]}, not {digest}")

    async def put_manifest(
        self,
        tag: str,
        data: bytes,
        tally: Tally | None = None,
        media_type: str = MANIFEST_MEDIA_TYPE,
    ) -> None:
        """PUT an image manifest under ``tag``."""
        if not is_tag(tag):
            raise FetchError(self.api, f"{tag[:140]!r} is not a valid tag")
        url = self.manifest_url(tag)

        async def put(headers: dict[str, str]) -> Answered:
            headers["content-type"] = media_type
            return await self.client.send("PUT", url, headers=headers, content=data, tally=tally)

        reply = await self._authorized(url, put)
        if reply.status != 201:
            raise FetchError(url, f"manifest not accepted: HTTP {reply.status}", reply.status)

    async def delete_tag(self, tag: str, tally: Tally | None = None) -> bool:
        """Delete the manifest a tag names (by its digest, as the API requires);
        False when the registry does not allow deletion (405) or has no such tag."""
        try:
            data, _ = await self.manifest(tag, tally)
        except NotFoundError:
            return False
        url = self.manifest_url(f"sha256:{hashlib.sha256(data).hexdigest()}")

        async def delete(headers: dict[str, str]) -> Answered:
            return await self.client.send(
                "DELETE", url, headers=headers, allow=frozenset({404, 405}), tally=tally
            )

        reply = await self._authorized(url, delete)
        return reply.status == 202

    # -- authentication --------------------------------------------------------

    async def _authorized(self, url: Url, call: Callable[[dict[str, str]], Awaitable[T]]) -> T:
        """``call`` with the current authorization; on a 401, log in and call it once more.

        Requests that meet the 401 together log in once: the others wait, then use
        the authorization the first obtained."""
        used = self._authorization
        try:
            return await call(self._headers())
        except FetchError as exc:
            if exc.status != 401:
                raise
        async with self._login_lock:
            if self._authorization == used:
                await self._login()
        try:
            return await call(self._headers())
        except FetchError as exc:
            if exc.status != 401:
                raise
            raise FetchError(
                url,
                "HTTP 401 Unauthorized after logging in: the registry refused "
                + ("the credentials" if self.credentials else "anonymous access")
                + (" to push" if self.push else ""),
                401,
            ) from None

    def auth_headers(self) -> dict[str, str]:
        """The authorization this repository logged in with (none yet: empty), for a
        request another part sends to one of its URLs (``verify``'s blob checks)."""
        return self._headers()

    def _headers(self) -> dict[str, str]:
        return {"authorization": self._authorization} if self._authorization else {}

    async def _login(self) -> None:
        probe = Url(f"{self.base}/v2/")
        reply = await self.client.send("GET", probe, allow=frozenset({401}))
        header = reply.headers.get("www-authenticate", "")
        if reply.status != 401 or not header:
            raise FetchError(probe, "HTTP 401 without a WWW-Authenticate challenge", 401)
        scheme, params = parse_challenge(header)
        basic = None
        if self.credentials is not None:
            raw = ":".join(self.credentials).encode()
            basic = "Basic " + base64.b64encode(raw).decode()
        if scheme == "bearer" and params.get("realm"):
            self._authorization = await self._token(params, basic)
        elif scheme == "basic" and basic is not None:
            self._authorization = basic
        elif scheme == "basic":
            raise FetchError(
                self.api,
                "the registry asks for credentials and none are configured "
                "(oci://USER:TOKEN@host/... or an auths entry in Docker's config.json)",
                401,
            )
        else:
            raise FetchError(
                probe, f"unsupported authentication scheme {scheme[:40]!r} (Bearer, Basic)", 401
            )

    async def _token(self, params: dict[str, str], basic: str | None) -> str:
        realm = params["realm"]
        if not realm.startswith("https://") and not (
            self.ref.scheme == "http" and realm.startswith("http://")
        ):
            raise FetchError(self.api, f"token realm {realm[:200]!r} is not https; refused", 401)
        scope = f"repository:{self.ref.name}:{'pull,push' if self.push else 'pull'}"
        query = {"scope": scope, "client_id": "mirrorsync"}
        if params.get("service"):
            query["service"] = params["service"]
        sep = "&" if "?" in realm else "?"
        url = Url(realm + sep + urllib.parse.urlencode(query))
        headers = {"authorization": basic} if basic else {}
        reply = await self.client.send("GET", url, headers=headers, max_bytes=_TOKEN_CAP)
        try:
            doc = json.loads(reply.content)
        except (ValueError, UnicodeDecodeError):
            doc = None
        token = None
        if isinstance(doc, dict):
            token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token or len(token) > _TOKEN_CAP:
            raise FetchError(url, "the token service's answer holds no token", 401)
        if not token.isascii() or any(c.isspace() for c in token):
            raise FetchError(url, "the token service's token is not a header value", 401)
        return f"Bearer {token}"

    def _location(self, asked: Url, reply: Answered) -> Url:
        location = reply.headers.get("location")
        if reply.status != 202 or not location:
            raise FetchError(
                asked, f"upload not started: HTTP {reply.status} without a Location", reply.status
            )
        target = urllib.parse.urljoin(self.base + "/", location)
        if not target.startswith(("http://", "https://")) or len(target) > 8192:
            raise FetchError(asked, "upload Location is not an http(s) URL")
        return Url(target)


def _with_query(url: Url, name: str, value: str) -> Url:
    sep = "&" if "?" in url.address else "?"
    return url.map(lambda a: f"{a}{sep}{name}={urllib.parse.quote(value, safe='')}")


def _read_range(body: bytes | Path, offset: int, length: int) -> bytes:
    if isinstance(body, bytes):
        return body[offset : offset + length]
    with body.open("rb") as f:
        f.seek(offset)
        return f.read(length)
