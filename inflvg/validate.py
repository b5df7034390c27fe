"""The field checks of the typed, frozen configs, written once.

Each takes the config and a field name and raises ``ValueError`` naming ``Class.field``, the value
it got and, when given, how to fix it:

    positive_int(self, "budget_k")  ->  ContextConfig.budget_k must be a positive integer, got 0; set it to an int >= 1

A bool is never accepted as a number (Python counts ``True`` as the int 1), nor NaN as a bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _fail(obj: object, name: str, what: str, value: object, fix: str) -> None:
    raise ValueError(f"{type(obj).__name__}.{name} must be {what}, got {value!r}" + (f"; {fix}" if fix else ""))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def at_least(obj: object, name: str, low: int, fix: str = "") -> None:
    """``obj.<name>`` is an int >= ``low``."""
    value = getattr(obj, name)
    if not _is_int(value) or value < low:
        _fail(obj, name, f"an integer >= {low}", value, fix)


def positive_int(obj: object, name: str, fix: str = "set it to an int >= 1") -> None:
    """``obj.<name>`` is an int >= 1."""
    value = getattr(obj, name)
    if not _is_int(value) or value < 1:
        _fail(obj, name, "a positive integer", value, fix)


def number(obj: object, name: str, low: float = 0, strict: bool = False, fix: str = "") -> None:
    """``obj.<name>`` is an int or float, not NaN, > ``low`` (``strict``) or >= ``low``."""
    value = getattr(obj, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if not ok or (value <= low if strict else value < low):
        _fail(obj, name, f"a number {'>' if strict else '>='} {low:g}", value, fix)


def one_of(obj: object, name: str, choices: Sequence, fix: str = "") -> None:
    """``obj.<name>`` is one of ``choices`` (of the same type: True is not 1)."""
    value = getattr(obj, name)
    if not any(type(value) is type(c) and value == c for c in choices):
        names = [repr(c) for c in choices]
        _fail(obj, name, " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names), value, fix)


def boolean(obj: object, name: str) -> None:
    """``obj.<name>`` is True or False (not a truthy string such as 'no')."""
    value = getattr(obj, name)
    if not isinstance(value, bool):
        _fail(obj, name, "True or False", value, "")
