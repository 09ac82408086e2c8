"""Teacher-student simulation config: :class:`TeacherStudentSim` (sizes, s2 list, ensemble, schedule,
protocol options), its option tuples and the per-network hyperparameters :class:`TSHyper`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from grokphase.errors import ParameterError
from grokphase.sims import umbrella as umb
from grokphase.sims.driver import Schedule, ladder_branches
from grokphase.sims.precision import DEFAULT_MATMUL_PRECISION, check_matmul_precision
from grokphase.theory.single_index import ACTIVATIONS, HermiteTarget, get_activation, get_target
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
#: the readout's update: a Langevin step with the first layer, or an exact draw from its Gaussian
#: conditional given the first layer before every Langevin step on w, or a Langevin step with the first layer
#: plus an exact redraw at the start of every record interval (issue 20)
READOUTS = ("langevin", "gibbs", "refresh")
#: the sampler options of issue 20, left out of ``parameters()`` at their defaults (earlier runs keep
#: their hashes): the readout's update, the Metropolis adjustment (MALA), the readout's step relative to the
#: first layer's (a constant block preconditioner), the prior-exact (pCN) noise and the Rao-Blackwellised records
SAMPLER_DEFAULTS = {"readout": "langevin", "mala": False, "readout_lr_scale": 1.0, "prior_exact": False,
                    "rao_blackwell": False}
#: the matmul-precision policy of issue 21 (:mod:`grokphase.sims.precision`), left out of ``parameters()`` at
#: its default (earlier runs keep their hashes; the result's attributes always record it)
PRECISION_DEFAULTS = {"matmul_precision": DEFAULT_MATMUL_PRECISION}
#: options added with the annealing ladders (issue 8); left out of ``parameters()`` at their defaults so
#: that the checkpoints and result files of earlier plain runs keep their hashes and stay reusable
LADDER_DEFAULTS = {"anneal": "none", "start": "auto", "ordered_droplets": "all", "ordered_theory": "finite-d",
                   "ordered_approximation": "exact"}
SCALAR_RECORDS = ("train_mse", "test_mse", "linear_learned", "cubic_learned", "linear_learned_test",
                  "cubic_learned_test", "linear_learned_train", "cubic_learned_train", "w_norm2")
#: the single-index family's options (issue 18), left out of ``parameters()`` at their defaults (the
#: paper's erf student and He1 + eps He3 teacher) so that earlier runs keep their hashes
FAMILY_DEFAULTS = {"activation": "erf", "target": None}
#: per-target-degree records (a trailing ``degree`` axis): the exact population projection
#: <f, Hhat_k>/yhat_k and its test- and training-set estimates <f, He_k>/(k! c_k)
DEGREE_RECORDS = ("learned", "learned_test", "learned_train")
#: the scalar records of a model with a general Hermite target (no linear_/cubic_ names)
FAMILY_SCALAR_RECORDS = ("train_mse", "test_mse", "w_norm2")

SQRT6 = math.sqrt(6.0)


class TSHyper(NamedTuple):
    """Per-network hyperparameters (array leaves: an ensemble may mix them)."""

    s2: Any
    sa2: Any
    sw2: Any
    eps: Any
    lr: Any
    weight_decay: Any
    umbrella_kappa: Any = None       # the member's umbrella window (None outside umbrella runs: no leaves)
    umbrella_m0: Any = None
    readout_lr_scale: Any = None     # the readout's Langevin rate / lr (None: 1, the plain step: no leaf)



@dataclasses.dataclass(frozen=True)
class TeacherStudentSim:
    """A teacher-student simulation: the model at given (integer) sizes, a list of s2 values, and
    an ensemble of ``datasets`` x ``inits`` networks per s2.

    Sizes N, n, d are integers; :meth:`from_scaling` builds them from the beta = 1 configuration with
    the Table-1 scaling (rounded to the nearest integer; sa2 and s2 are scaled exactly).  The
    defaults are the paper's App. C configuration at beta = 1.

    Umbrella windows on the learned fraction of target degree ``umbrella_degree`` (default the highest
    target degree: 3 for the paper's He1 + eps He3; THEORY.md §7, :mod:`grokphase.sims.umbrella`):
    ``umbrella_m0`` (centres) with ``umbrella_kappa`` (one value or one per window, log-posterior units),
    or ``umbrella_range`` (lo, hi) with optional ``umbrella_windows`` and ``umbrella_kappa`` (planned from
    pilot runs); ``umbrella_start``: prior, ordered or both.

    Samplers (issue 20): ``readout = "gibbs"`` draws the readout exactly from its Gaussian conditional
    given the first layer before every Langevin step on w (:mod:`grokphase.sims.readout`; the dual form
    when N > n); ``readout = "refresh"`` moves the readout with the first layer (Langevin or MALA on both)
    and redraws it exactly from the same conditional at the start of every record interval (a cycle of
    posterior-preserving kernels: the chain depends on ``record_every``); ``mala = True`` makes every Langevin step the proposal of a Metropolis-adjusted chain
    (:func:`grokphase.sims.driver.metropolis_step`: no O(lr) bias; its acceptance rate is recorded).
    Both keep the posterior as the stationary law.  ``readout_lr_scale`` (default 1): the readout's Langevin
    rate is ``lr * readout_lr_scale`` (a constant block-diagonal preconditioner: the first layer may step
    further than the readout's stiff likelihood allows); ``prior_exact``: the Langevin noise variance is
    2 eta s2 (1 - eta s2/2), exact on the unit Gaussian prior (with ``mala``: a pCN-Langevin proposal whose
    acceptance does not fall with the number of prior-dominated weights; docs/samplers.md);
    ``rao_blackwell``: every record linear in the readout (the learned fractions: exact, test and training
    projections; the mean outputs) is evaluated at the readout's conditional mean E[a | w] instead of the
    sampled a, i.e. it is the record's conditional expectation given the first layer (Rao-Blackwellisation:
    the same posterior means with the readout's noise integrated out; the MSE records stay those of the
    sampled network).  Any Langevin sampler; not with umbrella windows (their reweighting needs the sampled
    order parameter).

    ``matmul_precision`` (issue 21): "highest" (default), "high" or "default" set JAX's precision of the
    float32 matmuls (TF32 on GPUs for the latter two; identical on CPUs); "tf32" and "bf16" emulate those
    formats on any device by rounding the inputs of the network's matmuls (:mod:`grokphase.sims.precision`).
    """

    # the model's defaults are the theory's (App. C at beta = 1), written once in TeacherStudentParams
    N: int = int(TeacherStudentParams.N)
    n: int = int(TeacherStudentParams.n)
    d: int = int(TeacherStudentParams.d)
    s2: tuple = (0.1, 0.15, 0.2, 0.25, 0.3)
    sa2: float | None = None       # default 8/N
    sw2: float = TeacherStudentParams.sw2
    eps: float = TeacherStudentParams.eps
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
    activation: Any = "erf"
    target: str | None = None
    umbrella_m0: tuple | None = None
    umbrella_kappa: tuple | None = None
    umbrella_start: str = "prior"
    umbrella_range: tuple | None = None
    umbrella_windows: tuple | None = None
    umbrella_degree: int | None = None
    umbrella_coordinates: str | None = None
    readout: str = "langevin"
    mala: bool = False
    readout_lr_scale: float = 1.0
    prior_exact: bool = False
    rao_blackwell: bool = False
    matmul_precision: str = DEFAULT_MATMUL_PRECISION

    def __post_init__(self):
        self._check_family()
        check_matmul_precision(self.matmul_precision)
        if self.readout not in READOUTS:
            raise ParameterError(f"unknown readout update {self.readout!r}; choose {', '.join(READOUTS)}")
        if not isinstance(self.mala, (bool, np.bool_)):
            raise ParameterError(f"mala must be true or false, got {self.mala!r}")
        object.__setattr__(self, "mala", bool(self.mala))
        if not isinstance(self.prior_exact, (bool, np.bool_)):
            raise ParameterError(f"prior_exact must be true or false, got {self.prior_exact!r}")
        object.__setattr__(self, "prior_exact", bool(self.prior_exact))
        if not isinstance(self.rao_blackwell, (bool, np.bool_)):
            raise ParameterError(f"rao_blackwell must be true or false, got {self.rao_blackwell!r}")
        object.__setattr__(self, "rao_blackwell", bool(self.rao_blackwell))
        scale = self.readout_lr_scale
        if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ParameterError(f"readout_lr_scale must be a finite number > 0, got {scale!r}")
        object.__setattr__(self, "readout_lr_scale", float(scale))
        if self.readout_lr_scale != 1.0 and self.readout == "gibbs":
            raise ParameterError("readout_lr_scale sets the readout's Langevin step: with readout = gibbs the readout "
                                 "is drawn exactly (leave readout_lr_scale at 1)")
        if (self.readout != "langevin" or self.mala or self.prior_exact or self.readout_lr_scale != 1.0
                or self.rao_blackwell) and self.optimizer != "langevin":
            what = (f"readout = {self.readout}" if self.readout != "langevin" else "mala" if self.mala
                    else "prior_exact" if self.prior_exact else "rao_blackwell" if self.rao_blackwell
                    else "readout_lr_scale")
            raise ParameterError(f"{what} samples the Langevin posterior: it needs optimizer langevin, not "
                                 f"{self.optimizer!r}")
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
        if self.prior_exact:
            rate = max(self.lr, self.lr * self.readout_lr_scale) * max(self.s2)
            if not rate < 2.0:
                raise ParameterError(f"prior_exact needs lr * s2 < 2 (for the readout lr * readout_lr_scale * s2) at "
                                     f"every s2, got {rate:g}")
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
        if not self.paper_model and any(start == "ordered" for _, _, start in self.branches()):
            raise ParameterError(f"the ordered (droplet-saddle) start needs the paper's model (erf student, target "
                                 f"He1 + eps He3); activation {self.activation_name!r} with target "
                                 f"{self.hermite_target.spec!r} starts from the prior only (start = prior; anneal "
                                 f"down, not up or both)")
        ordered_problem = None if self.paper_model else (
            f"the ordered (droplet-saddle) start needs the paper's model (erf student, target He1 + eps He3), not "
            f"activation {self.activation_name!r} with target {self.hermite_target.spec!r}: use umbrella_start = prior")
        if self.umbrella_degree is not None:
            if not self.umbrella:
                raise ParameterError("umbrella_degree applies only to umbrella windows: give umbrella_m0 (or "
                                     "umbrella_range)")
            if isinstance(self.umbrella_degree, bool) or self.umbrella_degree not in self.degrees:
                raise ParameterError(f"umbrella_degree must be one of the target's degrees {list(self.degrees)}, "
                                     f"got {self.umbrella_degree!r}")
            object.__setattr__(self, "umbrella_degree", int(self.umbrella_degree))
        umb.check_options(self, ordered_problem, (f"learned_{self.order_degree}",))
        if self.rao_blackwell and self.umbrella:
            raise ParameterError("rao_blackwell records conditional expectations given the first layer; umbrella "
                                 "windows are reweighted by the sampled order parameter: run the windows without "
                                 "rao_blackwell")

    @property
    def umbrella(self) -> bool:
        """Whether this is an umbrella run (explicit or planned windows)."""
        return umb.is_umbrella(self)

    @property
    def umbrella_coordinate_names(self) -> tuple[str, ...]:
        """The umbrella coordinate: the learned fraction of ``order_degree`` (one coordinate: this model
        declares no other)."""
        return (f"learned_{self.order_degree}",)

    @property
    def order_degree(self) -> int:
        """The target degree whose learned fraction is the order parameter (``umbrella_degree``, default the
        highest target degree)."""
        return self.umbrella_degree if self.umbrella_degree is not None else max(self.degrees)

    def _check_family(self) -> None:
        """Validate ``activation`` (a registry name, or in Python a JAX-traceable callable) and ``target``
        (a spec such as "2:1,4:0.3" or a HermiteTarget), normalised to its spec string with the degrees in
        increasing order; a target of the paper's form He1 + c He3 (c != 0) is stored as ``target=None,
        eps=c``, so that it is the same run (and result hash) as ``eps=c``."""
        act = get_activation(self.activation)        # ParameterError naming an unknown name
        if isinstance(self.activation, str) or ACTIVATIONS.get(act.name) is act:
            object.__setattr__(self, "activation", act.name)
        if self.target is None:
            return
        if not isinstance(self.target, (str, HermiteTarget)):
            raise ParameterError(f"target must be a spec string like '2:1,4:0.3' (got {self.target!r})")
        target = get_target(self.target)              # ParameterError naming the bad term
        order = sorted(range(len(target.degrees)), key=lambda j: target.degrees[j])   # one spec per model
        target = HermiteTarget(tuple(target.degrees[j] for j in order), tuple(target.coefficients[j] for j in order))
        for k, c in zip(target.degrees, target.coefficients):
            if c == 0.0:
                raise ParameterError(f"the target's coefficient of He{k} is 0: leave the degree out (its learned "
                                     "fraction divides by it)")
        if self.eps != TeacherStudentParams.eps:
            raise ParameterError(f"give either eps (the paper's target He1 + eps He3) or target, not both "
                                 f"(eps={self.eps!r}, target={target.spec!r})")
        if target.degrees == (1, 3) and target.coefficients[0] == 1.0:
            object.__setattr__(self, "eps", float(target.coefficients[1]))
            object.__setattr__(self, "target", None)
        else:
            object.__setattr__(self, "target", target.spec)

    @property
    def hermite_target(self) -> HermiteTarget:
        """The teacher y = sum_k c_k He_k(w*.x): He1 + eps He3 when ``target`` is None."""
        return HermiteTarget.paper(self.eps) if self.target is None else get_target(self.target)

    @property
    def degrees(self) -> tuple[int, ...]:
        """The target's Hermite degrees (the ``degree`` coordinate of the per-degree records)."""
        return self.hermite_target.degrees

    @property
    def paper_target(self) -> bool:
        """The teacher is the paper's He1 + eps He3 (then the linear_/cubic_ records exist)."""
        return self.target is None

    @property
    def paper_model(self) -> bool:
        """The paper's model: erf student, He1 + eps He3 teacher (its own theory and ordered start)."""
        return self.target is None and isinstance(self.activation, str) and self.activation == "erf"

    @property
    def activation_name(self) -> str:
        return get_activation(self.activation).name

    def scalar_records(self) -> tuple[str, ...]:
        """The scalar records of this model: SCALAR_RECORDS for the paper's target, else
        FAMILY_SCALAR_RECORDS (the per-degree ones are DEGREE_RECORDS)."""
        return SCALAR_RECORDS if self.paper_target else FAMILY_SCALAR_RECORDS

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
        for name, default in {**LADDER_DEFAULTS, **FAMILY_DEFAULTS, **SAMPLER_DEFAULTS, **PRECISION_DEFAULTS,
                              "umbrella_degree": None}.items():
            if out[name] == default:
                del out[name]
        if "activation" in out:
            out["activation"] = self.activation_name
        return umb.umbrella_parameters(out)          # umbrella options only when set: plain runs keep their hashes

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

