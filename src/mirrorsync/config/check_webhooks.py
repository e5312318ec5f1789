"""The checks of ``webhooks:``: unique names, URLs, each format's keys (signing, tokens,
a Matrix room, an email's addresses), an inline secret's file mode, filters, durations.
"""

from __future__ import annotations

import re
import urllib.parse

from mirrorsync.config.check_values import check_duration, check_glob, check_url
from mirrorsync.config.schema import Config, WebhookConfig
from mirrorsync.config_file import consult
from mirrorsync.errors import ConfigError
from mirrorsync.redact import redact_url
from mirrorsync.vocab import did_you_mean


def check_webhooks(config: Config) -> None:
    path = config.path
    seen: set[str] = set()
    for i, hook in enumerate(config.webhooks):
        key = f"webhooks[{i}]"
        if hook.name in seen:
            raise ConfigError(path, f"{key}.name", f"duplicate webhook name {hook.name!r}")
        seen.add(hook.name)
        if hook.format == "email":
            _check_email(path, key, hook)
        else:
            check_url(path, f"{key}.url", hook.url)
        _check_webhook_format(path, key, hook)
        if hook.secret_env is not None and not hook.secret_env:
            raise ConfigError(path, f"{key}.secret_env", "expected an environment variable name")
        if hook.secret_file is not None and not hook.secret_file:
            raise ConfigError(path, f"{key}.secret_file", "expected a file path")
        if hook.secret is not None:
            _check_inline_secret(path, f"{key}.secret", hook.secret)
        if hook.events is not None and not hook.events:
            raise ConfigError(path, f"{key}.events", "expected at least one event type")
        for field in ("releases", "stacks", "packages"):
            globs = getattr(hook.filter, field)
            if globs is not None and not globs:
                raise ConfigError(path, f"{key}.filter.{field}", "expected at least one glob")
            for j, glob in enumerate(globs or []):
                check_glob(path, f"{key}.filter.{field}[{j}]", glob)
                if "[^" in glob:  # fnmatch reads ^ literally, SQL GLOB as negation
                    raise ConfigError(
                        path,
                        f"{key}.filter.{field}[{j}]",
                        "write [!...] to negate a set, not [^...]",
                    )
        for field in ("max_age", "keep_delivered", "keep_dead"):
            check_duration(path, f"{key}.{field}", getattr(hook, field))


#: The placeholders a webhook's ``link`` template may hold.
LINK_FIELDS = ("release", "stack")
_LINK_FIELD_RE = re.compile(r"\{([^{}]*)\}")


def _check_webhook_format(path: str, key: str, hook: WebhookConfig) -> None:
    """Signing keys, tokens and the keys of a format: a ``standard`` webhook is signed
    (a ``whsec_`` secret, an ed25519 key or both); a chat format needs no secret."""
    given = [k for k in ("secret_env", "secret_file", "secret") if getattr(hook, k) is not None]
    if len(given) > 1 or (
        not given
        and hook.format == "standard"
        and hook.ed25519_key_env is None
        and hook.ed25519_key_file is None
    ):
        problem = "give exactly one of secret_env, secret_file or secret"
        if not given:
            problem += " (or an ed25519_key_file or ed25519_key_env for v1a signatures)"
        raise ConfigError(path, key, f"{problem} (got {', '.join(given) or 'none'})")
    for pair in (("ed25519_key_env", "ed25519_key_file"), ("token_env", "token_file")):
        values = [getattr(hook, k) for k in pair]
        if all(v is not None for v in values):
            raise ConfigError(path, key, f"give one of {pair[0]} or {pair[1]}, not both")
        for name, value in zip(pair, values, strict=True):
            if value is not None and not value.strip():
                what = "an environment variable name" if name.endswith("_env") else "a file path"
                raise ConfigError(path, f"{key}.{name}", f"expected {what}")
    if hook.format == "matrix":
        if not hook.room or not hook.room.startswith("!") or ":" not in hook.room:
            raise ConfigError(
                path,
                f"{key}.room",
                f"format: matrix needs the room ID to post to (!abc:example.org), got {hook.room!r}",
            )
        if hook.token_env is None and hook.token_file is None:
            raise ConfigError(
                path, key, "format: matrix needs an access token: token_env or token_file"
            )
    elif hook.room is not None:
        raise ConfigError(path, f"{key}.room", "room is for format: matrix only")
    if hook.format != "email":
        for name, value in (("to", hook.to), ("from", hook.from_)):
            if value is not None:
                raise ConfigError(path, f"{key}.{name}", f"{name} is for format: email only")
    if hook.link is not None:
        fields = _LINK_FIELD_RE.findall(hook.link)
        for field in fields:
            if field not in LINK_FIELDS:
                raise ConfigError(
                    path,
                    f"{key}.link",
                    f"unknown placeholder {{{field}}} (expected {{release}} or {{stack}})"
                    + did_you_mean(field, LINK_FIELDS),
                )
        check_url(path, f"{key}.link", _LINK_FIELD_RE.sub("x", hook.link))


_ADDRESS_RE = re.compile(r"^[^\s@<>,;:\"()\[\]\\]+@[A-Za-z0-9.-]+$")


def _check_email(path: str, key: str, hook: WebhookConfig) -> None:
    """An SMTP URL, a sender and at least one recipient, each a plain address."""
    parsed = urllib.parse.urlsplit(hook.url)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname or port == -1:
        raise ConfigError(
            path,
            f"{key}.url",
            f"format: email needs smtp://[user@]host[:port] or smtps://..., got {redact_url(hook.url)!r}",
        )
    if parsed.password is not None:
        raise ConfigError(
            path,
            f"{key}.url",
            "a password in the URL is refused: give it with token_env or token_file",
        )
    if not hook.to:
        raise ConfigError(path, f"{key}.to", "format: email needs a list of recipient addresses")
    for j, address in enumerate(hook.to):
        if not _ADDRESS_RE.match(address):
            raise ConfigError(
                path,
                f"{key}.to[{j}]",
                f"expected an address such as ops@example.org, got {address!r}",
            )
    if hook.from_ is None or not _ADDRESS_RE.match(hook.from_):
        raise ConfigError(
            path,
            f"{key}.from",
            f"format: email needs a sender address such as mirrorsync@example.org, got {hook.from_!r}",
        )


def _check_inline_secret(path: str, key: str, secret: str) -> None:
    """An inline secret is accepted only from a file nobody but its owner can read."""
    mode = consult("mode", path)
    if not isinstance(mode, int):
        raise ConfigError(
            path,
            key,
            "an inline secret needs a configuration file that is readable by its owner only",
        )
    if mode & 0o077:
        raise ConfigError(
            path,
            key,
            f"an inline secret is refused: the file is mode {mode & 0o777:04o}, readable by others; "
            "chmod 600 it, or use secret_env or secret_file",
        )
    if not secret.startswith("whsec_") or len(secret) <= len("whsec_"):
        raise ConfigError(path, key, "expected a whsec_... secret (value not shown)")
