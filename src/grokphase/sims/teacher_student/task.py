"""The teacher-student task: the teacher (eq. 1, or any Hermite target of the single-index family,
THEORY.md §6), the exact population projections of a network (erf and relu in closed form, any other
activation by a 1-D Gaussian quadrature in the neuron's |w|^2), and the per-network pure functions
(data, prior, loss, update rule, observables) that :func:`grokphase.sims.driver.run_ensemble` lifts
over the ensemble."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.polynomial.legendre import leggauss

from grokphase.errors import ParameterError
from grokphase.sims.driver import Task
from grokphase.sims.langevin import langevin, metropolis_adjusted
from grokphase.sims.models import TwoLayerNet, erf_prior_std, network_activation
from grokphase.sims.precision import EMULATED, network_matmul, with_matmul_precision
from grokphase.sims.readout import ReadoutBias, readout_draw
from grokphase.sims.teacher_student.config import (DEGREE_RECORDS, DTYPES, FAMILY_SCALAR_RECORDS, SCALAR_RECORDS, SQRT6,
                                                   TeacherStudentSim)
from grokphase.theory.single_index import get_activation, get_target

#: Gauss-Legendre nodes per half line of :func:`gaussian_rule` (the theory's rule: split at u = 0 so that
#: a kink there, e.g. relu's, is integrated as accurately as a smooth activation) and its cut-off
QUAD_NODES = 64
U_MAX = 12.0

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


def hermite_he(kmax: int, s, xp=jnp):
    """[He_0(s), ..., He_kmax(s)] (probabilists' Hermite: He_{k+1} = s He_k - k He_{k-1}), stacked on the
    last axis (``xp``: jnp, or np for static NumPy values)."""
    out = [xp.ones_like(s), s]
    for k in range(1, kmax):
        out.append(s * out[k] - k * out[k - 1])
    return xp.stack(out[:kmax + 1], axis=-1)


def hermite_teacher(x, w_star, degrees, coefficients):
    """y = sum_k c_k He_k(w*.x) (THEORY.md §6) over the static ``degrees`` and ``coefficients``."""
    He = hermite_he(max(max(degrees), 1), x @ w_star)
    c = np.zeros(He.shape[-1])
    c[list(degrees)] = coefficients
    return He @ jnp.asarray(c, He.dtype)


def gaussian_rule(nodes: int = QUAD_NODES):
    """Nodes u and weights of E_u[f(u)], u ~ N(0, 1): Gauss-Legendre with ``nodes`` nodes on each of
    [-U_MAX, 0] and [0, U_MAX] times the normal density (NumPy, float64: static under jit)."""
    x, w = leggauss(nodes)
    u = 0.5 * U_MAX * (x + 1.0)
    w = 0.5 * U_MAX * w * np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
    return np.concatenate([-u[::-1], u]), np.concatenate([w[::-1], w])


def _erf_coefficient(k: int) -> float:
    """C_k of the erf overlap g_k = C_k q^k / D^{k/2} (THEORY.md §6): (2/sqrt(pi)) (-1)^{k-1}
    H_{k-1}(0)/sqrt(k!), physicists' H_{2j}(0) = (-1)^j (2j)!/j!; zero for even k."""
    if k % 2 == 0:
        return 0.0
    j = (k - 1) // 2
    return 2.0 / math.sqrt(math.pi) * (-1) ** j * math.factorial(2 * j) / math.factorial(j) / math.sqrt(math.factorial(k))


def _relu_coefficient(k: int) -> float:
    """M_k/sqrt(k!) of the relu overlap g_k = q^k V^{(1-k)/2} M_k/sqrt(k!) (THEORY.md §6): M_0 = 1/sqrt(2 pi),
    M_1 = 1/2, M_k = He_{k-2}(0)/sqrt(2 pi) (He_{2j}(0) = (-1)^j (2j-1)!!, zero for odd k >= 3)."""
    if k == 0:
        M = 1.0 / math.sqrt(2.0 * math.pi)
    elif k == 1:
        M = 0.5
    elif k % 2:
        M = 0.0
    else:
        j = (k - 2) // 2
        M = (-1) ** j * math.prod(range(1, 2 * j, 2)) / math.sqrt(2.0 * math.pi)
    return M / math.sqrt(math.factorial(k))


def neuron_overlaps(activation, degrees, q, V, nodes: int = QUAD_NODES):
    r"""g_k = <phi(w.x), Hhat_k(w*.x)> of neurons with overlap q = w.w* and |w|^2 = V (THEORY.md §6),
    shape ``q.shape + (len(degrees),)``, float64:

        g_k = (q/sqrt(V))^k m_k(V),   m_k(V) = E_u[phi(sqrt(V) u) He_k(u)]/sqrt(k!),  u ~ N(0, 1);

    erf: C_k q^k/D^{k/2} (D = 1 + 2V); relu: q^k V^{(1-k)/2} M_k/sqrt(k!); any other activation (a registry
    name or a JAX callable): m_k by :func:`gaussian_rule` (2 x ``nodes`` evaluations of phi per neuron).
    The per-neuron form of :func:`grokphase.theory.single_index.overlaps` (with t = V - q^2), traceable
    under jit and vmap."""
    phi = get_activation(activation)
    q = jnp.asarray(q).astype(jnp.float64)
    V = jnp.asarray(V).astype(jnp.float64)
    if phi.closed_form and phi.name == "erf":
        D = 1.0 + 2.0 * V
        return jnp.stack([_erf_coefficient(k) * q**k / D ** (0.5 * k) for k in degrees], axis=-1)
    if phi.closed_form and phi.name == "relu":
        return jnp.stack([_relu_coefficient(k) * q**k * V ** (0.5 * (1 - k)) for k in degrees], axis=-1)
    u, w = gaussian_rule(nodes)
    kmax = max(degrees)
    He = hermite_he(kmax, u, np)
    W = w[:, None] * He / np.sqrt([math.factorial(k) for k in range(kmax + 1)])      # (nodes, kmax + 1)
    m = phi(jnp.sqrt(V)[..., None] * jnp.asarray(u)) @ jnp.asarray(W)
    rho = q / jnp.sqrt(V)
    return jnp.stack([rho**k * m[..., k] for k in degrees], axis=-1)


def family_projections(w, a, w_star, activation, degrees):
    """Exact <f, Hhat_k> over x ~ N(0, I) for every k in ``degrees`` (float64, shape (len(degrees),)), for
    f = sum_i a_i phi(w_i.x): sum_i a_i g_k(q_i, |w_i|^2) (:func:`neuron_overlaps`); ``w`` (d, N)."""
    w = w.astype(jnp.float64)
    q = w_star.astype(jnp.float64) @ w
    V = jnp.sum(w * w, axis=0)
    return a.astype(jnp.float64) @ neuron_overlaps(activation, tuple(degrees), q, V)


def make_task(sim: TeacherStudentSim, model=None) -> Task:
    """Per-network functions for :func:`grokphase.sims.driver.run_ensemble`.  ``model`` defaults to
    ``TwoLayerNet(N)`` with the sim's activation; a user Flax module with the same call signature and
    parameters ``w`` (d, N), ``a`` (N,) may replace it (the exact projections assume a two-layer network
    with the sim's ``activation``).

    The task depends only on the static sizes and choices (never on s2, lr or the priors, which are
    per-network array arguments), and is cached on them, so a second simulation with the same sizes
    reuses the compiled executables.

    The task declares the model's order parameter (``order_parameter``, named "learned_<k>"): the
    learned fraction of target degree k = ``sim.order_degree`` (the exact population projection, as the
    records ``learned`` / ``cubic_learned``; linear in the readout a for fixed w).  An umbrella sim builds
    the umbrella task: the driver adds the window's bias to the potential (gradients through w and a).

    ``sim.matmul_precision`` (:mod:`grokphase.sims.precision`): every function of the task is traced under
    its device precision; an emulated format ("tf32", "bf16") rounds the inputs of the built-in network's
    matmuls (a user model is refused: its matmuls are its own)."""
    rounding = sim.matmul_precision if sim.matmul_precision in EMULATED else None
    if model is None:
        kwargs = {} if rounding is None else {"rounding": rounding}      # the default model: unchanged
        model = (TwoLayerNet(sim.N, **kwargs) if sim.paper_model
                 else TwoLayerNet(sim.N, activation=sim.activation, **kwargs))
    elif sim.readout != "langevin" or sim.rao_blackwell:
        what = f"readout = {sim.readout} draws" if sim.readout != "langevin" else "rao_blackwell averages"
        raise ParameterError(f"{what} the readout of the built-in two-layer network (its features phi(x w)); a "
                             "user model samples every parameter by Langevin (readout = langevin, no rao_blackwell)")
    elif rounding is not None:
        raise ParameterError(f"matmul_precision = {rounding} rounds the matmuls of the built-in two-layer network; "
                             "a user model runs its own (use highest, high or default)")
    return _make_task(sim.N, sim.n, sim.d, sim.n_test, sim.dtype, sim.optimizer, sim.q_bins, float(sim.q_max), model,
                      sim.qt_q_bins, sim.t_bins, float(sim.t_max), sim.activation, sim.target, sim.order_degree,
                      sim.umbrella, sim.readout == "gibbs", sim.mala, sim.matmul_precision, sim.prior_exact,
                      sim.rao_blackwell, sim.readout == "refresh")


@functools.lru_cache(maxsize=16)
def _make_task(N: int, n: int, d: int, n_test: int, dtype_name: str, optimizer: str, q_bins: int, q_max: float,
               model, qt_q_bins: int = 60, t_bins: int = 50, t_max: float = 1.25, activation="erf",
               target: str | None = None, order_degree: int | None = None, umbrella: bool = False,
               gibbs_a: bool = False, metropolis: bool = False, matmul_precision: str = "highest",
               prior_exact: bool = False, rao_blackwell: bool = False, refresh: bool = False) -> Task:
    """``target`` None: the paper's He1 + eps He3 (eps a per-network leaf) with the linear_/cubic_ records
    (erf: today's float arithmetic, bit for bit); a spec: that Hermite target (static coefficients).
    ``order_degree``: the degree of the order parameter (default the highest); ``umbrella``: the
    umbrella task (:class:`grokphase.sims.driver.Task`); ``gibbs_a``: the readout drawn from its exact
    conditional before every step (:func:`gibbs`); ``metropolis``: MALA (the driver's accept/reject);
    ``matmul_precision``: the task's functions traced under it (:func:`with_matmul_precision`); ``prior_exact``:
    the Langevin noise exact on the unit prior (:func:`grokphase.sims.langevin.langevin`); ``rao_blackwell``:
    the records linear in the readout are their conditional expectations given w (``conditional_readout_mean``);
    ``refresh``: the readout moves with w by the update rule and is redrawn exactly from its conditional at the
    start of every record interval (:class:`grokphase.sims.driver.Task` ``gibbs_per_call``).
    A per-network
    ``hyper.readout_lr_scale`` (an array leaf, or None for 1) moves the readout with rate lr * readout_lr_scale
    (:meth:`grokphase.sims.driver.Task` ``step_scales``)."""
    dtype = DTYPES[dtype_name]
    matmul = network_matmul(getattr(model, "rounding", None))     # the network's features x w (Gibbs readout)
    paper_erf = target is None and isinstance(activation, str) and activation == "erf"
    if target is None:
        degrees, coefficients = (1, 3), None
    else:
        tgt = get_target(target)
        degrees, coefficients = tgt.degrees, tgt.coefficients
    K = len(degrees)
    # learned_test_k = <f, He_k>/(k! c_k) = <f, Hhat_k>/yhat_k; the paper's target divides by (1, 6 eps)
    he_norm = np.array([math.factorial(k) for k in degrees], np.float64)
    yhat = None if target is None else get_target(target).yhat()
    scalar_names = (SCALAR_RECORDS if target is None else FAMILY_SCALAR_RECORDS)

    def target_fn(x, w_star, eps):
        return teacher(x, w_star, eps) if target is None else hermite_teacher(x, w_star, degrees, coefficients)
    edges_lo, width = -q_max, 2.0 * q_max / q_bins
    qt_width, t_width = 2.0 * q_max / qt_q_bins, t_max / t_bins

    def make_data(key, hyper):
        k_w, k_x, k_t = jax.random.split(key, 3)
        w_star = jax.random.normal(k_w, (d,), dtype)
        w_star = w_star / jnp.linalg.norm(w_star)
        eps = hyper.eps.astype(dtype)
        x = jax.random.normal(k_x, (n, d), dtype)
        x_test = jax.random.normal(k_t, (n_test, d), dtype)
        return {"x": x, "y": target_fn(x, w_star, eps), "x_test": x_test, "y_test": target_fn(x_test, w_star, eps),
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
            tx = langevin(hyper.lr, hyper.s2, prior_exact=prior_exact)
            if gibbs_a:                      # the readout is drawn exactly by ``gibbs``
                tx = optax.multi_transform({"langevin": tx, "gibbs": optax.set_to_zero()},
                                           {"w": "langevin", "a": "gibbs"})
            elif hyper.readout_lr_scale is not None:     # one step size per layer (noise streams keyed by path)
                tx_a = langevin(hyper.lr * hyper.readout_lr_scale, hyper.s2, prior_exact=prior_exact)
                tx = optax.multi_transform({"langevin": tx, "readout": tx_a}, {"w": "langevin", "a": "readout"})
            return metropolis_adjusted(tx) if metropolis else tx
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
        zeros = {name: jnp.zeros((), jnp.float64) for name in scalar_names}
        zeros.update({name: jnp.zeros((K,), jnp.float64) for name in DEGREE_RECORDS})
        return {"count": jnp.zeros((), jnp.float64), "sums": zeros,
                "q_hist": jnp.zeros((q_bins,), jnp.float64), "q_overflow": jnp.zeros((), jnp.float64),
                "t_sum_q": jnp.zeros((q_bins,), jnp.float64), "t_overflow_sum": jnp.zeros((), jnp.float64),
                "qt_hist": jnp.zeros((qt_q_bins * t_bins,), jnp.float64), "qt_overflow": jnp.zeros((), jnp.float64),
                "f_train": jnp.zeros(f_train.shape, jnp.float64), "f_test": jnp.zeros(f_test.shape, jnp.float64)}

    def paper_record(theta, data, hyper, f_train, f_test):
        """The paper's target: linear_/cubic_ records (erf: today's arithmetic) and their per-degree stack."""
        w, a, w_star = theta["w"], theta["a"], data["w_star"]
        eps = hyper.eps.astype(w.dtype)
        if paper_erf:
            p1, p3 = population_projections(w, a, w_star)
        else:
            p1, p3 = family_projections(w, a, w_star, activation, degrees)
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
        for name in DEGREE_RECORDS:
            suffix = name[len("learned"):]
            parts = (record[f"linear_learned{suffix}"], record[f"cubic_learned{suffix}"])
            record[name] = jnp.stack([v.astype(jnp.float64) for v in parts])
        return record

    def family_record(theta, data, f_train, f_test):
        """A general Hermite target: per-degree projections, exact and on the test / training points."""
        w, a, w_star = theta["w"], theta["a"], data["w_star"]
        He_tr = hermite_he(max(max(degrees), 1), data["x"] @ w_star)[:, list(degrees)]
        He_te = hermite_he(max(max(degrees), 1), data["x_test"] @ w_star)[:, list(degrees)]
        denom = jnp.asarray(he_norm * np.asarray(coefficients), jnp.float64)
        return {
            "train_mse": jnp.mean((f_train - data["y"]) ** 2),
            "test_mse": jnp.mean((f_test - data["y_test"]) ** 2),
            "w_norm2": jnp.mean(jnp.sum(w * w, axis=0)),
            "learned": family_projections(w, a, w_star, activation, degrees) / jnp.asarray(yhat, jnp.float64),
            "learned_test": jnp.mean(f_test[:, None] * He_te, axis=0).astype(jnp.float64) / denom,
            "learned_train": jnp.mean(f_train[:, None] * He_tr, axis=0).astype(jnp.float64) / denom,
        }

    record_names = scalar_names + DEGREE_RECORDS
    order_degree = max(degrees) if order_degree is None else int(order_degree)
    k_index = list(degrees).index(order_degree)

    def order_parameter(theta, data, hyper):
        """The learned fraction of degree ``order_degree``: the same arithmetic as its record (float64)."""
        w, a, w_star = theta["w"], theta["a"], data["w_star"]
        if target is None:
            if paper_erf:
                p1, p3 = population_projections(w, a, w_star)
            else:
                p1, p3 = family_projections(w, a, w_star, activation, degrees)
            m = p1 if order_degree == 1 else p3 / (SQRT6 * hyper.eps.astype(w.dtype))
        else:
            m = (family_projections(w, a, w_star, activation, degrees) / jnp.asarray(yhat, jnp.float64))[k_index]
        return m.astype(jnp.float64)

    phi = network_activation(model.activation) if (gibbs_a or rao_blackwell or refresh) else None

    def observe(theta, data, hyper, accum, weight):
        w, w_star = theta["w"], data["w_star"]
        if rao_blackwell:
            # the readout-linear records (projections, outputs) at a = E[a | w]; the MSEs at the sampled a
            # the features once: the sampled network's outputs (the model's arithmetic: f = phi(x w) @ a) and
            # those at E[a | w] share them
            F_train = phi(matmul(data["x"], theta["w"]))
            F_test = phi(matmul(data["x_test"], theta["w"]))
            theta_rb = {**theta, "a": conditional_readout_mean(F_train, theta, data, hyper)}
            f_train, f_test = matmul(F_train, theta_rb["a"]), matmul(F_test, theta_rb["a"])
            mse_train, mse_test = matmul(F_train, theta["a"]), matmul(F_test, theta["a"])
        else:
            theta_rb = theta
            f_train, f_test = mse_train, mse_test = outputs(theta, data)
        if target is None:
            record = paper_record(theta_rb, data, hyper, f_train, f_test)
        else:
            record = family_record(theta_rb, data, f_train, f_test)
        if rao_blackwell:
            record["train_mse"] = jnp.mean((mse_train - data["y"]) ** 2)
            record["test_mse"] = jnp.mean((mse_test - data["y_test"]) ** 2)
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
            "sums": {name: accum["sums"][name] + wt * record[name].astype(jnp.float64) for name in record_names},
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

    def conditional_readout_mean(F, theta, data, hyper):
        """E[a | w] (Rao-Blackwellisation, issue 20): the mean of the readout's Gaussian conditional given the
        first layer, c Lambda^-1 (c/s2) F^T y with Lambda = I + (c^2/s2) F^T F, c = sqrt(sa2/N), F = phi(x w)
        (:func:`grokphase.sims.readout.readout_draw` with xi = 0; the dual n x n form when N > n; ``F`` the
        training features phi(x w) of ``theta``).  Every
        record linear in the readout, evaluated at E[a | w] instead of the sampled a, is that record's
        conditional expectation: the same posterior mean (E[E[g | w]] = E[g]) with the readout's own noise
        integrated out."""
        c = jnp.asarray(prior_std(theta, hyper)["a"], jnp.float64)
        zero = jnp.zeros((N, 1), jnp.float64)
        eps0 = jnp.zeros((n, 1), jnp.float64) if N > n else None
        z_a = readout_draw(F, data["y"][:, None], c, hyper.s2, zero, eps0)[:, 0]
        return (c * z_a).astype(theta["a"].dtype)

    def gibbs(z, data, hyper, key):
        """Draw the readout's unit variables z_a from their Gaussian conditional given w (THEORY.md §1):
        f = c phi(x w) z_a with c = sqrt(sa2/N), so p(z_a | w) has precision I + (c^2/s2) F^T F,
        F = phi(x w) (n, N), drawn by :func:`grokphase.sims.readout.readout_draw` (the dual n x n form
        when N > n, with its own stream for the likelihood's noise).  An umbrella window on the learned
        fraction (linear in z_a: m = g.z_a with g = grad_{z_a} m, exact for a linear function) is
        drawn exactly from the biased conditional (:class:`~grokphase.sims.readout.ReadoutBias`)."""
        std = prior_std(z, hyper)
        w = jnp.asarray(std["w"], z["w"].dtype) * z["w"]
        c = jnp.asarray(std["a"], jnp.float64)
        F = phi(matmul(data["x"], w))
        xi = jax.random.normal(key, (N, 1), jnp.float64)
        eps = jax.random.normal(jax.random.fold_in(key, 1), (n, 1), jnp.float64) if N > n else None
        bias = None
        if umbrella:
            def m_of(za):
                return order_parameter({"w": w, "a": c * za}, data, hyper)

            g = jax.grad(m_of)(jnp.zeros((N,), jnp.float64))
            bias = ReadoutBias(g[:, None], hyper.umbrella_kappa, hyper.umbrella_m0,
                               jax.random.normal(jax.random.fold_in(key, 2), (), jnp.float64))
        z_a = readout_draw(F, data["y"][:, None], c, hyper.s2, xi, eps, bias)[:, 0]
        return {**z, "a": z_a.astype(z["a"].dtype)}

    def step_scales(hyper):
        """The update rule's rate per layer relative to hyper.lr (the Metropolis proposal's density)."""
        return {} if hyper.readout_lr_scale is None or gibbs_a else {"a": hyper.readout_lr_scale}

    task = Task(make_data, init, prior_std, loss, make_tx, init_accum, observe,
                gibbs=gibbs if (gibbs_a or refresh) else None,
                order_parameter=order_parameter, order_parameter_name=f"learned_{order_degree}", umbrella=umbrella,
                metropolis=metropolis, fixed_leaves=("a",) if gibbs_a else (),
                step_scales=step_scales if optimizer == "langevin" else None, prior_exact=prior_exact,
                gibbs_per_call=refresh)
    return with_matmul_precision(task, matmul_precision)
