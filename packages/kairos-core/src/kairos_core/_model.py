"""The base of every configuration model, and the alias machinery they share."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

__all__ = ["KairosModel", "aliased", "input_keys"]


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
        return data
