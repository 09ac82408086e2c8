"""The teacher-student task: the teacher (eq. 1), the exact population projections of an erf network,
and the per-network pure functions (data, prior, loss, update rule, observables) that
:func:`grokphase.sims.driver.run_ensemble` lifts over the ensemble."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from grokphase.sims.driver import Task
from grokphase.sims.langevin import langevin
from grokphase.sims.models import TwoLayerNet, erf_prior_std
from grokphase.sims.teacher_student.config import DTYPES, SCALAR_RECORDS, SQRT6, TeacherStudentSim

def hermite(s):
    """(H1(s), H3(s)) = (s, s^3 - 3 s)."""
    return s, s**3 - 3.0 * s


def teacher(x, w_star, eps):
    """y = H1(w*.x) + eps H3(w*.x) (eq. 1)."""
    h1, h3 = hermite(x @ w_star)
    return h1 + eps * h3


def population_projections(w, a, w_star):
    """Exact <f, Hhat1> and <f, Hhat3> over x ~ N(0, I) for f = sum_i a_i erf(w_i.x); ``w`` (d, N)."""
    q = w_star @ w
    D = 1.0 + 2.0 * jnp.sum(w * w, axis=0)
    p1 = jnp.sum(a * 2.0 * q / jnp.sqrt(jnp.pi * D))
    p3 = -jnp.sum(a * 4.0 * q**3 / (jnp.sqrt(6.0 * jnp.pi) * D**1.5))
    return p1, p3


def make_task(sim: TeacherStudentSim, model=None) -> Task:
    """Per-network functions for :func:`grokphase.sims.driver.run_ensemble`.  ``model`` defaults to
    ``TwoLayerNet(N)``; a user Flax module with the same call signature and parameters ``w`` (d, N),
    ``a`` (N,) may replace it (the exact projections assume an erf network).

    The task depends only on the static sizes and choices (never on s2, lr or the priors, which are
    per-network array arguments), and is cached on them, so a second simulation with the same sizes
    reuses the compiled executables."""
    model = TwoLayerNet(sim.N) if model is None else model
    return _make_task(sim.N, sim.n, sim.d, sim.n_test, sim.dtype, sim.optimizer, sim.q_bins, float(sim.q_max), model,
                      sim.qt_q_bins, sim.t_bins, float(sim.t_max))


@functools.lru_cache(maxsize=16)
def _make_task(N: int, n: int, d: int, n_test: int, dtype_name: str, optimizer: str, q_bins: int, q_max: float,
               model, qt_q_bins: int = 60, t_bins: int = 50, t_max: float = 1.25) -> Task:
    dtype = DTYPES[dtype_name]
    edges_lo, width = -q_max, 2.0 * q_max / q_bins
    qt_width, t_width = 2.0 * q_max / qt_q_bins, t_max / t_bins

    def make_data(key, hyper):
        k_w, k_x, k_t = jax.random.split(key, 3)
        w_star = jax.random.normal(k_w, (d,), dtype)
        w_star = w_star / jnp.linalg.norm(w_star)
        eps = hyper.eps.astype(dtype)
        x = jax.random.normal(k_x, (n, d), dtype)
        x_test = jax.random.normal(k_t, (n_test, d), dtype)
        return {"x": x, "y": teacher(x, w_star, eps), "x_test": x_test, "y_test": teacher(x_test, w_star, eps),
                "w_star": w_star}

    def init(key, data, hyper):
        return model.init(key, data["x"][:1])["params"]

    def prior_std(z, hyper):
        return erf_prior_std(z, hyper)

    def loss(theta, data):
        f = model.apply({"params": theta}, data["x"])
        return 0.5 * jnp.sum((f - data["y"]) ** 2)

    def make_tx(hyper):
        if optimizer == "langevin":
            return langevin(hyper.lr, hyper.s2)
        if optimizer == "sgd":
            return optax.sgd(hyper.lr)
        if optimizer == "adam":
            return optax.adam(hyper.lr)
        return optax.adamw(hyper.lr, weight_decay=hyper.weight_decay)

    def outputs(theta, data):
        f_train = model.apply({"params": theta}, data["x"])
        f_test = model.apply({"params": theta}, data["x_test"])
        return f_train, f_test

    def init_accum(theta, data, hyper):
        f_train, f_test = outputs(theta, data)
        zeros = {name: jnp.zeros((), jnp.float64) for name in SCALAR_RECORDS}
        return {"count": jnp.zeros((), jnp.float64), "sums": zeros,
                "q_hist": jnp.zeros((q_bins,), jnp.float64), "q_overflow": jnp.zeros((), jnp.float64),
                "t_sum_q": jnp.zeros((q_bins,), jnp.float64), "t_overflow_sum": jnp.zeros((), jnp.float64),
                "qt_hist": jnp.zeros((qt_q_bins * t_bins,), jnp.float64), "qt_overflow": jnp.zeros((), jnp.float64),
                "f_train": jnp.zeros(f_train.shape, jnp.float64), "f_test": jnp.zeros(f_test.shape, jnp.float64)}

    def observe(theta, data, hyper, accum, weight):
        w, a, w_star = theta["w"], theta["a"], data["w_star"]
        eps = hyper.eps.astype(w.dtype)
        p1, p3 = population_projections(w, a, w_star)
        f_train, f_test = outputs(theta, data)
        h1_tr, h3_tr = hermite(data["x"] @ w_star)
        h1_te, h3_te = hermite(data["x_test"] @ w_star)
        record = {
            "train_mse": jnp.mean((f_train - data["y"]) ** 2),
            "test_mse": jnp.mean((f_test - data["y_test"]) ** 2),
            "linear_learned": p1,
            "cubic_learned": p3 / (SQRT6 * eps),
            "linear_learned_test": jnp.mean(f_test * h1_te),
            "cubic_learned_test": jnp.mean(f_test * h3_te) / (6.0 * eps),
            "linear_learned_train": jnp.mean(f_train * h1_tr),
            "cubic_learned_train": jnp.mean(f_train * h3_tr) / (6.0 * eps),
            "w_norm2": jnp.mean(jnp.sum(w * w, axis=0)),
        }
        q = w_star @ w
        k = jnp.floor((q - edges_lo) / width).astype(jnp.int32)
        inside = (k >= 0) & (k < q_bins)
        kc = jnp.clip(k, 0, q_bins - 1)
        hist = jnp.zeros((q_bins,), jnp.float64).at[kc].add(jnp.where(inside, 1.0, 0.0))
        # second order parameter t = |w_perp|^2 (THEORY.md §3b), summed per q bin and binned in 2-D
        t = (jnp.sum(w * w, axis=0) - q * q).astype(jnp.float64)
        t_sum = jnp.zeros((q_bins,), jnp.float64).at[kc].add(jnp.where(inside, t, 0.0))
        kq2 = jnp.floor((q - edges_lo) / qt_width).astype(jnp.int32)
        kt = jnp.floor(t / t_width).astype(jnp.int32)
        inside2 = (kq2 >= 0) & (kq2 < qt_q_bins) & (kt >= 0) & (kt < t_bins)
        flat = jnp.clip(kq2, 0, qt_q_bins - 1) * t_bins + jnp.clip(kt, 0, t_bins - 1)
        hist2 = jnp.zeros((qt_q_bins * t_bins,), jnp.float64).at[flat].add(jnp.where(inside2, 1.0, 0.0))
        wt = weight.astype(jnp.float64)
        accum = {
            "count": accum["count"] + wt,
            "sums": {name: accum["sums"][name] + wt * record[name].astype(jnp.float64) for name in SCALAR_RECORDS},
            "q_hist": accum["q_hist"] + wt * hist,
            "q_overflow": accum["q_overflow"] + wt * jnp.sum(~inside),
            "t_sum_q": accum["t_sum_q"] + wt * t_sum,
            "t_overflow_sum": accum["t_overflow_sum"] + wt * jnp.sum(jnp.where(inside, 0.0, t)),
            "qt_hist": accum["qt_hist"] + wt * hist2,
            "qt_overflow": accum["qt_overflow"] + wt * jnp.sum(~inside2),
            "f_train": accum["f_train"] + wt * f_train.astype(jnp.float64),
            "f_test": accum["f_test"] + wt * f_test.astype(jnp.float64),
        }
        return record, accum

    return Task(make_data, init, prior_std, loss, make_tx, init_accum, observe)
