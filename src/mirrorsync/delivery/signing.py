"""Standard Webhooks signatures and the secrets they are keyed with.

A secret is ``whsec_`` followed by base64 of 24 to 64 random bytes; the
signature of a request is ``v1,`` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")).
The asymmetric one (``v1a``) is ``v1a,`` + base64(ed25519 signature of the same
"<id>.<timestamp>.<body>"), made with a private key given as ``whsk_`` + base64
of its 32-byte seed (or of seed + public key, 64 bytes) or as a PEM (PKCS #8) file.
With both, the ``webhook-signature`` header carries both, space-separated.
Secrets, keys and tokens are read when needed and never logged, stored or put
in an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mirrorsync.config import Config, WebhookConfig, read_secret_file, unreadable
from mirrorsync.errors import ConfigError

PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def parse_secret(text: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ValueError (never quoting it) otherwise."""
    text = text.strip()
    expected = (
        f"expected {PREFIX} followed by base64 of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} "
        "random bytes (value not shown)"
    )
    if not text.startswith(PREFIX):
        raise ValueError(expected)
    try:
        key = base64.b64decode(text[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(expected) from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(expected)
    return key


def load_secret(config: Config, hook: WebhookConfig) -> bytes:
    """Read and check a webhook's secret; ConfigError names the file and key."""
    key = config.webhook_key(hook.name)
    if hook.secret_env is not None or hook.secret_file is not None:
        # ${CREDENTIALS_DIRECTORY}/webhook-secret is how systemd's LoadCredential= arrives.
        value, field = _read(config, f"{key}.secret", hook.secret_env, hook.secret_file)
    else:
        field = f"{key}.secret"
        value = hook.secret or ""
    try:
        return parse_secret(value)
    except ValueError as exc:
        raise ConfigError(config.path, field, str(exc)) from None


ED25519_PREFIX = "whsk_"
PUBLIC_PREFIX = "whpk_"
#: A bearer token is one header line: bounded, printable ASCII.
MAX_TOKEN_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one webhook's requests are signed and authorised with (any may be absent)."""

    hmac: bytes | None = None  # v1
    ed25519: Ed25519PrivateKey | None = None  # v1a
    token: str | None = None  # Authorization: Bearer

    def __repr__(self) -> str:  # never the key material
        return "Credentials(<not shown>)"


def parse_ed25519_key(text: str) -> Ed25519PrivateKey:
    """An ed25519 private key from ``whsk_`` + base64 (32-byte seed, or 64 bytes of seed
    and public key) or a PEM private key; ValueError (never quoting it) otherwise."""
    text = text.strip()
    expected = (
        f"expected {ED25519_PREFIX} followed by base64 of a 32-byte ed25519 seed (or 64 bytes: "
        "seed and public key), or an ed25519 private key in PEM (value not shown)"
    )
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm):
            raise ValueError(expected) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(expected)
        return key
    if not text.startswith(ED25519_PREFIX):
        raise ValueError(expected)
    try:
        raw = base64.b64decode(text[len(ED25519_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(expected) from None
    if len(raw) not in (32, 64):
        raise ValueError(expected)
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and public_key_bytes(key) != raw[32:]:
        raise ValueError(expected.replace("(value", "whose public half matches (value"))
    return key


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The ``whpk_`` form of the public key a receiver verifies ``v1a`` with."""
    return PUBLIC_PREFIX + base64.b64encode(public_key_bytes(key)).decode("ascii")


def _read(config: Config, key: str, env: str | None, file: str | None) -> tuple[str, str]:
    """The text of an ``*_env`` or ``*_file`` setting, and its key for errors."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(config.path, f"{key}_env", f"environment variable {env} is not set")
        return value, f"{key}_env"
    assert file is not None
    path = Path(os.path.expandvars(os.path.expanduser(file)))
    try:
        return read_secret_file(path), f"{key}_file"
    except (OSError, ValueError) as exc:  # a FIFO or device never blocks the run
        raise ConfigError(
            config.path, f"{key}_file", f"cannot read {path}: {unreadable(exc)}"
        ) from None


def load_credentials(config: Config, hook: WebhookConfig) -> Credentials:
    """Read and check a webhook's secret, ed25519 key and token, those it has;
    ConfigError names the file and key."""
    key = config.webhook_key(hook.name)
    secret = None
    if any(v is not None for v in (hook.secret_env, hook.secret_file, hook.secret)):
        secret = load_secret(config, hook)
    private = None
    if hook.ed25519_key_env is not None or hook.ed25519_key_file is not None:
        text, field = _read(
            config, f"{key}.ed25519_key", hook.ed25519_key_env, hook.ed25519_key_file
        )
        try:
            private = parse_ed25519_key(text)
        except ValueError as exc:
            raise ConfigError(config.path, field, str(exc)) from None
    token = None
    if hook.token_env is not None or hook.token_file is not None:
        text, field = _read(config, f"{key}.token", hook.token_env, hook.token_file)
        token = text.strip()
        if (
            not token
            or len(token) > MAX_TOKEN_CHARS
            or not token.isascii()
            or not token.isprintable()
            or " " in token
        ):
            raise ConfigError(
                config.path,
                field,
                f"expected one token of printable ASCII, at most {MAX_TOKEN_CHARS} characters "
                "(value not shown)",
            )
    return Credentials(secret, private, token)


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one request."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_v1a(key: Ed25519PrivateKey, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1a`` signature: ed25519 over ``<id>.<timestamp>.<body>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1a," + base64.b64encode(key.sign(signed)).decode("ascii")


def headers(
    credentials: Credentials,
    message_id: str,
    timestamp: int,
    body: bytes,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Every header of a delivery: its id and time, each signature it has keys for,
    and a bearer token when configured."""
    out = {
        "content-type": content_type,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
    }
    signatures = []
    if credentials.hmac is not None:
        signatures.append(sign(credentials.hmac, message_id, timestamp, body))
    if credentials.ed25519 is not None:
        signatures.append(sign_v1a(credentials.ed25519, message_id, timestamp, body))
    if signatures:
        out["webhook-signature"] = " ".join(signatures)
    if credentials.token is not None:
        out["authorization"] = f"Bearer {credentials.token}"
    return out
