"""Bracketed root finders: exact roots of closed-form functions, robustness on steep and flat ones."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokphase.theory.roots import bisect, chandrupatla

# (f, lo, hi, exact root); the stopping rule guarantees |x - root| <= 2 eps |x| + 1e-15 (bracket width)
CASES = [
    (lambda x: x**3 - 2.0, 0.0, 2.0, 2.0 ** (1 / 3)),
    (lambda x: jnp.cos(x) - x, 0.0, 1.0, 0.7390851332151607),            # Dottie number
    (lambda x: jnp.tanh(400.0 * (x - 0.3)), 0.0, 1.0, 0.3),              # nearly a step
    (lambda x: (x - 0.7) ** 5, 0.0, 1.0, 0.7),                           # flat (5-fold) root
    (lambda x: jnp.exp(x) - 1e-8, -30.0, 5.0, math.log(1e-8)),
]


@pytest.mark.parametrize("f, lo, hi, root", CASES)
def test_chandrupatla_finds_closed_form_roots(f, lo, hi, root):
    x, it = jax.jit(lambda: chandrupatla(f, lo, hi))()
    assert abs(float(x) - root) <= 2e-15 + 4 * np.finfo(float).eps * abs(root)
    assert int(it) <= 60


def test_chandrupatla_is_faster_than_bisection_and_vmaps():
    roots = jnp.linspace(0.1, 0.9, 17)
    f = lambda r: (lambda x: jnp.sinh(3.0 * (x - r)) + (x - r))  # noqa: E731
    xs, its = jax.jit(jax.vmap(lambda r: chandrupatla(f(r), 0.0, 1.0)))(roots)
    np.testing.assert_allclose(xs, roots, atol=4e-15)
    assert int(its.max()) <= 12  # superlinear: bisection needs ~50 halvings for the same accuracy
    xb = jax.vmap(lambda r: bisect(f(r), 0.0, 1.0))(roots)
    np.testing.assert_allclose(xb, roots, atol=4e-16)
