"""The effective settings as plain values, secrets and credentials redacted (for
``--dry-run`` and debugging).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import msgspec

from mirrorsync.config.schema import Config
from mirrorsync.redact import redact_url


def config_to_dict(config: Config) -> dict[str, Any]:
    """A plain mapping of the effective settings (for ``--dry-run`` and debugging)."""
    result: dict[str, Any] = msgspec.to_builtins(config)
    for hook in result.get("webhooks", []):
        if hook.get("secret") is not None:
            hook["secret"] = "<redacted>"
        hook["url"] = redact_url(hook["url"])
        if hook.get("format") in ("slack", "discord", "teams", "ntfy"):  # the path is the token
            parts = urllib.parse.urlsplit(hook["url"])
            hook["url"] = f"{parts.scheme}://{parts.netloc}/<redacted>"
    database = result.get("database")
    if isinstance(database, str):
        result["database"] = redact_url(database)
    elif isinstance(database, dict):
        database["url"] = redact_url(database["url"])
    return result
