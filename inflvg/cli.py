"""One command-line convention for every entry point, generated from typed configs (with tyro).

    args = cli.parse(BenchArgs, argv, prog="python -m inflvg.bench", description=__doc__)

- The arguments are a frozen dataclass. The docstring under each field (an attribute docstring)
  is its ``--help``; its type is checked while parsing. Nested dataclasses are flags by their
  dotted path (``--learner.max_grad_norm``).
- A value of the wrong type exits with status 2 and a message naming the flag; a config's own
  ``ValueError`` (its ``__post_init__`` checks, which name the field and the fix) is printed on
  one line, ``PROG: error: MESSAGE``, with status 2 and no traceback.
- Presets are named configs chosen by ``--preset NAME``, not subcommands: ``--preset`` is read
  first, that preset's config becomes the default, and every other flag overrides it, in any
  order (``--steps 5 --preset debug`` is debug with 5 steps).
- ``underscores=True`` shows field names with their underscores (``--learner.max_grad_norm``);
  otherwise with hyphens (``--budget-k``). Either spelling is accepted when parsing.
- ``Annotated`` markers for what a plain type does not say: ``comma(int)`` a list given as one
  comma-separated word (``--lengths 1,2,4``), ``Repeated`` a flag given several times
  (``--set a=1 --set b=2``), ``choice(names)`` a closed set of names known only at run time,
  ``Flat`` a nested config whose fields are flags without its prefix, ``arg(name=...)`` a flag
  spelled differently from its field.

Part of the core: imports tyro, never Ray or a role package.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import inspect
import itertools
import json
import sys
import textwrap
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Optional, TypeVar

import tyro
from tyro.constructors import PrimitiveConstructorSpec

T = TypeVar("T")

Flat = tyro.conf.arg(name="")
"""A nested config whose fields are flags at the top level (``--steps``, ``--learner.lr``), not ``--config.steps``."""
Repeated = tyro.conf.UseAppendAction
"""A tuple flag given once per item (``--set a=1 --set b=2``) instead of all items after one flag."""
arg = tyro.conf.arg


def comma(kind: Callable[[str], Any], example: str = "") -> PrimitiveConstructorSpec:
    """A tuple given as one comma-separated word: ``Annotated[tuple[int, ...], comma(int, "1,2,4")]``.

    tyro's own tuples take one word per item (``--lengths 1 2 4``); these flags have always been
    one word, and the Makefile, README and scripts spell them so."""
    name = getattr(kind, "__name__", "value")

    def from_words(words: list[str]) -> tuple:
        try:
            return tuple(kind(x.strip()) for x in words[0].split(",") if x.strip())
        except ValueError:
            hint = f" (e.g. {example})" if example else ""
            raise ValueError(f"expected comma-separated {name} values{hint}, got {words[0]!r}") from None

    return PrimitiveConstructorSpec(
        nargs=1, metavar=f"{name.upper()},...", instance_from_str=from_words,
        is_instance=lambda x: isinstance(x, tuple), str_from_instance=lambda t: [",".join(map(str, t))],
    )  # fmt: skip


def choice(names: Iterable[str]) -> PrimitiveConstructorSpec:
    """One of ``names``, a set known at run time (``choice(BACKENDS)``); a ``Literal`` needs it spelled out."""
    names = tuple(names)
    return PrimitiveConstructorSpec(
        nargs=1, metavar="{" + ",".join(names) + "}", instance_from_str=lambda words: words[0],
        is_instance=lambda x: x in names, str_from_instance=lambda x: [x], choices=names,
    )  # fmt: skip


def write_results(out: str | Path, result: dict, table: str) -> None:
    """How every benchmark ends: ``result`` as FILE.json, ``table`` (markdown) as FILE.md beside it and on stdout."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(table if table.endswith("\n") else table + "\n")
    print(table)


def fail(prog: str, message: str) -> NoReturn:
    """Exit as argparse does on a usage error: ``PROG: error: MESSAGE`` on stderr, status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


@contextlib.contextmanager
def usage_errors(prog: str, *kinds: type[Exception]) -> Iterator[None]:
    """Checks after parsing (a prompt file's rows, a fault spec, ...): their errors (``ValueError``
    unless ``kinds`` says otherwise) exit like a bad flag, with status 2 and no traceback."""
    caught = kinds or (ValueError,)
    try:
        yield
    except caught as e:
        fail(prog, str(e))


def parse(
    cls: type[T], argv: Sequence[str] | None = None, *, prog: str, description: str | None = None, default: T | None = None,
    presets: Mapping[str, Callable[[], T]] | None = None, preset: str | None = None, preset_help: str = "", underscores: bool = False,
) -> T:  # fmt: skip
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``cls``, a dataclass, by the conventions above.

    ``default``: the instance whose values are the defaults (else the class's own). ``presets``:
    {name: a function making the default}, chosen by ``--preset NAME``; without the flag, preset
    ``preset``, or when that is None, ``default``. ``preset_help`` documents the choice. ``cls``
    must not have its own ``preset`` field then."""
    args = list(sys.argv[1:] if argv is None else argv)
    about = description if description is not None else inspect.getdoc(cls) or ""
    options: dict[str, Any] = {"prog": prog, "description": about, "use_underscores": underscores}
    if presets is None:
        if default is not None:
            options["default"] = default
        return _cli(cls, args, options, cls)
    name = _preset_name(args, presets, preset, prog)
    with usage_errors(prog):
        start = presets[name]() if name is not None else default if default is not None else cls()
    wrapper = _with_preset(cls, tuple(presets), preset_help, optional=preset is None)
    options["default"] = wrapper(preset=name, config=start)
    return _cli(wrapper, args, options, cls).config


def _preset_name(args: list[str], presets: Mapping[str, Callable], default: str | None, prog: str) -> str | None:
    """The value of ``--preset`` (the last one, as for any flag), read before anything else."""
    ap = argparse.ArgumentParser(prog=prog, add_help=False, allow_abbrev=False)
    ap.add_argument("--preset", default=default)
    name = ap.parse_known_args(args)[0].preset
    if name is not None and name not in presets:
        fail(prog, f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return name


def _with_preset(cls: type, names: tuple[str, ...], help_text: str, optional: bool) -> type:
    """A dataclass with a ``--preset`` flag beside ``cls``'s own flags, so that ``--help`` lists it.

    tyro's own way to offer named defaults is subcommands (``tyro.extras.overridable_config_cli``);
    this convention keeps ``--preset NAME``, a flag the scripts and docs already use."""
    doc = help_text or "The named configuration the other flags start from."
    choices = Literal[names]  # pyright: ignore[reportInvalidTypeForm]  # a type built at run time
    kind = Optional[choices] if optional else choices  # noqa: UP045  # pyright rejects `|` on a type built at run time
    return dataclasses.make_dataclass(
        f"{cls.__name__}WithPreset", [("preset", Annotated[kind, arg(help=doc)]), ("config", Annotated[cls, Flat])], frozen=True
    )


class _Rejected(Exception):
    """A parse error taken from tyro before it draws it, to be printed on one line (see ``_plain_config_errors``)."""


def _plain_config_errors() -> contextlib.AbstractContextManager:
    """tyro draws a bad value (and a nested config's ValueError) in an 80-column box that breaks
    the message across lines; we print it on one line, ``--flag expects TYPE: why``, like every
    other usage error, so that it can be read and searched. tyro offers this only through its
    private hook ``tyro._errors`` (pyproject pins tyro exactly); without it, tyro's box is shown.
    Unknown flags keep tyro's box: it suggests the nearest spellings."""
    try:
        from tyro._errors import InstantiationFailure, InvalidChoice, on_parse_error
    except ImportError:
        return contextlib.nullcontext()

    def hook(event: object) -> None:
        if isinstance(event, InstantiationFailure):
            flag, metavar = _flag(event.argument)
            message = " ".join(event.message.split())  # tyro's own messages run over several lines
            raise _Rejected(f"{flag} expects {metavar}: {message}" if flag else message)
        if isinstance(event, InvalidChoice):
            flag, _ = _flag(event.argument)
            raise _Rejected(f"{flag or 'a flag'} expects one of {', '.join(sorted(event.choices))}, got {event.value!r}")

    return on_parse_error(hook)


def _flag(argument: object) -> tuple[str, str]:
    """('--learner.lr', 'FLOAT') of one of tyro's (private) argument definitions; ('', 'a value') without one."""
    lowered = getattr(argument, "lowered", None)
    names = getattr(lowered, "name_or_flags", None) or ()
    return "/".join(names), str(getattr(lowered, "metavar", None) or "a value")


def _cli(cls: type[T], args: list[str], options: dict[str, Any], own: type) -> T:
    try:
        with _plain_config_errors():
            return tyro.cli(cls, args=args, **options)
    except (_Rejected, ValueError) as e:  # ValueError: the outermost dataclass's own checks, which tyro lets through
        fail(options["prog"], _as_flags(str(e), own, options["use_underscores"]))


def _as_flags(message: str, cls: type, underscores: bool) -> str:
    """Name the flag in a config's own error. The arguments' own class is an internal name:
    'BenchArgs.budget_k must be ...' -> '--budget-k must be ...'. A nested config's class stays, the
    flag before it: '--learner.epochs: LearnerConfig.epochs must be ...'."""
    flags = _flags_by_field(cls, underscores)
    for key in sorted(flags, key=message.find):
        if key in message:
            own = key.startswith(f"{cls.__name__}.")
            return message.replace(key, flags[key]) if own else f"{flags[key]}: {message}"
    return message


def _flags_by_field(cls: type, underscores: bool, prefix: str = "") -> dict[str, str]:
    """{'LearnerConfig.epochs': '--learner.epochs', ...} over a dataclass tree; a class met twice is left out (ambiguous)."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        kind, marks = hints[f.name], ()
        if typing.get_origin(kind) is Annotated:
            kind, marks = typing.get_args(kind)[0], typing.get_args(kind)[1:]
        if dataclasses.is_dataclass(kind):
            inner = prefix if any(m is Flat for m in marks) else f"{prefix}{f.name}."
            for key, flag in _flags_by_field(kind, underscores, inner).items():  # pyright: ignore[reportArgumentType]
                seen[key] = seen.get(key, 0) + 1
                out[key] = flag
        else:
            name = f"{prefix}{f.name}"
            out[f"{cls.__name__}.{f.name}"] = "--" + (name if underscores else name.replace("_", "-"))
    return {k: v for k, v in out.items() if seen.get(k, 0) <= 1}


def field_docs(cls: type) -> dict[str, str]:
    """{field: its attribute docstring, dedented} of a dataclass, inherited fields included:
    what ``--help`` shows for each flag."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # pyright: ignore[reportAttributeAccessIssue]
        except (OSError, TypeError):
            continue
        for stmt, after in itertools.pairwise(body):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):  # fmt: skip
                docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs
