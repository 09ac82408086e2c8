r"""The renormalised ridge for the single-index family (any activation, any Hermite target; THEORY.md §6):
the finite-n (eigenlearning) correction of the EK theory, as
:mod:`grokphase.theory.teacher_student.ridge` does it for the paper's model (docs/finite_size.md
section 4).  The corrected theory is the finite-d theory at the effective noise s2_eff = n kappa, kappa
the root of n = s2/kappa + sum_k lambda_k/(lambda_k + kappa) over the spectrum of the theory's kernel
at that solution, solved by iteration.  The spectrum, for a neuron with V = q^2 + t = |w|^2 and
m_k(V) = E_u[phi(sqrt(V) u) He_k(u)]/sqrt(k!) (:func:`~.overlaps.hermite_moments`):

* the target modes: the eigenvalues of the reduced kernel Q = sa2 <g g^T> on the basis degrees;
* the d - 1 linear modes x_j, j perpendicular to w*: E_x[phi(w.x) x_j] = w_j m_1(V)/sqrt(V) (Stein), so
  lambda_perp = sa2 <(t/(d - 1)) m_1(V)^2/V>_p;
* the constant mode, when the activation has an even part and degree 0 is not in the basis:
  lambda_0 = sa2 <m_0(V)^2>_p (one mode, usually far above kappa: it uses up one data point);
* every other mode through the trace sa2 <E_u phi(sqrt(V) u)^2>_p minus the modes above.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from grokphase.errors import SolverError
from grokphase.theory.batching import flatten, take
from grokphase.theory.single_index.activations import get_activation
from grokphase.theory.single_index.finite_d import (
    SingleIndexSolution,
    _grid,
    check_approximation,
    is_symmetric,
    q_grid_sizes,
    solve_finite_d,
)
from grokphase.theory.single_index.overlaps import check_degrees, gaussian_rule, hermite_moments, overlap_bound
from grokphase.theory.single_index.params import PARAM_NAMES, SingleIndexParams
from grokphase.theory.single_index.target import get_target
from grokphase.theory.teacher_student.quadrature import t_grid_size
from grokphase.theory.teacher_student.ridge import RIDGE_TOL, SPECTRUM_CHECK, RidgeSpectrum, renormalised_ridge


class FamilyRidgeSolution(NamedTuple):
    """Result of :func:`solve_finite_d_ridge`: the finite-d solution at s2_eff = n kappa (its learned
    fractions are the corrected theory's), kappa, s2_eff, the spectrum (``target`` has one eigenvalue
    per basis degree; ``constant``: lambda_0 counted explicitly, 0 when degree 0 is in the basis or the
    activation is odd) and the iterations used."""

    solution: SingleIndexSolution
    kappa: np.ndarray
    s2_eff: np.ndarray
    spectrum: RidgeSpectrum
    constant: np.ndarray
    iterations: int


def _moments_point(params, v, activation, degrees, Kq, J, level, A, B, yy, symmetric, exact):
    grid = _grid(params, activation, degrees, Kq, J, level, A, B, yy, symmetric, exact)
    s = grid.g @ v
    L = grid.prior + 0.5 * params.u * params.d * s * s + grid.logw_q[:, None] + grid.logw_t[None, :]
    w = jnp.exp(L - logsumexp(L))
    V = grid.q[:, None] ** 2 + grid.t[None, :]
    m = hermite_moments(activation, V, 1)                      # (Kq, J, 2): m_0, m_1
    u, wu = gaussian_rule()
    phi2 = get_activation(activation)(jnp.sqrt(V)[..., None] * jnp.asarray(u)) ** 2 @ jnp.asarray(wu)
    perp = params.sa2 * jnp.sum(w * grid.t[None, :] / (params.d - 1.0) * m[..., 1] ** 2 / V)
    const = params.sa2 * jnp.sum(w * m[..., 0] ** 2)
    trace = params.sa2 * jnp.sum(w * phi2)
    Q = params.sa2 * jnp.einsum("ij,ijk,ijl->kl", w, grid.g, grid.g)
    return perp, const, trace, Q


def kernel_spectrum(solution: SingleIndexSolution, params: SingleIndexParams, target, activation="erf",
                    degrees=None, approximation: str = "exact"):
    """(RidgeSpectrum, lambda_0) of the theory's kernel at a finite-d ``solution`` of ``params`` (the
    solver's rules refined once: q-grid doubled, t-rule one level finer).  The Q they give must equal
    the solver's to SPECTRUM_CHECK, else :class:`SolverError`."""
    exact = check_approximation(approximation) == "exact"
    target = get_target(target)
    activation = get_activation(activation)
    degrees = target.degrees if degrees is None else check_degrees(degrees)
    yhat = target.yhat(degrees)
    A, B = overlap_bound(activation, degrees)
    yy = float(yhat @ yhat)
    symmetric = is_symmetric(degrees)
    shape, flat = flatten(params)
    M = int(np.prod(shape, dtype=int)) if shape else 1
    vs = np.asarray(solution.v, np.float64).reshape(M, len(degrees))
    perp, const, trace, Q = (np.empty(M), np.empty(M), np.empty(M), np.empty((M, len(degrees), len(degrees))))
    for i in range(M):      # per point: its own grid (a handful of points per call)
        one = take(flat, [i])
        p1 = SingleIndexParams(**{k: jnp.asarray(np.asarray(getattr(one, k), np.float64).reshape(-1)[0])
                                  for k in PARAM_NAMES})
        Kq = 2 * int(np.asarray(q_grid_sizes(one, A, B, yy)).max()) - 1
        J = int(np.max(t_grid_size(one, 1))) if exact else 1
        out = jax.jit(_moments_point, static_argnums=(2, 3, 4, 5, 6, 10, 11))(
            p1, jnp.asarray(vs[i]), activation, degrees, Kq, J, 1, A, B, yy, symmetric, exact)
        perp[i], const[i], trace[i], Q[i] = (np.asarray(a) for a in out)
    Q_solver = np.asarray(solution.Q, np.float64).reshape(M, len(degrees), len(degrees))
    off = np.max(np.abs(Q - Q_solver), axis=(1, 2)) / np.maximum(np.max(np.abs(Q_solver), axis=(1, 2)), 1e-300)
    if not np.all(off <= SPECTRUM_CHECK):
        i = int(np.argmax(~(off <= SPECTRUM_CHECK)))
        raise SolverError(f"renormalised ridge: the kernel spectrum's quadrature disagrees with the solver's "
                          f"Q by {off[i]:.2g} (relative) at point {i}; the neuron law is not resolved")
    if 0 in degrees or activation.parity == -1:
        const = np.zeros(M)
    target_eig = np.linalg.eigvalsh(Q)
    d = np.broadcast_to(np.asarray(flat.d, np.float64), (M,))
    rest = np.maximum(trace - target_eig.sum(axis=1) - (d - 1.0) * perp - const, 0.0)
    spec = RidgeSpectrum(target_eig.reshape(shape + (len(degrees),)), perp.reshape(shape), trace.reshape(shape),
                         rest.reshape(shape))
    return spec, const.reshape(shape)


def solve_finite_d_ridge(params: SingleIndexParams, target="1:1,3:-0.3", activation="erf", degrees=None, *,
                         approximation: str = "exact", tol: float = RIDGE_TOL, maxiter: int = 50,
                         **solve_kwargs) -> FamilyRidgeSolution:
    """The single-index finite-d theory with the renormalised ridge at every point of ``params`` (module
    docstring; the fixed point s2_eff <- n kappa iterated from s2 until the relative change is below
    ``tol``; SolverError after ``maxiter``).  ``solve_kwargs`` go to
    :func:`~grokphase.theory.single_index.solve_finite_d`."""
    if not (tol > 0.0) or int(maxiter) < 1:
        raise SolverError(f"renormalised ridge: tol must be > 0 and maxiter >= 1, got {tol!r}, {maxiter!r}")
    p = params.broadcast()
    s2 = np.asarray(p.s2, np.float64)
    n = np.asarray(p.n, np.float64)
    s2_eff = s2.copy()
    change = np.full(s2.shape, np.inf)
    for it in range(1, int(maxiter) + 1):
        pe = p.replace(s2=s2_eff)
        sol = solve_finite_d(pe, target, activation, degrees, approximation=approximation, **solve_kwargs)
        spec, const = kernel_spectrum(sol, pe, target, activation, degrees, approximation)
        lam = np.concatenate([np.asarray(spec.target), np.asarray(const)[..., None]], axis=-1)
        kappa = renormalised_ridge(spec._replace(target=lam), n, s2, p.d)
        new = n * kappa
        change = np.abs(new - s2_eff) / s2_eff
        if np.all(change <= tol):
            return FamilyRidgeSolution(sol, kappa, s2_eff, spec, const, it)
        s2_eff = new
    i = int(np.argmax(change.reshape(-1)))
    raise SolverError(f"renormalised ridge: the fixed point s2_eff = n kappa did not converge in {maxiter} "
                      f"iterations (relative change {change.reshape(-1)[i]:.2g} at point {i}); raise maxiter")


__all__ = ["FamilyRidgeSolution", "kernel_spectrum", "solve_finite_d_ridge"]
