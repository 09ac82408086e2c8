"""Parameters of the modular-addition model (defaults: the paper's Fig. 3), its two conventions
(:func:`mode_factors`) and its two methods for the mode moment."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from grokphase._params import broadcast_fields, check_magnitudes, check_positive, is_traced, plain, register_params
from grokphase.errors import ParameterError

PARAM_NAMES = ("N", "P", "s2", "sa2", "gamma")
METHODS = ("saddle", "exact")
CONVENTIONS = ("paper", "network")

#: derived quantities the solvers use, as power laws of the inputs: each must be a normal float64
#: number (:func:`grokphase._params.check_magnitudes`), else the parameters are rejected up front
MAGNITUDE_LAWS = {
    "u": ("2 sa2 P^2/(N s2^2)", {"sa2": 1.0, "P": 2.0, "N": -1.0, "s2": -2.0}),
    "u/gamma": ("2 sa2 P^2/(N s2^2 gamma)", {"sa2": 1.0, "P": 2.0, "N": -1.0, "s2": -2.0, "gamma": -1.0}),
    "P u": ("2 sa2 P^3/(N s2^2)", {"sa2": 1.0, "P": 3.0, "N": -1.0, "s2": -2.0}),
    "s2 gamma/sa2": ("s2 gamma/sa2", {"s2": 1.0, "gamma": 1.0, "sa2": -1.0}),
    "P/gamma": ("P/gamma", {"P": 1.0, "gamma": -1.0}),
}


def check_convention(convention: str) -> None:
    """ParameterError unless ``convention`` is one of :data:`CONVENTIONS` (a static string, so this
    also runs at trace time under jit/vmap)."""
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        raise ParameterError(f"convention must be one of {CONVENTIONS} (got {plain(convention)})")


def mode_factors(P, convention: str = "paper"):
    """(P_eff, kappa) of a convention (module docstring): a mode's weight is exp(-S_k) with the action
    prefactor P -> P_eff, and lambda = kappa sa2 <Phi Psi>.  ``"paper"``: (P, 1); ``"network"``:
    (2P, 4P^2).  Works on floats, NumPy and traced arrays."""
    check_convention(convention)
    if convention == "paper":
        return P, 1.0
    return 2.0 * P, 4.0 * P * P


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS} (got {plain(method)})")


@register_params
@dataclasses.dataclass(frozen=True)
class ModularParams:
    """Parameters of the modular-addition model (defaults: the paper's Fig. 3).

    N: hidden width; P: modulus (>= 3); s2: sigma^2; sa2: readout prior a ~ N(0, sa2/N) (``None``:
    0.002/N); gamma: strength of the sextic Fourier penalty.  Fields may be broadcastable arrays."""

    N: Any = 1000.0
    P: Any = 401.0
    s2: Any = 0.2
    sa2: Any = None
    gamma: Any = 1e-4

    def __post_init__(self):
        sa2_follows_N = self.sa2 is None
        if self.sa2 is None:
            if is_traced(self.N):
                object.__setattr__(self, "sa2", 0.002 / self.N)
            else:
                check_positive("N", self.N)
                check_magnitudes({"N": self.N}, {}, {})   # a subnormal N: no sa2 = 0.002/N
                object.__setattr__(self, "sa2", 0.002 / np.asarray(self.N, dtype=np.float64))
        for k in PARAM_NAMES:
            check_positive(k, getattr(self, k))
        if not is_traced(self.P):
            P = np.asarray(self.P, dtype=float)
            if np.any(P < 3):
                raise ParameterError(f"P must be >= 3 (got {plain(P.min())})")
        if not any(is_traced(getattr(self, k)) for k in PARAM_NAMES):
            broadcast_fields(self, PARAM_NAMES)
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            defaults["sa2"] = 0.002 / defaults["N"]
            check_magnitudes({k: getattr(self, k) for k in PARAM_NAMES}, MAGNITUDE_LAWS, defaults,
                             tied={"sa2": ("N", -1.0)} if sa2_follows_N else None)

    @property
    def u(self):
        """u = 2 sa2 P^2/(N s2^2), invariant under the Table-1 scaling."""
        return 2.0 * self.sa2 * self.P**2 / (self.N * self.s2**2)

    @property
    def shape(self):
        return broadcast_fields(self, PARAM_NAMES)[0]

    def replace(self, **changes) -> "ModularParams":
        return dataclasses.replace(self, **changes)

    def broadcast(self) -> "ModularParams":
        _, arrays = broadcast_fields(self, PARAM_NAMES)
        return ModularParams(**{k: np.array(v) for k, v in arrays.items()})

    def scaled(self, beta=1.0, convention: str = "paper") -> "ModularParams":
        """The family along which a convention's P -> infinity solution is invariant (s2 -> s2/beta in both,
        so the transition temperatures scale as 1/beta).

        ``"paper"``: Table 1, N -> beta^2 N, P -> sqrt(beta) P, sa2 -> sa2/beta, s2 -> s2/beta (u, gamma and
        sa2/s2 invariant).  ``"network"``: lambda/s2 = 4 P^2 sa2 <Phi Psi>/s2, so Table 1 (which keeps
        P^2 sa2 but not P^2 sa2/s2) does not fix its limit; instead N -> beta N, P -> sqrt(beta) P,
        sa2 -> sa2/beta^2, s2 -> s2/beta keeps u, gamma and kappa sa2/s2 invariant."""
        check_positive("beta", beta)
        check_convention(convention)
        try:
            beta**2
        except OverflowError:
            raise ParameterError(f"beta = {plain(beta)} is too large: beta^2 overflows float64") from None
        if convention == "paper":
            return ModularParams(N=self.N * beta**2, P=self.P * np.sqrt(beta), s2=self.s2 / beta,
                                 sa2=self.sa2 / beta, gamma=self.gamma)
        return ModularParams(N=self.N * beta, P=self.P * np.sqrt(beta), s2=self.s2 / beta, sa2=self.sa2 / beta**2,
                             gamma=self.gamma)

    def with_axis(self, name: str, value, *, sa2_times_N: float | None = None) -> "ModularParams":
        if name not in PARAM_NAMES:
            raise ParameterError(f"unknown modular parameter {name!r}; choose from {PARAM_NAMES}")
        changes = {name: value}
        if name == "N" and sa2_times_N is not None:
            changes["sa2"] = sa2_times_N / np.asarray(value, dtype=np.float64)
        return self.replace(**changes)
