"""YAML text into a validated :class:`Config`: parsed, converted to the schema's records,
then checked (:mod:`.checks`); every problem is a ConfigError naming the key.
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml

from mirrorsync.config.checks import check
from mirrorsync.config.explain import explain
from mirrorsync.config.numbers import DURATION_HINT, parse_duration
from mirrorsync.config.schema import Config
from mirrorsync.config.yaml_loader import load_yaml
from mirrorsync.config_file import find_config, read_config_text
from mirrorsync.errors import ConfigError


def load_config(explicit: str | None = None) -> Config:
    path = find_config(explicit)
    return parse_config(read_config_text(path), str(path))


def parse_config(text: str, path: str = "<config>") -> Config:
    """Validate YAML text into a Config; ConfigError names the key and the expectation."""
    try:
        raw = load_yaml(text)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, None, f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(path, None, "invalid YAML: nested too deeply") from None
    except Exception as exc:  # PyYAML raises ValueError for dates such as 2024-02-30, ...
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(path, None, f"invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, None, "expected a mapping with at least a 'sources' list")
    if "path" in raw:
        raise ConfigError(path, "path", "unknown key")
    try:
        config = msgspec.convert({**_read_durations(raw, path), "path": path}, Config, strict=True)
    except msgspec.ValidationError as exc:
        key, problem = explain(str(exc), raw)
        raise ConfigError(path, key, problem) from None
    check(config)
    return config


def _read_durations(raw: dict[Any, Any], path: str) -> dict[Any, Any]:
    """The raw mapping with each duration key written as text (``30s``) in seconds.

    Numbers pass as they are, for the schema's own range checks; text that is not
    a duration is refused here, naming the key and the syntax.
    """

    def convert(owner: Any, name: str, key: str) -> Any:
        if not isinstance(owner, dict) or not isinstance(owner.get(name), str):
            return owner
        try:
            seconds = parse_duration(owner[name])
        except ValueError:
            raise ConfigError(path, key, f"expected {DURATION_HINT}, got {owner[name]!r}") from None
        return {**owner, name: seconds}

    raw = dict(raw)
    if "http" in raw:
        raw["http"] = convert(raw["http"], "timeout", "http.timeout")
    hooks = raw.get("webhooks")
    if isinstance(hooks, list):
        raw["webhooks"] = [
            convert(hook, "timeout", f"webhooks[{i}].timeout") for i, hook in enumerate(hooks)
        ]
    return raw
