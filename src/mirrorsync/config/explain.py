"""msgspec's validation errors in the reader's words: the configuration key and what
was expected there (the whole range of a number, the keys allowed, a near miss).
"""

from __future__ import annotations

import re
from typing import get_args

import msgspec.inspect

from mirrorsync.config.numbers import RANGES
from mirrorsync.config.schema import WEBHOOK_FORMATS, Config, ManifestPolicy
from mirrorsync.vocab import EVENT_TYPES, did_you_mean

_AT_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_KEY_AT_RE = re.compile(r"^(?P<msg>.*?) - at `key` in `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]*)`$")
_MISSING_RE = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")


def explain(message: str, raw: object = None) -> tuple[str | None, str]:
    """Turn msgspec's ``Expected `int`, got `str` - at `$.http.timeout``` into key + problem."""
    key_match = _KEY_AT_RE.match(message)
    if key_match:  # a mapping key of the wrong type, e.g. ``1: x``
        where = key_match["path"].lstrip(".") or None
        return where, f"keys must be strings ({key_match['msg'].replace('`', '').lower()})"
    match = _AT_RE.match(message)
    assert match is not None  # the pattern matches any string
    msg, path = match["msg"], (match["path"] or "").lstrip(".")
    for pattern, problem in (
        (_UNKNOWN_RE, "unknown key"),
        (_MISSING_RE, "required key is missing"),
    ):
        field = pattern.match(msg)
        if field:
            key = f"{path}.{field['field']}" if path else field["field"]
            if pattern is _UNKNOWN_RE:
                problem += did_you_mean(field["field"], _known_keys(path, raw))
            return key, problem
    msg = msg.replace("`", "")
    if re.match(r"Expected array( \| null)?, got ", msg):  # a list field given one value
        what = _LIST_OF.get(path.rsplit(".", 1)[-1], "names")
        msg = f"expected a list of {what}, got {msg.rsplit(' ', 1)[-1]}"
    number = RANGES.get(re.sub(r"\[\d+\]", "[]", path))
    if number is not None and re.match(r"Expected (int|float) [<>]", msg):
        return path, f"expected {number}"  # the whole range, not only the bound crossed
    if msg.startswith("Invalid value") and path.endswith("kind"):
        msg += " (expected one of: catalog, mirror, pages)"
    elif msg.startswith("Invalid enum value") and re.search(r"\.events\[\d+\]$", path):
        msg += f" (expected one of: {', '.join(EVENT_TYPES)})"
    elif msg.startswith("Invalid enum value") and re.search(r"^webhooks\[\d+\]\.format$", path):
        value = msg.removeprefix("Invalid enum value").strip().strip("'\"")
        msg += f" (expected one of: {', '.join(WEBHOOK_FORMATS)}){did_you_mean(value, WEBHOOK_FORMATS)}"
    elif msg.startswith("Invalid enum value") and path.endswith(".manifests"):
        msg += f" (expected one of: {', '.join(get_args(ManifestPolicy))})"
    elif msg.startswith("Expected `str` matching regex") or "matching regex" in msg:
        msg = "expected a name of letters, digits, '.', '_' and '-'"
    return path or None, msg[0].lower() + msg[1:] if msg else msg


#: What a list field holds, where it is not names (or globs on names).
_LIST_OF = {"urls": "URLs", "files": "paths", "environments": "paths"}


def _known_keys(path: str, raw: object) -> list[str]:
    """The keys allowed at a configuration path (``sources[0]``, ``http.retries``) of
    the raw document: of a tagged source, only its kind's keys."""
    types: list[msgspec.inspect.Type] = [msgspec.inspect.type_info(Config)]
    for part in re.findall(r"[^.\[\]]+", path):
        if part.isdigit():
            raw = raw[int(part)] if isinstance(raw, list) and int(part) < len(raw) else None
            continue
        found: list[msgspec.inspect.Type] = []
        for struct in _structs(types, raw):
            found += [f.type for f in struct.fields if f.encode_name == part]
        types, raw = found, raw.get(part) if isinstance(raw, dict) else None
    structs = _structs(types, raw)
    keys = {f.encode_name for struct in structs for f in struct.fields}
    keys |= {struct.tag_field for struct in structs if struct.tag_field}
    return sorted(keys - {"path"})


def _flatten(types: list[msgspec.inspect.Type]) -> list[msgspec.inspect.Type]:
    out: list[msgspec.inspect.Type] = []
    for t in types:
        out += _flatten(list(t.types)) if isinstance(t, msgspec.inspect.UnionType) else [t]
    return out


def _structs(types: list[msgspec.inspect.Type], raw: object) -> list[msgspec.inspect.StructType]:
    """The structs among these types (a list's items included) that can be ``raw``:
    a tagged one only when ``raw`` carries its tag."""
    flat = _flatten(types)
    flat += _flatten([t.item_type for t in flat if isinstance(t, msgspec.inspect.ListType)])
    structs = [t for t in flat if isinstance(t, msgspec.inspect.StructType)]
    tagged = [
        t
        for t in structs
        if t.tag_field and isinstance(raw, dict) and raw.get(t.tag_field) == t.tag
    ]
    return tagged or structs
