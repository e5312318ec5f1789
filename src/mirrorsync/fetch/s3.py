"""``s3://bucket/key`` through the one HTTP client: botocore signs, our transport sends.

:class:`S3Transport` is mounted on the shared ``httpx.AsyncClient`` for ``s3://``
(as :class:`~mirrorsync.fetch.files.FileTransport` is for ``file://``), so an S3
request is an HTTP request like any other for everything above it: the throttle
(per bucket), retries, deadlines, circuit breaker, ``-vv`` request lines and error
messages all see, and name, the ``s3://`` URL. Below, each attempt is:

1. the settings for the URL: the longest ``http.s3`` prefix (each source's and
   copy's ``s3:``), else AWS's standard configuration;
2. the real endpoint: ``endpoint_url`` (or ``AWS_ENDPOINT_URL_S3`` /
   ``AWS_ENDPOINT_URL``) with path-style addressing, else AWS's virtual-hosted
   ``https://BUCKET.s3.REGION.amazonaws.com``;
3. a SigV4 signature (botocore's signer; credentials from botocore's chain:
   environment, ``AWS_PROFILE``/``profile`` and the shared files, SSO, instance
   roles), or none when ``anonymous`` or when no credentials exist (a public bucket);
4. sent by the shared aiohttp transport; an S3 error's ``<Code>`` is added to the
   status line (``HTTP 403 Forbidden (InvalidAccessKeyId)``), never a credential.

The payload hash is the caller's ``x-amz-content-sha256`` when given (a blob's
sha256 is its name: nothing is hashed twice), else computed from the body.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from mirrorsync.config import S3Settings

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_ERROR_BODY_CAP = 16 * 1024
#: Headers of ours that are not signed (they may differ between hops, proxies).
_UNSIGNED = frozenset({"user-agent", "accept-encoding", "connection", "content-length"})


@dataclass(frozen=True)
class Access:
    """How requests to one set of buckets are made."""

    endpoint: str | None  # scheme://host[:port], path-style; None: AWS virtual-hosted
    region: str
    credentials: Any  # botocore Credentials (refreshed when they expire), or None: unsigned


def split_s3(url: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key`` (the key percent-encoded as given)."""
    rest = url[len("s3://") :]
    bucket, _, key = rest.partition("/")
    return bucket, key


class S3Transport(httpx.AsyncBaseTransport):
    """``s3://`` requests, signed, sent through ``inner`` (the shared transport)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, settings: dict[str, S3Settings]) -> None:
        self._inner = inner
        self._settings = sorted(settings.items(), key=lambda kv: -len(kv[0]))
        self._access: dict[tuple[object, ...], Access] = {}
        self._lock = threading.Lock()
        self._regions: dict[str, str] = {}  # bucket -> the region AWS said it is in

    def settings_for(self, url: str) -> S3Settings:
        """The longest configured prefix of ``url``; for a request on the bucket itself
        (a listing, multipart uploads), that of any prefix in the bucket."""
        path = url.split("?", 1)[0]
        bucket = "s3://" + split_s3(path)[0]
        fallback = None
        for prefix, settings in self._settings:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return settings
            if fallback is None and (prefix == bucket or prefix.startswith(bucket + "/")):
                fallback = settings
        return fallback or _DEFAULT

    async def access(self, url: str) -> Access:
        settings = self.settings_for(url)
        found = self._access.get(_key(settings))
        if found is None:  # botocore's chain reads files (and may ask IMDS): off the loop
            found = await anyio.to_thread.run_sync(self._resolve, settings)
        return found

    def _resolve(self, settings: S3Settings) -> Access:
        with self._lock:
            found = self._access.get(_key(settings))
            if found is None:
                found = self._access[_key(settings)] = resolve(settings)
            return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        bucket, key = split_s3(url)
        access = await self.access(url)
        region = self._regions.get(bucket)
        if region is not None:  # AWS said where the bucket is: asked there from now on
            access = dataclasses.replace(access, region=region)
        body = await request.aread()
        response = await self._send(request, access, bucket, key, body)
        moved = response.headers.get("x-amz-bucket-region")
        if (
            response.status_code in (301, 307, 400)
            and access.endpoint is None
            and moved
            and moved != access.region
            and re.fullmatch(r"[a-z0-9-]{1,40}", moved)
        ):
            await response.aclose()
            self._regions[bucket] = moved
            access = dataclasses.replace(access, region=moved)
            response = await self._send(request, access, bucket, key, body)
        if response.status_code < 300 or response.status_code == 304:
            return response
        if request.method == "HEAD" and response.status_code >= 400:
            return response
        return await _with_code(response, request)

    async def _send(
        self, request: httpx.Request, access: Access, bucket: str, key: str, body: bytes
    ) -> httpx.Response:
        target = endpoint_url(access, bucket, key)
        headers = {k.lower(): v for k, v in request.headers.items()}
        headers.pop("host", None)
        payload = headers.pop("x-amz-content-sha256", None)
        if access.credentials is not None:
            signed = sign(access, request.method, target, headers, body, payload)
        else:
            signed = headers
        forward = httpx.Request(
            request.method,
            target,
            headers=signed,
            content=body,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(forward)

    async def aclose(self) -> None:
        return None  # the inner transport belongs to the client


_DEFAULT = S3Settings()


def _key(settings: S3Settings) -> tuple[object, ...]:
    return (settings.endpoint_url, settings.region, settings.profile, settings.anonymous)


def resolve(settings: S3Settings) -> Access:
    """Endpoint, region and credentials for ``settings`` by AWS's rules (blocking)."""
    import botocore.session  # type: ignore[import-untyped]

    session = botocore.session.Session(profile=settings.profile)
    region = settings.region or session.get_config_variable("region") or "us-east-1"
    endpoint = settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint is None and settings.profile is not None:
        endpoint = session.get_scoped_config().get("endpoint_url")
    credentials = None
    if not settings.anonymous:
        credentials = session.get_credentials()
    return Access(endpoint.rstrip("/") if endpoint else None, region, credentials)


def endpoint_url(access: Access, bucket: str, key: str) -> str:
    if access.endpoint is not None:
        return f"{access.endpoint}/{bucket}/{key}"
    if "." in bucket:  # a dotted name breaks the wildcard certificate: path-style
        return f"https://s3.{access.region}.amazonaws.com/{bucket}/{key}"
    return f"https://{bucket}.s3.{access.region}.amazonaws.com/{key}"


def sign(
    access: Access,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    payload: str | None,
) -> dict[str, str]:
    """``headers`` plus SigV4's (Authorization, X-Amz-Date, X-Amz-Content-SHA256...)."""
    from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]

    signed = {k: v for k, v in headers.items() if k not in _UNSIGNED}
    signed["X-Amz-Content-SHA256"] = payload or (
        hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    )
    aws = AWSRequest(method=method, url=url, headers=signed, data=body)
    # Frozen per request: temporary credentials (SSO, roles) are renewed before they expire.
    frozen = access.credentials.get_frozen_credentials()
    _signer_class()(frozen, "s3", access.region).add_auth(aws)
    out = {k: v for k, v in headers.items() if k in _UNSIGNED}
    out.update(dict(aws.headers.items()))
    return out


_SIGNER: Any = None


def _signer_class() -> Any:
    """botocore's SigV4 signer, keeping the path as sent (S3 keys are not normalised)."""
    global _SIGNER
    if _SIGNER is None:
        from botocore.auth import SigV4Auth  # type: ignore[import-untyped]

        class S3Signer(SigV4Auth):  # type: ignore[misc]
            def _normalize_url_path(self, path: str) -> str:
                return path

        _SIGNER = S3Signer
    return _SIGNER


async def _with_code(response: httpx.Response, request: httpx.Request) -> httpx.Response:
    """The response with S3's error code in its reason phrase; its (bounded) body kept."""
    data = b""
    try:
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) > _ERROR_BODY_CAP:
                break
    finally:
        await response.aclose()
    found = _CODE.search(data)
    reason = response.reason_phrase
    if found is not None:
        reason = f"{reason} ({found.group(1).decode()})".strip()
    status = response.status_code
    if status < 400:  # a redirect S3 gives no Location for: never a document
        reason = f"{status} {reason}, set s3.region or s3.endpoint_url"
        status = 400
    headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
    return httpx.Response(
        status,
        headers=headers,
        stream=httpx.ByteStream(data[:_ERROR_BODY_CAP]),
        request=request,
        extensions={"reason_phrase": reason.encode("ascii", "replace")},
    )


def quote_key(key: str) -> str:
    """A key as it goes in a URL path: every byte but the unreserved ones and ``/``."""
    return urllib.parse.quote(key, safe="/~")


def quote_value(value: str) -> str:
    """A query value as SigV4 canonicalises it (``/`` too is encoded)."""
    return urllib.parse.quote(value, safe="-_.~")
