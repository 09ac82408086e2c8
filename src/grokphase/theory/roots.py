"""Bracketed scalar root finding that is jit- and vmap-compatible (fixed iteration counts)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


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


def chandrupatla(f: Callable[[jax.Array], jax.Array], lo, hi, *, f_lo=None, f_hi=None, xtol: float = 1e-15,
                 maxiter: int = 60) -> tuple[jax.Array, jax.Array]:
    """Root of ``f`` in a sign-changing bracket [lo, hi] by Chandrupatla's method (T. R. Chandrupatla,
    Adv. Eng. Softw. 28, 145 (1997)): inverse quadratic interpolation when it is safe, bisection
    otherwise; the bracket is kept at every step, so it is as robust as bisection and typically
    needs 5-10 evaluations instead of ~55 (the same method as SciPy's vectorised ``_chandrupatla``).

    jit/vmap-compatible (a ``lax.while_loop``).  Returns (root, iterations)."""
    eps = jnp.finfo(jnp.float64).eps
    b = jnp.asarray(lo, jnp.float64)
    a = jnp.asarray(hi, jnp.float64)
    fb = f(b) if f_lo is None else f_lo
    fa = f(a) if f_hi is None else f_hi
    state = (a, b, a, fa, fb, fa, jnp.float64(0.5), jnp.int32(0), jnp.bool_(False), a)

    def cond(s):
        return (~s[8]) & (s[7] < maxiter)

    def body(s):
        a, b, c, fa, fb, fc, t, it, _, _ = s
        xt = a + t * (b - a)
        ft = f(xt)
        same = jnp.sign(ft) == jnp.sign(fa)
        c, fc = jnp.where(same, a, b), jnp.where(same, fa, fb)
        b, fb = jnp.where(same, b, a), jnp.where(same, fb, fa)
        a, fa = xt, ft
        use_a = jnp.abs(fa) < jnp.abs(fb)
        xm, fm = jnp.where(use_a, a, b), jnp.where(use_a, fa, fb)
        tol = 2.0 * eps * jnp.abs(xm) + xtol
        tlim = tol / jnp.abs(b - c)
        done = (tlim > 0.5) | (fm == 0.0)
        xi = (a - b) / (c - b)
        phi = (fa - fb) / (fc - fb)
        iqi = (phi * phi < xi) & ((1.0 - phi) ** 2 < 1.0 - xi)
        t_iqi = fa / (fb - fa) * fc / (fb - fc) + (c - a) / (b - a) * fa / (fc - fa) * fb / (fc - fb)
        t = jnp.where(iqi, t_iqi, 0.5)
        t = jnp.clip(jnp.where(jnp.isfinite(t), t, 0.5), tlim, 1.0 - tlim)
        return (a, b, c, fa, fb, fc, t, it + 1, done, xm)

    s = jax.lax.while_loop(cond, body, state)
    return s[9], s[7]


def scan_roots(f: Callable[[jax.Array], jax.Array], xs, size: int) -> tuple[jax.Array, jax.Array]:
    """The roots of ``f`` in the first ``size`` cells of the scan ``xs`` where f changes sign, each by
    :func:`bisect` on its cell.

    Fixed output size (jit/vmap-compatible): returns (roots, found), both of shape ``(size,)``, in the
    order of the cells; where fewer than ``size`` cells change sign, the remaining entries are solved on
    cell 0 and ``found`` says whether that cell changes sign (a duplicate root if so, junk if not)."""
    fs = f(xs)
    change = jnp.signbit(fs[:-1]) != jnp.signbit(fs[1:])
    (idx,) = jnp.nonzero(change, size=size, fill_value=0)
    roots = jax.vmap(lambda i: bisect(f, xs[i], xs[i + 1]))(idx)
    return roots, change[idx]


def grid_bisect(excess: Callable, grid, log: bool = False, iters: int = 64):
    """The first sign change of ``excess`` along the last axis of ``grid`` (NumPy, batched over the
    leading axes), refined by ``iters`` bisections (geometric with ``log``).  ``excess`` maps an array of
    parameter values to the excess at each.  Returns (found, value): value is NaN where no sign change."""
    e = excess(grid)
    change = np.signbit(e[..., :-1]) != np.signbit(e[..., 1:])
    found = change.any(axis=-1)
    k = np.argmax(change, axis=-1)
    a = np.take_along_axis(grid, k[..., None], -1)[..., 0]
    b = np.take_along_axis(grid, (k + 1)[..., None], -1)[..., 0]
    ea = np.take_along_axis(e, k[..., None], -1)[..., 0]
    for _ in range(iters):
        mid = np.sqrt(a * b) if log else 0.5 * (a + b)
        em = excess(mid[..., None])[..., 0]
        same = np.signbit(em) == np.signbit(ea)
        a, ea = np.where(same, mid, a), np.where(same, em, ea)
        b = np.where(same, b, mid)
    return found, np.where(found, np.sqrt(a * b) if log else 0.5 * (a + b), np.nan)
