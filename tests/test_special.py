"""The vectorised float64 erf of the simulations' activations: accuracy against SciPy and the exact
derivative."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special as sp

from grokphase.sims.special import erf


def test_float64_erf_matches_scipy_to_rounding():
    x = np.concatenate([np.linspace(-10, 10, 200_001), [0.0, 1.0, -1.0, 1 - 1e-12, 6.0, 30.0, -30.0]])
    got = np.asarray(erf(jnp.asarray(x, jnp.float64)))
    assert np.max(np.abs(got - sp.erf(x))) < 1e-15
    assert np.all(np.abs(got) <= 1.0) and np.array_equal(np.sign(got), np.sign(sp.erf(x)))


def test_derivative_is_exact_and_float32_uses_xla():
    x = jnp.linspace(-5, 5, 1001, dtype=jnp.float64)
    g = jax.vmap(jax.grad(erf))(x)
    np.testing.assert_allclose(g, 2 / math.sqrt(math.pi) * np.exp(-np.asarray(x) ** 2), rtol=1e-14, atol=1e-300)
    x32 = x.astype(jnp.float32)
    assert erf(x32).dtype == jnp.float32
    np.testing.assert_array_equal(erf(x32), jax.scipy.special.erf(x32))
