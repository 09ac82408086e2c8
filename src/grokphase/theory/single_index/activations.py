"""Activations of the single-index family (THEORY.md §6): a small registry of named activations
(erf, relu, tanh, gelu, silu) and :class:`Activation`, which also wraps any JAX-traceable callable.

An activation enters the theory only through its Hermite moments m_k(V) = E_u[phi(sqrt(V) u) He_k(u)]
(u ~ N(0, 1)), see :mod:`.overlaps`; ``parity`` (+1 even, -1 odd, 0 neither) says which of them vanish
identically, and ``closed_form`` names the activations whose overlaps are known in closed form."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from grokphase.errors import ParameterError


def relu(x):
    return jnp.maximum(x, 0.0)


def gelu(x):
    """The exact GELU x Phi(x) (not the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


def silu(x):
    return x * jax.nn.sigmoid(x)


@dataclasses.dataclass(frozen=True)
class Activation:
    """A neuron's activation phi.

    Attributes:
      name: registry name (or a description of a user callable).
      fn: jnp-traceable elementwise function.
      parity: +1 even, -1 odd, 0 neither (only used to know which overlaps vanish: 0 is always safe).
      closed_form: the overlaps g_k have a closed form (erf, relu); others use Gauss-Hermite.
      bounded: |phi| <= 1 everywhere (erf, tanh), which bounds every overlap.

    Frozen and hashable (by the identity of ``fn``), so it can be a static argument of ``jit``."""

    name: str
    fn: Callable
    parity: int = 0
    closed_form: bool = False
    bounded: bool = False

    def __call__(self, x):
        return self.fn(x)


ACTIVATIONS = {
    "erf": Activation("erf", jax.scipy.special.erf, parity=-1, closed_form=True, bounded=True),
    "relu": Activation("relu", relu, parity=0, closed_form=True),
    "tanh": Activation("tanh", jnp.tanh, parity=-1, bounded=True),
    "gelu": Activation("gelu", gelu, parity=0),
    "silu": Activation("silu", silu, parity=0),
}


def get_activation(activation) -> Activation:
    """An :class:`Activation` from a registry name, an :class:`Activation`, or any callable (wrapped
    with parity 0 and no closed form).  ParameterError for an unknown name."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation]
        except KeyError:
            raise ParameterError(f"unknown activation {activation!r}; choose from {tuple(ACTIVATIONS)} "
                                 "or pass a JAX-traceable callable") from None
    if callable(activation):
        return Activation(getattr(activation, "__name__", repr(activation)), activation)
    raise ParameterError(f"activation must be a name from {tuple(ACTIVATIONS)} or a callable "
                         f"(got {activation!r})")
