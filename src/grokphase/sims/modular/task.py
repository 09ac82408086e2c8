"""The modular-addition task: the square-activation network on two-hot inputs, the data (all pairs,
a random training fraction) and the per-network pure functions that
:func:`grokphase.sims.driver.run_ensemble` lifts over the ensemble."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from grokphase.sims import fourier
from grokphase.sims.driver import Task
from grokphase.sims.langevin import langevin, metropolis_adjusted
from grokphase.sims.modular.config import DTYPES, SCALAR_RECORDS, UMBRELLA_COORDINATES, ModularSim
from grokphase.sims.modular.readout import (ReadoutBias, _draw_from_gram, full_table_Fy, full_table_gram,
                                            full_table_loss, gibbs_readout)
from grokphase.sims.precision import EMULATED, network_matmul, with_matmul_precision

#: the modular model's umbrella coordinates, its primary first: the target component (linear in the
#: readout) and the mean per-neuron Fourier IPR of the first-layer weights (the ``ipr`` record)
COORDINATES = UMBRELLA_COORDINATES
#: the modular model's order parameter (THEORY.md §7): the target component on the whole table
ORDER_PARAMETER = COORDINATES[0]

class SquareNet(nn.Module):
    """f_p(n, m) = scale * sum_i a_pi (w_{i,n} + w_{i,P+m})^2 for integer pairs x = (n, m).

    Parameters ``w`` (2P, N) (rows 0..P-1: the first operand's half, rows P..2P-1: the second's) and
    ``a`` (N, P), initialised as unit normals (the engine multiplies by the prior std).  ``rounding``
    (None, "tf32", "bf16"): the readout matmul's inputs rounded to that format
    (:func:`grokphase.sims.precision.network_matmul`; None: the plain ``@``)."""

    N: int
    P: int
    scale: float = 1.0
    dtype: Any = jnp.float32
    rounding: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("w", nn.initializers.normal(1.0), (2 * self.P, self.N), self.dtype)
        a = self.param("a", nn.initializers.normal(1.0), (self.N, self.P), self.dtype)
        h = w[x[..., 0]] + w[self.P + x[..., 1]]          # (..., N): w_i . x_nm without one-hot
        return jnp.asarray(self.scale, self.dtype) * network_matmul(self.rounding)(h * h, a)


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



def make_task(sim: ModularSim, full_table_algebra: bool | None = None) -> Task:
    """Per-network functions (cached on the static sizes and choices).  On the whole table (alpha = 1)
    the loss and the Gibbs readout's Gram matrices can use the closed-form sums of
    :func:`full_table_loss` / :func:`full_table_gram` (O(N^2 P) instead of O(N P^3) for the loss and
    O(N^2 P^2) for the Gram matrix); ``full_table_algebra=None`` (default) uses them when that is
    cheaper, N < P^2; True / False forces either form (same values to rounding).

    The task declares the model's order parameter (``order_parameter``, named "target_component"):
    m = (f, y)/(y, y) over the whole P x P table, m = scale sum_{i,p} (F^T y)_ip a_ip / (P (P - 1)) with
    F^T y of :func:`full_table_Fy` (float64; linear in the readout a for fixed w).  An umbrella sim
    (``sim.umbrella``) builds the umbrella task: the driver adds the window's bias to the potential and
    the Gibbs readout draws from the biased conditional (:class:`ReadoutBias`).

    Umbrella coordinates (``sim.umbrella_coordinate_names``, :data:`COORDINATES`): "target_component" (the
    above) and "ipr" = 1/N sum_i (IPR(u_i) + IPR(v_i))/2, the mean per-neuron Fourier inverse participation
    ratio of the first-layer weights (:func:`grokphase.sims.fourier.ipr`, the ``ipr`` record, here in
    float64), a smooth function of w wherever a neuron's half has power in the nonzero frequencies (the
    zero-power case is guarded: IPR and its gradient 0).  It does not depend on the readout, so its bias
    leaves the readout's conditional alone: only a target-component window enters the Gibbs draw, while
    its gradient enters the Langevin step on w through autodiff of the potential."""
    gibbs = sim.optimizer == "langevin" and sim.readout == "gibbs"
    closed = sim.N < sim.P * sim.P if full_table_algebra is None else bool(full_table_algebra)
    return _make_task(sim.P, sim.N, sim.n_train, sim.dtype, sim.parametrisation, sim.optimizer, sim.ipr_bins,
                      float(sim.scale), sim.alpha < 1.0, gibbs, closed, sim.umbrella, sim.umbrella_coordinate_names,
                      sim.mala, sim.matmul_precision, sim.prior_exact)


def ipr_coordinate(w, P: int):
    """The umbrella coordinate "ipr": the mean over neurons of (IPR(u_i) + IPR(v_i))/2 for the input weights
    w (2P, N) (float64; the ``ipr`` record of :func:`make_task`'s observe)."""
    w = w.astype(jnp.float64)
    return jnp.mean(0.5 * (fourier.ipr(w[:P].T) + fourier.ipr(w[P:].T)))


@functools.lru_cache(maxsize=16)
def _make_task(P: int, N: int, n_train: int, dtype_name: str, parametrisation: str, optimizer: str,
               ipr_bins: int, scale: float, split: bool, gibbs_a: bool = False, full_table: bool = True,
               umbrella: bool = False, coordinates: tuple = (ORDER_PARAMETER,), metropolis: bool = False,
               matmul_precision: str = "highest", prior_exact: bool = False) -> Task:
    """``matmul_precision``: every function traced under it (:func:`with_matmul_precision`); an emulated
    format rounds the inputs of the network's matmuls: the readout's in :class:`SquareNet` and those of
    :func:`full_table_loss`.  ``prior_exact``: the Langevin noise exact on the unit Gaussian prior
    (:func:`grokphase.sims.langevin.langevin`; with ``metropolis`` a pCN-Langevin proposal)."""
    dtype = DTYPES[dtype_name]
    rounding = matmul_precision if matmul_precision in EMULATED else None
    model = SquareNet(N=N, P=P, scale=scale, dtype=dtype, rounding=rounding)
    matmul = network_matmul(rounding)
    pairs_all = jnp.asarray(all_pairs(P))
    y_all = targets(pairs_all, P, dtype)
    y_norm2 = jnp.sum(y_all * y_all)
    answer_all = (pairs_all[:, 0] + pairs_all[:, 1]) % P
    yy = float(P * (P - 1))                     # (y, y) over the whole table, exactly

    def target_component(theta, data, hyper):
        """m = (f, y)/(y, y) on the whole table (float64), from F^T y: linear in the readout."""
        return scale * jnp.sum(full_table_Fy(theta["w"]) * theta["a"].astype(jnp.float64)) / yy

    functions = {ORDER_PARAMETER: target_component, "ipr": lambda theta, data, hyper: ipr_coordinate(theta["w"], P)}
    several = len(coordinates) > 1
    if several:
        def order_parameter(theta, data, hyper):
            """The umbrella coordinates, (C,) float64."""
            return jnp.stack([functions[name](theta, data, hyper) for name in coordinates])
    else:
        order_parameter = functions[coordinates[0]]
    # the readout's conditional sees only a window on the target component (the other coordinates do not
    # depend on the readout); None: no window on it
    tc_index = coordinates.index(ORDER_PARAMETER) if ORDER_PARAMETER in coordinates else None

    def readout_bias(w, c, hyper, eps):
        """The window on m = g.z_a for the readout's unit variables z_a: g = c F^T y/(y, y)."""
        kappa, m0 = hyper.umbrella_kappa, hyper.umbrella_m0
        if several:
            kappa, m0 = kappa[tc_index], m0[tc_index]
        return ReadoutBias(c * full_table_Fy(w) / yy, kappa, m0, eps)

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
            half = full_table_loss(theta["w"], theta["a"], scale, matmul=matmul)
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
        if optimizer == "langevin":
            tx = langevin(hyper.lr, hyper.s2, prior_exact=prior_exact)
            if gibbs_a:                              # the readout is drawn exactly by ``gibbs``
                tx = optax.multi_transform({"langevin": tx, "gibbs": optax.set_to_zero()}, {"w": "langevin", "a": "gibbs"})
            return metropolis_adjusted(tx) if metropolis else tx
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
            # (an umbrella window: the mean of the window's biased conditional)
            bias = (readout_bias(theta["w"], c, hyper, jnp.zeros((), jnp.float64))
                    if umbrella and tc_index is not None else None)
            za_mean = readout_draw(theta["w"], data, c, hyper.s2, jnp.zeros((N, P)), bias=bias)
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

    def readout_draw(w, data, c, s2, xi, eps=None, bias=None):
        if not split and full_table:
            G, Fy = full_table_gram(w)
            return _draw_from_gram(G, Fy, c, s2, xi, bias)
        idx = data["train_idx"]
        return gibbs_readout(w, pairs_all[idx], y_all[idx], c, s2, xi, eps, bias)

    def gibbs(z, data, hyper, key):
        std = prior_std(z, hyper)
        xi = jax.random.normal(key, (N, P), jnp.float64)
        # the dual (N > n) form of gibbs_readout also needs the likelihood's noise
        eps = (jax.random.normal(jax.random.fold_in(key, 1), (n_train, P), jnp.float64)
               if N > n_train and not (not split and full_table) else None)
        w, c = std["w"] * z["w"], scale * std["a"]
        bias = None
        if umbrella and tc_index is not None:   # the window's extra normal: its own stream (xi, eps keep theirs)
            bias = readout_bias(w, c, hyper, jax.random.normal(jax.random.fold_in(key, 2), (), jnp.float64))
        z_a = readout_draw(w, data, c, hyper.s2, xi, eps, bias)
        return {**z, "a": z_a.astype(z["a"].dtype)}

    # one network per lax.map step on a CPU: a network's (P^2, N) temporaries already exceed the
    # caches (benchmarks/README.md: 1.4-1.55x over groups of 4 at P = 97, N = 500), and batched
    # float64 LAPACK calls of the Gibbs readout across networks were seen to hang XLA:CPU
    # nondeterministically (8 networks, N = 256, jaxlib 0.10); one network at a time never did
    task = Task(make_data, init, prior_std, loss, make_tx, init_accum, observe, penalty, gibbs if gibbs_a else None,
                cpu_group=1, order_parameter=order_parameter, order_parameter_name=coordinates[0],
                umbrella=umbrella, coordinate_names=tuple(coordinates) if several else None, metropolis=metropolis,
                fixed_leaves=("a",) if gibbs_a else (), prior_exact=prior_exact)
    return with_matmul_precision(task, matmul_precision)

