"""Turn a pydantic `ValidationError` into `FieldError`s an operator can read.

Pydantic reports one bound at a time and knows nothing of near-miss keys, so the
field behind each error is looked up in the model tree to phrase the message.
"""

from __future__ import annotations

import difflib
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ._model import WrongKind, input_keys
from .errors import ABSENT, FieldError

__all__ = ["field_errors"]

UNSUPPORTED_KAIROS_RS_FIELDS = frozenset({"ai", "ai_policy"})
_SECRET_KEYS = frozenset({"jwt_secret", "secret", "redis_url"})
#: With ``conceal=True`` (settings of plugins, whose models Kairos does not know): a
#: value under a key that sounds secret is never echoed.
_SECRETISH = re.compile(r"(secret|token|password|passwd|credential|key)s?$", re.IGNORECASE)
_TYPE_MESSAGES = {
    "missing": "field required",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "too_short": "must not be empty",
    "literal_error": "has an unsupported value",
}


def field_errors(
    exc: ValidationError,
    root: type[BaseModel],
    *,
    prefix: tuple[str | int, ...] = (),
    conceal: bool = False,
) -> list[FieldError]:
    """One `FieldError` per pydantic error of validating ``root``, in pydantic's order;
    ``prefix`` is where ``root`` sits in the whole configuration. ``conceal`` hides
    the value under any key that sounds secret (``api_key``, ``keys``, ``password``)."""
    out = []
    for error in exc.errors(include_url=False):
        found = _convert(error, root, conceal)
        out.append(FieldError((*prefix, *found.loc), found.message, found.value))
    return out


def _convert(error: ErrorDetails, root: type[BaseModel], conceal: bool = False) -> FieldError:
    loc = tuple(error["loc"])
    kind = error["type"]
    value: object = error.get("input", ABSENT)
    if kind == "extra_forbidden":
        return FieldError(loc, _unknown_key_message(loc, root))
    if isinstance(value, WrongKind):
        given = "true or false" if isinstance(value.value, bool) else "a string"
        noun = "an integer" if kind.startswith("int") else "a number"
        return FieldError(loc, f"must be {noun}, not {given}", value.value)
    if kind == "missing" or isinstance(value, dict):
        value = ABSENT
    if any(part in _SECRET_KEYS for part in loc if isinstance(part, str)):
        value = ABSENT
    if conceal and any(_SECRETISH.search(part) for part in loc if isinstance(part, str)):
        value = ABSENT
    if kind in ("value_error", "assertion_error"):
        cause = error.get("ctx", {}).get("error")
        message = str(cause) if cause is not None else error["msg"]
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        message = _bounds_message(_metadata_at(loc, root), error)
    elif kind == "literal_error":
        choices = _literal_choices(loc, root)
        message = f"must be one of: {', '.join(choices)}" if choices else _TYPE_MESSAGES[kind]
        message += _did_you_mean(value, choices)
    else:
        message = _TYPE_MESSAGES.get(kind, error["msg"])
    return FieldError(loc, message, value)


def _did_you_mean(value: object, choices: list[str]) -> str:
    """``"; did you mean 'round_robin'?"`` for a near miss such as ``"roundrobin"``."""
    if not isinstance(value, str) or not choices:
        return ""
    by_folded = {choice.lower(): choice for choice in choices}
    near = difflib.get_close_matches(value.lower(), list(by_folded), n=1)
    return f"; did you mean {by_folded[near[0]]!r}?" if near else ""


def _unknown_key_message(loc: tuple[str | int, ...], root: type[BaseModel]) -> str:
    key = str(loc[-1])
    if key in UNSUPPORTED_KAIROS_RS_FIELDS:
        return f"{key!r} is a kairos-rs field that Kairos does not support yet; remove it"
    model = _model_at(loc[:-1], root)
    known = [] if model is None else list(model.model_fields)
    near = difflib.get_close_matches(key, known, n=1)
    return f"unknown field; did you mean {near[0]!r}?" if near else "unknown field"


def _strip(tp: Any) -> Any:
    """Drop ``| None`` and ``Annotated``; other unions are left alone."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            arms = [arm for arm in get_args(tp) if arm is not type(None)]
            if len(arms) != 1:
                return tp
            tp = arms[0]
        else:
            return tp


def _step(tp: Any, part: str | int) -> tuple[Any, list[Any]] | None:
    """The annotation and constraint metadata one ``loc`` step below ``tp``."""
    tp = _strip(tp)
    if isinstance(part, int):
        if get_origin(tp) is not list:
            return None
        item = get_args(tp)[0]
        return item, _annotated_metadata(item)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return None
    for name, info in tp.model_fields.items():
        if part in input_keys(tp, name):
            return info.annotation, [*info.metadata, *_annotated_metadata(info.annotation)]
    return None


def _walk(loc: tuple[str | int, ...], root: type[BaseModel]) -> tuple[Any, list[Any]] | None:
    found: tuple[Any, list[Any]] | None = (root, [])
    for part in loc:
        if found is None:
            return None
        found = _step(found[0], part)
    return found


def _annotated_metadata(tp: Any) -> list[Any]:
    out: list[Any] = []
    while get_origin(tp) is Annotated:
        for meta in get_args(tp)[1:]:
            out.extend(getattr(meta, "metadata", [meta]))
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        for arm in get_args(tp):
            out.extend(_annotated_metadata(arm))
    return out


def _model_at(loc: tuple[str | int, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    found = _walk(loc, root)
    tp = None if found is None else _strip(found[0])
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _metadata_at(loc: tuple[str | int, ...], root: type[BaseModel]) -> list[Any]:
    found = _walk(loc, root)
    return [] if found is None else found[1]


def _literal_choices(loc: tuple[str | int, ...], root: type[BaseModel]) -> list[str]:
    found = _walk(loc, root)
    tp = None if found is None else _strip(found[0])
    if get_origin(tp) is list:
        tp = _strip(get_args(tp)[0])
    return [str(arg) for arg in get_args(tp)] if get_origin(tp) is Literal else []


def _bounds_message(metadata: list[Any], error: ErrorDetails) -> str:
    low: tuple[str, object] | None = None
    high: tuple[str, object] | None = None
    # annotated_types' Ge/Gt/Le/Lt, recognised by their one attribute.
    for meta in metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(meta, attr, None)
            if bound is None:
                continue
            if attr[0] == "g":
                low = (op, bound)
            else:
                high = (op, bound)
    if low and high and low[0] == ">=" and high[0] == "<=":
        return f"must be between {low[1]} and {high[1]}"
    if low and high:
        return f"must be {low[0]} {low[1]} and {high[0]} {high[1]}"
    bound = low or high
    if bound is not None:
        return f"must be {bound[0]} {bound[1]}"
    return error["msg"]
