r"""The infinite-width (NNGP) baseline of the single-index family per Hermite degree (THEORY.md §3, §6).

The NNGP kernel is sa2 E_w[phi(w·x) phi(w·x')], w ~ N(0, sw2/d I).  Its exact Rayleigh quotient on
Hhat_k(w*·x) (Gaussian data, no |w|^2 concentration) is

    lambda_k = sa2 E_prior[g_k(q, t)^2],   q ~ N(0, sw2/d),  t = |w_perp|^2 ~ (sw2/d) chi^2_{d-1},

and the reduced kernel at u -> 0 is Q0 = sa2 E_prior[g g^T] (off-diagonal entries between degrees
of one parity).  Computed on the solver's own (q, t) rules.  For relu, g_k^2 = |w|^2 cos^{2k}(w, w*)
M_k^2/k!, so lambda_k = sa2 sw2 (M_k^2/k!) (2k-1)!!/(d (d+2) ... (d+2k-2)) in closed form, where
M_k^2/k! are the Taylor coefficients of the order-1 arc-cosine kernel (:func:`relu_nngp_eigenvalues`)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from grokphase.theory.batching import to_float64
from grokphase.theory.single_index.activations import get_activation
from grokphase.theory.single_index.finite_d import _flat, _grid, q_grid_sizes
from grokphase.theory.single_index.overlaps import check_degrees, relu_moment
from grokphase.theory.single_index.params import SingleIndexParams
from grokphase.theory.teacher_student.quadrature import t_grid_size


def prior_kernel(params: SingleIndexParams, activation, degrees, grid_size: int | None = None,
                 t_size: int | None = None) -> np.ndarray:
    """Q0 = sa2 E_prior[g g^T] over ``degrees`` at one (scalar) parameter point, shape (|K|, |K|).
    Always on the whole q-line (the prior is even; cross terms of mixed parity vanish by symmetry)."""
    activation = get_activation(activation)
    degrees = check_degrees(degrees)
    K = grid_size or int(np.max(q_grid_sizes(params, 0.0, 0.0, 0.0)))
    J = t_size or int(np.max(t_grid_size(params)))
    p = to_float64(params)
    g, logp0 = _flat(_grid(p, activation, degrees, K, J, 0, 0.0, 0.0, 0.0, False))
    return np.asarray(p.sa2 * jnp.einsum("k,ki,kj->ij", jnp.exp(logp0), g, g))


def nngp_eigenvalues(params: SingleIndexParams, activation, degrees, **kwargs) -> np.ndarray:
    """lambda_k = sa2 E_prior[g_k^2] for k in ``degrees`` (the diagonal of :func:`prior_kernel`)."""
    return np.diag(prior_kernel(params, activation, degrees, **kwargs)).copy()


def relu_nngp_eigenvalues(params: SingleIndexParams, degrees) -> np.ndarray:
    """The closed form for relu: sa2 sw2 (M_k^2/k!) (2k-1)!! / prod_{j<k} (d + 2j)."""
    degrees = check_degrees(degrees)
    d, sw2, sa2 = (float(np.asarray(getattr(params, k))) for k in ("d", "sw2", "sa2"))
    out = []
    for k in degrees:
        moment = math.prod(range(1, 2 * k, 2)) / math.prod(d + 2 * j for j in range(k))
        out.append(sa2 * sw2 * relu_moment(k) ** 2 / math.factorial(k) * moment)
    return np.array(out)
