"""How a scenario's YAML or validation error becomes one line that names the key and the fix."""

from __future__ import annotations

import difflib
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["explain", "one_line", "parse_yaml", "UniqueKeyLoader"]


def _suggest(name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    return f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The pydantic model inside ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``; True for a dict value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    for arg in get_args(annotation):
        found, _ = _model_in(arg)
        if found is not None:
            return found, get_origin(annotation) is dict
    return None, False


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model found at ``loc`` (for did-you-mean)."""
    current: type[BaseModel] | None = model
    skip_key = False  # the part after a dict-valued field is a user key (e.g. an attribute name)
    for part in loc[:-1]:
        if skip_key or isinstance(part, int):
            skip_key = False
            continue
        field = current.model_fields.get(str(part)) if current is not None else None
        if field is None:
            return []
        current, skip_key = _model_in(field.annotation)
    return list(current.model_fields) if current is not None else []


def one_line(text: str) -> str:
    """Messages are one line even when a key, value or path holds a line break."""
    return "".join(repr(c)[1:-1] if c in _BREAKS else c for c in text)


_BREAKS = set("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def explain(err: ValidationError, source: str, root: type[BaseModel]) -> str:
    """One line for a validation error: the key path, what is wrong and the fix (a did-you-mean for typos)."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo explains a 'missing'
    loc = tuple(first["loc"])
    path = ".".join(str(p) for p in loc)
    got = first.get("input")
    if first["type"] == "extra_forbidden":
        allowed = [k for k in _allowed_keys(root, loc) if k != "base_dir"]
        hint = _suggest(str(loc[-1]), allowed) if allowed else "remove it"
        return f"{source}: unknown key `{path}`; {hint}"
    if first["type"] == "missing":
        return f"{source}: `{path}` is required; add it"
    msg = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    msg = msg[0].lower() + msg[1:]
    if isinstance(got, dict):
        shown = "; got a mapping" if first["type"].endswith("_type") else ""  # else a whole section: say nothing
    else:
        shown = f"; got {got!r}"[:80]
    return f"{source}: `{path}` {msg}{shown}" if path else f"{source}: {msg}"


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader (plain data only: no Python objects) that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
