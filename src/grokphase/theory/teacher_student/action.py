"""The single-neuron action of the teacher-student model and its overlaps with the target basis
(eq. 13, App. A.2-A.4; THEORY.md §3, §3b).  v = [b, sqrt(6) c] are the reduced discrepancy
coordinates in which the free energy is written (THEORY.md §2)."""

from __future__ import annotations

import math

import jax.numpy as jnp

from grokphase.theory.teacher_student.params import TeacherStudentParams

SQRT6 = math.sqrt(6.0)


def overlaps(q, sw2, t=None):
    """Neuron overlaps with the orthonormal basis (App. A.3-A.4):
    g1(q) = <Hhat1, erf(w·x)> = 2q/sqrt(pi D), g3(q) = <Hhat3, erf(w·x)> = -4q^3/(sqrt(6 pi) D^{3/2}),
    D = 1 + 2(t + q^2) with t = |w_perp|^2 (concentrated at sw2 unless ``t`` is given).
    Returns an array of shape ``broadcast(q, t).shape + (2,)``."""
    q = jnp.asarray(q)
    D = 1.0 + 2.0 * ((sw2 if t is None else t) + q * q)
    g1 = 2.0 * q / jnp.sqrt(jnp.pi * D)
    g3 = -4.0 * q**3 / (jnp.sqrt(6.0 * jnp.pi) * D**1.5)
    return jnp.stack([g1, g3], axis=-1)


def reduced_action(q, b, c, u, sw2):
    """Shat(q) = S(q)/d = q^2/(2 sw2) - (2u/pi)(q^2/D)(b - 2c q^2/D)^2 (eq. 13, App. A.2)."""
    q2 = q * q
    D = 1.0 + 2.0 * (sw2 + q2)
    x = q2 / D
    return q2 / (2.0 * sw2) - (2.0 * u / jnp.pi) * x * (b - 2.0 * c * x) ** 2


def reduced_action_qt(q, t, b, c, u, sw2):
    """Two-variable scaling-limit action (THEORY.md §3b):
    Shat(q, t) = (q^2 + t)/(2 sw2) - log(t)/2 - (2u/pi)(q^2/D)(b - 2c q^2/D)^2, D = 1 + 2(q^2 + t).
    At t = sw2 it is :func:`reduced_action` plus the constant (1 - log sw2)/2."""
    q2 = q * q
    D = 1.0 + 2.0 * (t + q2)
    x = q2 / D
    return (q2 + t) / (2.0 * sw2) - 0.5 * jnp.log(t) - (2.0 * u / jnp.pi) * x * (b - 2.0 * c * x) ** 2


def action(q, b, c, params: TeacherStudentParams, t=None):
    """Single-neuron action S(q; b, c) = d * Shat (eq. 13); with ``t`` the finite-d two-variable action
    S(q, t) = d (q^2 + t)/(2 sw2) - ((d-3)/2) log t - d (2u/pi) x (b - 2cx)^2 of THEORY.md §3b, whose
    exp(-S) is the joint density of (q, |w_perp|^2) per unit q per unit t, up to normalisation."""
    if t is None:
        return params.d * reduced_action(q, b, c, params.u, params.sw2)
    d = params.d
    q2 = q * q
    x = q2 / (1.0 + 2.0 * (t + q2))
    return (d * (q2 + t) / (2.0 * params.sw2) - 0.5 * (d - 3.0) * jnp.log(t)
            - d * (2.0 * params.u / jnp.pi) * x * (b - 2.0 * c * x) ** 2)


def _yhat(eps):
    """The teacher in reduced coordinates: yhat = [1, sqrt(6) eps]."""
    return jnp.stack([jnp.ones_like(eps), SQRT6 * eps])
