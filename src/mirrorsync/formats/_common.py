"""Validation shared by the format parsers."""

from __future__ import annotations

import re

HASH_RE = re.compile(r"^[a-z0-9]{32}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def is_spec_hash(value: str) -> bool:
    """A Spack DAG hash: 32 lowercase base32 characters."""
    return HASH_RE.fullmatch(value) is not None


def is_sha256(value: str) -> bool:
    return SHA256_RE.fullmatch(value) is not None
