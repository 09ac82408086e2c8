"""Bracketed scalar root finding that is jit- and vmap-compatible (fixed iteration counts)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def bisect(f: Callable[[jax.Array], jax.Array], lo, hi, iters: int = 120) -> jax.Array:
    """Root of ``f`` in ``[lo, hi]`` by bisection; ``f(lo)`` and ``f(hi)`` must differ in sign.

    120 halvings take any float64 bracket to its last bit, so the result is exact to rounding.
    Works elementwise under ``vmap``.  The caller is responsible for checking the bracket.
    """
    lo = jnp.asarray(lo)
    hi = jnp.asarray(hi)
    f_lo = f(lo)

    def body(_, carry):
        lo, hi, f_lo = carry
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        same = jnp.sign(f_mid) == jnp.sign(f_lo)
        return jnp.where(same, mid, lo), jnp.where(same, hi, mid), jnp.where(same, f_mid, f_lo)

    lo, hi, _ = jax.lax.fori_loop(0, iters, body, (lo, hi, f_lo))
    return 0.5 * (lo + hi)
