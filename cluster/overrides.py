"""Overrides of a config by dotted path: ``--set learner.lr=2e-3 --set rollout.group_size=8``.

A path names a field of ServiceConfig or of one of its nested configs. The value is read by the
field's type: a number for a number, a bare word or a quoted string for a string, ``None`` where
the field may be None, one of the names of a ``Literal``, a Python literal for a tuple
(``rewards.weights=(('identity', 1.0),)``). A wrong type or an unknown path is a ``ValueError``
that names the field and says what to give instead.

All overrides are applied at once: each config is rebuilt a single time, with every change to
it, so that fields checked together (an alignment model name and its checkpoint) can be given in
either order, and every config's own validation runs on the result. A path given twice: the
last value wins, as for any repeated flag.
"""

from __future__ import annotations

import ast
import difflib
import types
import typing
from dataclasses import fields, is_dataclass, replace
from typing import Literal, Union

_NO_LITERAL = object()


def parse_override(text: str) -> tuple[list[str], str]:
    """'learner.lr=2e-3' -> (['learner', 'lr'], '2e-3'): the path and the raw value, read later by the field's type."""
    path, sep, raw = text.partition("=")
    if not sep or not path.strip():
        raise ValueError(f"--set expects FIELD=VALUE (e.g. learner.lr=2e-3), got {text!r}")
    return path.strip().split("."), raw.strip()


def apply_overrides(cfg, overrides: typing.Iterable[str]):
    """A copy of the dataclass ``cfg`` with every ``FIELD=VALUE`` of ``overrides`` applied at once."""
    changes: dict = {}
    for text in overrides:
        path, raw = parse_override(text)
        _resolve(cfg, path, raw, changes)
    return _rebuild(cfg, changes)


def _resolve(cfg, path: list[str], raw: str, changes: dict, prefix: str = "") -> None:
    """Check ``path`` against ``cfg``'s fields, read ``raw`` by the field's type, record it in ``changes``."""
    names = [f.name for f in fields(cfg)]
    head, rest = path[0], path[1:]
    where = f"{prefix}{head}"
    if head not in names:
        near = difflib.get_close_matches(head, names, n=1, cutoff=0.5)
        hint = f"did you mean {prefix}{near[0]}? " if near else ""
        raise ValueError(f"--set {where}: {type(cfg).__name__} has no field {head!r}; {hint}choose one of {names}")
    current = getattr(cfg, head)
    if rest:
        if not is_dataclass(current):
            raise ValueError(f"--set {where}.{'.'.join(rest)}: {where} is a value, not a config with fields")
        _resolve(current, rest, raw, changes.setdefault(head, {}), f"{where}.")
        return
    if is_dataclass(current):
        raise ValueError(f"--set {where}: name one of its fields, e.g. {where}.{fields(current)[0].name}=...")
    kind = typing.get_type_hints(type(cfg))[head]
    try:
        changes[head] = read_value(kind, raw)
    except ValueError as e:
        raise ValueError(f"--set {where}={raw}: {type(cfg).__name__}.{head} {e}; e.g. --set {where}={_show(current)}") from None


def _rebuild(cfg, changes: dict):
    """``cfg`` with ``changes`` ({field: value or {subfield: ...}}), each nested config rebuilt once, innermost first."""
    return replace(cfg, **{k: _rebuild(getattr(cfg, k), v) if isinstance(v, dict) else v for k, v in changes.items()})


def read_value(kind, raw: str):
    """``raw`` (the text after '=') as a value of type ``kind``; ValueError 'takes ...' if it is not one."""
    try:
        literal = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        literal = _NO_LITERAL
    return _read(kind, raw, literal)


def _read(kind, raw: str | None, literal):
    """Check one value: ``raw`` is its text where there is one (a top-level value), ``literal`` its Python reading."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        return _read_union(kind, raw, literal)
    if origin is Literal:
        return _read_literal(kind, raw, literal)
    if origin is tuple:
        return _read_tuple(kind, typing.get_args(kind), literal)
    if kind not in _SCALARS:
        raise ValueError(f"has type {kind}, which --set cannot read")
    value = _SCALARS[kind](raw, literal)
    if value is _NO_LITERAL:
        raise ValueError(f"takes {_describe(kind)}")
    return value


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


_SCALARS = {  # type -> (raw, literal) -> the value, or _NO_LITERAL when it is not one
    str: lambda raw, lit: lit if isinstance(lit, str) else raw if raw is not None else _NO_LITERAL,
    bool: lambda raw, lit: lit if isinstance(lit, bool) else raw.lower() == "true" if raw and raw.lower() in ("true", "false") else _NO_LITERAL,
    int: lambda raw, lit: lit if isinstance(lit, int) and not isinstance(lit, bool) else _NO_LITERAL,
    float: lambda raw, lit: float(lit) if _is_number(lit) else _NO_LITERAL,
}


def _read_union(kind, raw: str | None, literal):
    args = typing.get_args(kind)
    if type(None) in args and (literal is None or (raw is not None and raw.lower() in ("none", "null"))):
        return None
    for option in (a for a in args if a is not type(None)):
        try:
            return _read(option, raw, literal)
        except ValueError:
            continue
    raise ValueError(f"takes {_describe(kind)}")


def _read_literal(kind, raw: str | None, literal):
    for option in typing.get_args(kind):
        if (option == literal and type(option) is type(literal)) or (isinstance(option, str) and option == raw):
            return option
    raise ValueError(f"takes {_describe(kind)}")


def _read_tuple(kind, args: tuple, literal) -> tuple:
    items = list(literal) if isinstance(literal, (tuple, list)) else None
    variadic = len(args) == 2 and args[1] is Ellipsis
    if items is None or (not variadic and len(items) != len(args)):
        raise ValueError(f"takes {_describe(kind)}")
    try:
        return tuple(_read(a, v if isinstance(v, str) else None, v) for a, v in zip([args[0]] * len(items) if variadic else args, items, strict=True))
    except ValueError:
        raise ValueError(f"takes {_describe(kind)}") from None


def _describe(kind) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a {_type_name(kind)}, written as a Python literal"
    return {int: "an integer", float: "a number", bool: "True or False", str: "a string"}.get(kind, _type_name(kind))


def _type_name(kind) -> str:
    """tuple[tuple[str, float], ...] for the type itself (a plain str() would say 'typing.Tuple' on some)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple:
        return "tuple[" + ", ".join("..." if a is Ellipsis else _type_name(a) for a in args) + "]"
    return getattr(kind, "__name__", str(kind))


def _show(value) -> str:
    return value if isinstance(value, str) else repr(value)
