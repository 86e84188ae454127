"""The reference of every config key, made from the pydantic models of segmentation.config.

`train.py --print-config` prints it as text (with --config, next to the resolved values);
docs/config.md holds it as markdown, made by

    python -m segmentation.config_doc > docs/config.md

Each key's help is its `Field(description=...)` in segmentation/config.py (a dataset kind's own
data keys: in its module, segmentation/data/kinds/); its type, default and allowed values (Literal
choices, ranges) are read from its annotation, or from `json_schema_extra=allowed(...)` where a
validator decides.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from segmentation.config import Config, DataConfig, config_to_dict

REGENERATE = "python -m segmentation.config_doc > docs/config.md"
_TYPE_NAMES = {int: "integer", float: "number", str: "text", bool: "true/false", Any: "any"}
_UNIONS = (Union, types.UnionType)


@dataclass(frozen=True)
class KeyDoc:
    """One key: `key` dotted (data.image_size); `default` and `value` as YAML would show them;
    `value` is None when no config was given."""

    key: str
    type: str
    allowed: str
    default: str
    help: str
    value: str | None = None


@dataclass(frozen=True)
class SectionDoc:
    """The keys of one section; `name` is dotted (data.augment), "" for the top level;
    `dataset`: the dataset kind whose own data keys these are, "" for keys of every kind."""

    name: str
    help: str
    keys: list[KeyDoc]
    dataset: str = ""


# --------------------------------------------------------------------------- reading the models


def yaml_text(value: Any) -> str:
    """A value as one line of YAML flow style: null, true, [256, 512], {dropout: 0.1}."""
    value = to_jsonable_python(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(yaml_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {yaml_text(item)}" for key, item in value.items()) + "}"
    if value == "":
        return "''"
    return str(value)


def _type_text(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_text(args[0])
    if origin is Literal:
        return "choice"
    if origin in _UNIONS:
        names = list(dict.fromkeys(_type_text(arg) for arg in args))
        return ", ".join(names[:-1]) + " or " + names[-1]
    if origin is tuple:
        return "[" + ", ".join(_type_text(arg) for arg in args) + "]"
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "mapping"
    if annotation is type(None):
        return "null"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _constraints(metadata: list) -> list:
    """The annotated_types constraints (Ge, Lt, MinLen, ...) among pydantic metadata, also
    those inside a Field() given as metadata."""
    found = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            found += _constraints(item.metadata)
        elif isinstance(item, annotated_types.BaseMetadata):
            found.append(item)
    return found


def _range_text(constraints: list) -> str:
    low = high = ""
    for item in constraints:
        if isinstance(item, annotated_types.Ge):
            low = f"{item.ge} <="
        elif isinstance(item, annotated_types.Gt):
            low = f"{item.gt} <"
        elif isinstance(item, annotated_types.Le):
            high = f"<= {item.le}"
        elif isinstance(item, annotated_types.Lt):
            high = f"< {item.lt}"
        elif isinstance(item, annotated_types.MinLen) and item.min_length > 1:
            return f"at least {item.min_length} items"
    if low and high:
        return f"{low} x {high}"
    if low:  # "1 <=" reads better turned round: "x >= 1"
        bound, sign = low.split()
        return f"x {'>=' if sign == '<=' else '>'} {bound}"
    return f"x {high}" if high else ""


def _allowed_text(annotation: Any, metadata: list) -> str:
    """Choices or the range of a type with its metadata; "" where the type says it all."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _allowed_text(args[0], [*args[1:], *metadata])
    if origin is Literal:
        return ", ".join(str(arg) for arg in args)
    if origin in _UNIONS:
        parts = [_allowed_text(arg, []) for arg in args]
        if not any(parts):
            return ""
        texts = [part or _type_text(arg) for part, arg in zip(parts, args)]
        return ", ".join(texts[:-1]) + " or " + texts[-1]
    return _range_text(_constraints(metadata))


def _extra(field: FieldInfo) -> dict:
    extra = field.json_schema_extra
    if callable(extra):  # allowed_from: a list kept in another module, read now
        schema: dict = {}
        extra(schema)
        extra = schema
    return extra if isinstance(extra, dict) else {}


def _field_allowed(field: FieldInfo) -> str:
    extra = _extra(field)
    if "allowed" in extra:
        return str(extra["allowed"])
    return _allowed_text(field.annotation, list(field.metadata))


def _field_type(field: FieldInfo) -> str:
    return str(_extra(field).get("type") or _type_text(field.annotation))


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _default(field: FieldInfo) -> Any:
    if field.default is PydanticUndefined and field.default_factory is None:
        return None
    return field.get_default(call_default_factory=True)


def _kind_sections(prefix: str, values: dict | None) -> list[SectionDoc]:
    """The data keys of each dataset kind beyond those every kind has; with `values`, those of
    its kind alone."""
    from segmentation.data.kinds.catalog import KINDS

    sections = []
    for kind in KINDS.values():
        if values is not None and values.get("dataset") != kind.name:
            continue
        own = [name for name in kind.options.model_fields if name not in DataConfig.model_fields]
        [section] = _sections(kind.options, prefix, values, own)
        sections.append(SectionDoc(section.name, section.help, section.keys, kind.name))
    return sections


def _sections(
    model: type[BaseModel], prefix: str, values: dict | None, only: list[str] | None = None
) -> list[SectionDoc]:
    keys: list[KeyDoc] = []
    nested: list[SectionDoc] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if only is not None and name not in only:
            continue
        if _is_section(field.annotation):
            inner = values.get(name) if values is not None else None
            nested += _sections(field.annotation, f"{key}.", inner)
            if field.annotation is DataConfig:
                nested += _kind_sections(f"{key}.", inner)
            continue
        if not field.description:
            raise ValueError(
                f"config key {key} has no help: give it Field(..., description='one line') "
                "in segmentation/config.py"
            )
        keys.append(
            KeyDoc(
                key=key,
                type=_field_type(field),
                allowed=_field_allowed(field),
                default=yaml_text(_default(field)),
                help=field.description,
                value=None if values is None else yaml_text(values.get(name)),
            )
        )
    summary = (model.__doc__ or "").strip().split("\n")[0]  # the docstring's first line
    return [SectionDoc(prefix.removesuffix("."), summary, keys), *nested]


def config_reference(config: Config | None = None) -> list[SectionDoc]:
    """Every key of the run configuration by section, in the order of the models; with
    `config`, each key's value in it. ValueError names a key without a description."""
    values = None if config is None else config_to_dict(config)
    return _sections(Config, "", values)


# --------------------------------------------------------------------------- text and markdown


def reference_text(config: Config | None = None) -> str:
    """The reference as plain text for a terminal: per key `key = value`, then its help, type
    and default, and the values it allows. Without `config` the values are the defaults."""
    if config is None:
        heading = "Config keys and their defaults (with --config FILE: a run's values)."
    else:
        heading = "Config keys with the values of this run (the config, then the flags)."
    lines = [
        f"{heading} A config file sets keys by section (data: {{root: ...}}); --set "
        "section.key=VALUE sets one.",
    ]
    for section in config_reference(config):
        where = f", dataset: {section.dataset}" if section.dataset else ""
        lines += ["", f"[{section.name or 'top level'}{where}] {section.help}"]
        for key in section.keys:
            shown = key.default if key.value is None else key.value
            lines += [
                f"{key.key} = {shown}",
                f"    {key.help}",
                f"    type {key.type}, default {key.default}",
            ]
            if key.allowed:
                lines.append(f"    allowed: {key.allowed}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    """The reference as the markdown of docs/config.md: one table per section."""
    lines = [
        "# Configuration keys",
        "",
        f"<!-- Generated from segmentation/config.py by `{REGENERATE}`: edit the",
        "     descriptions there (Field(description=...)), then regenerate. -->",
        "",
        "A config file (YAML, see `configs/`) holds any of the sections below, e.g. "
        "`data: {root: data/cityscapes}`; keys left out keep their defaults and unknown keys "
        "are refused. On the command line, `--set section.key=VALUE` sets one key (the value "
        "is YAML; a mapping merges into the mapping it names), and flags such as `--lr` set "
        "the keys they name. `python train.py --print-config [--config FILE] [--set ...]` "
        "prints this list with the values a run would use, and trains nothing.",
    ]
    for section in config_reference():
        title = f"`{section.name}`" if section.name else "Top level"
        if section.dataset:
            title += f" with `dataset: {section.dataset}`"
        lines += ["", f"## {title}", "", section.help, ""]
        if not section.keys:  # a dataset kind with only the keys every kind shares
            lines.append("No keys beyond those of `data` above.")
            continue
        lines += [
            "| key | type | default | allowed | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| `{key.key}` | {_cell(key.type)} | `{_cell(key.default)}` | {_cell(key.allowed)} "
            f"| {_cell(key.help)} |"
            for key in section.keys
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    print(reference_markdown(), end="")


if __name__ == "__main__":
    main()
