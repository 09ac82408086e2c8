"""Parameters of the teacher-student model (paper Sec. 2.1, App. C; Table 1) and the choice of
approximation (THEORY.md §3b)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from grokphase._params import (
    broadcast_fields,
    check_finite,
    check_magnitudes,
    check_positive,
    is_traced,
    register_params,
)
from grokphase.errors import ParameterError

PARAM_NAMES = ("N", "n", "d", "s2", "sa2", "sw2", "eps")
APPROXIMATIONS = ("exact", "concentrated")
DEFAULT_APPROXIMATION = "exact"
DERIVED_AXES = ("u", "r")

#: derived quantities the solvers use, as power laws of the inputs: each must be a normal float64
#: number (:func:`grokphase._params.check_magnitudes`), else the parameters are rejected up front
MAGNITUDE_LAWS = {
    "u": ("n^2 sa2/(s2^2 d N)", {"n": 2.0, "sa2": 1.0, "s2": -2.0, "d": -1.0, "N": -1.0}),
    "r": ("s2 N/n", {"s2": 1.0, "N": 1.0, "n": -1.0}),
    "u d": ("n^2 sa2/(s2^2 N)", {"n": 2.0, "sa2": 1.0, "s2": -2.0, "N": -1.0}),
    "d/sw2": ("d/sw2", {"d": 1.0, "sw2": -1.0}),
    "n/s2": ("n/s2", {"n": 1.0, "s2": -1.0}),
    # the intermediate products of u as it is evaluated, n**2 * sa2 / (s2**2 * d * N)
    "n^2": ("n^2", {"n": 2.0}),
    "n^2 sa2": ("n^2 sa2", {"n": 2.0, "sa2": 1.0}),
    "s2^2": ("s2^2", {"s2": 2.0}),
    "s2^2 d N": ("s2^2 d N", {"s2": 2.0, "d": 1.0, "N": 1.0}),
}


def check_approximation(approximation: str) -> str:
    """Validate the ``approximation`` option: "exact" (t = |w_perp|^2 integrated, THEORY.md §3b) or
    "concentrated" (the paper's Claim II, t = sw2)."""
    if approximation not in APPROXIMATIONS:
        raise ParameterError(f"approximation must be one of {APPROXIMATIONS}, got {approximation!r}")
    return approximation


@register_params
@dataclasses.dataclass(frozen=True)
class TeacherStudentParams:
    """Parameters of the teacher-student model (paper's symbols; defaults: App. C at beta = 1).

    Attributes:
      N: hidden width.
      n: number of training points.
      d: input dimension.
      s2: sigma^2, Langevin temperature = Bayesian observation-noise variance.
      sa2: sigma_a^2; readout prior a_i ~ N(0, sa2/N).  ``None`` means the paper's 8/N.
      sw2: sigma_w^2; input prior w_i ~ N(0, sw2/d I).
      eps: cubic strength of the teacher.

    Every field may be a scalar or an array; arrays broadcast against each other, so one parameter
    object can describe a whole sweep or grid.  The theory treats N, n, d as real numbers (the
    Table-1 scaling produces non-integer sizes such as d = 150 sqrt(beta)).
    """

    N: Any = 700.0
    n: Any = 3000.0
    d: Any = 150.0
    s2: Any = 0.14
    sa2: Any = None
    sw2: Any = 0.5
    eps: Any = -0.3

    def __post_init__(self):
        sa2_follows_N = self.sa2 is None
        if self.sa2 is None:
            if is_traced(self.N):
                object.__setattr__(self, "sa2", 8.0 / self.N)
            else:
                check_positive("N", self.N)
                check_magnitudes({"N": self.N}, {}, {})   # a subnormal N: no sa2 = 8.0/N
                object.__setattr__(self, "sa2", 8.0 / np.asarray(self.N, dtype=np.float64))
        for k in ("N", "n", "d", "s2", "sa2", "sw2"):
            check_positive(k, getattr(self, k))
        check_finite("eps", self.eps)
        if not any(is_traced(getattr(self, k)) for k in PARAM_NAMES):
            broadcast_fields(self, PARAM_NAMES)  # raises a clear error if shapes clash
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            defaults["sa2"] = 8.0 / defaults["N"]
            check_magnitudes({k: getattr(self, k) for k in PARAM_NAMES if k != "eps"}, MAGNITUDE_LAWS, defaults,
                             tied={"sa2": ("N", -1.0)} if sa2_follows_N else None)

    # -- derived invariants (Table 1) --
    @property
    def u(self):
        """u = n^2 sa2 / (s2^2 d N), invariant under the scaling of eq. 11."""
        return self.n**2 * self.sa2 / (self.s2**2 * self.d * self.N)

    @property
    def r(self):
        """r = s2 N / n, invariant under the scaling of eq. 11."""
        return self.s2 * self.N / self.n

    @property
    def shape(self) -> tuple[int, ...]:
        return broadcast_fields(self, PARAM_NAMES)[0]

    def replace(self, **changes) -> "TeacherStudentParams":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in PARAM_NAMES}

    def broadcast(self) -> "TeacherStudentParams":
        """All fields as float64 NumPy arrays of the common broadcast shape."""
        _, arrays = broadcast_fields(self, PARAM_NAMES)
        return TeacherStudentParams(**{k: np.array(v) for k, v in arrays.items()})

    def scaled(self, alpha=None, beta=1.0) -> "TeacherStudentParams":
        """Table 1 / eq. 11: N -> beta N, d -> sqrt(beta) d, sa2 -> sa2/sqrt(beta),
        s2 -> (alpha/beta) s2, n -> alpha n.  ``alpha`` defaults to ``beta``.  u and r are invariant."""
        alpha = beta if alpha is None else alpha
        check_positive("beta", beta)
        check_positive("alpha", alpha)
        sb = np.sqrt(beta)
        return TeacherStudentParams(
            N=self.N * beta, n=self.n * alpha, d=self.d * sb, s2=self.s2 * alpha / beta,
            sa2=self.sa2 / sb, sw2=self.sw2, eps=self.eps,
        )

    def with_axis(self, name: str, value, *, sa2_times_N: float | None = None) -> "TeacherStudentParams":
        """Set one parameter, or one invariant: ``u`` (through sa2, keeping r) or ``r`` (through N,
        with sa2 rescaled to keep u).  With ``sa2_times_N`` (e.g. 8 for the paper's sa2 = 8/N),
        setting N also sets sa2 = sa2_times_N / N.  Used by sweeps and phase diagrams."""
        if name in PARAM_NAMES:
            changes = {name: value}
            if name == "N" and sa2_times_N is not None:
                changes["sa2"] = sa2_times_N / np.asarray(value, dtype=np.float64)
            return self.replace(**changes)
        check_positive(name, value)
        if name == "u":
            return self.replace(sa2=value * self.s2**2 * self.d * self.N / self.n**2)
        if name == "r":
            N_new = value * self.n / self.s2
            return self.replace(N=N_new, sa2=self.sa2 * N_new / self.N)
        raise ParameterError(f"unknown teacher-student parameter {name!r}; choose from {PARAM_NAMES + DERIVED_AXES}")
