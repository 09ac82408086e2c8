r"""The renormalised ridge: the finite-n (eigenlearning) correction of the equivalent-kernel theory
(issue 22; docs/finite_size.md, section 4).

The EK step replaces the sum over the n training points by n times the population average, so that
kernel regression with noise sigma^2 learns kernel mode k by the fraction lambda_k/(lambda_k + s2/n).
At finite n the leading correction of kernel regression on random data is a *renormalised ridge*
(Sollich; Bordelon, Canatar & Pehlevan 2020; Simon et al. 2021, "eigenlearning"): the mode is learned
by lambda_k/(lambda_k + kappa) with kappa > s2/n the root of

    n = s2/kappa + sum_k lambda_k/(lambda_k + kappa),

the sum running over *every* mode of the kernel (the d - 1 linear modes perpendicular to the teacher
use up about (d - 1) lambda/(lambda + kappa) of the n data points).  In the adaptive-kernel theory the
same quenched sum enters the neuron action: sum_mu t_mu phi(w.x_mu) = sum_k g_k(w) y_k/(lambda_k + kappa)
(representer theorem), i.e. the EK theory with s2/n replaced by kappa everywhere.  Written in the
solver's variables that is the finite-d theory at an effective noise

    s2_eff = n kappa  (so u_eff = n^2 sa2/(s2_eff^2 d N), r_eff = s2_eff N/n),

with kappa computed from the spectrum of the theory's own kernel K = sa2 <phi phi>_p at that solution
-- a fixed point, solved by iteration (:func:`solve_finite_d_ridge`).  The spectrum used:

* the two target modes: the eigenvalues of the reduced kernel Qt (the EK theory's own 2 x 2 block);
* the d - 1 linear modes x_j, j perpendicular to w*: lambda_perp = sa2 <4 t/((d - 1) pi D)>_p with
  t = |w_perp|^2, D = 1 + 2(q^2 + t) (erf's exact linear overlap 2 w_j/sqrt(pi D), averaged over the
  isotropic w_perp);
* every other mode (degree >= 3, each O(d^-3) or spread over d directions, far below kappa) through
  its total trace: rest = sa2 <(2/pi) arcsin(2|w|^2/(1 + 2|w|^2))>_p - tr Qt - (d - 1) lambda_perp,
  entering as rest/kappa (the first term of lambda/(lambda + kappa) for lambda << kappa).

As n -> infinity at fixed u, r (Table-1 scaling, d/n -> 0) kappa -> s2/n and the corrected theory
reduces to :func:`~grokphase.theory.teacher_student.finite_d.solve_finite_d`.  In the Gaussian-process
limit (u -> 0) it reproduces exact GP regression on random training sets (tests/test_ridge.py), which
the EK theory misses by 3-4 % at n = 375, d = 53.  What it does not contain: the data-set-to-data-set
(quenched) fluctuations of the adaptive kernel itself, which the finite-n solver
(:mod:`grokphase.theory.finite_n`) keeps.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from grokphase.errors import SolverError
from grokphase.theory.batching import flatten, to_float64
from grokphase.theory.teacher_student.action import SQRT6
from grokphase.theory.teacher_student.finite_d import FiniteDSolution, _more, solve_finite_d
from grokphase.theory.teacher_student.params import (
    DEFAULT_APPROXIMATION,
    PARAM_NAMES,
    TeacherStudentParams,
    check_approximation,
)
from grokphase.theory.teacher_student.quadrature import _grid, point_grid_sizes, t_grid_size

#: relative change of s2_eff between iterations at which the fixed point is accepted
RIDGE_TOL = 1e-10
#: largest relative difference between the spectrum's Qt and the solver's (a quadrature check)
SPECTRUM_CHECK = 1e-6
#: points per compiled block of the spectrum's quadrature (memory: each holds its q x t grid)
SPECTRUM_BLOCK = 16


class RidgeSpectrum(NamedTuple):
    """The kernel spectrum the renormalised ridge needs (every field has the points' shape; ``target``
    one more axis of length 2).

    target: eigenvalues of the reduced kernel Qt on the target basis (Hhat1, Hhat3), ascending.
    perp: eigenvalue of each of the d - 1 linear modes perpendicular to w*.
    trace: the kernel's trace sa2 <E_x phi(w.x)^2>_p.
    rest: trace - tr Qt - (d - 1) perp (>= 0 by Bessel's inequality): the modes not listed.
    """

    target: np.ndarray
    perp: np.ndarray
    trace: np.ndarray
    rest: np.ndarray


class RidgeSolution(NamedTuple):
    """Result of :func:`solve_finite_d_ridge`.

    solution: the finite-d solution at the effective noise s2_eff (its b, c, learned fractions,
      droplet fraction, phase are the corrected theory's).
    kappa: the renormalised ridge; s2_eff = n kappa (s2_eff / s2 - 1 is the relative correction).
    spectrum: the :class:`RidgeSpectrum` at the solution.
    iterations: fixed-point iterations used (the same for every point of the batch).
    """

    solution: FiniteDSolution
    kappa: np.ndarray
    s2_eff: np.ndarray
    spectrum: RidgeSpectrum
    iterations: int


def _moments_point(params: TeacherStudentParams, b, c, K: int, J: int, level: int, exact: bool):
    """(lambda_perp, trace, Qt) of one point's neuron law on the q x t rule (K, J nodes, t level)."""
    params = to_float64(params)
    grid = _grid(params, K, J, level, exact)
    v = jnp.stack([b, SQRT6 * c])
    s = grid.g @ v
    L = grid.prior + 0.5 * params.u * params.d * s * s + grid.logw_q[:, None] + grid.logw_t[None, :]
    w = jnp.exp(L - logsumexp(L))
    W2 = grid.q[:, None] ** 2 + grid.t[None, :]
    D = 1.0 + 2.0 * W2
    perp = params.sa2 * jnp.sum(w * 4.0 * grid.t[None, :] / ((params.d - 1.0) * jnp.pi * D))
    trace = params.sa2 * jnp.sum(w * (2.0 / jnp.pi) * jnp.arcsin(2.0 * W2 / D))
    Q = params.sa2 * jnp.einsum("ij,ijk,ijl->kl", w, grid.g, grid.g)
    return perp, trace, Q


@jax.jit(static_argnames=("K", "J", "level", "exact"))
def _moments(params: TeacherStudentParams, b, c, K: int, J: int, level: int, exact: bool):
    """:func:`_moments_point` over a flat batch of points."""
    return jax.vmap(lambda p, bi, ci: _moments_point(p, bi, ci, K, J, level, exact))(params, b, c)


def kernel_spectrum(solution: FiniteDSolution, params: TeacherStudentParams,
                    approximation: str = DEFAULT_APPROXIMATION) -> RidgeSpectrum:
    """The spectrum of the theory's kernel K = sa2 <phi phi>_p at a finite-d ``solution`` of
    ``params`` (any broadcast shape; the solution must be the one of these parameters, at the same
    ``approximation``).  The averages over p(q, t) use the solver's rules refined once (q-grid
    doubled, t-rule one level finer); the Qt they give must equal the solver's to
    :data:`SPECTRUM_CHECK`, else :class:`SolverError`."""
    exact = check_approximation(approximation) == "exact"
    shape, flat = flatten(params)
    b = np.asarray(solution.b, dtype=np.float64).reshape(-1)
    c = np.asarray(solution.c, dtype=np.float64).reshape(-1)
    K = 2 * int(point_grid_sizes(flat).max()) - 1
    J = int(np.max(t_grid_size(flat, 1))) if exact else 1
    fields = {k: np.broadcast_to(np.asarray(getattr(flat, k), dtype=np.float64), b.shape) for k in PARAM_NAMES}
    # blocks of SPECTRUM_BLOCK points (the last one padded by repeating its final point, so that one
    # executable serves every block): a whole 64 x 64 diagram at once would hold every point's grid
    M = b.size
    size = min(SPECTRUM_BLOCK, M)
    parts = []
    for start in range(0, M, size):
        idx = np.minimum(np.arange(start, start + size), M - 1)
        fb = TeacherStudentParams(**{k: v[idx] for k, v in fields.items()})
        out = jax.device_get(_moments(fb, b[idx], c[idx], K=K, J=J, level=1, exact=exact))
        parts.append([np.asarray(a)[: min(size, M - start)] for a in out])
    perp, trace, Q = (np.concatenate([pt[i] for pt in parts]) for i in range(3))
    Q_solver = np.asarray(solution.Q, dtype=np.float64).reshape(-1, 2, 2)
    scale = np.maximum(np.max(np.abs(Q_solver), axis=(1, 2)), 1e-300)
    off = np.max(np.abs(Q - Q_solver), axis=(1, 2)) / scale
    if not np.all(off <= SPECTRUM_CHECK):
        i = int(np.argmax(~(off <= SPECTRUM_CHECK)))
        raise SolverError(f"renormalised ridge: the kernel spectrum's quadrature disagrees with the solver's "
                          f"Qt by {off[i]:.2g} (relative) at point {i}; the neuron law is not resolved")
    target = np.linalg.eigvalsh(Q)
    d = np.broadcast_to(np.asarray(flat.d, dtype=np.float64), b.shape)
    rest = np.maximum(trace - target.sum(axis=1) - (d - 1.0) * perp, 0.0)
    return RidgeSpectrum(target.reshape(shape + (2,)), perp.reshape(shape), trace.reshape(shape),
                         rest.reshape(shape))


def renormalised_ridge(spectrum: RidgeSpectrum, n, s2, d, iters: int = 200) -> np.ndarray:
    """kappa solving n = s2/kappa + sum_a lam_a/(lam_a + kappa) + (d - 1) lam_perp/(lam_perp + kappa)
    + rest/kappa (broadcast over the points).  The right side decreases in kappa from n + (sum) >= n at
    kappa = s2/n to <= n at kappa = (s2 + trace)/n, so the root is bracketed there; bisection in
    log kappa to float64 precision."""
    lam = np.asarray(spectrum.target, dtype=np.float64)
    perp, rest, trace = (np.asarray(a, dtype=np.float64) for a in (spectrum.perp, spectrum.rest, spectrum.trace))
    n, s2, d = (np.asarray(a, dtype=np.float64) for a in (n, s2, d))
    if np.any(~(n > 0)) or np.any(~(s2 > 0)) or np.any(~(d >= 1)):
        raise SolverError("renormalised ridge needs n > 0, s2 > 0 and d >= 1")

    def excess(kappa):
        return ((s2 + rest) / kappa + np.sum(lam / (lam + kappa[..., None]), axis=-1)
                + (d - 1.0) * perp / (perp + kappa) - n)

    shape = np.broadcast_shapes(perp.shape, n.shape, s2.shape, d.shape, lam.shape[:-1])
    lo = np.log(np.broadcast_to(s2 / n, shape))
    hi = np.log(np.broadcast_to((s2 + np.maximum(trace, 0.0)) / n, shape) * (1.0 + 1e-12)) + 1e-12
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        pos = excess(np.exp(mid)) > 0.0
        lo, hi = np.where(pos, mid, lo), np.where(pos, hi, mid)
        if np.all(hi - lo <= 4e-16 * np.maximum(np.abs(hi), 1.0)):
            break
    return np.exp(0.5 * (lo + hi))


def solve_finite_d_ridge(params: TeacherStudentParams, *, approximation: str = DEFAULT_APPROXIMATION,
                         tol: float = RIDGE_TOL, maxiter: int = 50, progress=None, **solve_kwargs) -> RidgeSolution:
    """The finite-d theory with the renormalised ridge (module docstring) at every point of ``params``:
    iterate s2_eff <- n kappa(spectrum of the solution at s2_eff), from s2_eff = s2, until the relative
    change is below ``tol`` at every point (``SolverError`` after ``maxiter`` iterations, naming the
    largest change).  ``solve_kwargs`` go to :func:`solve_finite_d`; ``progress`` counts every
    finite-d solve (one per point per iteration; its total grows by the points each iteration)."""
    check_approximation(approximation)
    if not (tol > 0.0) or int(maxiter) < 1:
        raise SolverError(f"renormalised ridge: tol must be > 0 and maxiter >= 1, got {tol!r}, {maxiter!r}")
    p = params.broadcast()
    shape = p.shape
    size = int(np.prod(shape, dtype=int))
    s2 = np.asarray(p.s2, dtype=np.float64)
    s2_eff = s2.copy()
    change = np.full(shape, np.inf)
    for it in range(1, int(maxiter) + 1):
        if it > 1:
            _more(progress, size)
        pe = p.replace(s2=s2_eff)
        sol = solve_finite_d(pe, approximation=approximation, progress=progress, **solve_kwargs)
        spectrum = kernel_spectrum(sol, pe, approximation)
        kappa = renormalised_ridge(spectrum, p.n, s2, p.d)
        new = np.asarray(p.n, dtype=np.float64) * kappa
        change = np.abs(new - s2_eff) / s2_eff
        if np.all(change <= tol):
            return RidgeSolution(sol, kappa, s2_eff, spectrum, it)
        s2_eff = new
    i = int(np.argmax(change.reshape(-1)))
    raise SolverError(f"renormalised ridge: the fixed point s2_eff = n kappa did not converge in {maxiter} "
                      f"iterations (relative change {change.reshape(-1)[i]:.2g} at point {i}, "
                      f"s2 = {float(s2.reshape(-1)[i]):.6g}); raise maxiter")


__all__ = ["RidgeSolution", "RidgeSpectrum", "kernel_spectrum", "renormalised_ridge", "solve_finite_d_ridge",
           "RIDGE_TOL"]
