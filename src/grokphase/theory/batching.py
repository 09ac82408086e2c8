"""Batching shared by the theory solvers: flatten a parameter dataclass to 1-D leaves, pad the batch
to a bucket size (so sweeps of different lengths reuse one compiled executable), cut the padding off
the solution, and the backend-dependent block and chunk sizes.

Padding repeats the last point, so a padding lane solves a real parameter point: it can neither fail
differently from the batch nor slow the lockstep down.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from grokphase._params import broadcast_fields


def to_float64(tree):
    """Every leaf of ``tree`` (e.g. a parameter dataclass) as a float64 JAX array: the theory runs in
    float64."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def flatten(params):
    """``(shape, flat)``: the common broadcast shape of a parameter dataclass's fields and the same
    dataclass with every field a contiguous 1-D float64 array of ``prod(shape)`` points."""
    names = tuple(f.name for f in dataclasses.fields(params))
    shape, arrays = broadcast_fields(params, names)
    flat = type(params)(**{k: np.ascontiguousarray(a).reshape(-1) for k, a in arrays.items()})
    return shape, flat


def bucket_size(M: int) -> int:
    """Batch sizes are padded to powers of two (multiples of 1024 beyond) so that sweeps of different
    lengths share one compiled executable."""
    if M <= 1024:
        return max(8, 1 << (max(M, 1) - 1).bit_length())
    return -(-M // 1024) * 1024


def batch_length(flat) -> int:
    """Number of points of a flattened parameter dataclass."""
    return int(np.asarray(jax.tree_util.tree_leaves(flat)[0]).size)


def pad_to(flat, size: int):
    """``flat`` with its last point repeated up to ``size`` points (unchanged if it has that many)."""
    pad = size - batch_length(flat)
    if pad <= 0:
        return flat
    return jax.tree_util.tree_map(lambda a: np.concatenate([a, np.repeat(a[-1:], pad)]), flat)


def padded(flat):
    """``(padded, M)``: ``flat`` padded to :func:`bucket_size` points, and its own length M."""
    M = batch_length(flat)
    return pad_to(flat, bucket_size(M)), M


def take(flat, idx):
    """The points ``idx`` of a flattened parameter dataclass."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[idx], flat)


def unpad(solution, M: int, shape: tuple[int, ...] | None = None):
    """The first M points of every field of a solution NamedTuple (None fields stay None), as NumPy
    arrays; with ``shape``, each field reshaped to ``shape + field.shape[1:]``."""
    def cut(a):
        if a is None:
            return None
        a = np.asarray(a)[:M]
        return a if shape is None else a.reshape(tuple(shape) + a.shape[1:])
    return type(solution)(*[cut(a) for a in solution])


def default_block() -> int:
    """Points per compiled call of the finite-d solver (batches are split and padded to it)."""
    return 64 if jax.default_backend() == "cpu" else 8192


def default_chunk() -> int | None:
    """Points solved in lockstep.  Under vmap every lane runs as many Newton and line-search steps
    as the slowest one; on a CPU, mapping over small chunks is several times faster (measured 6.7x
    on the 64 x 64 diagram), while accelerators want the whole batch in one vmap (None)."""
    return 4 if jax.default_backend() == "cpu" else None
