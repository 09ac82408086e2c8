"""The finite-P self-consistency of the modular-addition model (eq. 38): a(s2) by bracketed root
finding of the monotone f(a) = a + s2/(lambda(a) + s2), per point (:func:`solve_point`), jitted over a
batch (:func:`solve_batch`) and at the Python boundary (:func:`solve`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokphase.theory.batching import batch_length, default_chunk, flatten, pad_to, padded, take, to_float64, unpad
from grokphase.theory.modular.action import reduced_action, saddles
from grokphase.theory.modular.params import ModularParams, _check_method, check_convention, mode_factors
from grokphase.theory.modular.quadrature import QUAD_TOL, _moment
from grokphase.theory.modular_gp import warn_if_composite
from grokphase.theory.roots import chandrupatla
from grokphase.theory.status import Phase, Status, raise_on_failure


class ModularSolution(NamedTuple):
    """Finite-P solution (fields have the batch shape).

    a: discrepancy along the target; target_component = 1 + a; lam = kappa sa2 <Phi Psi> (kappa = 1 in
    the paper convention, 4 P^2 in the network one);
    droplet_fraction: probability of the non-trivial saddle; phi_plus = w+^2 (0 if no saddle);
    action_gap = P_eff Shat(w+^2) - 0, the droplet's action against the origin in the mode weight
    (P_eff = P or 2P; inf if no saddle); u; quad_error (exact method, else 0);
    status (:class:`Status`); phase: GFL if N p < 1, GMFL-II if N (1 - p) < 1, GMFL-I otherwise."""

    a: np.ndarray
    target_component: np.ndarray
    lam: np.ndarray
    droplet_fraction: np.ndarray
    phi_plus: np.ndarray
    action_gap: np.ndarray
    u: np.ndarray
    quad_error: np.ndarray
    status: np.ndarray
    phase: np.ndarray


def _solve_point(params: ModularParams, method: str, convention: str = "paper") -> ModularSolution:
    _check_method(method)  # static strings: checked at trace time, also under jit/vmap
    check_convention(convention)
    p = to_float64(params)
    u, gamma, P, s2, sa2 = p.u, p.gamma, p.P, p.s2, p.sa2
    P_eff, kappa = mode_factors(P, convention)
    ksa2 = kappa * sa2

    def f(a):  # strictly increasing on [-1, 0): lambda grows with a^2
        m, _, _ = _moment(a, u, gamma, P, method, convention)
        return a + s2 / (ksa2 * m + s2)

    lo, hi = jnp.float64(-1.0), jnp.float64(0.0)
    f_lo = f(lo)
    # f(-1) <= 0 always; f(-1) == 0 exactly when lambda(-1) vanishes: then a = -1 exactly.
    # f(0) = 1 > 0.  Chandrupatla keeps the bracket and converges superlinearly (~10 evaluations).
    root, _ = chandrupatla(f, lo, hi, f_lo=f_lo, f_hi=jnp.float64(1.0))
    a = jnp.where(f_lo >= 0.0, lo, root)
    m, drop, err = _moment(a, u, gamma, P, method, convention, check=True)
    lam = ksa2 * m
    _, wp, exists = saddles(a, u, gamma)
    gap = jnp.where(exists, P_eff * reduced_action(wp, a, u, gamma), jnp.inf)
    status = jnp.where(jnp.isfinite(a) & jnp.isfinite(lam), Status.CONVERGED, Status.NONFINITE)
    status = jnp.where((status == Status.CONVERGED) & (err > QUAD_TOL), Status.UNRESOLVED, status).astype(jnp.int32)
    N = p.N
    phase = jnp.where(N * drop < 1.0, Phase.GFL, jnp.where(N * (1.0 - drop) < 1.0, Phase.GMFL_II, Phase.GMFL_I))
    return ModularSolution(a=a, target_component=1.0 + a, lam=lam, droplet_fraction=drop, phi_plus=wp,
                           action_gap=gap, u=u, quad_error=err, status=status, phase=phase.astype(jnp.int32))


def solve_point(params: ModularParams, method: str = "saddle", convention: str = "paper") -> ModularSolution:
    """One parameter point: pure, jit/vmap-compatible over every field, never raises on values
    (``method`` and ``convention`` are static strings, rejected with ParameterError at trace time)."""
    return _solve_point(params, method, convention)


@jax.jit(static_argnames=("method", "chunk", "convention"))
def solve_batch(params: ModularParams, method: str = "saddle", chunk: int | None = None, *,
                convention: str = "paper") -> ModularSolution:
    """Jitted solutions over 1-D parameter arrays: one vmap (``chunk=None``) or a map over chunks of
    ``chunk`` vmapped points (faster on CPUs: root finding then stops per chunk, not at the slowest
    point of the whole batch).  ``convention`` is static (keyword-only, so positional ``chunk`` keeps
    its meaning)."""
    one = lambda q: _solve_point(q, method, convention)  # noqa: E731
    return jax.vmap(one)(params) if chunk is None else jax.lax.map(one, params, batch_size=chunk)


#: points per compiled call of the exact method when a progress bar is given, on a CPU (each point is
#: independent, so the blocks give the same bits as one call; checked on a 16 x 32 grid)
PROGRESS_BLOCK = 256


def solve(params: ModularParams, method: str = "saddle", *, convention: str = "paper",
          check: bool = True, progress=None) -> ModularSolution:
    """Finite-P solution at every point of ``params`` (any broadcast shape); one compiled vmap.

    ``method``: ``"saddle"`` (eq. 41-42, :func:`saddle_moment`) or ``"exact"`` (2-D quadrature).
    ``convention``: ``"paper"`` (mode weight e^{-S_k}, lambda = sa2 <Phi Psi>) or ``"network"``
    (e^{-2 S_k}, lambda = 4 P^2 sa2 <Phi Psi>; module docstring).  Warns for composite P.
    ``progress``: an object with ``update(n)`` (e.g. a tqdm bar) told of the points solved; with it
    the exact method on a CPU runs in blocks of PROGRESS_BLOCK points (same numbers, a bar that moves;
    the closed-form saddle method is one call either way)."""
    _check_method(method)
    check_convention(convention)
    warn_if_composite(params.P, continuous=True, stacklevel=3)
    shape, flat = flatten(params)
    M = batch_length(flat)
    # the exact method's root finding costs a 2-D quadrature per step: chunks avoid lockstep waste
    # on CPUs (measured 2.6x); the closed-form saddle method is fastest as one vmap
    chunk = default_chunk() if method == "exact" else None
    if progress is not None and chunk is not None and M > PROGRESS_BLOCK:
        parts = []
        for start in range(0, M, PROGRESS_BLOCK):
            sub = take(flat, np.arange(start, min(start + PROGRESS_BLOCK, M)))
            m = batch_length(sub)
            parts.append(unpad(jax.device_get(solve_batch(pad_to(sub, PROGRESS_BLOCK), method, chunk,
                                                          convention=convention)), m))
            progress.update(m)
        sol = ModularSolution(*[np.concatenate([pt[i] for pt in parts]).reshape(shape + parts[0][i].shape[1:])
                                for i in range(len(ModularSolution._fields))])
    else:
        padded_flat, M = padded(flat)
        sol = unpad(jax.device_get(solve_batch(padded_flat, method, chunk, convention=convention)), M, shape)
        if progress is not None:
            progress.update(M)
    if check:
        raise_on_failure(sol.status, flat, f"modular {method} ({convention} convention)")
    return sol
