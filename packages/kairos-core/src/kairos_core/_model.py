"""The base of every configuration model, and the alias machinery they share."""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

__all__ = ["KairosModel", "WrongKind", "aliased", "input_keys"]


def aliased(canonical: str, *aliases: str, **kwargs: Any) -> Any:
    """A `Field` read from ``canonical`` or any of ``aliases`` (kairos-rs spellings).

    Serialisation always writes the canonical name.
    """
    return Field(validation_alias=AliasChoices(canonical, *aliases), **kwargs)


def input_keys(model: type[BaseModel], name: str) -> tuple[str, ...]:
    """Every input key that sets field ``name`` of ``model``, canonical first."""
    alias = model.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (name,) if alias is None else (name, str(alias))


def _numeric(annotation: Any) -> type | None:
    """int or float when ``annotation`` is a number (optionally None), else None."""
    if typing.get_origin(annotation) is Annotated:
        return _numeric(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        kinds = {_numeric(arg) for arg in typing.get_args(annotation) if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    return annotation if annotation in (int, float) else None


class WrongKind:
    """A string or boolean given for a number: pydantic would read ``"1"`` as 1 and
    ``true`` as 1, JSON Schema would not. Put in the value's place, it fails the
    number's type check at the field's own path; `_translate` names what was given."""

    __slots__ = ("value",)

    def __init__(self, value: str | bool) -> None:
        self.value = value


def _field_of(model: type[BaseModel], key: str) -> str:
    """The field an input ``key`` sets (its name, or the name it is an alias of)."""
    if key in model.model_fields:
        return key
    for name in model.model_fields:
        if key in input_keys(model, name):
            return name
    return key


@functools.cache
def _numeric_field(model: type[BaseModel], name: str) -> type | None:
    field = model.model_fields.get(name)
    return None if field is None else _numeric(field.annotation)


class KairosModel(BaseModel):
    """Frozen, rejects unknown keys, and refuses a setting given under two names."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_setting(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in cls.model_fields:
                given = [key for key in input_keys(cls, name) if key in data]
                if len(given) > 1:
                    names = " and ".join(f"'{key}'" for key in given)
                    raise ValueError(f"{names} are the same setting; give only one")
            wrong = {
                key: WrongKind(value)
                for key, value in data.items()
                if isinstance(value, (bool, str)) and _numeric_field(cls, _field_of(cls, key))
            }
            if wrong:
                data = {**data, **wrong}
        return data
