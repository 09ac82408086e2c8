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


def _describe(arr: np.ndarray, bad: np.ndarray) -> str:
    if arr.ndim == 0:
        return repr(arr.item())
    first = arr[bad].ravel()[0]
    return f"{first!r} at index {tuple(int(i) for i in np.argwhere(bad)[0])}"


def as_float_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a real number or an array of real numbers (got {value!r})") from None
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
