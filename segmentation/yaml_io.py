"""The one YAML reader of the package: config files, classes files and --set values.

PyYAML keeps the last of two equal keys in a mapping without a word, so a config that sets
`lr` twice trains with whichever came last. Here a repeated key is refused in one line that
names it and both lines; merge keys (`<<: *defaults`) still override what they bring in, as
YAML intends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from segmentation.errors import UserError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping holds the same key twice; `first` and `second` are the keys' positions."""

    def __init__(self, key: str, first: yaml.Mark, second: yaml.Mark) -> None:
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=second)
        self.key, self.first, self.second = key, first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: the base constructor refuses it below
                if first is not key_node:
                    # `yes` and `true` are the same key: name it as the user wrote it.
                    written = getattr(key_node, "value", key)
                    raise DuplicateKeyError(str(written), first.start_mark, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _duplicate_line(source: str, error: DuplicateKeyError) -> str:
    first, second = error.first.line + 1, error.second.line + 1
    where = f"twice on line {first}" if first == second else f"on lines {first} and {second}"
    return (
        f"{source} has the key '{error.key}' {where} of one mapping: keep one of them "
        "(YAML would silently use the last)"
    )


def parse_yaml(text: str, source: str, *, fix: str = "") -> Any:
    """The data of YAML `text`; UserError naming `source` (and the line) for a syntax error or
    a key repeated in one mapping. `fix` is added to the syntax error's line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except DuplicateKeyError as error:
        raise UserError(_duplicate_line(source, error)) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        suffix = f": {fix}" if fix else ""
        raise UserError(f"{source} is not valid YAML{where}: {problem}{suffix}") from None


def read_yaml(path: Path, source: str) -> Any:
    """The data of the YAML file `path` (UTF-8, with or without a byte order mark); UserError
    naming `source` when it cannot be read, decoded or parsed."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{source} is not UTF-8 text (byte {error.start}): save it as UTF-8"
        ) from None
    except OSError as error:
        raise UserError(f"cannot read {source}: {error.strerror or error}") from None
    return parse_yaml(text, source)
