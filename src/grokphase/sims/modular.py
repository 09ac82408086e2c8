r"""Modular-addition simulations (THEORY.md §4, paper Sec. 2.2 / 3.2; Gromov, arXiv 2301.02679).

Model: f_p(n, m) = scale * sum_i a_pi (w_{i,n} + w_{i,P+m})^2, the square-activation network on
two-hot inputs x_nm (ones at n and P + m) computed without one-hot matrices (:class:`SquareNet`).
Two parametrisations:

* ``paper``: w ~ N(0, 1), a_pi ~ N(0, sa2/N), scale = 1 (THEORY.md §4);
* ``gromov``: f = W2 (W1 x)^2 / (D N) with D = 2P and unit Gaussian W1, W2 (Gromov's mean-field
  network): scale = 1/(D N), prior standard deviations 1.  It is the paper's network with
  a = W2/(D N), i.e. sa2 = 1/(D^2 N) at initialisation.

Data: all P^2 pairs (alpha = 1) or a random fraction alpha of them (seeded per data set) for
training, the rest for testing; targets y_p = delta_{p,(n+m) mod P} - 1/P.

Training: Langevin (the posterior of THEORY.md §4, optionally with the sextic Fourier penalty
Gamma = sum_k P (gamma/6)(|w_k|^6 + |v_k|^6) computed by FFT, entering the potential as s2 Gamma),
or Optax optimisers (full-batch GD, AdamW) for grokking in time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr

from grokphase.errors import ParameterError
from grokphase.sims.driver import (Checkpointer, Members, Schedule, Task, ladder_branch_output, ladder_branches, prior_z,
                                   run_ensemble, run_ladder)
from grokphase.sims.langevin import langevin

PARAMETRISATIONS = ("paper", "gromov")
OPTIMIZERS = ("langevin", "adamw", "gd")
ANNEALS = ("none", "down", "up", "both")
STARTS = ("auto", "prior", "ordered")
READOUTS = ("gibbs", "langevin")
ORDERED_DROPLETS = ("all", "theory", "coldest")
THEORY_CONVENTIONS = ("paper", "network")
BRANCHES = {"down": "cooling", "up": "heating"}
DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
SCALAR_RECORDS = ("train_mse", "test_mse", "train_acc", "test_acc", "target_component", "target_component_mean",
                  "ipr", "w_norm2", "a_norm2", "droplet_fraction")
IPR_BINS = 50


class SquareNet(nn.Module):
    """f_p(n, m) = scale * sum_i a_pi (w_{i,n} + w_{i,P+m})^2 for integer pairs x = (n, m).

    Parameters ``w`` (2P, N) (rows 0..P-1: the first operand's half, rows P..2P-1: the second's) and
    ``a`` (N, P), initialised as unit normals (the engine multiplies by the prior std)."""

    N: int
    P: int
    scale: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("w", nn.initializers.normal(1.0), (2 * self.P, self.N), self.dtype)
        a = self.param("a", nn.initializers.normal(1.0), (self.N, self.P), self.dtype)
        h = w[x[..., 0]] + w[self.P + x[..., 1]]          # (..., N): w_i . x_nm without one-hot
        return jnp.asarray(self.scale, self.dtype) * ((h * h) @ a)


def one_hot_forward(params, x, P: int, scale: float = 1.0):
    """Reference formulation with explicit one-hot inputs X (..., 2P): scale * ((X w)^2) a."""
    X = jax.nn.one_hot(x[..., 0], 2 * P) + jax.nn.one_hot(P + x[..., 1], 2 * P)
    return scale * ((X.astype(params["w"].dtype) @ params["w"]) ** 2) @ params["a"]


def all_pairs(P: int) -> np.ndarray:
    n, m = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    return np.stack([n.ravel(), m.ravel()], axis=1).astype(np.int32)


def targets(pairs, P: int, dtype=jnp.float32):
    """y_p = delta_{p, (n+m) mod P} - 1/P."""
    return jax.nn.one_hot((pairs[..., 0] + pairs[..., 1]) % P, P, dtype=dtype) - jnp.asarray(1.0 / P, dtype)


@dataclasses.dataclass(frozen=True)
class ModularSim:
    """A modular-addition simulation: sizes, training fraction, optimiser, a list of s2 values
    (Langevin temperatures; ignored by the plain optimisers except as a label) and ``seeds``
    networks per s2 (each its own data split and initialisation)."""

    P: int = 59
    N: int = 256
    alpha: float = 1.0
    s2: tuple = (0.2,)
    sa2: float | None = None        # paper parametrisation: default 0.002/N (THEORY.md §4 / Fig. 3)
    gamma: float = 0.0
    parametrisation: str = "paper"
    optimizer: str = "langevin"
    lr: float = 1e-3
    weight_decay: float = 0.0
    seeds: int = 1
    seed: int = 0
    steps: int = 1000
    burn_in: int = 0
    record_every: int = 10
    log_times: bool = False
    dtype: str = "float32"
    ipr_bins: int = IPR_BINS
    anneal: str = "none"
    start: str = "auto"
    readout: str = "gibbs"
    replica_exchange: bool = False
    swap_every: int = 10
    ordered_droplets: str = "all"
    theory_convention: str = "paper"

    def __post_init__(self):
        for name in ("P", "N", "seeds", "ipr_bins", "swap_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer():
                raise ParameterError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.P < 2:
            raise ParameterError(f"P must be an integer >= 2, got {self.P}")
        if self.N < 1:
            raise ParameterError(f"N must be an integer >= 1, got {self.N}")
        if self.seeds < 1:
            raise ParameterError(f"seeds must be >= 1, got {self.seeds}")
        if not (math.isfinite(self.alpha) and 0.0 < self.alpha <= 1.0):
            raise ParameterError(f"alpha (training fraction) must be in (0, 1], got {self.alpha!r}")
        if self.n_train < 1:
            raise ParameterError(f"alpha = {self.alpha} leaves no training pair at P = {self.P}")
        s2 = np.atleast_1d(np.asarray(self.s2, dtype=np.float64))
        if s2.size == 0 or not np.all(np.isfinite(s2)) or np.any(s2 <= 0):
            raise ParameterError(f"s2 must be a non-empty list of finite numbers > 0, got {s2.tolist()}")
        object.__setattr__(self, "s2", tuple(float(v) for v in s2))
        if self.parametrisation not in PARAMETRISATIONS:
            raise ParameterError(f"unknown parametrisation {self.parametrisation!r}; choose paper or gromov")
        if self.optimizer not in OPTIMIZERS:
            raise ParameterError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.dtype not in DTYPES:
            raise ParameterError(f"unknown dtype {self.dtype!r}; choose float32 or float64")
        if self.readout not in READOUTS:
            raise ParameterError(f"unknown readout update {self.readout!r}; choose gibbs or langevin")
        if self.anneal not in ANNEALS:
            raise ParameterError(f"unknown anneal {self.anneal!r}; choose from {', '.join(ANNEALS)}")
        if self.start not in STARTS:
            raise ParameterError(f"unknown start {self.start!r}; choose from {', '.join(STARTS)}")
        if self.ordered_droplets not in ORDERED_DROPLETS:
            raise ParameterError(f"unknown ordered_droplets {self.ordered_droplets!r}; choose all, theory or coldest")
        if self.theory_convention not in THEORY_CONVENTIONS:
            raise ParameterError(f"unknown theory_convention {self.theory_convention!r}; choose paper or network")
        if self.swap_every < 1:
            raise ParameterError(f"swap_every must be an integer >= 1, got {self.swap_every}")
        if self.replica_exchange:
            if self.optimizer != "langevin":
                raise ParameterError("--replica-exchange swaps states between Langevin temperatures: it needs "
                                     "--optimizer langevin")
            if self.anneal != "none":
                raise ParameterError("--replica-exchange and --anneal are separate protocols; choose one")
            if len(self.s2) < 2 or len(set(self.s2)) != len(self.s2):
                raise ParameterError(f"--replica-exchange needs a ladder of at least two distinct s2 values, "
                                     f"got {list(self.s2)}")
        if self.anneal != "none" and self.optimizer != "langevin":
            raise ParameterError("--anneal sweeps the Langevin temperature s2: it needs --optimizer langevin")
        if self.anneal != "none" and (len(self.s2) < 2 or len(set(self.s2)) != len(self.s2)):
            raise ParameterError(f"--anneal needs a ladder of at least two distinct s2 values, got {list(self.s2)}")
        if self.start == "ordered" or self.anneal in ("up", "both") and self.start == "auto":
            if self.parametrisation != "paper" or self.gamma <= 0 or self.optimizer != "langevin":
                raise ParameterError("an ordered start is built from the theory's droplet saddle, which needs "
                                     "Langevin, the paper parametrisation and gamma > 0 (the sextic penalty "
                                     "bounds the saddle)")
            if self.P < 3:
                raise ParameterError(f"an ordered start needs a frequency 0 < k < P/2, i.e. P >= 3 (got P = {self.P})")
        for name in ("lr",):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ParameterError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("gamma", "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ParameterError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.sa2 is not None and not (math.isfinite(self.sa2) and self.sa2 > 0):
            raise ParameterError(f"sa2 must be a finite number > 0, got {self.sa2!r}")
        Schedule(self.steps, self.burn_in, self.record_every, self.log_times)

    @property
    def n_train(self) -> int:
        return int(round(self.alpha * self.P * self.P))

    @property
    def n_test(self) -> int:
        return self.P * self.P - self.n_train if self.n_train < self.P * self.P else self.P * self.P

    @property
    def sa2_value(self) -> float:
        if self.parametrisation == "gromov":
            return 1.0 / ((2 * self.P) ** 2 * self.N)
        return 0.002 / self.N if self.sa2 is None else float(self.sa2)

    @property
    def scale(self) -> float:
        return 1.0 / (2 * self.P * self.N) if self.parametrisation == "gromov" else 1.0

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.steps, self.burn_in, self.record_every, self.log_times)

    def branches(self) -> list[tuple[str, np.ndarray, str]]:
        """(branch name, s2 ladder in run order, start) of every chain family
        (:func:`grokphase.sims.driver.ladder_branches`)."""
        return ladder_branches(self.s2, self.anneal, self.start)

    def parameters(self) -> dict:
        out = dataclasses.asdict(self)
        out["sa2"] = self.sa2_value
        out["s2"] = list(self.s2)
        out["n_train"] = self.n_train
        return out


def theory_phi_plus(sim: ModularSim) -> np.ndarray:
    """Phi_+ (the droplet saddle |w_k|^2) of the finite-P theory per s2 in ``sim.theory_convention``,
    for the droplet rule and the ordered start; NaN where the theory has no droplet saddle (then only
    the frequency-dominance part of the rule applies)."""
    if sim.gamma <= 0 or sim.parametrisation != "paper":
        return np.full(len(sim.s2), np.nan)
    from grokphase.theory import modular as mt

    sol = mt.solve(mt.ModularParams(N=float(sim.N), P=float(sim.P), s2=np.asarray(sim.s2), sa2=sim.sa2_value,
                                    gamma=sim.gamma), "saddle", convention=sim.theory_convention, check=False)
    phi = np.asarray(sol.phi_plus, dtype=np.float64)
    return np.where(phi > 0, phi, np.nan)


def theory_droplets_per_mode(sim: ModularSim, s2) -> np.ndarray:
    """N p: droplet neurons per mode of the finite-P theory (saddle method, ``sim.theory_convention``)
    at each s2 (0 where it has no droplet saddle)."""
    from grokphase.theory import modular as mt

    sol = mt.solve(mt.ModularParams(N=float(sim.N), P=float(sim.P), s2=np.asarray(s2, np.float64),
                                    sa2=sim.sa2_value, gamma=sim.gamma), "saddle",
                   convention=sim.theory_convention, check=False)
    return np.nan_to_num(sim.N * np.asarray(sol.droplet_fraction, np.float64))


def make_task(sim: ModularSim, full_table_algebra: bool | None = None) -> Task:
    """Per-network functions (cached on the static sizes and choices).  On the whole table (alpha = 1)
    the loss and the Gibbs readout's Gram matrices can use the closed-form sums of
    :func:`full_table_loss` / :func:`full_table_gram` (O(N^2 P) instead of O(N P^3) for the loss and
    O(N^2 P^2) for the Gram matrix); ``full_table_algebra=None`` (default) uses them when that is
    cheaper, N < P^2; True / False forces either form (same values to rounding)."""
    gibbs = sim.optimizer == "langevin" and sim.readout == "gibbs"
    closed = sim.N < sim.P * sim.P if full_table_algebra is None else bool(full_table_algebra)
    return _make_task(sim.P, sim.N, sim.n_train, sim.dtype, sim.parametrisation, sim.optimizer, sim.ipr_bins,
                      float(sim.scale), sim.alpha < 1.0, gibbs, closed)


def _spd_draw_one(Lam, b, xi):
    """Lam^{-1} b + chol(Lam)^{-T} xi for one SPD matrix (float64): a draw of N(Lam^-1 b, Lam^-1)."""
    chol = jnp.linalg.cholesky(Lam)
    mean = jax.scipy.linalg.cho_solve((chol, True), b)
    return mean + jax.scipy.linalg.solve_triangular(chol.T, xi, lower=False)


@jax.custom_batching.custom_vmap
def _spd_draw(Lam, b, xi):
    return _spd_draw_one(Lam, b, xi)


@_spd_draw.def_vmap
def _spd_draw_vmap(axis_size, in_batched, Lam, b, xi):
    """Batching rule: on a GPU/TPU the batched factorisation; on XLA:CPU one matrix after another
    (``lax.map``).  jaxlib's batched CPU LAPACK kernels split the batch over the intra-op thread pool
    and wait for it, which deadlocked (nondeterministically) when the pool's threads were busy with
    the same executable: 8 networks of N = 256 on 2 cores, also with 2 host devices (jaxlib 0.10)."""
    args = [x if bat else jnp.broadcast_to(x, (axis_size,) + x.shape) for x, bat in zip((Lam, b, xi), in_batched)]
    if jax.default_backend() == "cpu":
        out = jax.lax.map(lambda a: _spd_draw(*a), tuple(args))
    else:
        out = jax.vmap(_spd_draw_one)(*args)
    return out, True


def gibbs_readout(w, pairs, y, c, s2, xi, eps=None):
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
    with xi = 0 gives the conditional mean (for N <= n ``eps`` is ignored)."""
    F = (w[pairs[:, 0]] + w[y.shape[-1] + pairs[:, 1]]) ** 2
    if F.shape[1] > F.shape[0]:
        return _dual_draw(F, y.astype(jnp.float64), c, s2, xi, eps)
    return _draw_from_gram((F.T @ F).astype(jnp.float64), (F.T @ y).astype(jnp.float64), c, s2, xi)


def _dual_draw(F, y, c, s2, xi, eps):
    r"""A draw of N(Lambda^-1 (c/s2) F^T y, Lambda^-1), Lambda = I + (c^2/s2) F^T F, from an n x n system
    (Matheron's rule): z = xi + c F^T K^-1 (y - c F xi - sqrt(s2) eps), K = c^2 F F^T + s2 I_n, with
    xi ~ N(0, I_N) a prior draw and eps ~ N(0, I_n) the likelihood's noise.  Its mean is
    c F^T K^-1 y = Lambda^-1 (c/s2) F^T y (push-through identity) and its covariance
    I - c^2 F^T K^-1 F = Lambda^-1 (Woodbury).  F: (n, N) in the simulation's dtype (F F^T is formed in
    it, as the primal form forms F^T F; the rest is float64), y: (n, P), xi: (N, P), eps: (n, P) or None
    (zeros)."""
    c = jnp.asarray(c, jnp.float64)
    xi = jnp.asarray(xi, jnp.float64)
    K = (c * c) * (F @ F.T).astype(jnp.float64) + s2 * jnp.eye(F.shape[0], dtype=jnp.float64)
    F = F.astype(jnp.float64)
    r = y - c * (F @ xi)
    if eps is not None:
        r = r - jnp.sqrt(s2) * jnp.asarray(eps, jnp.float64)
    sol = _spd_draw(K, r, jnp.zeros_like(r))                     # K^-1 r (the batching rule of _spd_draw)
    return xi + c * (F.T @ sol)


def _circ_conv(u, v):
    """(u * v)_p = sum_n u_n v_{(p - n) mod P} along axis 0 for (P, N) arrays, by FFT."""
    return jnp.fft.irfft(jnp.fft.rfft(u, axis=0) * jnp.fft.rfft(v, axis=0), n=u.shape[0], axis=0)


def full_table_loss(w, a, scale):
    r"""L = 1/2 sum over the whole P x P table and all outputs of (f - y)^2 without forming the
    (P^2, N) hidden layer: with u = w[:P], v = w[P:] (P, N), A = (u^2) a, B = (v^2) a (P, P) and the
    cross term C_p(n, m) = 2 sum_i a_ip u_ni v_mi,

        sum f^2 = s^2 [P |A|^2 + P |B|^2 + 2 (1^T A)(B^T 1) + 4 sum((a a^T) o (u^T u) o (v^T v))
                       + 4 sum_i (sum_m v_mi) (a o u^T A)_i + 4 sum_i (sum_n u_ni) (a o v^T B)_i],
        sum f y = s [sum A + sum B + 2 sum_i sum_p a_ip (u_i * v_i)_p
                     - (1/P)(P sum A + P sum B + 2 sum_i (sum_p a_ip)(sum_n u_ni)(sum_m v_mi))],
        sum y^2 = P (P - 1),

    (* the circular convolution, by FFT).  O(N^2 P + N P^2) instead of the O(N P^3) of the direct
    sum; equal to it to rounding (tested).  w: (2P, N) input weights, a: (N, P) readout."""
    P = a.shape[-1]
    u, v = w[:P], w[P:]
    A = (u * u) @ a                                   # (P, P): A[n, p] = sum_i u_ni^2 a_ip
    B = (v * v) @ a
    su, sv = jnp.sum(u, axis=0), jnp.sum(v, axis=0)   # (N,)
    cross = 4.0 * jnp.sum((a @ a.T) * (u.T @ u) * (v.T @ v))
    AC = 4.0 * jnp.sum(sv * jnp.sum(a * (u.T @ A), axis=1))
    BC = 4.0 * jnp.sum(su * jnp.sum(a * (v.T @ B), axis=1))
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


def _draw_from_gram(G, b, c, s2, xi):
    c = jnp.asarray(c, jnp.float64)
    Lam = jnp.eye(G.shape[0], dtype=jnp.float64) + (c * c / s2) * G
    return _spd_draw(Lam, (c / s2) * b, jnp.asarray(xi, jnp.float64))


@functools.lru_cache(maxsize=16)
def _make_task(P: int, N: int, n_train: int, dtype_name: str, parametrisation: str, optimizer: str,
               ipr_bins: int, scale: float, split: bool, gibbs_a: bool = False, full_table: bool = True) -> Task:
    from grokphase.sims import fourier

    dtype = DTYPES[dtype_name]
    model = SquareNet(N=N, P=P, scale=scale, dtype=dtype)
    pairs_all = jnp.asarray(all_pairs(P))
    y_all = targets(pairs_all, P, dtype)
    y_norm2 = jnp.sum(y_all * y_all)
    answer_all = (pairs_all[:, 0] + pairs_all[:, 1]) % P

    def make_data(key, hyper):
        perm = jax.random.permutation(key, P * P) if split else jnp.arange(P * P)
        train = jnp.zeros(P * P, bool).at[perm[:n_train]].set(True)
        return {"train_idx": perm[:n_train], "is_train": train}

    def init(key, data, hyper):
        return model.init(key, pairs_all[:1])["params"]

    def prior_std(z, hyper):
        if parametrisation == "gromov":
            return {"w": jnp.asarray(1.0), "a": jnp.asarray(1.0)}
        return {"w": jnp.asarray(1.0), "a": jnp.sqrt(hyper.sa2 / N)}

    def loss(theta, data):
        if not split and full_table:        # the whole table: closed-form sums, O(N^2 P), no (P^2, N) layer
            half = full_table_loss(theta["w"], theta["a"], scale)
        else:
            idx = data["train_idx"]
            f = model.apply({"params": theta}, pairs_all[idx])
            r = f - y_all[idx]
            half = 0.5 * jnp.sum(r * r)
        if optimizer == "langevin":
            return half                                     # the posterior's L (THEORY.md §1)
        return 2.0 * half / n_train                         # mean over training pairs (optimisers)

    def penalty(theta, hyper):
        if optimizer != "langevin":
            return jnp.zeros((), dtype)
        return (hyper.s2 * fourier.gamma_penalty(theta["w"], hyper.gamma, axis=0)).astype(dtype)

    def make_tx(hyper):
        if optimizer == "langevin" and gibbs_a:      # the readout is drawn exactly by ``gibbs``
            return optax.multi_transform({"langevin": langevin(hyper.lr, hyper.s2), "gibbs": optax.set_to_zero()},
                                         {"w": "langevin", "a": "gibbs"})
        if optimizer == "langevin":
            return langevin(hyper.lr, hyper.s2)
        if optimizer == "adamw":
            return optax.adamw(hyper.lr, weight_decay=hyper.weight_decay)
        return optax.sgd(hyper.lr)

    def init_accum(theta, data, hyper):
        zeros = {name: jnp.zeros((), jnp.float64) for name in SCALAR_RECORDS}
        return {"count": jnp.zeros((), jnp.float64), "sums": zeros,
                "ipr_hist": jnp.zeros((ipr_bins,), jnp.float64),
                "phase_hist": jnp.zeros((36,), jnp.float64)}

    def observe(theta, data, hyper, accum, weight):
        f = model.apply({"params": theta}, pairs_all)              # (P^2, P): the full table
        r2 = jnp.sum((f - y_all) ** 2, axis=-1)
        correct = (jnp.argmax(f, axis=-1) == answer_all).astype(jnp.float64)
        is_train = data["is_train"]
        n_tr = jnp.sum(is_train)
        test_mask = jnp.where(n_tr < P * P, ~is_train, True)       # alpha = 1: test on the whole table
        n_te = jnp.sum(test_mask)
        u = theta["w"][:P].T                                       # (N, P) first-operand halves
        v = theta["w"][P:].T
        a = theta["a"]                                             # (N, P) readout vectors
        ipr_n = 0.5 * (fourier.ipr(u) + fourier.ipr(v))            # (N,)
        phases = fourier.phase_constraint(u, v, a)
        phi_plus = hyper.phi_plus
        has_theory = jnp.isfinite(phi_plus)
        drop = fourier.droplet_mask(u, v, jnp.where(has_theory, phi_plus, 1.0),
                                    rel_tol=jnp.where(has_theory, 0.5, jnp.inf))
        tc = jnp.sum(f * y_all) / y_norm2
        if optimizer == "langevin":
            # Rao-Blackwellised target component: the readout's conditional posterior mean given w
            # (gibbs_readout with xi = 0), same expectation as the sampled network's, without the
            # readout's sampling noise
            c = scale * prior_std(theta, hyper)["a"]
            za_mean = readout_draw(theta["w"], data, c, hyper.s2, jnp.zeros((N, P)))
            tc_mean = c * jnp.sum(full_table_Fy(theta["w"]) * za_mean) / y_norm2    # <F z, y> = sum (F^T y) z
        else:
            tc_mean = tc
        record = {
            "train_mse": jnp.sum(jnp.where(is_train, r2, 0.0)) / (n_tr * P),
            "test_mse": jnp.sum(jnp.where(test_mask, r2, 0.0)) / (n_te * P),
            "train_acc": jnp.sum(jnp.where(is_train, correct, 0.0)) / n_tr,
            "test_acc": jnp.sum(jnp.where(test_mask, correct, 0.0)) / n_te,
            "target_component": tc,
            "target_component_mean": tc_mean,
            "ipr": jnp.mean(ipr_n),
            "w_norm2": jnp.mean(jnp.sum(theta["w"] ** 2, axis=0)),
            "a_norm2": jnp.mean(jnp.sum(a * a, axis=1)),
            "droplet_fraction": jnp.mean(drop.astype(jnp.float64)),
            "spectrum_u": fourier.power_spectrum(u),              # (N, P//2 + 1)
            "spectrum_v": fourier.power_spectrum(v),
            "spectrum_a": fourier.power_spectrum(a),
            "frequency": phases.k,
        }
        record = {k: (val.astype(jnp.float64) if k != "frequency" else val) for k, val in record.items()}
        wt = weight.astype(jnp.float64)
        ipr_idx = jnp.clip(jnp.floor(ipr_n * ipr_bins).astype(jnp.int32), 0, ipr_bins - 1)
        ph_idx = jnp.clip(jnp.floor((phases.delta + jnp.pi) / (2 * jnp.pi) * 36).astype(jnp.int32), 0, 35)
        accum = {
            "count": accum["count"] + wt,
            "sums": {name: accum["sums"][name] + wt * record[name] for name in SCALAR_RECORDS},
            "ipr_hist": accum["ipr_hist"] + wt * jnp.zeros((ipr_bins,), jnp.float64).at[ipr_idx].add(1.0),
            "phase_hist": accum["phase_hist"] + wt * jnp.zeros((36,), jnp.float64).at[ph_idx].add(1.0),
        }
        return record, accum

    def readout_draw(w, data, c, s2, xi, eps=None):
        if not split and full_table:
            G, Fy = full_table_gram(w)
            return _draw_from_gram(G, Fy, c, s2, xi)
        idx = data["train_idx"]
        return gibbs_readout(w, pairs_all[idx], y_all[idx], c, s2, xi, eps)

    def gibbs(z, data, hyper, key):
        std = prior_std(z, hyper)
        xi = jax.random.normal(key, (N, P), jnp.float64)
        # the dual (N > n) form of gibbs_readout also needs the likelihood's noise
        eps = (jax.random.normal(jax.random.fold_in(key, 1), (n_train, P), jnp.float64)
               if N > n_train and not (not split and full_table) else None)
        z_a = readout_draw(std["w"] * z["w"], data, scale * std["a"], hyper.s2, xi, eps)
        return {**z, "a": z_a.astype(z["a"].dtype)}

    # one network per lax.map step on a CPU: a network's (P^2, N) temporaries already exceed the
    # caches (benchmarks/README.md: 1.4-1.55x over groups of 4 at P = 97, N = 500), and batched
    # float64 LAPACK calls of the Gibbs readout across networks were seen to hang XLA:CPU
    # nondeterministically (8 networks, N = 256, jaxlib 0.10); one network at a time never did
    return Task(make_data, init, prior_std, loss, make_tx, init_accum, observe, penalty, gibbs if gibbs_a else None,
                cpu_group=1)


class ModHyper(NamedTuple):
    """Per-network hyperparameters (array leaves); phi_plus: the theory's droplet saddle (NaN: none)."""

    s2: Any
    sa2: Any
    gamma: Any
    lr: Any
    weight_decay: Any
    phi_plus: Any


def build_members(sim: ModularSim) -> tuple[Members, list[str]]:
    """Networks: s2 major, then seed; keys fold_in(key(seed), tag, network seed) (not s2)."""
    root = jax.random.PRNGKey(sim.seed)
    S, K = len(sim.s2), sim.seeds
    idx = jnp.arange(K)
    keys = [np.asarray(jax.vmap(lambda i, t=t: jax.random.fold_in(jax.random.fold_in(root, t), i))(idx))
            for t in range(3)]
    hyper = _hyper(sim, np.repeat(np.asarray(sim.s2, np.float64), K), np.repeat(theory_phi_plus(sim), K))
    tile = lambda k: np.tile(k, (S, 1))  # noqa: E731
    labels = [f"network (s2={sim.s2[i]:g}, seed {j})" for i in range(S) for j in range(K)]
    return Members(tile(keys[0]), tile(keys[1]), tile(keys[2]), hyper), labels


@functools.partial(jax.jit, static_argnames=("P", "N"))
def _ordered_member(key, train_idx, s2, phi_plus, sa2, n_drop, *, P: int, N: int):
    """One network's unit-variance parameters at the theory's droplet saddle (float64); the first
    ``n_drop`` neurons are droplets (cosines), the others prior draws."""
    k_ph, k_u, k_v, k_a = jax.random.split(key, 4)
    k = 1 + jnp.arange(N) % ((P - 1) // 2)                       # frequencies 1..(P-1)/2 in turn
    phase = jax.random.uniform(k_ph, (2, N, 1), jnp.float64, 0.0, 2.0 * jnp.pi)
    arg = 2.0 * jnp.pi * k[:, None] * jnp.arange(P)[None, :] / P
    amp = 2.0 * jnp.sqrt(phi_plus) * (jnp.arange(N) < n_drop)[:, None]   # |w_k|^2 = A^2/4 = Phi_+
    u = amp * jnp.cos(arg + phase[0]) + jax.random.normal(k_u, (N, P), jnp.float64)
    v = amp * jnp.cos(arg + phase[1]) + jax.random.normal(k_v, (N, P), jnp.float64)
    w = jnp.concatenate([u.T, v.T], axis=0)                      # (2P, N); prior std 1: z_w = w
    pairs = jnp.asarray(all_pairs(P))[train_idx]
    xi = jax.random.normal(k_a, (N, P), jnp.float64)
    eps = jax.random.normal(jax.random.fold_in(k_a, 1), (pairs.shape[0], P), jnp.float64) if N > pairs.shape[0] else None
    z_a = gibbs_readout(w, pairs, targets(pairs, P, jnp.float64), jnp.sqrt(sa2 / N), s2, xi, eps)
    return {"a": z_a, "w": w}


def ordered_start(sim: ModularSim, members: Members, task: Task | None = None) -> dict:
    r"""Ordered (droplet) starting parameters for every member, in unit variables (leading member axis).

    Each neuron's input halves are cosines at one frequency k (k = 1..(P-1)/2 in turn over the
    neurons, so every frequency gets about N/((P-1)/2) neurons) with random phases and the theory's
    droplet amplitude |u_k|^2 = |v_k|^2 = Phi_+ (A = 2 sqrt(Phi_+), fourier.py's convention), plus the
    prior's unit Gaussian fluctuations.  Given the input weights the posterior of the readout is
    Gaussian (Bayesian linear regression on the features h^2 at the member's s2), and the readout is
    drawn from it exactly, so the start is the droplet saddle with its readout in equilibrium.
    Phi_+ is the member's ``hyper.phi_plus`` (the finite-P theory at its s2); NaN there is an error.
    ``sim.ordered_droplets``: "all" makes every neuron a droplet; "theory" only the theory's number of
    droplet neurons per mode at the member's s2 (N p in ``sim.theory_convention``, rounded, at least 1
    per mode), the rest prior draws — the droplet saddle of the mixed phase, whose eigenvalue is the
    self-consistent one (with every neuron a droplet the target eigenvalue overshoots and the droplets
    melt, as seen at P <= 23); "coldest" every member as a heating branch starts: the theory's droplet
    count and Phi_+ at the lowest s2 of ``sim.s2``, whatever the member's own s2 (its readout is still
    drawn at its own s2) — above the transition that state is superheated."""
    task = make_task(sim) if task is None else task
    hyper = members.hyper
    phi = np.asarray(hyper.phi_plus, dtype=np.float64)
    s2 = np.asarray(hyper.s2, dtype=np.float64)
    if sim.ordered_droplets == "coldest":
        cold = dataclasses.replace(sim, s2=(float(min(sim.s2)),), ordered_droplets="theory", anneal="none",
                                   replica_exchange=False)
        phi = np.full(s2.size, theory_phi_plus(cold)[0])
    if not np.all(np.isfinite(phi) & (phi > 0)):
        bad = float(s2[np.flatnonzero(~(np.isfinite(phi) & (phi > 0)))[0]])
        raise ParameterError(f"an ordered start needs the theory's droplet saddle, and at s2 = {bad:g} the "
                             "theory has none (u a^2 < sqrt(gamma)); start that branch at a lower s2")
    modes = (sim.P - 1) // 2
    if sim.ordered_droplets in ("theory", "coldest"):
        at = s2 if sim.ordered_droplets == "theory" else np.full(s2.size, min(sim.s2))
        per_mode = np.maximum(1, np.round(theory_droplets_per_mode(sim, at))).astype(int)
        n_drop = np.minimum(per_mode * modes, sim.N)
    else:
        n_drop = np.full(phi.size, sim.N)
    out = []
    for j in range(phi.size):
        hyp = jax.tree_util.tree_map(lambda a, j=j: jnp.asarray(np.asarray(a)[j]), hyper)
        data = task.make_data(jnp.asarray(members.data_keys[j]), hyp)
        key = jax.random.fold_in(jnp.asarray(members.init_keys[j]), 0x0D0)
        z = _ordered_member(key, data["train_idx"], s2[j], phi[j], float(np.asarray(hyper.sa2)[j]), int(n_drop[j]),
                            P=sim.P, N=sim.N)
        out.append(jax.tree_util.tree_map(np.asarray, z))
    dtype = DTYPES[sim.dtype]
    return {name: np.stack([o[name] for o in out]).astype(dtype) for name in ("w", "a")}


def first_crossing(times: np.ndarray, values: np.ndarray, level: float) -> np.ndarray:
    """First record time with value >= level along the last axis; -1 where never reached."""
    hit = values >= level
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), times[first], -1)


def _hyper(sim: ModularSim, s2: np.ndarray, phi: np.ndarray) -> ModHyper:
    const = lambda v: np.full(s2.size, v, dtype=np.float64)  # noqa: E731
    return ModHyper(s2=np.asarray(s2, np.float64), sa2=const(sim.sa2_value), gamma=const(sim.gamma),
                    lr=const(sim.lr), weight_decay=const(sim.weight_decay), phi_plus=np.asarray(phi, np.float64))


def build_ladder_members(sim: ModularSim) -> tuple[Members, list[ModHyper], list[str]]:
    """Annealing chains: ``sim.seeds`` per branch (cooling first), the same data sets in every
    branch, branch-specific init and noise keys; one hyperparameter set per ladder stage."""
    K = sim.seeds
    base, _ = build_members(dataclasses.replace(sim, s2=sim.s2[:1], anneal="none", start="auto"))
    fams = sim.branches()
    tag = {"cooling": 1, "heating": 2}
    fold = lambda keys, t: np.asarray(jax.vmap(lambda k: jax.random.fold_in(k, t))(jnp.asarray(keys)))  # noqa: E731
    members = Members(np.concatenate([base.data_keys] * len(fams)),
                      np.concatenate([fold(base.init_keys, tag[b]) for b, _, _ in fams]),
                      np.concatenate([fold(base.noise_keys, tag[b]) for b, _, _ in fams]),
                      None)
    phi_of = dict(zip(sim.s2, theory_phi_plus(sim)))
    stages = []
    for s in range(len(sim.s2)):
        s2 = np.concatenate([np.full(K, ladder[s]) for _, ladder, _ in fams])
        stages.append(_hyper(sim, s2, np.array([phi_of[float(v)] for v in s2])))
    labels = [f"{b} chain (seed {j})" for b, _, _ in fams for j in range(K)]
    return members._replace(hyper=stages[0]), stages, labels


def _initial_z(sim: ModularSim, task: Task, members: Members, starts: list[str]):
    """Stage-0 parameters: the prior draw or the ordered start, per block of ``sim.seeds`` members
    (None when every member starts from the prior)."""
    if all(s == "prior" for s in starts):
        return None
    K = sim.seeds
    prior = prior_z(task, members)
    blocks = []
    for b, start in enumerate(starts):
        sl = slice(b * K, (b + 1) * K) if len(starts) > 1 else slice(None)
        part = jax.tree_util.tree_map(lambda a, sl=sl: a[sl], members)
        blocks.append(ordered_start(sim, part, task) if start == "ordered"
                      else jax.tree_util.tree_map(lambda a, sl=sl: np.asarray(a)[sl], prior))
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *blocks)


def run_modular(sim: ModularSim, *, devices=None, ensemble_chunk: int | None = None,
                checkpoint_dir: str | None = None, checkpoint_every: float = 60.0, progress: bool = False,
                _stop_after_records: int | None = None) -> xr.Dataset:
    """Run the simulation; with ``sim.anneal`` != "none" the s2 ladder is swept with the state carried
    from one s2 to the next (:func:`grokphase.sims.driver.run_ladder`) and the Dataset gains a
    ``branch`` dimension (cooling, heating)."""
    task = make_task(sim)
    config = {**sim.parameters(), "kind": "sims.modular"}
    desc = f"modular P={sim.P} N={sim.N}"
    if sim.replica_exchange:
        return _run_replica(sim, task, config, desc, checkpoint_dir, checkpoint_every, progress, _stop_after_records)
    if sim.anneal == "none":
        members, labels = build_members(sim)
        z0 = _initial_z(sim, task, members, [sim.branches()[0][2]]) if sim.start == "ordered" else None
        ckpt = Checkpointer(checkpoint_dir, config, every_seconds=checkpoint_every) if checkpoint_dir else None
        out = run_ensemble(task, members, sim.schedule, ensemble_chunk=ensemble_chunk, devices=devices,
                           checkpoint=ckpt, member_labels=labels, progress=progress, progress_desc=desc,
                           stop_after_records=_stop_after_records, initial_z=z0)
        ds = build_dataset(sim, out, members)
        seconds, net_steps = out.seconds, out.network_steps
    else:
        members, stages, labels = build_ladder_members(sim)
        fams = sim.branches()
        z0 = _initial_z(sim, task, members, [start for _, _, start in fams])
        stage_labels = [" / ".join(f"{b} s2={ladder[s]:g}" for b, ladder, _ in fams) for s in range(len(sim.s2))]
        outs = run_ladder(task, members, stages, sim.schedule, initial_z=z0, checkpoint_dir=checkpoint_dir,
                          checkpoint_config=config, checkpoint_every=checkpoint_every, stage_labels=stage_labels,
                          ensemble_chunk=ensemble_chunk, devices=devices, member_labels=labels, progress=progress,
                          progress_desc=desc, stop_after_records=_stop_after_records)
        ds = _ladder_dataset(sim, outs, stages)
        seconds = sum(o.seconds for o in outs)
        net_steps = sum(o.network_steps for o in outs)
    ds.attrs["seconds"] = float(seconds)
    ds.attrs["network_steps_per_second"] = float(net_steps / max(seconds, 1e-9))
    return ds


def _run_replica(sim: ModularSim, task: Task, config: dict, desc: str, checkpoint_dir, checkpoint_every, progress,
                 stop_after_records) -> xr.Dataset:
    """Replica exchange across the s2 ladder (sorted ascending): ``seeds`` independent ladders, one
    replica per s2 (:func:`grokphase.sims.replica.run_replica_exchange`).  The Dataset is the plain
    run's (per-s2 observables are per rung) plus the swap statistics, with ``protocol`` =
    "replica exchange" and the ladder report in the attributes (a warning when it is too sparse)."""
    from grokphase.sims import replica as rx

    ordered = dataclasses.replace(sim, s2=tuple(sorted(sim.s2)))
    members, labels = build_members(ordered)
    start = "ordered" if sim.start == "ordered" else "prior"
    z0 = None
    if start == "ordered":          # rungs where the theory has a droplet saddle start there, the others at the prior
        z0 = prior_z(task, members)
        has = (np.arange(np.asarray(members.hyper.phi_plus).size) if sim.ordered_droplets == "coldest"
               else np.flatnonzero(np.isfinite(np.asarray(members.hyper.phi_plus))))
        if has.size == 0:
            raise ParameterError("an ordered replica-exchange start needs the theory's droplet saddle at some s2 "
                                 "of the ladder, and it has none")
        part = jax.tree_util.tree_map(lambda a: np.asarray(a)[has], members)
        z_ord = ordered_start(ordered, part, task)
        z0 = {k: np.asarray(v).copy() for k, v in z0.items()}
        for k in z0:
            z0[k][has] = z_ord[k]
    ckpt = (Checkpointer(checkpoint_dir, {**config, "protocol": "replica exchange"}, every_seconds=checkpoint_every)
            if checkpoint_dir else None)
    labels = [f"replica-exchange rung s2={ordered.s2[i]:g} (ladder {j})" for i in range(len(ordered.s2))
              for j in range(sim.seeds)]
    out = rx.run_replica_exchange(task, members, ordered.schedule, len(ordered.s2), swap_every=sim.swap_every,
                                  checkpoint=ckpt, member_labels=labels, progress=progress,
                                  progress_desc=f"{desc} replica exchange", stop_after_records=stop_after_records,
                                  initial_z=z0)
    ds = build_dataset(ordered, out, members)
    s2 = np.asarray(ordered.s2)
    for name, (dims, values) in rx.replica_variables(out, s2, "seed").items():
        ds[name] = (dims, values)
    report = rx.ladder_report(out.attempts, out.accepts, rx.round_trips(out.slot_replica), s2)
    rx.warn_if_sparse(report, f"modular P={sim.P} replica exchange")
    ds.attrs["protocol"] = "replica exchange"
    ds.attrs["replica_start"] = start
    ds.attrs["swap_every"] = int(sim.swap_every)
    ds.attrs["ladder_ok"] = int(report["ok"])
    ds.attrs["ladder_warning"] = report["warning"] or "none"
    ds.attrs["round_trips_total"] = int(report["round_trips"])
    ds.attrs["min_swap_acceptance"] = float(report["min_acceptance"])
    ds.attrs["seconds"] = float(out.seconds)
    ds.attrs["network_steps_per_second"] = float(out.network_steps / max(out.seconds, 1e-9))
    return ds


def _ladder_dataset(sim: ModularSim, outs: list, stages: list[ModHyper]) -> xr.Dataset:
    """Reorder the stages of each branch by s2 (ascending) and stack the branches."""
    K = sim.seeds
    ordered = dataclasses.replace(sim, s2=tuple(sorted(sim.s2)))
    parts, names = [], []
    for b, (name, ladder, _) in enumerate(sim.branches()):
        sl = slice(b * K, (b + 1) * K)
        out, order = ladder_branch_output(outs, ladder, ordered.s2, sl)
        hyper = jax.tree_util.tree_map(lambda *a: np.concatenate([x[sl] for x in a]),
                                       *[stages[s] for s in order])
        parts.append(build_dataset(ordered, out, Members(None, None, None, hyper)))
        names.append(name)
    ds = xr.concat(parts, dim="branch", data_vars="all", coords="minimal", combine_attrs="override")
    ds = ds.assign_coords(branch=names)
    for name in ("theory_phi_plus",):
        ds[name] = parts[0][name]
    return ds


def build_dataset(sim: ModularSim, out, members: Members) -> xr.Dataset:
    """Dims (s2, seed, time, neuron, freq, ipr_bin, phase_bin)."""
    S, K = len(sim.s2), sim.seeds
    T = out.record_steps.size
    times = out.record_steps.astype(np.int64)
    coords = {"s2": np.asarray(sim.s2), "seed": np.arange(K), "time": times, "neuron": np.arange(sim.N),
              "freq": np.arange(sim.P // 2 + 1),
              "ipr_bin": (np.arange(sim.ipr_bins) + 0.5) / sim.ipr_bins,
              "phase_bin": -np.pi + (np.arange(36) + 0.5) * 2 * np.pi / 36}
    rec = out.records
    data = {}
    for name in SCALAR_RECORDS:
        data[f"{name}_trajectory"] = (("s2", "seed", "time"), np.asarray(rec[name]).reshape(S, K, T))
    for name in ("spectrum_u", "spectrum_v", "spectrum_a"):
        arr = np.asarray(rec[name]).reshape(S, K, T, sim.N, -1)
        data[name] = (("s2", "seed", "time", "neuron", "freq"), arr.astype(np.float32))
    data["frequency"] = (("s2", "seed", "time", "neuron"), np.asarray(rec["frequency"]).reshape(S, K, T, sim.N))
    count = np.asarray(out.accum["count"]).reshape(S, K)
    has_avg = bool(np.all(count > 0))
    for name in SCALAR_RECORDS:
        if has_avg and sim.optimizer == "langevin":     # equilibrium: time average after burn-in
            avg = np.asarray(out.accum["sums"][name]).reshape(S, K) / count
        else:
            avg = data[f"{name}_trajectory"][1][..., -1]
        data[f"{name}_network"] = (("s2", "seed"), avg)
        data[name] = (("s2",), avg.mean(axis=1))
        data[f"{name}_sem"] = (("s2",), avg.std(axis=1, ddof=1) / np.sqrt(K) if K > 1 else np.full(S, np.inf))
    data["ipr_hist"] = (("s2", "seed", "ipr_bin"), np.asarray(out.accum["ipr_hist"]).reshape(S, K, -1))
    data["phase_hist"] = (("s2", "seed", "phase_bin"), np.asarray(out.accum["phase_hist"]).reshape(S, K, -1))
    tr = data["train_acc_trajectory"][1]
    te = data["test_acc_trajectory"][1]
    data["t_memorise"] = (("s2", "seed"), first_crossing(times, tr, 0.99))
    data["t_grok"] = (("s2", "seed"), first_crossing(times, te, 0.95))
    data["theory_phi_plus"] = (("s2",), np.asarray(members.hyper.phi_plus).reshape(S, K)[:, 0])
    ds = xr.Dataset(data, coords=coords)
    ds["t_grok"].attrs["long_name"] = "first record step with test accuracy >= 0.95 (-1: never)"
    ds["t_memorise"].attrs["long_name"] = "first record step with train accuracy >= 0.99 (-1: never)"
    ds["count"] = (("s2", "seed"), count)
    from grokphase.io import annotate

    return annotate(ds, kind="sims.modular", parameters=sim.parameters(),
                    seeds={"seed": sim.seed, "seeds": sim.seeds},
                    extra={"sa2": sim.sa2_value, "n_train": sim.n_train,
                           "averages": "time average after burn-in" if has_avg and sim.optimizer == "langevin"
                           else "final record"})


def summary_points(ds: xr.Dataset) -> list[dict]:
    """JSON points, one per s2 (and per branch of an annealing run: the point gains "branch")."""
    if "branch" in ds.dims:
        pts = []
        for b in ds["branch"].values:
            pts.extend({"branch": str(b), **pt} for pt in summary_points(ds.sel(branch=b)))
        return pts
    pts = []
    for i, s2 in enumerate(ds["s2"].values):
        pt = {"s2": float(s2), "alpha": float(ds.attrs["param_alpha"])}
        for name in ("train_acc", "test_acc", "target_component", "droplet_fraction", "ipr"):
            pt[name] = float(ds[name].values[i])
        pt["target_component_sem"] = float(ds["target_component_sem"].values[i])
        pt["target_component_mean"] = float(ds["target_component_mean"].values[i])
        pt["target_component_mean_sem"] = float(ds["target_component_mean_sem"].values[i])
        pt["droplet_fraction_sem"] = float(ds["droplet_fraction_sem"].values[i])
        tm, tg = ds["t_memorise"].values[i], ds["t_grok"].values[i]
        pt["t_memorise"] = float(np.median(tm)) if np.all(tm >= 0) else None
        pt["t_grok"] = float(np.median(tg)) if np.all(tg >= 0) else None
        pts.append(pt)
    return pts
