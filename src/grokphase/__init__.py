"""grokphase: mean-field theory and Langevin simulations of grokking as a first-order phase transition.

Reference: N. Rubin, I. Seroussi, Z. Ringel, *Grokking as a First Order Phase Transition in Two Layer
Networks*, ICLR 2024 (arXiv 2310.03789).

Importing grokphase enables JAX's 64-bit mode: the theory solvers run in float64 (their equations
involve exponentials of O(d) actions and differences of O(d) numbers).  Simulations choose their
dtype explicitly (float32 is allowed there), so this does not slow them down.
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"

from grokphase.errors import GrokphaseError, ParameterError, ResultFileError, SolverError  # noqa: E402

__all__ = ["__version__", "GrokphaseError", "ParameterError", "ResultFileError", "SolverError"]
