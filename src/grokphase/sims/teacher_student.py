r"""Teacher-student simulations (THEORY.md §3, paper Sec. 2.1 / 3.1 and App. C).

Data: x ~ N(0, I_d), teacher y = H1(w*.x) + eps H3(w*.x) with a random unit w* per data set (eq. 1);
``n`` training and ``n_test`` (3000) test points per data set.  Student: f(x) = sum_i a_i erf(w_i.x)
(:class:`~grokphase.sims.models.TwoLayerNet`), sampled with preconditioned Langevin dynamics at
temperature s2 (the posterior with priors w ~ N(0, sw2/d I), a_i ~ N(0, sa2/N)).

Observables at every record time (per network):

* ``linear_learned`` = <f, Hhat1> and ``cubic_learned`` = <f, Hhat3>/(sqrt6 eps): the *population*
  projections, exact functions of the weights for Gaussian inputs (THEORY.md §3):
  <f, Hhat1> = sum_i a_i 2 q_i / sqrt(pi (1 + 2|w_i|^2)),
  <f, Hhat3> = -sum_i a_i 4 q_i^3 / (sqrt(6 pi) (1 + 2|w_i|^2)^{3/2}),  q_i = w_i.w*.
  They are comparable with the theory's 1 - b and 1 - c/eps (the targets' coefficients are 1 and
  sqrt6 eps).  The same projections measured as in the paper, over the test points
  (``*_test``) and over the training points (``*_train``).
* ``train_mse``, ``test_mse`` (mean squared error), ``w_norm2`` (mean |w_i|^2 over neurons).

Accumulated after burn-in over every record time: the histogram of q over all neurons, time
averages of every recorded scalar, the second order parameter t = |w_perp|^2 = |w|^2 - q^2 of every
neuron (THEORY.md §3b) as the sum of t per q bin (``t_sum_q``: with ``q_hist`` it gives the mean t of
the neurons beyond and inside any |q| threshold on the q grid, e.g. the droplet threshold below) and
as a coarse 2-D histogram on (q, t) (``qt_hist``, ``qt_q_bins`` x ``t_bins`` bins over
[-q_max, q_max] x [0, t_max]; bounded memory, one scatter-add of N entries per record), and the time-averaged test and training outputs (the posterior
mean predictor of each network; averaged over a data set's initialisations it is the ensemble-mean
predictor, whose test MSE is reported as ``ensemble_test_mse``).

Droplet fraction: the fraction of neurons with |q| beyond the finite-d theory's free-energy barrier
at the same parameters (:attr:`FiniteDSolution.q_barrier`), or beyond ``DEFAULT_DROPLET_THRESHOLD``
where the theory's p(q) has no barrier.  The threshold used is stored per s2, with the theory's mass
of p(q) beyond the same threshold (``theory_droplet_fraction``; at small d the Gaussian bulk alone
puts several per cent beyond 0.4, so compare with this, not with zero).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr

from grokphase.errors import ParameterError
from grokphase.sims import special
from grokphase.sims.driver import (Checkpointer, Members, Schedule, Task, ladder_branch_output, ladder_branches, prior_z,
                                   run_ensemble, run_ladder)
from grokphase.sims.langevin import langevin
from grokphase.sims.models import TwoLayerNet, erf_prior_std
from grokphase.theory.teacher_student import TeacherStudentParams

#: |q| threshold of the droplet fraction where the theory has no barrier: about half the droplet
#: position q* ~ 0.72-0.83 of the paper's configuration, > 4 prior standard deviations sqrt(sw2/d)
#: for d >= 53.
DEFAULT_DROPLET_THRESHOLD = 0.4
OPTIMIZERS = ("langevin", "sgd", "adam", "adamw")
DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
ANNEALS = ("none", "down", "up", "both")
STARTS = ("auto", "prior", "ordered")
ORDERED_DROPLETS = ("all", "theory")
ORDERED_THEORIES = ("finite-d", "limit")
#: options added with the annealing ladders (issue 8); left out of ``parameters()`` at their defaults so
#: that the checkpoints and result files of earlier plain runs keep their hashes and stay reusable
LADDER_DEFAULTS = {"anneal": "none", "start": "auto", "ordered_droplets": "all", "ordered_theory": "finite-d",
                   "ordered_approximation": "exact"}
SCALAR_RECORDS = ("train_mse", "test_mse", "linear_learned", "cubic_learned", "linear_learned_test",
                  "cubic_learned_test", "linear_learned_train", "cubic_learned_train", "w_norm2")

SQRT6 = math.sqrt(6.0)


class TSHyper(NamedTuple):
    """Per-network hyperparameters (array leaves: an ensemble may mix them)."""

    s2: Any
    sa2: Any
    sw2: Any
    eps: Any
    lr: Any
    weight_decay: Any


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


@dataclasses.dataclass(frozen=True)
class TeacherStudentSim:
    """A teacher-student simulation: the model at given (integer) sizes, a list of s2 values, and
    an ensemble of ``datasets`` x ``inits`` networks per s2.

    Sizes N, n, d are integers; :meth:`from_scaling` builds them from the beta = 1 configuration with
    the Table-1 scaling (rounded to the nearest integer; sa2 and s2 are scaled exactly).  The
    defaults are the paper's App. C configuration at beta = 1.
    """

    N: int = 700
    n: int = 3000
    d: int = 150
    s2: tuple = (0.1, 0.15, 0.2, 0.25, 0.3)
    sa2: float | None = None       # default 8/N
    sw2: float = 0.5
    eps: float = -0.3
    datasets: int = 4
    inits: int = 2
    seed: int = 0
    steps: int = 20000
    burn_in: int = 5000
    lr: float = 2e-3
    record_every: int = 100
    log_times: bool = False
    optimizer: str = "langevin"
    weight_decay: float = 0.0
    dtype: str = "float32"
    n_test: int = 3000
    q_bins: int = 240
    q_max: float = 1.5
    qt_q_bins: int = 60
    t_bins: int = 50
    t_max: float = 1.25
    droplet_threshold: float | None = None
    beta: float = 1.0
    alpha: float = 1.0
    replica_exchange: bool = False
    swap_every: int = 10
    anneal: str = "none"
    start: str = "auto"
    ordered_droplets: str = "all"
    ordered_theory: str = "finite-d"
    ordered_approximation: str = "exact"

    def __post_init__(self):
        for name, allowed in (("anneal", ANNEALS), ("start", STARTS), ("ordered_droplets", ORDERED_DROPLETS),
                              ("ordered_theory", ORDERED_THEORIES),
                              ("ordered_approximation", ("exact", "concentrated"))):
            if getattr(self, name) not in allowed:
                raise ParameterError(f"unknown {name} {getattr(self, name)!r}; choose from {', '.join(allowed)}")
        if self.anneal != "none":
            if self.replica_exchange:
                raise ParameterError("--replica-exchange and --anneal are separate protocols; choose one")
            if self.optimizer != "langevin":
                raise ParameterError("--anneal sweeps the Langevin temperature s2: it needs --optimizer langevin")
            if len(self.s2) < 2 or len(set(self.s2)) != len(self.s2):
                raise ParameterError(f"--anneal needs a ladder of at least two distinct s2 values, got {list(self.s2)}")
        if self.replica_exchange and self.start == "ordered":
            raise ParameterError("teacher-student replica exchange starts every rung from the prior: --start ordered "
                                 "applies to plain runs and --anneal ladders")
        if self.replica_exchange:
            if self.optimizer != "langevin":
                raise ParameterError("replica exchange swaps states between Langevin temperatures: it needs "
                                     "optimizer langevin")
            if len(self.s2) < 2 or len(set(self.s2)) != len(self.s2):
                raise ParameterError(f"replica exchange needs a ladder of at least two distinct s2 values, "
                                     f"got {list(self.s2)}")
        if isinstance(self.swap_every, bool) or int(self.swap_every) != self.swap_every or self.swap_every < 1:
            raise ParameterError(f"swap_every must be an integer >= 1, got {self.swap_every!r}")
        for name in ("N", "n", "d", "datasets", "inits", "n_test", "q_bins", "qt_q_bins", "t_bins"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ParameterError(f"seed must be a non-negative integer, got {self.seed!r}")
        s2 = np.atleast_1d(np.asarray(self.s2, dtype=np.float64))
        if s2.ndim != 1 or s2.size == 0:
            raise ParameterError("s2 must be a non-empty list of numbers")
        if not np.all(np.isfinite(s2)) or np.any(s2 <= 0):
            raise ParameterError(f"s2 must be finite and > 0, got {s2.tolist()}")
        object.__setattr__(self, "s2", tuple(float(v) for v in s2))
        for name in ("sw2", "lr", "q_max", "t_max"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ParameterError(f"{name} must be a finite number > 0, got {value!r}")
        if self.sa2 is not None and not (math.isfinite(self.sa2) and self.sa2 > 0):
            raise ParameterError(f"sa2 must be a finite number > 0, got {self.sa2!r}")
        if not math.isfinite(self.eps) or self.eps == 0:
            raise ParameterError(f"eps must be finite and nonzero (cubic_learned divides by it), got {self.eps!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ParameterError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ParameterError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.dtype not in DTYPES:
            raise ParameterError(f"unknown dtype {self.dtype!r}; choose float32 or float64")
        Schedule(self.steps, self.burn_in, self.record_every, self.log_times)   # validates
        object.__setattr__(self, "N", int(self.N))
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "d", int(self.d))

    @classmethod
    def from_scaling(cls, base: TeacherStudentParams | None = None, *, beta: float = 1.0,
                     alpha: float | None = None, s2: Sequence[float] = (0.1, 0.15, 0.2, 0.25, 0.3),
                     **kwargs) -> "TeacherStudentSim":
        """Table-1 scaling of the beta = 1 configuration ``base`` (default: the paper's App. C):
        N -> beta N, d -> sqrt(beta) d, n -> alpha n (rounded), sa2 -> sa2/sqrt(beta),
        s2 -> (alpha/beta) s2 for every listed s2."""
        base = TeacherStudentParams() if base is None else base
        alpha = beta if alpha is None else alpha
        if not (beta > 0 and alpha > 0 and math.isfinite(beta) and math.isfinite(alpha)):
            raise ParameterError(f"beta and alpha must be finite and > 0, got beta={beta!r}, alpha={alpha!r}")
        sc = base.scaled(alpha, beta)
        s2 = [float(v) * alpha / beta for v in np.atleast_1d(np.asarray(s2, dtype=np.float64))]
        return cls(N=int(round(float(sc.N))), n=int(round(float(sc.n))), d=int(round(float(sc.d))), s2=tuple(s2),
                   sa2=float(sc.sa2), sw2=float(sc.sw2), eps=float(sc.eps), beta=float(beta), alpha=float(alpha),
                   **kwargs)

    @property
    def sa2_value(self) -> float:
        return 8.0 / self.N if self.sa2 is None else float(self.sa2)

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.steps, self.burn_in, self.record_every, self.log_times)

    def theory_params(self) -> TeacherStudentParams:
        """The finite-d theory at exactly these (integer) sizes, one point per s2."""
        s2 = np.asarray(self.s2)
        return TeacherStudentParams(N=float(self.N), n=float(self.n), d=float(self.d), s2=s2,
                                    sa2=self.sa2_value, sw2=self.sw2, eps=self.eps)

    def parameters(self) -> dict:
        out = dataclasses.asdict(self)
        out["sa2"] = self.sa2_value
        out["s2"] = list(self.s2)
        for name, default in LADDER_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        return out

    def branches(self) -> list[tuple[str, np.ndarray, str]]:
        """(branch name, s2 ladder in run order, start) of every chain family
        (:func:`grokphase.sims.driver.ladder_branches`)."""
        return ladder_branches(self.s2, self.anneal, self.start)

    def bytes_per_network(self) -> int:
        """Rough device memory per network of a step (data, parameters, and activations)."""
        item = 4 if self.dtype == "float32" else 8
        data = (self.n + self.n_test) * (self.d + 1)
        act = 6 * max(self.n, self.n_test) * self.N
        return item * (data + act + 4 * self.d * self.N)


# ---------------------------------------------------------------------------------------------
# the task: per-network pure functions


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


# ---------------------------------------------------------------------------------------------
# members, keys and the run


def member_keys(seed: int, datasets: int, inits: int):
    """(data, init, noise) keys of every (data set, init) pair, shape (datasets * inits, 2) each:
    data = fold_in(fold_in(key(seed), 0), dataset), init/noise = fold_in(fold_in(fold_in(key(seed),
    1 | 2), dataset), init).  They do not depend on s2 (common random numbers across s2)."""
    root = jax.random.PRNGKey(seed)
    ds, it = np.meshgrid(np.arange(datasets), np.arange(inits), indexing="ij")
    ds, it = ds.ravel(), it.ravel()

    def keys(tag, with_init):
        base = jax.random.fold_in(root, tag)
        per_ds = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(ds))
        if not with_init:
            return np.asarray(per_ds)
        return np.asarray(jax.vmap(jax.random.fold_in)(per_ds, jnp.asarray(it)))

    return keys(0, False), keys(1, True), keys(2, True)


def build_members(sim: TeacherStudentSim) -> tuple[Members, list[str]]:
    data_k, init_k, noise_k = member_keys(sim.seed, sim.datasets, sim.inits)
    S, K = len(sim.s2), sim.datasets * sim.inits
    s2 = np.repeat(np.asarray(sim.s2), K)
    const = lambda v: np.full(S * K, v, dtype=np.float64)  # noqa: E731
    hyper = TSHyper(s2=s2, sa2=const(sim.sa2_value), sw2=const(sim.sw2), eps=const(sim.eps), lr=const(sim.lr),
                    weight_decay=const(sim.weight_decay))
    tile = lambda k: np.tile(k, (S, 1))  # noqa: E731
    labels = [f"network (s2={sim.s2[i]:g}, dataset {j // sim.inits}, init {j % sim.inits})"
              for i in range(S) for j in range(K)]
    return Members(tile(data_k), tile(init_k), tile(noise_k), hyper), labels


def droplet_thresholds(sim: TeacherStudentSim) -> tuple[np.ndarray, np.ndarray]:
    """Per s2: the |q| threshold of the droplet fraction and the finite-d theory's mass of p(q)
    beyond that same threshold (the theory value the simulated fraction estimates).

    The threshold is the theory's free-energy barrier where p(q) has one (then the theory's mass
    beyond it is its droplet fraction), else ``droplet_threshold`` or DEFAULT_DROPLET_THRESHOLD."""
    from grokphase.theory.teacher_student import solve_finite_d

    sol = solve_finite_d(sim.theory_params(), density=True)
    qb = np.asarray(sol.q_barrier, dtype=np.float64)
    if sim.droplet_threshold is not None:
        thr = np.full(len(sim.s2), float(sim.droplet_threshold))
    else:
        thr = np.where(qb > 0, qb, DEFAULT_DROPLET_THRESHOLD)
    q = np.asarray(sol.q, np.float64)
    p = np.exp(np.asarray(sol.log_p, np.float64))
    q = np.broadcast_to(q, p.shape)
    mass = np.empty(len(sim.s2))
    for i in range(len(sim.s2)):
        qq = np.linspace(thr[i], q[i].max(), 4001)
        mass[i] = min(1.0, 2.0 * np.trapezoid(np.interp(qq, q[i], p[i]), qq))   # p(q) is symmetric
    return thr, mass


# ---------------------------------------------------------------------------------------------
# ordered starts and annealing ladders (issue 8)


class DropletSaddle(NamedTuple):
    """The theory's droplet saddle per s2: overlap q* = |w.w*| of a droplet neuron, its
    t* = |w_perp|^2, and the droplet fraction (NaN / 0 where the theory has no droplet saddle)."""

    q_star: np.ndarray
    t_star: np.ndarray
    fraction: np.ndarray


def droplet_saddle(sim: TeacherStudentSim, s2) -> DropletSaddle:
    """Droplet saddle of the theory chosen by ``sim.ordered_theory`` / ``sim.ordered_approximation`` at
    the simulated (N, n, d, sa2, sw2, eps) and each ``s2``.

    * "finite-d" (default): :func:`~grokphase.theory.teacher_student.solve_finite_d` at exactly these
      sizes: q* = the minimum of the (t-marginal) action S(q) beyond its barrier (``q_droplet``),
      t* = the mean |w_perp|^2 of the neurons beyond the barrier (``t_droplet``; sw2 in the
      concentrated approximation), fraction = the mass beyond the barrier.  No saddle where S(q) has
      no barrier (at small d that happens already somewhat below the scaling limit's s2_c).
    * "limit": the scaling limit (:func:`~grokphase.theory.teacher_student.solve_limit`): q*, t* of the
      droplet saddle of Shat(q, t) (below s2_c: the GMFL-I saddle, above it: the metastable droplet
      minimum of the GFL branch while it exists) and fraction = pi1/d (0 above s2_c)."""
    from grokphase.theory import teacher_student as tst

    s2 = np.atleast_1d(np.asarray(s2, np.float64))
    prm = dataclasses.replace(sim.theory_params(), s2=s2)
    appr = sim.ordered_approximation
    if sim.ordered_theory == "finite-d":
        sol = tst.solve_finite_d(prm, approximation=appr)
        has = (np.asarray(sol.q_barrier) > 0) & (np.asarray(sol.q_droplet) > 0)
        q, t, f = sol.q_droplet, sol.t_droplet, sol.droplet_fraction
    else:
        sol = tst.solve_limit(prm, approximation=appr, check=False)
        has = np.asarray(sol.q_star) > 0
        q, t, f = sol.q_star, sol.t_star, sol.droplet_fraction
    nan = lambda a: np.where(has, np.asarray(a, np.float64), np.nan)  # noqa: E731
    return DropletSaddle(nan(q), nan(t), np.where(has, np.asarray(f, np.float64), 0.0))


def conditional_readout(w, x, y, c, s2, xi):
    r"""Exact draw of the readout's unit variables z_a from p(z_a | w) (one network, float64).

    With a = c z_a (c = sqrt(sa2/N), the prior std) and features Phi = erf(x w) (n, N), the output
    f = c Phi z_a is linear in z_a, so given the input layer the readout posterior
    exp(-|f - y|^2/(2 s2) - |z_a|^2/2) is Gaussian: precision Lambda = I + (c^2/s2) Phi^T Phi, mean
    Lambda^{-1} (c/s2) Phi^T y.  Returns mean + chol(Lambda)^{-T} xi for a standard normal xi."""
    w, x, y, xi = (jnp.asarray(v, jnp.float64) for v in (w, x, y, xi))
    phi = special.erf(x @ w)
    N = phi.shape[1]
    Lam = jnp.eye(N) + (c * c / s2) * phi.T @ phi
    chol = jnp.linalg.cholesky(Lam)
    mean = jax.scipy.linalg.cho_solve((chol, True), (c / s2) * phi.T @ y)
    return mean + jax.scipy.linalg.solve_triangular(chol.T, xi, lower=False)


def _ordered_member(z_prior, w_star, x, y, key, q_star, t_star, n_drop, s2, sw2, sa2, d, N):
    """One network's ordered start: neurons 0..n_drop-1 at overlap w.w* = +-q* (random signs) with
    |w_perp|^2 = t* exactly, along the direction of their prior draw's component perpendicular to
    w*; the other neurons keep their prior draws; the readout is the exact conditional draw
    (:func:`conditional_readout`) with the prior's unit draw as its noise."""
    std_w = math.sqrt(sw2 / d)
    zw = jnp.asarray(z_prior["w"], jnp.float64)
    ws = jnp.asarray(w_star, jnp.float64)
    w = std_w * zw                                              # physical prior draw (d, N)
    perp = w - jnp.outer(ws, ws @ w)
    perp = perp / jnp.linalg.norm(perp, axis=0, keepdims=True)
    sign = jnp.where(jax.random.bernoulli(key, 0.5, (N,)), 1.0, -1.0)
    w_drop = ws[:, None] * (sign * q_star)[None, :] + jnp.sqrt(t_star) * perp
    w = jnp.where((jnp.arange(N) < n_drop)[None, :], w_drop, w)
    za = conditional_readout(w, x, y, math.sqrt(sa2 / N), s2, z_prior["a"])
    return {"w": w / std_w, "a": za}


def ordered_start(sim: TeacherStudentSim, members: Members, task: Task | None = None) -> dict:
    r"""Unit-variance parameters of the ordered (droplet-saddle) start of every member (THEORY.md §3,
    §3b), for the member's own data set and s2.

    ``sim.ordered_droplets``: "all" puts every neuron at the saddle, "theory" the theory's number
    round(N x droplet fraction) (at least 1), the rest stay prior draws.  A droplet neuron is
    w = +-q* w* + sqrt(t*) e_perp with a random sign and a random unit e_perp perpendicular to w*
    (the direction of its prior draw's perpendicular part), q* and t* from :func:`droplet_saddle`
    (the exact approximation's t* below sw2, the concentrated one's t* = sw2).  Since p(q) is
    symmetric and flipping (w_i, a_i) -> (-w_i, -a_i) leaves f unchanged, the sign carries no
    physics once the readout matches it.

    Readout: the exact conditional posterior draw given the input layer (:func:`conditional_readout`).
    The mean-field theory integrates the readout out at fixed input weights, so this is the readout
    the saddle describes; a prior draw of a would start the network from f ~ 0 (all learned fractions
    near zero) and let the fast readout relax first, while the conditional draw starts the network
    already at the saddle's function.  The engine samples unit variables z (theta = prior std x z,
    :mod:`grokphase.sims.models`): the input layer is returned as w / sqrt(sw2/d), the readout as z_a.

    Returns (z, droplet neurons per member, the :class:`DropletSaddle` at the distinct s2 values,
    the index of each member's s2 among them).  Raises ParameterError where the theory has no
    droplet saddle at a member's s2 (or, with ordered_droplets = "theory", predicts fewer than half
    a droplet neuron)."""
    task = make_task(sim) if task is None else task
    s2 = np.asarray(members.hyper.s2, np.float64)
    values = np.unique(s2)
    sad = droplet_saddle(sim, values)
    where = f"the {sim.ordered_theory} theory ({sim.ordered_approximation})"
    for v, q, f in zip(values, sad.q_star, sad.fraction):
        if not np.isfinite(q):
            raise ParameterError(f"an ordered start needs the theory's droplet saddle, and {where} has none at "
                                 f"s2 = {v:g} (N = {sim.N}, d = {sim.d}, n = {sim.n}); start that branch at a lower "
                                 "s2, or use ordered_theory = 'limit'")
        if sim.ordered_droplets == "theory" and sim.N * f < 0.5:
            raise ParameterError(f"ordered_droplets = 'theory': {where} predicts {sim.N * f:.2g} droplet neurons at "
                                 f"s2 = {v:g}; use ordered_droplets = 'all' or a lower s2")
    idx = np.searchsorted(values, s2)
    if sim.ordered_droplets == "theory":
        n_drop = np.clip(np.round(sim.N * sad.fraction[idx]), 1, sim.N).astype(int)
    else:
        n_drop = np.full(s2.size, sim.N)
    prior = prior_z(task, members)
    one = jax.jit(_ordered_member, static_argnames=("sw2", "sa2", "d", "N"))
    out = []
    for j in range(s2.size):
        hyp = jax.tree_util.tree_map(lambda a, j=j: jnp.asarray(np.asarray(a)[j]), members.hyper)
        data = task.make_data(jnp.asarray(members.data_keys[j]), hyp)
        key = jax.random.fold_in(jnp.asarray(members.init_keys[j]), 0x0D0)
        zj = jax.tree_util.tree_map(lambda a, j=j: a[j], prior)
        z = one(zj, data["w_star"], data["x"], data["y"], key, float(sad.q_star[idx[j]]), float(sad.t_star[idx[j]]),
                int(n_drop[j]), float(s2[j]), sw2=float(sim.sw2), sa2=float(sim.sa2_value), d=sim.d, N=sim.N)
        out.append(jax.tree_util.tree_map(np.asarray, z))
    dtype = DTYPES[sim.dtype]
    return {name: np.stack([o[name] for o in out]).astype(dtype) for name in ("w", "a")}, n_drop, sad, idx


def build_ladder_members(sim: TeacherStudentSim) -> tuple[Members, list[TSHyper], list[str]]:
    """Annealing chains: datasets x inits per branch (cooling first), the same data sets in every
    branch, branch-specific init and noise keys; one hyperparameter set per ladder stage."""
    base, _ = build_members(dataclasses.replace(sim, s2=sim.s2[:1], anneal="none", start="auto"))
    K = sim.datasets * sim.inits
    fams = sim.branches()
    tag = {"cooling": 1, "heating": 2}
    fold = lambda keys, t: np.asarray(jax.vmap(lambda k: jax.random.fold_in(k, t))(jnp.asarray(keys)))  # noqa: E731
    members = Members(np.concatenate([base.data_keys] * len(fams)),
                      np.concatenate([fold(base.init_keys, tag[b]) for b, _, _ in fams]),
                      np.concatenate([fold(base.noise_keys, tag[b]) for b, _, _ in fams]), None)
    stages = []
    for s in range(len(sim.s2)):
        s2 = np.concatenate([np.full(K, ladder[s]) for _, ladder, _ in fams])
        const = lambda v: np.full(s2.size, v, dtype=np.float64)  # noqa: E731
        stages.append(TSHyper(s2=s2, sa2=const(sim.sa2_value), sw2=const(sim.sw2), eps=const(sim.eps),
                              lr=const(sim.lr), weight_decay=const(sim.weight_decay)))
    labels = [f"{b} chain (dataset {j // sim.inits}, init {j % sim.inits})" for b, _, _ in fams for j in range(K)]
    return members._replace(hyper=stages[0]), stages, labels


def _initial_z(sim: TeacherStudentSim, task: Task, members: Members, starts: list[str]):
    """Stage-0 parameters per block of datasets x inits members (the prior or the ordered start) and the
    ordered-start record {branch index: (droplet neurons per member, q*, t*)}; (None, {}) when every
    member starts from the prior."""
    if all(s == "prior" for s in starts):
        return None, {}
    K = len(members.data_keys) // len(starts)
    prior = prior_z(task, members)
    blocks, info = [], {}
    for b, start in enumerate(starts):
        sl = slice(b * K, (b + 1) * K)
        if start == "ordered":
            part = jax.tree_util.tree_map(lambda a, sl=sl: np.asarray(a)[sl], members)
            z, n_drop, sad, idx = ordered_start(sim, part, task)
            info[b] = (n_drop, sad.q_star[idx], sad.t_star[idx])
            blocks.append(z)
        else:
            blocks.append(jax.tree_util.tree_map(lambda a, sl=sl: np.asarray(a)[sl], prior))
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *blocks), info


def run_teacher_student(sim: TeacherStudentSim, *, devices=None, ensemble_chunk: int | None = None,
                        memory_budget: float = 2e9, checkpoint_dir: str | None = None,
                        checkpoint_every: float = 60.0, progress: bool = False, model=None,
                        _stop_after_records: int | None = None) -> xr.Dataset:
    """Run the simulation and return its result Dataset (see :func:`build_dataset`).

    ``ensemble_chunk`` (default: as many networks as fit in ``memory_budget`` bytes, rounded to the
    device count) bounds memory; ``devices`` (default all JAX devices) share each chunk.
    ``checkpoint_dir`` enables periodic atomic checkpoints and resumption."""
    if sim.replica_exchange:
        return _run_replica(sim, model, checkpoint_dir, checkpoint_every, progress, _stop_after_records)
    task = make_task(sim, model)
    n_dev = len(devices) if devices is not None else len(jax.devices())
    if ensemble_chunk is None:
        ensemble_chunk = max(n_dev, int(memory_budget // sim.bytes_per_network()))
    if sim.anneal != "none":
        return _run_ladder(sim, task, devices, ensemble_chunk, checkpoint_dir, checkpoint_every, progress,
                           _stop_after_records)
    members, labels = build_members(sim)
    z0, info = _initial_z(sim, task, members, [sim.branches()[0][2]])
    ckpt = None
    if checkpoint_dir is not None:
        config = sim.parameters()
        config["kind"] = "sims.teacher_student"
        config["ensemble_chunk"] = int(math.ceil(min(ensemble_chunk, len(labels)) / n_dev) * n_dev)
        ckpt = Checkpointer(checkpoint_dir, config, every_seconds=checkpoint_every)
    out = run_ensemble(task, members, sim.schedule, ensemble_chunk=ensemble_chunk, devices=devices,
                       checkpoint=ckpt, member_labels=labels, progress=progress,
                       progress_desc=f"teacher-student N={sim.N} d={sim.d} n={sim.n}",
                       stop_after_records=_stop_after_records, initial_z=z0)
    ds = build_dataset(sim, out, task, members)
    if info:
        n_drop, q, t = info[0]
        _ordered_attrs(ds, "independent", sim, n_drop, q, t)
    ds.attrs["seconds"] = float(out.seconds)
    ds.attrs["network_steps_per_second"] = float(out.network_steps / max(out.seconds, 1e-9))
    return ds


def _ordered_attrs(ds: xr.Dataset, branch: str, sim: TeacherStudentSim, n_drop, q, t) -> None:
    """Record an ordered start in the attributes: droplet neurons per network (mean) and q*, t*."""
    ds.attrs[f"{branch}_start"] = "ordered"
    ds.attrs[f"{branch}_start_droplet_neurons"] = float(np.mean(n_drop))
    ds.attrs[f"{branch}_start_droplet_fraction"] = float(np.mean(n_drop)) / sim.N
    ds.attrs[f"{branch}_start_q_star"] = np.asarray(q, np.float64)
    ds.attrs[f"{branch}_start_t_star"] = np.asarray(t, np.float64)


def _run_ladder(sim: TeacherStudentSim, task: Task, devices, ensemble_chunk, checkpoint_dir, checkpoint_every,
                progress, stop_after_records) -> xr.Dataset:
    """The s2 ladder with the state carried from one s2 to the next
    (:func:`grokphase.sims.driver.run_ladder`; each stage runs the whole schedule, burn-in included);
    the Dataset gains a ``branch`` dimension (cooling, heating), each branch with s2 ascending."""
    members, stages, labels = build_ladder_members(sim)
    fams = sim.branches()
    z0, info = _initial_z(sim, task, members, [start for _, _, start in fams])
    stage_labels = [" / ".join(f"{b} s2={ladder[s]:g}" for b, ladder, _ in fams) for s in range(len(sim.s2))]
    config = {**sim.parameters(), "kind": "sims.teacher_student", "protocol": "anneal"}
    if ensemble_chunk is not None:
        n_dev = len(devices) if devices is not None else len(jax.devices())
        config["ensemble_chunk"] = int(math.ceil(min(ensemble_chunk, len(labels)) / n_dev) * n_dev)
    outs = run_ladder(task, members, stages, sim.schedule, initial_z=z0, checkpoint_dir=checkpoint_dir,
                      checkpoint_config=config, checkpoint_every=checkpoint_every, stage_labels=stage_labels,
                      ensemble_chunk=ensemble_chunk, devices=devices, member_labels=labels, progress=progress,
                      progress_desc=f"teacher-student N={sim.N} d={sim.d} n={sim.n}",
                      stop_after_records=stop_after_records)
    ds = _ladder_dataset(sim, task, outs, members)
    for b, (n_drop, q, t) in info.items():
        _ordered_attrs(ds, fams[b][0], sim, n_drop, q, t)
    ds.attrs["protocol"] = "anneal"
    seconds = sum(o.seconds for o in outs)
    ds.attrs["seconds"] = float(seconds)
    ds.attrs["network_steps_per_second"] = float(sum(o.network_steps for o in outs) / max(seconds, 1e-9))
    return ds


def _ladder_dataset(sim: TeacherStudentSim, task: Task, outs: list, members: Members) -> xr.Dataset:
    """Reorder the stages of each branch by s2 (ascending) and stack the branches along ``branch``."""
    K = sim.datasets * sim.inits
    ordered = dataclasses.replace(sim, s2=tuple(sorted(sim.s2)), anneal="none", start="auto")
    parts, names = [], []
    for b, (name, ladder, _) in enumerate(sim.branches()):
        sl = slice(b * K, (b + 1) * K)
        out, order = ladder_branch_output(outs, ladder, ordered.s2, sl)
        part_members = Members(np.tile(members.data_keys[sl], (len(order), 1)), None, None, None)
        parts.append(build_dataset(ordered, out, task, part_members))
        names.append(name)
    ds = xr.concat(parts, dim="branch", data_vars="all", coords="minimal", combine_attrs="override")
    ds = ds.assign_coords(branch=names)
    for name in ("droplet_threshold", "theory_droplet_fraction", "q_edges", "qt_q_edges", "t_edges"):
        ds[name] = parts[0][name]
    from grokphase.io import annotate

    params = sim.parameters()
    return annotate(ds, kind="sims.teacher_student", parameters=params,
                    seeds={"seed": sim.seed, "datasets": sim.datasets, "inits": sim.inits},
                    extra={"N": sim.N, "n": sim.n, "d": sim.d, "sa2": sim.sa2_value,
                           "record_times": "log" if sim.log_times else "linear"})


def _run_replica(sim: TeacherStudentSim, model, checkpoint_dir, checkpoint_every, progress, stop_after_records):
    """Replica exchange across the (sorted) s2 ladder: every (dataset, init) pair is one ladder with
    one replica per s2, all rungs on that data set (:func:`grokphase.sims.replica.run_replica_exchange`);
    the Dataset is the plain run's plus the swap statistics (ladder dimension ``chain`` = dataset x init)."""
    import dataclasses

    from grokphase.sims import replica as rx

    ordered = dataclasses.replace(sim, s2=tuple(sorted(sim.s2)))
    members, _ = build_members(ordered)
    task = make_task(ordered, model)
    ckpt = None
    if checkpoint_dir is not None:
        config = {**ordered.parameters(), "kind": "sims.teacher_student", "protocol": "replica exchange"}
        ckpt = Checkpointer(checkpoint_dir, config, every_seconds=checkpoint_every)
    K = sim.datasets * sim.inits
    labels = [f"replica-exchange rung s2={ordered.s2[i]:g} (ladder {j})" for i in range(len(ordered.s2)) for j in range(K)]
    out = rx.run_replica_exchange(task, members, ordered.schedule, len(ordered.s2), swap_every=sim.swap_every,
                                  checkpoint=ckpt, member_labels=labels, progress=progress,
                                  progress_desc=f"teacher-student N={sim.N} d={sim.d} replica exchange",
                                  stop_after_records=stop_after_records)
    ds = build_dataset(ordered, out, task, members)
    s2 = np.asarray(ordered.s2)
    for name, (dims, values) in rx.replica_variables(out, s2, "chain").items():
        ds[name] = (dims, values)
    report = rx.ladder_report(out.attempts, out.accepts, rx.round_trips(out.slot_replica), s2)
    rx.warn_if_sparse(report, f"teacher-student d={sim.d} replica exchange")
    ds.attrs.update(protocol="replica exchange", swap_every=int(sim.swap_every), ladder_ok=int(report["ok"]),
                    ladder_warning=report["warning"] or "none", round_trips_total=int(report["round_trips"]),
                    min_swap_acceptance=float(report["min_acceptance"]), seconds=float(out.seconds),
                    network_steps_per_second=float(out.network_steps / max(out.seconds, 1e-9)))
    return ds


def _sem(values: np.ndarray) -> np.ndarray:
    """Standard error over the last two axes (dataset, init): over data sets (each the mean of its
    inits) when there are >= 2 data sets, else over inits; NaN-free (0 with a single network is
    replaced by the caller)."""
    D, I = values.shape[-2:]
    if D >= 2:
        per = values.mean(axis=-1)
        return per.std(axis=-1, ddof=1) / np.sqrt(D)
    if I >= 2:
        return values[..., 0, :].std(axis=-1, ddof=1) / np.sqrt(I)
    return np.full(values.shape[:-2], np.inf)


def _ratio_mean_sem(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled ratio sum(num)/sum(den) over the last two axes (dataset, init) and its jackknife
    standard error over data sets (each pooled over its inits) when there are >= 2 data sets, else
    over inits (inf with a single network).  Units without any count (den = 0) carry no weight, so
    a network without droplet neurons does not make the ensemble value undefined; NaN where no
    network has a count."""
    D, I = num.shape[-2:]
    if D >= 2:
        nu, de = num.sum(axis=-1), den.sum(axis=-1)
    elif I >= 2:
        nu, de = num[..., 0, :], den[..., 0, :]
    else:
        tot = den.sum(axis=(-2, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, num.sum(axis=(-2, -1)) / tot, np.nan), np.full(tot.shape, np.inf)
    M = nu.shape[-1]
    NU, DE = nu.sum(axis=-1, keepdims=True), de.sum(axis=-1, keepdims=True)
    import warnings

    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN leave-one-out rows: sem = inf below
        full = np.where(DE[..., 0] > 0, NU[..., 0] / DE[..., 0], np.nan)
        loo = (NU - nu) / (DE - de)                                     # leave-one-out ratios
        loo = np.where(DE - de > 0, loo, np.nan)
        ok = np.sum(np.isfinite(loo), axis=-1)
        dev = np.nansum((loo - np.nanmean(np.where(np.isfinite(loo), loo, np.nan), axis=-1, keepdims=True)) ** 2,
                        axis=-1)
        sem = np.where(ok >= 2, np.sqrt((M - 1) / M * dev), np.inf)
    return full, sem


def build_dataset(sim: TeacherStudentSim, out, task: Task, members: Members) -> xr.Dataset:
    """Result Dataset with dims (s2, dataset, init, time, q): trajectories, time averages,
    q histograms, ensemble statistics with standard errors, and the run's parameters."""
    S, D, I = len(sim.s2), sim.datasets, sim.inits
    shape = (S, D, I)
    T = out.record_steps.size
    coords = {"s2": np.asarray(sim.s2), "dataset": np.arange(D), "init": np.arange(I),
              "time": out.record_steps.astype(np.int64)}
    edges = np.linspace(-sim.q_max, sim.q_max, sim.q_bins + 1)
    coords["q"] = 0.5 * (edges[1:] + edges[:-1])
    acc = out.accum
    count = np.asarray(acc["count"]).reshape(shape)
    if np.any(count <= 0):
        raise ParameterError("no record time after burn-in: lower burn_in or record more often")
    data_vars = {}
    for name in SCALAR_RECORDS:
        data_vars[f"{name}_trajectory"] = (("s2", "dataset", "init", "time"),
                                           np.asarray(out.records[name], np.float64).reshape(shape + (T,)))
        avg = np.asarray(acc["sums"][name]).reshape(shape) / count
        data_vars[f"{name}_network"] = (("s2", "dataset", "init"), avg)
        data_vars[name] = (("s2",), avg.mean(axis=(1, 2)))
        data_vars[f"{name}_sem"] = (("s2",), _sem(avg))
    q_hist = np.asarray(acc["q_hist"]).reshape(shape + (sim.q_bins,))
    data_vars["q_hist"] = (("s2", "dataset", "init", "q"), q_hist)
    data_vars["q_overflow"] = (("s2", "dataset", "init"), np.asarray(acc["q_overflow"]).reshape(shape))
    thr, theory_droplet = droplet_thresholds(sim)
    beyond = np.abs(coords["q"])[None, :] > thr[:, None]                       # (S, B)
    total = q_hist.sum(axis=-1) + data_vars["q_overflow"][1]
    frac = ((q_hist * beyond[:, None, None, :]).sum(axis=-1) + data_vars["q_overflow"][1]) / total
    data_vars["droplet_fraction_network"] = (("s2", "dataset", "init"), frac)
    data_vars["droplet_fraction"] = (("s2",), frac.mean(axis=(1, 2)))
    data_vars["droplet_fraction_sem"] = (("s2",), _sem(frac))
    data_vars["droplet_threshold"] = (("s2",), thr)
    # t = |w_perp|^2 of the droplet (|q| beyond the same threshold, overflow included) and bulk neurons
    t_sum_q = np.asarray(acc["t_sum_q"]).reshape(shape + (sim.q_bins,))
    t_over = np.asarray(acc["t_overflow_sum"]).reshape(shape)
    data_vars["t_sum_q"] = (("s2", "dataset", "init", "q"), t_sum_q)
    data_vars["t_overflow_sum"] = (("s2", "dataset", "init"), t_over)
    bw = beyond[:, None, None, :]
    n_drop = (q_hist * bw).sum(axis=-1) + data_vars["q_overflow"][1]
    t_drop = (t_sum_q * bw).sum(axis=-1) + t_over
    n_bulk = (q_hist * ~bw).sum(axis=-1)
    t_bulk = (t_sum_q * ~bw).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        data_vars["t_droplet_network"] = (("s2", "dataset", "init"), np.where(n_drop > 0, t_drop / n_drop, np.nan))
        data_vars["t_bulk_network"] = (("s2", "dataset", "init"), np.where(n_bulk > 0, t_bulk / n_bulk, np.nan))
    for name, (nu, de) in {"t_droplet": (t_drop, n_drop), "t_bulk": (t_bulk, n_bulk)}.items():
        mean, sem = _ratio_mean_sem(nu, de)
        data_vars[name], data_vars[f"{name}_sem"] = (("s2",), mean), (("s2",), sem)
    qt_edges = np.linspace(-sim.q_max, sim.q_max, sim.qt_q_bins + 1)
    t_edges = np.linspace(0.0, sim.t_max, sim.t_bins + 1)
    coords["qt_q"] = 0.5 * (qt_edges[1:] + qt_edges[:-1])
    coords["t"] = 0.5 * (t_edges[1:] + t_edges[:-1])
    data_vars["qt_hist"] = (("s2", "dataset", "init", "qt_q", "t"),
                            np.asarray(acc["qt_hist"]).reshape(shape + (sim.qt_q_bins, sim.t_bins)))
    data_vars["qt_overflow"] = (("s2", "dataset", "init"), np.asarray(acc["qt_overflow"]).reshape(shape))
    # ensemble-mean predictor per data set: time- and init-averaged test outputs
    f_test = np.asarray(acc["f_test"]).reshape(shape + (-1,)) / count[..., None]
    keys = np.asarray(members.data_keys)[: D * I: I]
    y_test = _test_targets(task, sim, keys)
    ens = f_test.mean(axis=2)                                                   # (S, D, n_test)
    ens_mse = np.mean((ens - y_test[None]) ** 2, axis=-1)                      # (S, D)
    data_vars["ensemble_test_mse_dataset"] = (("s2", "dataset"), ens_mse)
    data_vars["ensemble_test_mse"] = (("s2",), ens_mse.mean(axis=1))
    data_vars["ensemble_test_mse_sem"] = (("s2",), ens_mse.std(axis=1, ddof=1) / np.sqrt(D) if D > 1
                                          else np.full(S, np.inf))
    ds = xr.Dataset(data_vars, coords=coords)
    ds["q_edges"] = (("q_edge",), edges)
    ds["qt_q_edges"] = (("qt_q_edge",), qt_edges)
    ds["t_edges"] = (("t_edge",), t_edges)
    ds["t_droplet"].attrs["long_name"] = ("mean t = |w_perp|^2 of the neurons with |q| beyond droplet_threshold "
                                          "(pooled ratio; _sem: jackknife over data sets)")
    ds["t_bulk"].attrs["long_name"] = "mean t = |w_perp|^2 of the neurons with |q| inside droplet_threshold"
    ds["qt_hist"].attrs["long_name"] = "2-D histogram of (q, t = |w_perp|^2) over neurons and record times"
    ds["count"] = (("s2", "dataset", "init"), count)
    ds["theory_droplet_fraction"] = (("s2",), theory_droplet)
    ds["theory_droplet_fraction"].attrs["long_name"] = "finite-d theory's mass of p(q) beyond droplet_threshold"
    for name in ("linear_learned", "cubic_learned"):
        ds[name].attrs["long_name"] = f"{name.replace('_', ' ')} (exact population projection, time and ensemble mean)"
    ds["droplet_threshold"].attrs["long_name"] = "|q| threshold: the finite-d theory's barrier, else 0.4"
    from grokphase.io import annotate

    params = sim.parameters()
    return annotate(ds, kind="sims.teacher_student", parameters=params,
                    seeds={"seed": sim.seed, "datasets": sim.datasets, "inits": sim.inits},
                    extra={"N": sim.N, "n": sim.n, "d": sim.d, "sa2": sim.sa2_value,
                           "record_times": "log" if sim.log_times else "linear"})


def _test_targets(task: Task, sim: TeacherStudentSim, keys: np.ndarray, block: int = 16) -> np.ndarray:
    """The test targets of each data set, regenerated from its key in fixed blocks of data sets (so
    memory stays bounded by ``block`` data sets whatever the ensemble size)."""
    fn = _test_target_fn(task, sim.eps)
    out = []
    for start in range(0, keys.shape[0], block):
        part = keys[start:start + block]
        m = part.shape[0]
        if m < block:
            part = np.concatenate([part, np.repeat(part[-1:], block - m, axis=0)])
        out.append(np.asarray(fn(jnp.asarray(part)), np.float64)[:m])
    return np.concatenate(out)


@functools.lru_cache(maxsize=16)
def _test_target_fn(task: Task, eps: float):
    hyper = TSHyper(*(jnp.asarray(v, jnp.float64) for v in (1.0, 1.0, 1.0, eps, 1.0, 0.0)))
    return jax.jit(jax.vmap(lambda k: task.make_data(k, hyper)["y_test"]))


def summary_points(ds: xr.Dataset) -> list[dict]:
    """The CLI's JSON points: per s2 the learned fractions, droplet fraction (with SEMs) and MSEs
    (and per branch of an annealing run: the point gains "branch")."""
    if "branch" in ds.dims:
        pts = []
        for b in ds["branch"].values:
            pts.extend({"branch": str(b), **pt} for pt in summary_points(ds.sel(branch=b)))
        return pts
    pts = []
    for i, s2 in enumerate(ds["s2"].values):
        pt = {"s2": float(s2)}
        for name in ("linear_learned", "cubic_learned", "droplet_fraction"):
            pt[name] = float(ds[name].values[i])
            pt[f"{name}_sem"] = float(ds[f"{name}_sem"].values[i])
        pt["train_mse"] = float(ds["train_mse"].values[i])
        pt["test_mse"] = float(ds["test_mse"].values[i])
        pt["ensemble_test_mse"] = float(ds["ensemble_test_mse"].values[i])
        pts.append(pt)
    return pts
