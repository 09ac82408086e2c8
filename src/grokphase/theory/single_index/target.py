"""A Hermite target y = sum_k c_k He_k(w*·x) of the single-index family (THEORY.md §6).

The spec string form ``"1:1,3:-0.3"`` lists degree:coefficient pairs of He_k (the paper's target
He1 - 0.3 He3).  In the orthonormal basis Hhat_k = He_k/sqrt(k!) the target is yhat_k = c_k sqrt(k!)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from grokphase.errors import ParameterError
from grokphase.theory.single_index.overlaps import check_degrees

#: the paper's target He1 + eps He3 at eps = -0.3
PAPER_TARGET = "1:1,3:-0.3"


@dataclasses.dataclass(frozen=True)
class HermiteTarget:
    """y = sum_k c_k He_k(w*·x) over ``degrees`` (distinct, 0..8) with finite ``coefficients``; stored
    in increasing degree (``"3:-0.3,1:1"`` is the same target as ``"1:1,3:-0.3"``)."""

    degrees: tuple[int, ...]
    coefficients: tuple[float, ...]

    def __post_init__(self):
        degrees = check_degrees(self.degrees)
        try:
            coefficients = tuple(float(c) for c in self.coefficients)
        except (TypeError, ValueError):
            raise ParameterError(f"target coefficients must be real numbers (got {self.coefficients!r})") from None
        if len(coefficients) != len(degrees):
            raise ParameterError(f"the target has {len(degrees)} degrees but {len(coefficients)} coefficients")
        for k, c in zip(degrees, coefficients):
            if not math.isfinite(c):
                raise ParameterError(f"the coefficient of He{k} must be finite (got {c!r})")
        order = sorted(range(len(degrees)), key=degrees.__getitem__)
        object.__setattr__(self, "degrees", tuple(degrees[i] for i in order))
        object.__setattr__(self, "coefficients", tuple(coefficients[i] for i in order))

    @classmethod
    def parse(cls, spec: str) -> "HermiteTarget":
        """From ``"degree:coefficient,..."``, e.g. ``"1:1,3:-0.3"`` (ParameterError naming the bad part)."""
        if not isinstance(spec, str) or not spec.strip():
            raise ParameterError(f"target must be a string like '1:1,3:-0.3' (got {spec!r})")
        degrees, coefficients = [], []
        for part in spec.split(","):
            bits = part.split(":")
            if len(bits) != 2:
                raise ParameterError(f"target term {part.strip()!r} must be degree:coefficient, e.g. '3:-0.3'")
            k, c = bits[0].strip(), bits[1].strip()
            if not k.isdigit():
                raise ParameterError(f"target degree {k!r} must be an integer in 0..8")
            try:
                value = float(c)
            except ValueError:
                raise ParameterError(f"target coefficient {c!r} of He{k} is not a number") from None
            degrees.append(int(k))
            coefficients.append(value)
        return cls(tuple(degrees), tuple(coefficients))

    @classmethod
    def paper(cls, eps: float = -0.3) -> "HermiteTarget":
        """He1 + eps He3 (eq. 1)."""
        return cls((1, 3), (1.0, float(eps)))

    def coefficient(self, k: int) -> float:
        """c_k (0 for a degree the target does not have)."""
        return dict(zip(self.degrees, self.coefficients)).get(int(k), 0.0)

    def yhat(self, degrees=None) -> np.ndarray:
        """The target in the orthonormal basis, yhat_k = c_k sqrt(k!), over ``degrees`` (default: the
        target's own)."""
        degrees = self.degrees if degrees is None else check_degrees(degrees)
        return np.array([self.coefficient(k) * math.sqrt(math.factorial(k)) for k in degrees])

    @property
    def spec(self) -> str:
        return ",".join(f"{k}:{c!r}" for k, c in zip(self.degrees, self.coefficients))


def get_target(target) -> HermiteTarget:
    """A :class:`HermiteTarget` from itself or a spec string."""
    if isinstance(target, HermiteTarget):
        return target
    return HermiteTarget.parse(target)
