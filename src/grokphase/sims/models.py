"""Network models as Flax modules (THEORY.md §3, eq. 2; §4 for the modular model later).

A model is any Flax module whose ``apply({"params": theta}, x)`` maps a batch of inputs ``x`` of
shape (n, ...) to outputs of shape (n,) (or (n, k)).  Its parameters ``theta`` are the *physical*
weights.  The simulation engine never samples theta directly: it samples unit-variance variables z
with theta = prior_std * z (leaf by leaf), which is Langevin dynamics preconditioned by the prior
covariance (see :mod:`grokphase.sims.langevin`).  A user model therefore only needs the standard
Flax call signature plus a ``prior_std(params_shapes, hyper)`` rule (see :func:`erf_prior_std`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from grokphase.sims import special
from grokphase.sims.precision import network_matmul
from grokphase.theory.single_index import get_activation


def network_activation(activation) -> Callable[[jax.Array], jax.Array]:
    """The JAX function of an activation for the networks: "erf" is :func:`grokphase.sims.special.erf`
    (so the paper's model stays bit-identical), every other registry name (relu, tanh, gelu, silu) the
    single-index registry's function (:func:`grokphase.theory.single_index.get_activation`); a callable
    is used as it is.  ParameterError for an unknown name."""
    if isinstance(activation, str) and activation == "erf":
        return special.erf
    if callable(activation) and not isinstance(activation, str):
        return activation.fn if hasattr(activation, "fn") else activation
    return get_activation(activation).fn


class TwoLayerNet(nn.Module):
    """f(x) = sum_i a_i phi(w_i . x)  (eq. 2 with phi = erf by default: :func:`grokphase.sims.special.erf`, a
    vectorised float64 erf, XLA's erf in float32).  ``activation``: a callable or a registry name
    (:func:`network_activation`: erf, relu, tanh, gelu, silu).

    Parameters: ``w`` of shape (d, N) (column i is neuron i's input weights w_i) and ``a`` of shape
    (N,).  The initialisers draw unit normals: the engine multiplies by the prior standard
    deviations, so ``init`` gives a prior draw of the unit variables, not of theta.

    ``rounding`` (None, "tf32" or "bf16"): the inputs of both matmuls rounded to that format, forward and
    backward (:func:`grokphase.sims.precision.network_matmul`); None is the plain ``@``, bit for bit.
    """

    N: int
    activation: Callable[[jax.Array], jax.Array] | str = special.erf
    rounding: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        w = self.param("w", nn.initializers.normal(1.0), (d, self.N), x.dtype)
        a = self.param("a", nn.initializers.normal(1.0), (self.N,), x.dtype)
        matmul = network_matmul(self.rounding)
        return matmul(network_activation(self.activation)(matmul(x, w)), a)


def erf_prior_std(params: Any, hyper: Any) -> Any:
    """Prior standard deviations of :class:`TwoLayerNet` (THEORY.md §0): w ~ N(0, sw2/d I) and
    a_i ~ N(0, sa2/N).  ``params`` only supplies shapes; ``hyper`` must have ``sw2`` and ``sa2``
    (array leaves, so they may differ between ensemble members)."""
    w = params["w"]
    d, N = w.shape
    return {"w": jnp.sqrt(hyper.sw2 / d), "a": jnp.sqrt(hyper.sa2 / N)}


def scale_params(z: Any, std: Any) -> Any:
    """theta = std * z, leaf by leaf (std leaves are scalars or broadcast against z)."""
    return jax.tree_util.tree_map(lambda zz, s: jnp.asarray(s, zz.dtype) * zz, z, std)
