"""The name a user most likely meant: for a misspelt config key (`learner.optim.lerning_rate`), a key put in the wrong
section (`learner.train.lr`), or a misspelt command (`trajforge buidl`). A refusal that only says "unknown" leaves the
user to read the whole config model; one that names the closest key, or the keys there are, says what to type."""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Iterator, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel


def closest(word: str, names: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The one of `names` closest to `word`, case ignored (difflib's ratio, at least `cutoff`), else None."""
    by_lower = {name.lower(): name for name in names}
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[found[0]] if found else None


def unknown_key_hint(model: type[BaseModel], loc: Sequence[Any], prefix: str = "") -> str:
    """What to say after "unknown key" for the key at `loc` (a pydantic error's location in `model`; `prefix` the
    dotted section the model is read at): the closest key beside it, else a key of that name or close to it elsewhere
    in the model, else the keys the place takes."""
    key = str(loc[-1])
    place = [str(part) for part in (prefix, *loc[:-1]) if part != ""]
    siblings = _keys_of(_models_at(model, loc[:-1]))
    near = closest(key, siblings)
    if near is not None:
        return f"did you mean {'.'.join([*place, near])}?"
    paths = list(_all_paths(model))
    names = {name for _, name in paths}
    wanted = key if key in names else closest(key, names)
    match = next((path for path, name in paths if name == wanted), None)
    if match is not None:
        return f"did you mean {'.'.join(part for part in (prefix, match) if part)}?"
    if siblings:
        return f"{'.'.join(place) or 'the top level'} takes {', '.join(sorted(siblings))}"
    return "check the spelling"


def _members(annotation: Any) -> list[Any]:
    """The types a field's annotation allows: the members of a union, the type under `Annotated`."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [member for argument in get_args(annotation) for member in _members(argument)]
    return [annotation]


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _models_at(model: type[BaseModel], loc: Sequence[Any]) -> list[type[BaseModel]]:
    """The models whose fields may hold the key under `loc`: fields of models, items of lists and values of dicts are
    followed; a union member named in the location (pydantic names it: `TaskSource`) picks that member."""
    kinds: list[Any] = [model]
    for part in loc:
        following = []
        for kind in kinds:
            origin = get_origin(kind)
            if _is_model(kind) and isinstance(part, str) and part in kind.model_fields:
                following += _members(kind.model_fields[part].annotation)
            elif _is_model(kind) and part == kind.__name__:
                following.append(kind)
            elif origin in (list, tuple, set, frozenset) and isinstance(part, int) and get_args(kind):
                following += _members(get_args(kind)[0])
            elif origin is dict and len(get_args(kind)) == 2:
                following += _members(get_args(kind)[1])
        kinds = following
    return [kind for kind in kinds if _is_model(kind)]


def _keys_of(models: Iterable[type[BaseModel]]) -> set[str]:
    return {field.alias or name for model in models for name, field in model.model_fields.items()}


def _all_paths(model: type[BaseModel], above: str = "", seen: frozenset[type] = frozenset()) -> Iterator[tuple[str, str]]:
    """(dotted path, key) of every key in `model` and the models its fields hold."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{above}.{key}" if above else key
        yield path, key
        for member in _members(field.annotation):
            for inner in [member] if _is_model(member) else _models_at(member, [0]):  # a model, or a list or dict of them
                if inner not in seen:
                    yield from _all_paths(inner, path, seen | {model})
