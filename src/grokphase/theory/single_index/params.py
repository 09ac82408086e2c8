"""Numeric parameters of the single-index family (THEORY.md §6): the teacher-student sizes and
priors without the paper's eps (the target is a :class:`~.target.HermiteTarget`, the activation an
:class:`~.activations.Activation`; both are static, not array leaves)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from grokphase._params import broadcast_fields, check_magnitudes, check_positive, is_traced, register_params
from grokphase.theory.teacher_student.params import MAGNITUDE_LAWS

PARAM_NAMES = ("N", "n", "d", "s2", "sa2", "sw2")


@register_params
@dataclasses.dataclass(frozen=True)
class SingleIndexParams:
    """N hidden width, n training points, d input dimension, s2 = sigma^2 (Langevin temperature),
    sa2 = sigma_a^2 (readout prior a_i ~ N(0, sa2/N); ``None``: the paper's 8/N), sw2 = sigma_w^2
    (w_i ~ N(0, sw2/d I)).  Fields may be arrays (broadcast); defaults: App. C at beta = 1."""

    N: Any = 700.0
    n: Any = 3000.0
    d: Any = 150.0
    s2: Any = 0.14
    sa2: Any = None
    sw2: Any = 0.5

    def __post_init__(self):
        if self.sa2 is None:
            check_positive("N", self.N)
            object.__setattr__(self, "sa2", 8.0 / np.asarray(self.N, dtype=np.float64))
        for k in PARAM_NAMES:
            check_positive(k, getattr(self, k))
        if not any(is_traced(getattr(self, k)) for k in PARAM_NAMES):
            broadcast_fields(self, PARAM_NAMES)
            defaults = dict(N=700.0, n=3000.0, d=150.0, s2=0.14, sa2=8.0 / 700.0, sw2=0.5)
            check_magnitudes({k: getattr(self, k) for k in PARAM_NAMES}, MAGNITUDE_LAWS, defaults)

    @classmethod
    def from_teacher_student(cls, params) -> "SingleIndexParams":
        """The same sizes and priors as a :class:`~grokphase.theory.teacher_student.TeacherStudentParams`
        (its eps belongs to the target: ``HermiteTarget.paper(eps)``)."""
        return cls(**{k: getattr(params, k) for k in PARAM_NAMES})

    @property
    def u(self):
        """u = n^2 sa2 / (s2^2 d N)."""
        return self.n**2 * self.sa2 / (self.s2**2 * self.d * self.N)

    @property
    def r(self):
        """r = s2 N / n."""
        return self.s2 * self.N / self.n

    def replace(self, **changes) -> "SingleIndexParams":
        return dataclasses.replace(self, **changes)

    def broadcast(self) -> "SingleIndexParams":
        """All fields as float64 NumPy arrays of the common broadcast shape."""
        _, arrays = broadcast_fields(self, PARAM_NAMES)
        return SingleIndexParams(**{k: np.array(v) for k, v in arrays.items()})
