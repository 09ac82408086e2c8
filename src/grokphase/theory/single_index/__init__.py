"""The single-index teacher-student family (THEORY.md §6): any activation phi, any Hermite target
y = sum_k c_k He_k(w*·x) (degrees 0..8), any discrepancy basis.

* :mod:`.activations` — the registry (erf, relu, tanh, gelu, silu) and wrapped callables;
* :mod:`.overlaps` — g_k(q, t) = (q/sqrt(V))^k m_k(V): closed forms for erf and relu, a 1-D Gaussian
  quadrature otherwise;
* :mod:`.target` — :class:`HermiteTarget` and its spec strings ``"1:1,3:-0.3"``;
* :mod:`.nngp` — per-degree NNGP eigenvalues (exact Rayleigh quotients);
* :mod:`.finite_d` — the exact (q, t) finite-d solver for a degree set K and the basis-convergence
  report.

The paper's model (erf, He1 + eps He3, K = {1, 3}) reproduces :mod:`grokphase.theory.teacher_student`
(``approximation="exact"`` and ``"concentrated"``).
* :mod:`.limit` — the scaling limit (GFL, GMFL-I) and Claim IV's transition where the paper's
  argument carries over (:func:`limit_support` says where it does not)."""

from grokphase.theory.single_index.activations import ACTIVATIONS, Activation, get_activation
from grokphase.theory.single_index.finite_d import (
    BasisConvergence,
    SingleIndexSolution,
    basis_convergence,
    coupled_degrees,
    solve_finite_d,
    solve_finite_d_batch,
)
from grokphase.theory.single_index.limit import (
    SingleIndexLimit,
    SingleIndexTransition,
    limit_support,
    solve_limit,
    solve_transition,
)
from grokphase.theory.single_index.overlaps import MAX_DEGREE, hermite_moments, overlaps
from grokphase.theory.single_index.params import SingleIndexParams
from grokphase.theory.single_index.target import PAPER_TARGET, HermiteTarget, get_target

__all__ = ["ACTIVATIONS", "Activation", "BasisConvergence", "HermiteTarget", "MAX_DEGREE", "PAPER_TARGET",
           "SingleIndexLimit", "SingleIndexParams", "SingleIndexSolution", "SingleIndexTransition", "basis_convergence", "coupled_degrees", "get_activation",
           "get_target", "hermite_moments", "limit_support", "overlaps", "solve_finite_d", "solve_finite_d_batch",
           "solve_limit", "solve_transition"]
