"""Matmul-precision policy of the simulations (issue 21, "GPU numerics").

``matmul_precision`` (an option of both simulation models) takes one of :data:`MATMUL_PRECISIONS`:

* ``"highest"`` (the default), ``"high"``, ``"default"``: JAX's precision of float32 matmuls on
  accelerators (``jax.default_matmul_precision``).  On an NVIDIA GPU from Ampere on, ``default`` and
  ``high`` let XLA use TF32 tensor cores (inputs rounded to 10 mantissa bits) for float32 dots; ``highest``
  forces full float32 products, so reduced precision is never used silently.  On a CPU, XLA computes every
  float32 dot in float32 whatever the precision attribute says, so the three give bit-identical results
  (tested).  float64 dots are full precision everywhere.
* ``"tf32"``, ``"bf16"``: *emulation*, on any device.  The inputs of the network's own matmuls are
  rounded with ``jax.lax.reduce_precision`` to TF32 (8 exponent, 10 mantissa bits) or bfloat16 (8, 7),
  round to nearest even, and the product is accumulated at the array's own precision, as tensor cores do;
  every other dot runs at ``highest``.  The backward pass rounds the inputs of its matmuls too (the
  incoming cotangent and the saved rounded operand: :func:`rounded_matmul`'s custom VJP), as a GPU's
  backward TF32 matmuls would.  "The network's matmuls" are the forward pass of the built-in networks
  (teacher-student: x w and phi(x w) a, and the features phi(x w) of the Gibbs readout; modular: the
  readout h^2 a and the matmuls of the closed-form whole-table loss); the observables, the Gibbs readout's
  Gram algebra and the Langevin update are left exact.
  With ``dtype = "float64"`` the rounding applies just the same (the exponent is clipped to 8 bits too, so
  |x| > 3.4e38 would overflow, far outside any network here) and the sums run in float64: float64 against
  float64 + tf32 isolates the effect of the input rounding from that of float32 accumulation.

How it takes effect inside ``jit``: the precision is a parameter of every ``dot_general`` in the traced
program, fixed when the program is traced.  :func:`precision_context` is entered around the whole run
(tracing, lowering and compiling happen inside it, and ``jax.jit``'s cache is keyed on the setting), and
:func:`with_matmul_precision` also enters it inside every function of the task, so a task traced by any
caller carries it; the lowered StableHLO of a step shows ``precision = [HIGHEST, HIGHEST]`` on its dots
(``tests/test_precision.py`` checks the text).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from grokphase.errors import ParameterError

#: JAX's precision settings of float32 matmuls (names of ``jax.default_matmul_precision``)
DEVICE_PRECISIONS = ("highest", "high", "default")
#: emulated reduced-precision matmul inputs: (exponent bits, mantissa bits)
EMULATED = {"tf32": (8, 10), "bf16": (8, 7)}
MATMUL_PRECISIONS = DEVICE_PRECISIONS + tuple(EMULATED)
DEFAULT_MATMUL_PRECISION = "highest"


def check_matmul_precision(value, name: str = "matmul_precision") -> str:
    """``value`` if it is one of :data:`MATMUL_PRECISIONS`, else a ParameterError naming ``name`` and the
    allowed values."""
    if not isinstance(value, str) or value not in MATMUL_PRECISIONS:
        raise ParameterError(f"unknown {name} {value!r}; choose from {', '.join(MATMUL_PRECISIONS)}")
    return value


def device_precision(policy: str) -> str:
    """The ``jax.default_matmul_precision`` of a policy: its own name, or ``highest`` for an emulated one
    (the rounding is then the only reduction of precision, on any device)."""
    return "highest" if check_matmul_precision(policy) in EMULATED else policy


def precision_context(policy: str):
    """Context manager: float32 matmuls traced inside it get the policy's device precision."""
    return jax.default_matmul_precision(device_precision(policy))


def round_inputs(x, policy: str | None):
    """``x`` rounded to the policy's emulated format (round to nearest even; :data:`EMULATED`), unchanged
    for a device policy or None."""
    if policy not in EMULATED:
        return x
    exponent, mantissa = EMULATED[policy]
    return jax.lax.reduce_precision(x, exponent_bits=exponent, mantissa_bits=mantissa)


@functools.lru_cache(maxsize=None)
def rounded_matmul(policy: str) -> Callable:
    """``matmul(a, b)`` with both inputs rounded (:func:`round_inputs`); its VJP rounds the inputs of the
    backward matmuls as well (the cotangent, and the other operand, already rounded).  Every product is
    computed at ``HIGHEST`` precision, set on the dots themselves: the backward pass is traced where the
    gradient is taken, which may be outside any precision context, and the rounding must be the only
    reduction of precision on a GPU too."""
    check_matmul_precision(policy)
    exact = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)

    @jax.custom_vjp
    def matmul(a, b):
        return exact(round_inputs(a, policy), round_inputs(b, policy))

    def fwd(a, b):
        ra, rb = round_inputs(a, policy), round_inputs(b, policy)
        return exact(ra, rb), (ra, rb)

    def bwd(res, g):
        ra, rb = res
        return jax.vjp(exact, ra, rb)[1](round_inputs(g, policy))

    matmul.defvjp(fwd, bwd)
    return matmul


def network_matmul(policy: str | None) -> Callable:
    """The matmul of a network's forward pass under ``policy``: ``jnp.matmul`` (what ``@`` calls: the same
    program, bit for bit) unless the policy emulates a reduced format (:func:`rounded_matmul`)."""
    return rounded_matmul(policy) if policy in EMULATED else jnp.matmul


def with_precision(fn: Callable, policy: str) -> Callable:
    """``fn`` traced under :func:`precision_context` (a no-op wrapper's cost outside tracing)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with precision_context(policy):
            return fn(*args, **kwargs)

    return wrapped


def with_matmul_precision(task, policy: str):
    """A :class:`grokphase.sims.driver.Task` whose functions are traced under the policy's device
    precision (every dot they create, forward and backward, carries it)."""
    check_matmul_precision(policy)
    fields = {name: with_precision(value, policy) for name, value in task._asdict().items()
              if callable(value) and not isinstance(value, type)}
    return task._replace(**fields)

