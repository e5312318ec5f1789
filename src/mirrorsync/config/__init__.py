"""Configuration: one YAML file, validated into typed, immutable settings.

Where the file is found: ``-c PATH``, else ``$MIRRORSYNC_CONFIG``, else
``./mirrorsync.yaml``, else ``/etc/mirrorsync/mirrorsync.yaml``. Unknown keys and
wrong types are errors that name the file, the key and what was expected.

The public surface is this module's: :func:`load_config` and :func:`parse_config`,
the records they return and a few helpers. Behind it, one job each: ``schema`` (the
records: keys, types, defaults), ``parse`` (text to a checked :class:`Config`),
``yaml_loader`` (YAML to plain values), ``explain`` (msgspec's errors in the reader's
words), ``numbers`` (sizes, durations, every number's range), ``credentials`` (secret
and password files), ``dump`` (the effective settings, redacted), and the checks:
``checks`` (the whole, and what spans sections), ``check_sources``, ``check_copies``,
``check_webhooks``, ``check_database`` and ``check_values`` (URLs, globs, durations).
"""

from mirrorsync.config.checks import require_sources
from mirrorsync.config.credentials import read_secret_file, unreadable
from mirrorsync.config.dump import config_to_dict
from mirrorsync.config.numbers import parse_duration, parse_size
from mirrorsync.config.parse import load_config, parse_config
from mirrorsync.config.schema import (
    CatalogSource,
    Config,
    HttpConfig,
    LimitKind,
    LimitsConfig,
    MirrorCopy,
    MirrorSource,
    PagesSource,
    RetryConfig,
    S3Settings,
    Source,
    WebhookConfig,
    WebhookFormat,
    split_trusted_keys,
)
from mirrorsync.config_file import find_config
from mirrorsync.vocab import EVENT_TYPES

__all__ = [
    "EVENT_TYPES",
    "CatalogSource",
    "Config",
    "HttpConfig",
    "LimitKind",
    "LimitsConfig",
    "MirrorCopy",
    "MirrorSource",
    "PagesSource",
    "RetryConfig",
    "S3Settings",
    "Source",
    "WebhookConfig",
    "WebhookFormat",
    "config_to_dict",
    "find_config",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "read_secret_file",
    "require_sources",
    "split_trusted_keys",
    "unreadable",
]
