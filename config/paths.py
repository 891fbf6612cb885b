"""Resolve a key path (``("sources", 0, "api_key")``) against the settings models.

Why this module exists: the loader needs to know, for a path in the TOML data or in a pydantic
error, which model field it names: to reject secrets written in the file, to keep a secret's
environment value as a raw string, to suggest field names for a typo, and to render error paths
without pydantic's discriminated-union tags
(``sources[0].polygon.api_key`` -> ``sources[0].api_key``).

Trade-off: it walks Python type annotations rather than pydantic's core schema. Annotations are
a stable public API and cover every shape the settings use (models, ``X | None``, ``list[X]``,
``dict[str, X]``, ``Annotated`` and unions of models); anything else is treated as a leaf.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from config.models import is_secret_field

Loc = tuple[str | int, ...]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Resolved:
    """What a key path names."""

    path: Loc
    """The path with union tags removed."""
    field: FieldInfo | None
    """The model field named by the last key, when the last key is a model field."""
    parent: type[BaseModel] | None
    """The model whose key the last element is (None below lists, dicts and scalars)."""
    secret: bool
    """True when the path is, or is inside, a secret field."""
    leaf: Any
    """The type annotation at the end of the path (``Any`` when unknown)."""


def render_path(path: Sequence[str | int]) -> str:
    """Dotted path with list indices in brackets: ``agents[1].name``; odd keys are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.match(part) else '"' + part.replace('"', '\\"') + '"'
            out += f".{key}" if out else key
    return out


def resolve(root: type[BaseModel], loc: Sequence[str | int], data: Any = None) -> Resolved:
    """Walk `loc` from `root`. `data` (the raw TOML data) picks the union member by its tag
    when the path itself carries no tag."""
    annotation: Any = root
    path: list[str | int] = []
    field: FieldInfo | None = None
    parent: type[BaseModel] | None = None
    secret = False
    items = list(loc)
    index = 0
    while index < len(items):
        part = items[index]
        annotation = _strip(annotation)
        members = _model_members(annotation)
        if len(members) > 1:
            chosen = _choose_member(members, part, data)
            if chosen is None:
                break
            annotation, consumed_tag = chosen
            if consumed_tag:
                index += 1
            continue
        if members:
            model = members[0]
            parent = model
            if not isinstance(part, str) or part not in model.model_fields:
                path.append(part)
                field, annotation, index = None, Any, index + 1
                break
            field = model.model_fields[part]
            secret = secret or is_secret_field(field)
            annotation = field.annotation
            data = data.get(part) if isinstance(data, Mapping) else None
        else:
            origin = typing.get_origin(annotation)
            args = typing.get_args(annotation)
            parent, field = None, None
            if origin in (list, tuple, Sequence) and args and isinstance(part, int):
                annotation = args[0]
                data = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
            elif origin in (dict, Mapping) and len(args) == 2:
                annotation = args[1]
                data = data.get(part) if isinstance(data, Mapping) else None
            else:
                break
        path.append(part)
        index += 1
    # Whatever could not be walked is kept as written, so no part of a path is ever lost.
    path.extend(items[index:])
    if index < len(items):
        annotation = Any
    return Resolved(tuple(path), field, parent, secret, _strip(annotation))


def prefers_raw_string(annotation: Any) -> bool:
    """True for string-like types: an environment value that parses as a non-string TOML value
    is kept as its raw text there.

    For a ``str`` field, ``TRADEENGINE__KAFKA__GROUP_ID=42`` means the text "42", not an int
    pydantic would then reject.
    """
    return annotation in (str, Path, SecretStr)


def _strip(annotation: Any) -> Any:
    """Remove ``Annotated`` and ``None`` from an annotation: ``Annotated[X, ...] | None`` -> X."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if _is_union(annotation):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation


def _is_union(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is typing.Union or origin is types.UnionType


def _model_members(annotation: Any) -> list[type[BaseModel]]:
    """The models `annotation` stands for: one for a model, several for a union of models."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if _is_union(annotation):
        members = [_strip(a) for a in typing.get_args(annotation) if a is not type(None)]
        if members and all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            return members
    return []


def _tag_of(model: type[BaseModel]) -> str | None:
    """The literal value of a union member's ``kind`` field (its discriminator tag)."""
    kind = model.model_fields.get("kind")
    if kind is None:
        return None
    args = typing.get_args(kind.annotation)
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _choose_member(
    members: list[type[BaseModel]], part: str | int, data: Any
) -> tuple[type[BaseModel], bool] | None:
    """Pick the union member: by a tag in the path (consumed), else by the data's tag, else the
    first member that has the key."""
    for member in members:
        if part == _tag_of(member):
            return member, True
    if isinstance(data, Mapping):
        for member in members:
            if data.get("kind") == _tag_of(member):
                return member, False
    for member in members:
        if isinstance(part, str) and part in member.model_fields:
            return member, False
    return None
