"""Parsing of sweep and axis specifications such as ``0.05:0.35:41`` or ``N:100:3000:64:log``."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from grokphase.errors import ParameterError


class Axis(NamedTuple):
    name: str
    values: np.ndarray
    log: bool


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ParameterError(f"{what}: {text!r} is not finite")
    return value


def parse_range(spec: str, what: str, *, positive: bool = False, integer_num: bool = True) -> tuple[np.ndarray, bool]:
    """``START:STOP:NUM[:lin|log]`` -> (values, log)."""
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise ParameterError(f"{what}: expected START:STOP:NUM[:lin|log], got {spec!r}")
    start = _number(parts[0], f"{what} START")
    stop = _number(parts[1], f"{what} STOP")
    try:
        num = int(parts[2])
    except ValueError:
        raise ParameterError(f"{what}: NUM must be an integer, got {parts[2]!r}") from None
    if num < 1:
        raise ParameterError(f"{what}: NUM must be >= 1, got {num}")
    scale = parts[3] if len(parts) == 4 else "lin"
    if scale not in ("lin", "log"):
        raise ParameterError(f"{what}: scale must be 'lin' or 'log', got {scale!r}")
    log = scale == "log"
    if (positive or log) and (start <= 0 or stop <= 0):
        raise ParameterError(f"{what}: START and STOP must be > 0, got {spec!r}")
    if num > 1 and start == stop:
        raise ParameterError(f"{what}: START equals STOP with NUM > 1 in {spec!r}")
    values = np.geomspace(start, stop, num) if log else np.linspace(start, stop, num)
    return values, log


def parse_axis(spec: str, allowed: tuple[str, ...], what: str) -> Axis:
    """``NAME:START:STOP:NUM[:lin|log]`` with NAME one of ``allowed``."""
    name, _, rest = spec.partition(":")
    if name not in allowed:
        raise ParameterError(f"{what}: unknown parameter {name!r} in {spec!r}; choose from {', '.join(allowed)}")
    values, log = parse_range(rest, f"{what} ({name})", positive=name != "eps")
    return Axis(name, values, log)


def parse_list(spec: str, what: str, *, positive: bool = True) -> np.ndarray:
    """Comma-separated numbers, fractions allowed (``1/8,1/2,1``)."""
    out = []
    for item in spec.split(","):
        item = item.strip()
        if "/" in item:
            num, _, den = item.partition("/")
            value = _number(num, what) / _number(den, what) if _number(den, what) != 0 else math.inf
        else:
            value = _number(item, what)
        if not math.isfinite(value) or (positive and value <= 0):
            raise ParameterError(f"{what}: values must be finite and > 0, got {item!r}")
        out.append(value)
    if not out:
        raise ParameterError(f"{what}: empty list")
    return np.asarray(out)
