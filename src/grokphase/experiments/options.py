"""Experiment options derived from the configuration dataclasses: one source of truth.

The keys of a ``[[sim]]`` table (and the options of ``grokphase sim MODEL``) are the fields of the
model's configuration dataclasses: their names, types and defaults are read from the dataclass
(:func:`options_of`), so a default such as the paper's App. C ``N = 700`` is written once, in the
dataclass.  :func:`resolve` checks a table against that schema: an unknown key, a value of the wrong
type (``steps = "twenty"``, ``steps = 20.9``, ``inits = true``, ``beta = [1, 2]``) is a
:class:`~grokphase.errors.ParameterError` that names the key; a missing key takes the dataclass
default.  Ranges are checked by the dataclasses' own ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from typing import Any, Callable, Mapping

import numpy as np

from grokphase.axes import parse_list
from grokphase.errors import ParameterError
from grokphase.sims.memory import format_bytes

#: option kinds: int, float, bool, str, floats (a list of numbers, or "a,b,c"), and the same with "?"
#: (None allowed, meaning "the dataclass's rule", e.g. sa2 = 8/N)
KINDS = ("int", "float", "bool", "str", "floats")


@dataclasses.dataclass(frozen=True)
class Applies:
    """Where an option has an effect: ``test(resolved options)`` is true.  ``text`` says where ("with
    optimizer = adamw"); ``names`` are the options the test reads (their values are quoted when a given
    option does not apply)."""

    text: str
    test: Callable[[Mapping[str, Any]], bool]
    names: tuple[str, ...] = ()


def only_with(name: str, *values: Any) -> Applies:
    """The option has an effect only where option ``name`` is one of ``values``."""
    shown = " or ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)
    return Applies(f"with {name} = {shown}", lambda o: o[name] in values, (name,))


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of an experiment table: its name, kind, default, help text, and where it applies
    (``applies``: None = everywhere; a given option that does not apply is an error, not ignored).
    ``signed``: a "floats" option whose comma-separated string may hold zero and negative numbers (by
    default such a string must be positive, as s2 and alpha lists are; ranges are the dataclass's)."""

    name: str
    kind: str
    default: Any = None
    help: str = ""
    optional: bool = False
    applies: Applies | None = None
    signed: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")


def _kind_of(hint: Any, default: Any) -> tuple[str, bool]:
    """(kind, optional) of a dataclass field's type hint."""
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else Any
    if hint is bool:
        return "bool", optional
    if hint is int:
        return "int", optional
    if hint is float:
        return "float", optional
    if hint is str:
        return "str", optional
    if hint is tuple or typing.get_origin(hint) is tuple:
        return "floats", optional
    # untyped array leaves of the theory dataclasses (``Any``): numbers, None where the default is None
    return "float", optional or default is None


def options_of(cls, names: typing.Iterable[str] | None = None, *, helps: Mapping[str, str] | None = None
               ) -> dict[str, Option]:
    """The options of dataclass ``cls`` (all fields, or ``names`` in that order), typed from its
    annotations, with its defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for name in (fields if names is None else names):
        if name not in fields:
            raise ValueError(f"{cls.__name__} has no field {name!r}")
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else None
        kind, optional = _kind_of(hints[name], default)
        out[name] = Option(name, kind, default, (helps or {}).get(name, ""), optional)
    return out


#: the ``where`` of options that come from the command line: errors then name the flag (``--burn-in``)
COMMAND_LINE = "command line"


def check_value(option: Option, value: Any, where: str) -> Any:
    """``value`` as the option's kind, or a ParameterError naming ``where`` and the option (its flag
    when ``where`` is :data:`COMMAND_LINE`)."""
    kind = option.kind
    label = option_label(option.name, where)

    def bad(expected: str):
        return ParameterError(f"{label} must be {expected}, got {value!r} ({type(value).__name__})")

    if value is None:
        if option.optional:
            return None
        raise bad(f"a value of kind {kind}")
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise bad("true or false")
        return bool(value)
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "int":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise bad("an integer")
        if not float(value).is_integer():
            raise bad("an integer (no fractional part)")
        return int(value)
    if kind == "float":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise bad("a number")
        if not math.isfinite(float(value)):
            raise bad("a finite number")
        return float(value)
    # floats: a list of numbers, one number, or a comma-separated string
    if isinstance(value, str):
        return tuple(float(v) for v in parse_list(value, label, positive=not option.signed))
    items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise bad("a list of finite numbers")
        out.append(float(v))
    if not out:
        raise bad("a non-empty list of numbers")
    return tuple(out)


def with_rules(schema: Mapping[str, Option], rules: Mapping[str, Applies]) -> dict[str, Option]:
    """``schema`` with ``applies`` set on the options named in ``rules``."""
    unknown = sorted(set(rules) - set(schema))
    if unknown:
        raise ValueError(f"rules for unknown option(s) {', '.join(unknown)}")
    return {name: dataclasses.replace(opt, applies=rules[name]) if name in rules else opt
            for name, opt in schema.items()}


def signed(schema: Mapping[str, Option], *names: str) -> dict[str, Option]:
    """``schema`` with the "floats" options ``names`` accepting zero and negative numbers in a string."""
    return {name: dataclasses.replace(opt, signed=True) if name in names else opt for name, opt in schema.items()}


def option_label(name: str, where: str) -> str:
    """How errors name option ``name``: its flag on the command line, ``where: name`` in a file."""
    return ("--" + name.replace("_", "-")) if where == COMMAND_LINE else f"{where}: {name}"


def check_applicable(resolved: Mapping[str, Any], schema: Mapping[str, Option], where: str, given) -> None:
    """Every option of ``given`` (the ones set explicitly: on the command line or in the table itself)
    has an effect with the ``resolved`` options, or a ParameterError says where it would apply.  A
    boolean given as false (a flag not set) changes nothing and is never an error."""
    for name in sorted(given):
        opt = schema.get(name)
        if opt is None or opt.applies is None or resolved.get(name) is None:
            continue
        if opt.kind == "bool" and not resolved[name]:
            continue
        if not opt.applies.test(resolved):
            here = ", ".join(f"{n} = {_show(resolved.get(n))}" for n in opt.applies.names)
            raise ParameterError(f"{option_label(name, where)} {_show(resolved[name])} has no effect here: it applies only "
                                 f"{opt.applies.text}" + (f" (here {here})" if here else "") + "; remove it")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolve(values: Mapping[str, Any], schema: Mapping[str, Option], where: str, *, strict: bool = True,
            given=None) -> dict[str, Any]:
    """Every option of ``schema``: the checked value from ``values`` or the default.  With ``strict``
    an unknown key of ``values`` is an error (an experiment file); without, extra keys are ignored
    (the CLI's namespace holds output options too).  ``given``: the options set explicitly (the
    command line's, or a [[sim]] table's own keys, not its [common] defaults); each must apply
    (:func:`check_applicable`).  None: no applicability check."""
    if strict:
        unknown = sorted(set(values) - set(schema))
        if unknown:
            raise ParameterError(f"{where}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(schema))}")
    out = {}
    for name, opt in schema.items():
        out[name] = check_value(opt, values[name], where) if values.get(name) is not None else opt.default
    if given is not None:
        check_applicable(out, schema, where, given)
    return out


def check_fits(network: str, need: Mapping[str, int], memory_gb: float, where: str) -> None:
    """One network (``network`` names its sizes; ``need``: its bytes by part, e.g. device and records)
    within ``memory_gb``, or a ParameterError naming the sizes, the estimate and the budget."""
    total = sum(need.values())
    if total <= memory_gb * 1e9:
        return
    parts = ", ".join(f"{k} ~{format_bytes(v)}" for k, v in need.items())
    prefix, flag = ("", "--memory-gb") if where == COMMAND_LINE else (f"{where}: ", "memory_gb")
    raise ParameterError(f"{prefix}one network at {network} needs ~{format_bytes(total)} ({parts}), over {flag} "
                         f"{memory_gb:g} (GB): lower the sizes or the number of records, or raise {flag}")
