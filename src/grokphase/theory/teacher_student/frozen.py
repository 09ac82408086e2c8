"""Metastable branches of the finite-d teacher-student theory with the droplet occupation frozen
(THEORY.md §2, §3b): the supercooled droplet-free GFL branch and the superheated droplet branch that
a heating run follows (used by :mod:`grokphase.analysis.hysteresis`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from grokphase.errors import ParameterError
from grokphase.theory.batching import to_float64
from grokphase.theory.teacher_student.action import _yhat
from grokphase.theory.teacher_student.params import PARAM_NAMES, TeacherStudentParams, check_approximation
from grokphase.theory.teacher_student.quadrature import _flat, _grid, default_grid_size, t_grid_size


class FrozenBranch(NamedTuple):
    """A metastable branch of the finite-d teacher-student theory with the droplet occupation frozen
    (see :func:`solve_frozen_branch`); ``exists`` is False where the restricted droplet basin has no
    interior minimum of S(q) (the branch's spinodal is passed) or Newton did not converge."""

    b: np.ndarray
    c: np.ndarray
    linear_learned: np.ndarray
    cubic_learned: np.ndarray
    q_droplet: np.ndarray
    exists: np.ndarray


def _frozen_functions(K: int, J: int, exact: bool):
    def parts(params, q_cut):
        grid = _grid(params, K, J, 0, exact)
        g, _, logp0 = _flat(grid)
        # the node cell containing the cut is split linearly between the basins (a hard mask would make
        # the rule first order in the spacing and jagged as the cut moves through the nodes)
        frac = jnp.clip((q_cut - grid.q) / jnp.gradient(grid.q) + 0.5, 0.0, 1.0)
        frac = jnp.repeat(frac, J)
        return grid, g, logp0, frac

    def objective(v, params, p, q_cut):
        _, g, logp0, frac = parts(params, q_cut)
        s = g @ v
        a = 0.5 * params.u * params.d * s * s + logp0
        lz_in = logsumexp(a, b=frac)
        lz_out = logsumexp(a, b=1.0 - frac)
        lz_out = jnp.where(p > 0, lz_out, 0.0)
        return v @ _yhat(params.eps) - 0.5 * v @ v - params.r * ((1.0 - p) * lz_in + p * lz_out)

    def action_q(v, params, q_cut):
        grid, _, _, _ = parts(params, q_cut)
        s = grid.g @ v
        S2 = -(grid.prior + 0.5 * params.u * params.d * s * s)
        S = -logsumexp(-S2 + grid.logw_t[None, :], axis=1) if exact else S2[:, 0]
        return grid.q, S

    vgh = jax.jit(lambda v, prm, p, qc: (objective(v, prm, p, qc), jax.grad(objective)(v, prm, p, qc),
                                         jax.hessian(objective)(v, prm, p, qc)))
    return vgh, jax.jit(action_q)


def solve_frozen_branch(params, fraction, q_cut, *, approximation: str = "exact", grid_factor: int = 2,
                        maxiter: int = 60) -> FrozenBranch:
    r"""Finite-d teacher-student theory with the droplet occupation frozen: a fraction ``fraction`` of
    the neurons confined to the droplet basins |q| > ``q_cut`` and the rest to the bulk |q| < q_cut.

    Distinguishable neurons with a fixed occupation give the free energy (THEORY.md §2, reduced variables
    v = [b, sqrt6 c]) F(v) = v.yhat - |v|^2/2 - r [(1 - p) log z_bulk(v) + p log z_drop(v)], z_X the
    single-neuron partition function restricted to basin X: still a sum of convex log-partition
    functions, so F is concave and its maximiser (damped Newton, autodiff gradient and Hessian, the
    theory's own quadrature with the q-grid refined ``grid_factor`` times, the cell at the cut split
    linearly between the basins) is unique.  p = 0 with
    q_cut = inf is the equilibrium :func:`~grokphase.theory.teacher_student.solve_finite_d`; p = 0 with
    a finite cut is the metastable GFL (supercooled, droplet-free) branch; p > 0 the superheated droplet
    branch that a heating run follows while its droplets neither dissolve nor nucleate.  ``params``: a
    1-D batch (TeacherStudentParams with array s2), ``fraction`` and ``q_cut`` broadcast against it."""
    exact = check_approximation(approximation) == "exact"
    prm = params.broadcast()
    M = int(np.asarray(prm.s2).size)
    fraction = np.broadcast_to(np.asarray(fraction, np.float64), (M,))
    q_cut = np.broadcast_to(np.asarray(q_cut, np.float64), (M,))
    if np.any((fraction < 0) | (fraction > 1)):
        raise ParameterError(f"frozen droplet fraction must be in [0, 1], got {fraction.tolist()}")
    K = grid_factor * (default_grid_size(prm) - 1) + 1
    J = int(np.max(t_grid_size(prm))) if exact else 1
    vgh, action_q = _frozen_functions(K, J, exact)
    out = {k: np.full(M, np.nan) for k in ("b", "c", "q_droplet")}
    exists = np.zeros(M, bool)
    for i in range(M):
        pi = TeacherStudentParams(**{k: float(np.ravel(np.asarray(getattr(prm, k)))[i]) for k in PARAM_NAMES})
        pi = to_float64(pi)
        v = np.zeros(2)
        F, g, H = (np.asarray(x) for x in vgh(v, pi, fraction[i], q_cut[i]))
        ok = False
        for _ in range(maxiter):
            step = -np.linalg.solve(H, g)
            if np.linalg.norm(g) < 1e-11 * (1 + np.linalg.norm(v)):
                ok = True
                break
            t = 1.0
            while t > 1e-10:
                Fn, gn, Hn = (np.asarray(x) for x in vgh(v + t * step, pi, fraction[i], q_cut[i]))
                if np.isfinite(Fn) and Fn >= F + 1e-4 * t * (g @ step) - 1e-13 * (1 + abs(F)):
                    break
                t *= 0.5
            v, F, g, H = v + t * step, Fn, gn, Hn
        ok = ok or np.linalg.norm(g) < 1e-8
        q, S = (np.asarray(x) for x in action_q(v, pi, q_cut[i]))
        interior = True
        if fraction[i] > 0:     # a local minimum of S(q) inside the droplet basin (not piled up at the cut)
            k = np.arange(1, q.size - 1)
            is_min = (q[k - 1] >= q_cut[i]) & (S[k - 1] > S[k]) & (S[k] <= S[k + 1])
            interior = bool(is_min.any())
            if interior:
                kk = k[is_min]
                out["q_droplet"][i] = q[kk[np.argmin(S[kk])]]
        exists[i] = ok and interior
        out["b"][i], out["c"][i] = v[0], v[1] / np.sqrt(6.0)
    eps = np.broadcast_to(np.asarray(prm.eps, np.float64), (M,))
    return FrozenBranch(out["b"], out["c"], 1.0 - out["b"], 1.0 - out["c"] / eps, out["q_droplet"], exists)
