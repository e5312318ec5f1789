"""What the client's requests give back: the documents, downloads and answers,
and the requests and bytes counted (:class:`Tally`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mirrorsync.redact import Url


@dataclass
class Tally:
    """Requests and bytes, counted for one stack or for the whole run."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.bytes += other.bytes
        self.retries += other.retries


@dataclass(frozen=True, slots=True)
class Fetched:
    url: Url
    content: bytes
    # The validators that may be sent back next time (fetch.validators.kept_validators)
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True, slots=True)
class NotModified:
    url: Url


@dataclass(frozen=True, slots=True)
class Downloaded:
    url: Url
    path: Path
    length: int
    sha256: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Answered:
    """The answer to :meth:`HttpClient.send`: status, a few headers, the body."""

    url: Url
    status: int
    headers: dict[str, str]
    content: bytes
