"""The project's one YAML reader (configs, baselines, ``--set`` values) and the JSON reader of subset files: a
mapping that names a key twice is a UserError naming the file, the key and both lines, not the last value kept."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from ssd_eval.errors import UserError


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader whose mappings refuse a key given twice; ``name`` is the source named in errors."""

    name = "<text>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error says so below
                continue
            if first is not None:
                raise UserError(f"{self.name}: duplicate key {key!r} (line {first} and line {line}); "
                                "YAML keeps only the last, so delete one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``, except that a mapping naming a key twice is a UserError naming ``source``,
    the key and both lines. YAML syntax errors (yaml.YAMLError) and RecursionError reach the caller."""
    loader = _UniqueKeyLoader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_json(text: str, source: str) -> Any:
    """``json.loads(text)``, except that an object naming a key twice is a UserError naming ``source``, the
    key and the lines it is on. JSON syntax errors (json.JSONDecodeError) reach the caller."""
    def unique(pairs: list[tuple[str, Any]]) -> dict:
        mapping = dict(pairs)
        if len(mapping) < len(pairs):
            keys = [key for key, _ in pairs]
            key = next(key for number, key in enumerate(keys) if key in keys[:number])
            pattern = re.compile(re.escape(json.dumps(key)) + r"\s*:")  # the lines where `"key":` occurs
            lines = [text.count("\n", 0, match.start()) + 1 for match in pattern.finditer(text)]
            where = f" (line {lines[0]} and line {lines[1]})" if len(lines) >= 2 else ""
            raise UserError(f"{source}: duplicate key {key!r}{where}; JSON readers keep only the last, so delete one")
        return mapping

    return json.loads(text, object_pairs_hook=unique)

