"""grokphase: mean-field theory and Langevin simulations of grokking as a first-order phase transition.

Reference: N. Rubin, I. Seroussi, Z. Ringel, *Grokking as a First Order Phase Transition in Two Layer
Networks*, ICLR 2024 (arXiv 2310.03789).

Importing grokphase enables JAX's 64-bit mode: the theory solvers run in float64 (their equations
involve exponentials of O(d) actions and differences of O(d) numbers).  Simulations choose their
dtype explicitly (float32 is allowed there), so this does not slow them down.

It also sets ``OPENBLAS_NUM_THREADS=1`` unless the variable is already set (before SciPy loads its
OpenBLAS, which JAX's CPU LAPACK kernels call): the factorisations here are small, and a
multithreaded OpenBLAS on a machine whose other cores are busy was measured 18-50x slower (the
Gibbs readout's Cholesky at N = 256 on 2 cores).  Set the variable yourself to override.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"


def enable_compilation_cache(path: str | None = None) -> str:
    """Keep compiled XLA executables on disk (JAX's persistent cache) so that later processes skip
    the few seconds each solver takes to compile.  Default location: ``$GROKPHASE_CACHE_DIR`` or
    ``~/.cache/grokphase/jax``.  The CLI calls this; set ``GROKPHASE_CACHE_DIR=off`` to disable."""
    path = path or os.environ.get("GROKPHASE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "grokphase", "jax")
    if path == "off":
        return path
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path

from grokphase.errors import GrokphaseError, ParameterError, ResultFileError, SolverError  # noqa: E402

__all__ = ["__version__", "enable_compilation_cache", "GrokphaseError", "ParameterError", "ResultFileError", "SolverError"]
