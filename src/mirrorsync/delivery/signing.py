"""Standard Webhooks signatures and the secrets they are keyed with.

A secret is ``whsec_`` followed by base64 of 24 to 64 random bytes; the
signature of a request is ``v1,`` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")).
Secrets are read when needed and never logged, stored or put in an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

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
    if hook.secret_env is not None:
        field = f"{key}.secret_env"
        value = os.environ.get(hook.secret_env)
        if value is None:
            raise ConfigError(
                config.path, field, f"environment variable {hook.secret_env} is not set"
            )
    elif hook.secret_file is not None:
        field = f"{key}.secret_file"
        # ${CREDENTIALS_DIRECTORY}/webhook-secret is how systemd's LoadCredential= arrives.
        path = Path(os.path.expandvars(os.path.expanduser(hook.secret_file)))
        try:
            value = read_secret_file(path)
        except (OSError, ValueError) as exc:  # a FIFO or device never blocks the run
            raise ConfigError(
                config.path, field, f"cannot read {path}: {unreadable(exc)}"
            ) from None
    else:
        field = f"{key}.secret"
        value = hook.secret or ""
    try:
        return parse_secret(value)
    except ValueError as exc:
        raise ConfigError(config.path, field, str(exc)) from None


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one request."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of a signed delivery."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id, timestamp, body),
    }
