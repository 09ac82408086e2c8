"""Shared machinery for the frozen parameter dataclasses of the theory models.

Every parameter is an array leaf of a registered pytree, so a parameter set holding arrays can be
passed through ``jit`` and ``vmap`` unchanged: a sweep or a 2-D phase diagram is one compiled call.
Validation runs in ``__post_init__`` on concrete values (never on tracers: unflattening a pytree
inside a transformation bypasses ``__init__``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from grokphase.errors import ParameterError


def is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def register_params(cls):
    """Register a frozen dataclass as a pytree whose fields are all leaves."""
    names = tuple(f.name for f in dataclasses.fields(cls))

    def flatten(obj):
        return tuple(getattr(obj, k) for k in names), None

    def unflatten(_, leaves):
        obj = object.__new__(cls)
        for k, v in zip(names, leaves):
            object.__setattr__(obj, k, v)
        return obj

    jax.tree_util.register_pytree_node(cls, flatten, unflatten)
    return cls


def plain(value: Any) -> str:
    """``value`` for an error message, as a plain number (``1e-300``, never ``np.float64(1e-300)``):
    NumPy and JAX scalars and 0-d arrays print as the Python number they hold, arrays as a list,
    anything else by its ``repr``."""
    if isinstance(value, (np.generic, np.ndarray, jax.Array)) and not is_traced(value):
        arr = np.asarray(value)
        if arr.ndim == 0:
            return repr(arr.item())
        if arr.size <= 8:
            return repr(arr.tolist())
        return f"array of shape {arr.shape}"
    return repr(value)


def _describe(arr: np.ndarray, bad: np.ndarray) -> str:
    if arr.ndim == 0:
        return plain(arr)
    first = arr[bad].ravel()[0]
    return f"{plain(first)} at index {tuple(int(i) for i in np.argwhere(bad)[0])}"


def as_float_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a real number or an array of real numbers (got {plain(value)})") from None
    return arr


def check_finite(name: str, value: Any) -> None:
    if is_traced(value):
        return
    arr = as_float_array(name, value)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ParameterError(f"{name} must be finite (got {_describe(arr, bad)})")


def check_positive(name: str, value: Any) -> None:
    if is_traced(value):
        return
    check_finite(name, value)
    arr = as_float_array(name, value)
    bad = ~(arr > 0)
    if bad.any():
        raise ParameterError(f"{name} must be > 0 (got {_describe(arr, bad)})")


def broadcast_fields(obj, names: tuple[str, ...]) -> tuple[tuple[int, ...], dict[str, np.ndarray]]:
    """Broadcast the named fields of ``obj`` to a common shape (clear error if impossible)."""
    arrays = {k: np.asarray(getattr(obj, k), dtype=np.float64) for k in names}
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
    except ValueError:
        shapes = ", ".join(f"{k}{a.shape}" for k, a in arrays.items() if a.shape)
        raise ParameterError(f"parameter arrays do not broadcast to a common shape: {shapes}") from None
    return shape, {k: np.broadcast_to(a, shape) for k, a in arrays.items()}


#: float64 range every derived quantity of a model must stay in: normal numbers, neither rounded to 0
#: (or to a subnormal, with lost precision) nor overflowing
_LOG10_TINY = float(np.log10(np.finfo(np.float64).tiny))
_LOG10_HUGE = float(np.log10(np.finfo(np.float64).max))


def _log10_range(lo: float, hi: float) -> str:
    def fmt(e):
        if not np.isfinite(e):
            return "0" if e < 0 else "inf"
        k = int(np.floor(e))
        m = 10.0 ** (e - k)
        if m >= 9.995:            # the mantissa rounds up to 10
            m, k = m / 10.0, k + 1
        return f"{m:.3g}e{k:+03d}"
    return f"[{fmt(lo)}, {fmt(hi)}]"


def check_magnitudes(values: dict[str, Any], laws: dict[str, tuple[str, dict[str, float]]],
                     references: dict[str, float], *, tied: dict[str, tuple[str, float]] | None = None) -> None:
    """ParameterError, naming one input and its allowed range, unless every derived quantity of
    ``laws`` is a normal float64 number at every point.

    ``values``: the positive inputs by name (arrays broadcast).  ``laws``: derived quantity ->
    (formula text, {input: exponent}), each a power law q = prod x^k, evaluated in log space so that
    nothing over- or underflows while checking.  The input blamed is the one whose distance from its
    ``references`` value (in decades, times its exponent) pushes the quantity furthest out of range;
    its allowed range holds the other inputs as given.  ``tied``: inputs that follow another one
    (e.g. sa2 = 8/N when sa2 was not given: ``{"sa2": ("N", -1)}``), blamed through that one."""
    if any(is_traced(v) for v in values.values()):
        return
    tied = tied or {}
    tiny = np.finfo(np.float64).tiny
    for k, v in values.items():
        arr = np.asarray(v, dtype=np.float64)
        small = arr < tiny
        if np.any(small):
            raise ParameterError(f"{k} must be at least {tiny:.3g}, the smallest normal float64 number "
                                 f"(got {_describe(arr, small)})")
    logs = {k: np.log10(np.asarray(v, dtype=np.float64)) for k, v in values.items()}
    for qname, (formula, powers) in laws.items():
        # exponents of the free inputs, with tied inputs folded into the input they follow
        free: dict[str, float] = {}
        for k, e in powers.items():
            if k in tied:
                src, e_src = tied[k]
                free[src] = free.get(src, 0.0) + e * e_src
            else:
                free[k] = free.get(k, 0.0) + e
        # on the broadcast shape of every input (a law may involve only scalars while others vary)
        shape = np.broadcast_shapes(*(np.shape(v) for v in logs.values()))
        logq = np.broadcast_to(sum(e * logs[k] for k, e in powers.items()), shape)
        bad = ~((logq >= _LOG10_TINY) & (logq <= _LOG10_HUGE))
        if not np.any(bad):
            continue
        idx = tuple(int(i) for i in np.argwhere(np.broadcast_to(bad, shape))[0]) if shape else ()
        at = {k: float(np.broadcast_to(v, shape)[idx]) for k, v in logs.items()}
        lq = float(np.broadcast_to(logq, shape)[idx])
        under = lq < _LOG10_TINY
        push = {k: e * (at[k] - np.log10(references[k])) for k, e in free.items() if e != 0.0}
        blame = min(push, key=lambda k: push[k]) if under else max(push, key=lambda k: push[k])
        e = free[blame]
        rest = lq - e * at[blame]
        ends = sorted(((_LOG10_TINY - rest) / e, (_LOG10_HUGE - rest) / e))
        lo, hi = ends
        for other, (_, p2) in laws.items():  # the blamed input must keep every other quantity in range too
            e2 = sum(ee * (tied[k][1] if k in tied else 1.0) for k, ee in p2.items()
                     if k == blame or (k in tied and tied[k][0] == blame))
            if other == qname or e2 == 0.0:
                continue
            lq2 = float(np.broadcast_to(sum(ee * logs[k] for k, ee in p2.items()), shape)[idx])
            r2 = lq2 - e2 * at[blame]
            lo2, hi2 = sorted(((_LOG10_TINY - r2) / e2, (_LOG10_HUGE - r2) / e2))
            lo, hi = max(lo, lo2), min(hi, hi2)
        where = f" (at index {idx})" if idx else ""
        got = plain(float(10.0 ** at[blame]))
        what = "underflows to 0" if under else "overflows"
        allowed = _log10_range(lo, hi) if lo <= hi else "(no value: the other parameters are out of range too)"
        raise ParameterError(f"{blame} = {got}{where} is too {'large' if (e < 0) == under else 'small'}: "
                             f"{qname} = {formula} {what} in float64; with the other parameters as given, "
                             f"{blame} must lie in {allowed}")
