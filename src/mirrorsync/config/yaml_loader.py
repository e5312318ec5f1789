"""YAML text into plain values: PyYAML's safe loader on libyaml's parser, refusing a
key given twice, with the Python parser's words for a document libyaml refuses.
"""

from __future__ import annotations

from typing import Any

import yaml


class _OnceEach(yaml.constructor.SafeConstructor):
    """YAML's safe constructor, refusing a key given twice in one mapping (PyYAML keeps
    the last silently: ``verify_signatures: true`` then ``false`` would turn checks off)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue  # keys merged in with << may be overridden, as YAML intends
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _Loader(_OnceEach, yaml.SafeLoader):
    """The safe loader with :class:`_OnceEach`, in Python: its errors say where and what."""


try:
    from yaml import CSafeLoader as _LibYaml
except ImportError:  # PyYAML built without libyaml: the Python parser only
    from yaml import SafeLoader as _LibYaml  # type: ignore[assignment]


class _FastLoader(_OnceEach, _LibYaml):
    """The same on libyaml's parser: a tenth of the time (3 ms of each command's start)."""


def load_yaml(text: str) -> Any:
    """The document, parsed by libyaml; a document it refuses is parsed again by the
    Python parser, so that the error (its line, column and words) is the one it always
    was. The constructor, and so every value and check, is the same Python code."""
    try:
        return yaml.load(text, Loader=_FastLoader)
    except Exception:  # the Python parser says what is wrong, as it always did
        pass
    return yaml.load(text, Loader=_Loader)
