"""Command-line overrides of a preset: ``--set learner.lr=2e-3 --set rollout.group_size=8``.

A dotted path names a field of ServiceConfig or of one of its nested configs; the value is a
Python literal (number, string, tuple, ...). The new config is rebuilt with ``dataclasses.replace``,
so every config's own validation runs on the overridden value.
"""

from __future__ import annotations

import ast
from dataclasses import fields, is_dataclass, replace


def parse_override(text: str) -> tuple[list[str], object]:
    """'learner.lr=2e-3' -> (['learner', 'lr'], 0.002); a bare word is taken as a string."""
    path, sep, raw = text.partition("=")
    if not sep or not path.strip():
        raise ValueError(f"--set expects FIELD=VALUE (e.g. learner.lr=2e-3), got {text!r}")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return path.strip().split("."), value


def set_field(cfg, path: list[str], value, prefix: str = ""):
    """A copy of the dataclass ``cfg`` with the field at ``path`` replaced by ``value``."""
    names = [f.name for f in fields(cfg)]
    head, rest = path[0], path[1:]
    where = f"{prefix}{head}"
    if head not in names:
        raise ValueError(f"--set {where}: {type(cfg).__name__} has no field {head!r}; choose one of {names}")
    current = getattr(cfg, head)
    if rest:
        if not is_dataclass(current):
            raise ValueError(f"--set {where}.{'.'.join(rest)}: {where} is a value, not a config with fields")
        value = set_field(current, rest, value, f"{where}.")
    elif is_dataclass(current):
        raise ValueError(f"--set {where}: name one of its fields, e.g. {where}.{fields(current)[0].name}=...")
    elif isinstance(current, tuple) and isinstance(value, list):
        value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return replace(cfg, **{head: value})


def apply_overrides(cfg, overrides: list[str]):
    for text in overrides:
        path, value = parse_override(text)
        cfg = set_field(cfg, path, value)
    return cfg
