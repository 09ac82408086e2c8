"""The annotated xarray Dataset of a sigma^2 sweep of the single-index family's exact finite-d theory
(THEORY.md §6): per point and per degree k of the discrepancy basis K, the learned fraction
1 - v_k/yhat_k, the discrepancy, and per point the phase, status, free energy and droplet fraction.

The model parameters describe the beta = 1 configuration; ``beta`` applies the Table-1 scaling
(:meth:`grokphase.theory.teacher_student.TeacherStudentParams.scaled` with alpha = beta, the same
arithmetic as ``grokphase theory teacher-student``).  With ``k_max`` the basis is the target's degrees
plus every degree <= k_max the activation couples (:func:`.finite_d.coupled_degrees`), and the shift
of each target degree's learned fraction against the target's own basis is stored (``basis_shift``).
With ``nngp`` the per-degree NNGP eigenvalues (exact Rayleigh quotients) and their equivalent-kernel
learned fractions lambda_k/(lambda_k + s2/n) are added."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from grokphase.io import annotate
from grokphase.theory.single_index.activations import get_activation
from grokphase.theory.single_index.finite_d import coupled_degrees, solve_finite_d
from grokphase.theory.single_index.nngp import nngp_eigenvalues
from grokphase.theory.single_index.overlaps import MAX_DEGREE, check_degrees
from grokphase.theory.single_index.params import PARAM_NAMES, SingleIndexParams
from grokphase.theory.single_index.target import get_target
from grokphase.errors import ParameterError
from grokphase.theory.teacher_student.params import TeacherStudentParams

KIND = "theory.single_index.sweep"


def scaled_params(base: SingleIndexParams, s2, beta: float = 1.0) -> SingleIndexParams:
    """The Table-1 scaled parameters (alpha = beta) at every sigma^2 of ``s2`` (beta = 1 units)."""
    fields = {k: getattr(base, k) for k in PARAM_NAMES if k != "s2"}
    ts = TeacherStudentParams(**fields, s2=np.asarray(s2, dtype=np.float64)).scaled(beta=beta)
    params = SingleIndexParams.from_teacher_student(ts)
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            u = np.asarray(params.u, dtype=np.float64)
        except OverflowError:                  # Python floats raise where NumPy gives inf
            u = np.array(np.inf)
    if not np.all(np.isfinite(u) & (u > 0)):   # n^2 or s2^2 d N beyond float64 (a huge beta)
        raise ParameterError(f"u = n^2 sa2/(s2^2 d N) is not a finite positive float64 number at beta = {beta:g}")
    return params


def resolve_degrees(target, activation, degrees=None, k_max: int | None = None) -> tuple[int, ...]:
    """The discrepancy basis: ``degrees`` (which must contain every degree of the target), or the
    target's degrees plus, with ``k_max``, every degree <= k_max the activation couples."""
    target = get_target(target)
    if degrees is not None and k_max is not None:
        raise ParameterError("give either degrees or k_max, not both")
    if k_max is not None:
        if int(k_max) != k_max or not 0 <= k_max <= MAX_DEGREE:
            raise ParameterError(f"k_max must be an integer in 0..{MAX_DEGREE} (got {k_max!r})")
        return tuple(sorted(set(target.degrees) | set(coupled_degrees(activation, int(k_max)))))
    if degrees is None:
        return target.degrees
    degrees = tuple(sorted(check_degrees(degrees)))
    missing = [k for k in target.degrees if k not in degrees]
    if missing:
        raise ParameterError(f"the degrees {','.join(map(str, degrees))} miss the target's degree "
                             f"{missing[0]}: the basis must contain every degree of the target "
                             f"({','.join(map(str, target.degrees))})")
    return degrees


def build_single_index_sweep(base: SingleIndexParams, s2, target, activation="erf", degrees=None, *,
                             k_max: int | None = None, beta: float = 1.0, nngp: bool = False) -> xr.Dataset:
    """Solve the exact finite-d theory at every sigma^2 of ``s2`` (beta = 1 units) and return the
    annotated Dataset (dims ``s2`` and ``degree``).  ``base`` gives N, n, d, sa2, sw2 (its s2 is
    ignored); see the module docstring for ``k_max``, ``beta`` and ``nngp``.  A point the solver cannot
    resolve raises SolverError naming it."""
    target = get_target(target)
    act = get_activation(activation)
    s2 = np.atleast_1d(np.asarray(s2, dtype=np.float64))
    basis = resolve_degrees(target, act, degrees, k_max)
    params = scaled_params(base, s2, beta)
    sol = solve_finite_d(params, target, act, basis)
    yhat = target.yhat(basis)
    fact = np.sqrt([float(math.factorial(k)) for k in basis])
    dims = ("s2", "degree")
    data = {
        "s2_scaled": xr.Variable(("s2",), np.asarray(params.s2), {"long_name": "sigma^2 of the scaled model"}),
        "u": xr.Variable(("s2",), np.asarray(params.u), {"long_name": "u = n^2 sa2/(s2^2 d N)"}),
        "r": xr.Variable(("s2",), np.asarray(params.r), {"long_name": "r = s2 N/n"}),
        "target_coefficient": xr.Variable(("degree",), np.array([target.coefficient(k) for k in basis]),
                                          {"long_name": "c_k of He_k in the target"}),
        "yhat": xr.Variable(("degree",), yhat, {"long_name": "target in the orthonormal basis, c_k sqrt(k!)"}),
        "learned": xr.Variable(dims, np.asarray(sol.learned),
                               {"long_name": "learned fraction 1 - v_k/yhat_k (NaN: not a target degree)"}),
        "discrepancy": xr.Variable(dims, np.asarray(sol.v), {"long_name": "discrepancy v_k (orthonormal basis)"}),
        "discrepancy_coefficient": xr.Variable(dims, np.asarray(sol.v) / fact,
                                               {"long_name": "discrepancy coefficient of He_k, v_k/sqrt(k!)"}),
        "phase": xr.Variable(("s2",), np.asarray(sol.phase), {"long_name": "0 GFL, 1 GMFL-I, 2 GMFL-II"}),
        "status": xr.Variable(("s2",), np.asarray(sol.status), {"long_name": "solver status code"}),
        "free_energy": xr.Variable(("s2",), np.asarray(sol.free_energy), {"long_name": "max F / r per neuron"}),
        "droplet_fraction": xr.Variable(("s2",), np.asarray(sol.droplet_fraction),
                                        {"long_name": "prior-relative mass of the droplet basins"}),
        "residual": xr.Variable(("s2",), np.asarray(sol.residual), {"long_name": "|grad F|"}),
        "quad_error": xr.Variable(("s2",), np.asarray(sol.quad_error), {"long_name": "half-grid difference"}),
        "iterations": xr.Variable(("s2",), np.asarray(sol.iterations), {"long_name": "Newton iterations"}),
    }
    if k_max is not None:
        small = target.degrees
        ref = solve_finite_d(params, target, act, small)
        own = np.full((s2.size, len(basis)), np.nan)
        for i, k in enumerate(small):
            own[:, basis.index(k)] = np.asarray(ref.learned)[:, i]
        data["learned_target_basis"] = xr.Variable(dims, own, {
            "long_name": "learned fraction with the target's degrees as the basis (NaN: not a target degree)"})
        data["basis_shift"] = xr.Variable(dims, np.asarray(sol.learned) - own, {
            "long_name": "learned fraction in the enlarged basis minus in the target's basis"})
        data["free_energy_target_basis"] = xr.Variable(("s2",), np.asarray(ref.free_energy))
    if nngp:
        point = SingleIndexParams(**{k: float(np.asarray(getattr(params, k)).flat[0]) for k in PARAM_NAMES})
        lam = nngp_eigenvalues(point, act, basis)
        n = float(point.n)
        data["nngp_eigenvalue"] = xr.Variable(("degree",), lam, {
            "long_name": "NNGP eigenvalue sa2 E_prior[g_k^2] (exact Rayleigh quotient)"})
        data["gp_learned"] = xr.Variable(dims, lam[None, :] / (lam[None, :] + np.asarray(params.s2)[:, None] / n), {
            "long_name": "GP (EK) learned fraction lambda_k/(lambda_k + s2/n)"})
    ds = xr.Dataset(data, coords={"s2": s2, "degree": np.array(basis, dtype=np.int64)})
    parameters = {k: float(np.asarray(getattr(base, k))) for k in PARAM_NAMES if k != "s2"}
    parameters.update({"s2": s2.tolist(), "beta": float(beta), "activation": act.name, "target": target.spec,
                       "degrees": list(basis), "k_max": k_max, "nngp": bool(nngp), "approximation": "exact"})
    return annotate(ds, kind=KIND, parameters=parameters,
                    extra={"activation": act.name, "target": target.spec, "degrees": ",".join(map(str, basis))})
