"""Modular-addition simulation config: :class:`ModularSim` (sizes, training fraction, optimiser, s2
list, protocol options), its option tuples and the per-network hyperparameters :class:`ModHyper`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from grokphase.errors import ParameterError
from grokphase.sims import umbrella as umb
from grokphase.sims.driver import Schedule, ladder_branches
from grokphase.sims.precision import DEFAULT_MATMUL_PRECISION, check_matmul_precision

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
#: the umbrella coordinates of the modular model (THEORY.md §7), its primary first: the target component
#: m = (f, y)/(y, y) (linear in the readout) and the mean per-neuron Fourier IPR of the first-layer weights
UMBRELLA_COORDINATES = ("target_component", "ipr")


@dataclasses.dataclass(frozen=True)
class ModularSim:
    """A modular-addition simulation: sizes, training fraction, optimiser, a list of s2 values
    (Langevin temperatures; ignored by the plain optimisers except as a label) and ``seeds``
    networks per s2 (each its own data split and initialisation).

    Umbrella windows on the target component m = (f, y)/(y, y) (THEORY.md §7,
    :mod:`grokphase.sims.umbrella`): ``umbrella_m0`` (centres) with ``umbrella_kappa`` (one value or one
    per window, log-posterior units), or ``umbrella_range`` (lo, hi) with optional ``umbrella_windows``
    and ``umbrella_kappa`` (planned from pilot runs); ``umbrella_start``: prior, ordered or both.
    ``umbrella_coordinates`` (names from :data:`UMBRELLA_COORDINATES`, a comma-separated string or a
    sequence; default the target component alone) chooses what the windows bias; with two, every option
    is given per coordinate and the windows are the product grid (:func:`grokphase.sims.umbrella.check_options`)."""

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
    mala: bool = False
    prior_exact: bool = False
    matmul_precision: str = DEFAULT_MATMUL_PRECISION
    replica_exchange: bool = False
    swap_every: int = 10
    ordered_droplets: str = "all"
    theory_convention: str = "paper"
    umbrella_m0: tuple | None = None
    umbrella_kappa: tuple | None = None
    umbrella_start: str = "prior"
    umbrella_range: tuple | None = None
    umbrella_windows: tuple | None = None
    umbrella_coordinates: str | None = None

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
        check_matmul_precision(self.matmul_precision)
        if not isinstance(self.mala, (bool, np.bool_)):
            raise ParameterError(f"mala must be true or false, got {self.mala!r}")
        object.__setattr__(self, "mala", bool(self.mala))
        if self.mala and self.optimizer != "langevin":
            raise ParameterError(f"mala samples the Langevin posterior: it needs optimizer langevin, not "
                                 f"{self.optimizer!r}")
        if not isinstance(self.prior_exact, (bool, np.bool_)):
            raise ParameterError(f"prior_exact must be true or false, got {self.prior_exact!r}")
        object.__setattr__(self, "prior_exact", bool(self.prior_exact))
        if self.prior_exact:
            if self.optimizer != "langevin":
                raise ParameterError(f"prior_exact samples the Langevin posterior: it needs optimizer langevin, not "
                                     f"{self.optimizer!r}")
            if not (math.isfinite(self.lr) and 0.0 < self.lr * max(self.s2) < 2.0):
                raise ParameterError(f"prior_exact needs 0 < lr * s2 < 2 at every s2, got lr * max(s2) = "
                                     f"{self.lr * max(self.s2):g}")
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
        ordered_problem = None
        if self.parametrisation != "paper" or self.gamma <= 0 or self.P < 3:
            ordered_problem = ("the ordered start is built from the theory's droplet saddle, which needs the paper "
                               "parametrisation, gamma > 0 and P >= 3")
        umb.check_options(self, ordered_problem, UMBRELLA_COORDINATES)

    @property
    def umbrella(self) -> bool:
        """Whether this is an umbrella run (explicit or planned windows)."""
        return umb.is_umbrella(self)

    @property
    def umbrella_coordinate_names(self) -> tuple[str, ...]:
        """The coordinates an umbrella run biases (``umbrella_coordinates``; default the target component)."""
        return self.umbrella_coordinates or UMBRELLA_COORDINATES[:1]

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
        for name in ("mala", "prior_exact"):         # issue 20's options only when set: earlier runs keep their hashes
            if not out[name]:
                del out[name]
        if self.matmul_precision == DEFAULT_MATMUL_PRECISION:     # issue 21's, likewise (attrs always record it)
            del out["matmul_precision"]
        return umb.umbrella_parameters(out)          # umbrella options only when set: plain runs keep their hashes


class ModHyper(NamedTuple):
    """Per-network hyperparameters (array leaves); phi_plus: the theory's droplet saddle (NaN: none);
    umbrella_kappa, umbrella_m0: the member's umbrella window (None outside umbrella runs: no leaves)."""

    s2: Any
    sa2: Any
    gamma: Any
    lr: Any
    weight_decay: Any
    phi_plus: Any
    umbrella_kappa: Any = None
    umbrella_m0: Any = None


def _hyper(sim: ModularSim, s2: np.ndarray, phi: np.ndarray) -> ModHyper:
    const = lambda v: np.full(s2.size, v, dtype=np.float64)  # noqa: E731
    return ModHyper(s2=np.asarray(s2, np.float64), sa2=const(sim.sa2_value), gamma=const(sim.gamma),
                    lr=const(sim.lr), weight_decay=const(sim.weight_decay), phi_plus=np.asarray(phi, np.float64))


