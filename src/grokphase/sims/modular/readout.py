"""The modular readout's exact conditional draw (Gibbs update) and the closed-form sums over the whole
P x P table (the loss and the Gram matrices without forming the (P^2, N) hidden layer)."""

from __future__ import annotations

import jax.numpy as jnp

from grokphase.sims.readout import (ReadoutBias, _bias_correction, _draw_from_gram, _dual_draw, _spd_draw,
                                    _spd_draw_solve, readout_draw)

#: the generic Gaussian-readout pieces live in :mod:`grokphase.sims.readout` (shared with the teacher-student
#: model) and are re-exported here under their old names
__all__ = ["ReadoutBias", "_bias_correction", "_draw_from_gram", "_dual_draw", "_spd_draw", "_spd_draw_solve",
           "readout_draw", "gibbs_readout", "full_table_loss", "full_table_gram", "full_table_Fy"]


def gibbs_readout(w, pairs, y, c, s2, xi, eps=None, bias: ReadoutBias | None = None):
    r"""Exact draw of the readout's unit variables z_a from p(z_a | w) (one network, float64 algebra).

    The output f = c (h^2) z_a (c = scale * prior std of a, h_i(n, m) = w_{i,n} + w_{i,P+m}) is linear
    in z_a, whose prior is N(0, I), so given the input weights the posterior exp(-L/s2 - |z_a|^2/2) is
    Gaussian, independently for each output p: precision Lambda = I + (c^2/s2) F^T F with the
    features F = h^2 over the training pairs, mean Lambda^{-1} (c/s2) F^T y.  Returns
    mean + chol(Lambda)^{-T} xi for the caller's standard normals xi (N, P) (xi = 0: the conditional
    mean).  w: (2P, N) input weights, pairs: (n, 2) training pairs, y: (n, P) their targets.  Not
    differentiable (a sampler step, never inside a gradient).

    Wider than the data (N > n) the same posterior is drawn in the n-dimensional dual form
    (:func:`_dual_draw`, Matheron's rule): O(n^2 N + n^3) instead of O(N^2 n + N^3): 3.0x cheaper at
    P = 23, N = 1024 (n = P^2 = 529) and 9.8x at N = 2048 (benchmarks/bench_gibbs_readout.py).  It
    needs a second set of standard normals ``eps`` (n, P) for a draw; ``eps=None`` means zeros, which
    with xi = 0 gives the conditional mean (for N <= n ``eps`` is ignored).

    ``bias`` (:class:`ReadoutBias`, optional): an umbrella window (kappa/2)(m - m0)^2 on m = g.z_a, which
    keeps the conditional Gaussian with precision I_P x Lambda + kappa g g^T (rank one, coupling the P
    outputs); it is drawn exactly by Matheron's rule (:func:`_bias_correction`) from the unbiased draw
    and Sigma g, solved with the same factorisation (primal: Lambda^-1 g; dual: g - c^2 F^T K^-1 F g).
    Without it the draw is unchanged, bit for bit."""
    F = (w[pairs[:, 0]] + w[y.shape[-1] + pairs[:, 1]]) ** 2
    return readout_draw(F, y, c, s2, xi, eps, bias)


def _circ_conv(u, v):
    """(u * v)_p = sum_n u_n v_{(p - n) mod P} along axis 0 for (P, N) arrays, by FFT."""
    return jnp.fft.irfft(jnp.fft.rfft(u, axis=0) * jnp.fft.rfft(v, axis=0), n=u.shape[0], axis=0)


def full_table_loss(w, a, scale, matmul=jnp.matmul):
    r"""L = 1/2 sum over the whole P x P table and all outputs of (f - y)^2 without forming the
    (P^2, N) hidden layer: with u = w[:P], v = w[P:] (P, N), A = (u^2) a, B = (v^2) a (P, P) and the
    cross term C_p(n, m) = 2 sum_i a_ip u_ni v_mi,

        sum f^2 = s^2 [P |A|^2 + P |B|^2 + 2 (1^T A)(B^T 1) + 4 sum((a a^T) o (u^T u) o (v^T v))
                       + 4 sum_i (sum_m v_mi) (a o u^T A)_i + 4 sum_i (sum_n u_ni) (a o v^T B)_i],
        sum f y = s [sum A + sum B + 2 sum_i sum_p a_ip (u_i * v_i)_p
                     - (1/P)(P sum A + P sum B + 2 sum_i (sum_p a_ip)(sum_n u_ni)(sum_m v_mi))],
        sum y^2 = P (P - 1),

    (* the circular convolution, by FFT).  O(N^2 P + N P^2) instead of the O(N P^3) of the direct
    sum; equal to it to rounding (tested).  w: (2P, N) input weights, a: (N, P) readout.  ``matmul``: the product of every
    matmul (default ``jnp.matmul``, what ``@`` calls; an emulated reduced-precision one of
    :func:`grokphase.sims.precision.network_matmul`)."""
    P = a.shape[-1]
    u, v = w[:P], w[P:]
    A = matmul(u * u, a)                              # (P, P): A[n, p] = sum_i u_ni^2 a_ip
    B = matmul(v * v, a)
    su, sv = jnp.sum(u, axis=0), jnp.sum(v, axis=0)   # (N,)
    cross = 4.0 * jnp.sum(matmul(a, a.T) * matmul(u.T, u) * matmul(v.T, v))
    AC = 4.0 * jnp.sum(sv * jnp.sum(a * matmul(u.T, A), axis=1))
    BC = 4.0 * jnp.sum(su * jnp.sum(a * matmul(v.T, B), axis=1))
    f2 = P * jnp.sum(A * A) + P * jnp.sum(B * B) + 2.0 * jnp.sum(jnp.sum(A, 0) * jnp.sum(B, 0)) + cross + AC + BC
    conv = _circ_conv(u, v)                           # (P, N): (u_i * v_i)_p
    sum_a = jnp.sum(a, axis=1)
    fy = (jnp.sum(A) + jnp.sum(B) + 2.0 * jnp.sum(conv.T * a)
          - (P * jnp.sum(A) + P * jnp.sum(B) + 2.0 * jnp.sum(sum_a * su * sv)) / P)
    return 0.5 * scale * scale * f2 - scale * fy + 0.5 * P * (P - 1)


def full_table_gram(w):
    r"""F^T F and F^T y of the features F_(nm),i = (u_ni + v_mi)^2 over the whole table, in O(N^2 P)
    (expanding the square: moments of u over n times moments of v over m) instead of O(N^2 P^2).
    F^T y[i, p] = 2 (u_i * v_i)_p - 2 (sum_n u_ni)(sum_m v_mi)/P.  Returns float64 (N, N), (N, P)."""
    w = w.astype(jnp.float64)
    P = w.shape[0] // 2
    u, v = w[:P], w[P:]
    u2, v2 = u * u, v * v
    su, sv, su2, sv2 = (jnp.sum(x, axis=0) for x in (u, v, u2, v2))
    t = (u2.T @ u) * sv[None, :]                      # sum_n u_i^2 u_j * sum_m v_j
    s_ = (v2.T @ v) * su[None, :]
    G = (P * (u2.T @ u2) + P * (v2.T @ v2) + 4.0 * (u.T @ u) * (v.T @ v)
         + jnp.outer(su2, sv2) + jnp.outer(sv2, su2)
         + 2.0 * (t + t.T) + 2.0 * (s_ + s_.T))
    return G, full_table_Fy(w)


def full_table_Fy(w):
    """F^T y over the whole table, (N, P): F^T y[i, p] = 2 (u_i * v_i)_p - 2 (sum_n u_ni)(sum_m v_mi)/P
    (the squares u_n^2 and v_m^2 meet every output equally and cancel against the -1/P part)."""
    w = w.astype(jnp.float64)
    P = w.shape[0] // 2
    u, v = w[:P], w[P:]
    return 2.0 * _circ_conv(u, v).T - 2.0 * (jnp.sum(u, axis=0) * jnp.sum(v, axis=0))[:, None] / P


