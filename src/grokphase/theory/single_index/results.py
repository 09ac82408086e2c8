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
from grokphase.theory.single_index.limit import SingleIndexLimit, limit_support, solve_limit, solve_transition
from grokphase.theory.single_index.nngp import nngp_eigenvalues
from grokphase.theory.single_index.overlaps import MAX_DEGREE, check_degrees
from grokphase.theory.single_index.params import PARAM_NAMES, SingleIndexParams
from grokphase.theory.single_index.target import get_target
from grokphase.errors import ParameterError
from grokphase.theory.status import Status
from grokphase.theory.teacher_student.params import TeacherStudentParams, check_approximation

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
                             k_max: int | None = None, beta: float = 1.0, nngp: bool = False,
                             approximation: str = "exact", finite_d: bool = True, limit: bool = False,
                             transition: bool = False, corrections=()) -> xr.Dataset:
    """Solve the finite-d theory (``approximation`` "exact" or "concentrated") at every sigma^2 of
    ``s2`` (beta = 1 units) and return the annotated Dataset (dims ``s2`` and ``degree``).  ``base``
    gives N, n, d, sa2, sw2 (its s2 is ignored); see the module docstring for ``k_max``, ``beta`` and
    ``nngp``.  With ``limit``: the scaling limit per sigma^2 (``limit_*`` variables; ``finite_d=False``
    leaves the finite-d solve out); with ``transition``: Claim IV's s2_c, u_c, q*_c, t*_c in the
    attributes (NaN with ``s2_c_reason`` where the argument does not carry over or no crossing
    lies in s2/100 .. 100 s2).  A point the solver cannot resolve raises SolverError naming it.
    ``corrections=("ridge",)``: also the renormalised-ridge (finite-n) theory
    (:func:`~grokphase.theory.single_index.ridge.solve_finite_d_ridge`): ``ridge_learned`` over (s2,
    degree), ``ridge_kappa``, ``ridge_s2_eff``, ``ridge_phase`` over s2."""
    from grokphase.theory.results import check_corrections
    corrections = check_corrections(corrections)
    if corrections and not finite_d:
        raise ParameterError("corrections apply to the finite-d theory (they vanish in the scaling limit)")
    target = get_target(target)
    act = get_activation(activation)
    check_approximation(approximation)
    s2 = np.atleast_1d(np.asarray(s2, dtype=np.float64))
    basis = resolve_degrees(target, act, degrees, k_max)
    params = scaled_params(base, s2, beta)
    if not finite_d:
        return _limit_only(base, s2, target, act, basis, beta, approximation, limit, transition)
    sol = solve_finite_d(params, target, act, basis, approximation=approximation)
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
        ref = solve_finite_d(params, target, act, small, approximation=approximation)
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
    if "ridge" in corrections:
        from grokphase.theory.single_index.ridge import solve_finite_d_ridge
        rr = solve_finite_d_ridge(params, target, act, basis, approximation=approximation)
        data["ridge_learned"] = xr.Variable(dims, np.asarray(rr.solution.learned), {
            "long_name": "learned fraction, renormalised-ridge (finite-n) theory (NaN: not a target degree)"})
        data["ridge_kappa"] = xr.Variable(("s2",), rr.kappa, {"long_name": "renormalised ridge kappa (EK: s2/n)"})
        data["ridge_s2_eff"] = xr.Variable(("s2",), rr.s2_eff, {"long_name": "effective noise n kappa (scaled model)"})
        data["ridge_phase"] = xr.Variable(("s2",), np.asarray(rr.solution.phase), {"long_name": "0 GFL, 1 GMFL-I, 2 GMFL-II"})
    extra = {}
    if limit or transition:
        data.update(_limit_vars(base, s2, target, act, basis, approximation, limit))
        extra = _transition_attrs(base, target, act, basis, approximation) if transition else {}
    ds = xr.Dataset(data, coords={"s2": s2, "degree": np.array(basis, dtype=np.int64)})
    parameters = {k: float(np.asarray(getattr(base, k))) for k in PARAM_NAMES if k != "s2"}
    parameters.update({"s2": s2.tolist(), "beta": float(beta), "activation": act.name, "target": target.spec,
                       "degrees": list(basis), "k_max": k_max, "nngp": bool(nngp), "approximation": approximation,
                       **({"corrections": list(corrections)} if corrections else {})})
    return annotate(ds, kind=KIND, parameters=parameters,
                    extra={"activation": act.name, "target": target.spec, "degrees": ",".join(map(str, basis)),
                           "approximation": approximation, **extra})


def _limit_vars(base, s2, target, act, basis, approximation, limit: bool) -> dict:
    """``limit_*`` variables over (s2[, degree]); all NaN (status NO_BRANCH) with a ``reason``
    attribute where :func:`limit_support` says the argument does not carry over."""
    if not limit:
        return {}
    dims = ("s2", "degree")
    reason = limit_support(target, act, basis)
    sweep = SingleIndexParams(**{k: getattr(base.broadcast(), k) for k in PARAM_NAMES if k != "s2"}, s2=s2)
    if reason is None:
        lim = solve_limit(sweep, target, act, basis, approximation=approximation, check=False)
        ok = np.asarray(lim.status) == int(Status.CONVERGED)
        vals = {k: np.asarray(getattr(lim, k)) for k in SingleIndexLimit._fields}
        for k in ("learned", "v", "pi1", "q_star", "t_star", "free_energy", "kappa", "droplet_fraction"):
            vals[k] = np.where(ok[:, None] if vals[k].ndim == 2 else ok, vals[k], np.nan)
    else:
        nan = np.full(s2.shape, np.nan)
        vals = {k: nan for k in SingleIndexLimit._fields}
        vals.update(learned=np.full(s2.shape + (len(basis),), np.nan), v=np.full(s2.shape + (len(basis),), np.nan),
                    status=np.full(s2.shape, int(Status.NO_BRANCH)), phase=np.full(s2.shape, -1))
    attrs = {} if reason is None else {"reason": reason}
    out = {"limit_learned": xr.Variable(dims, vals["learned"], {"long_name": "scaling-limit learned fraction", **attrs}),
           "limit_discrepancy": xr.Variable(dims, vals["v"], {"long_name": "scaling-limit discrepancy v_k"})}
    for k in ("pi1", "q_star", "t_star", "kappa", "degeneracy", "free_energy", "droplet_fraction", "status", "phase"):
        out[f"limit_{k}"] = xr.Variable(("s2",), np.asarray(vals[k]), {"long_name": f"scaling-limit {k}", **attrs})
    return out


def _transition_attrs(base, target, act, basis, approximation) -> dict:
    reason = limit_support(target, act, basis)
    nan = float("nan")
    if reason is not None:
        return {"s2_c": nan, "u_c": nan, "q_star_c": nan, "t_star_c": nan, "s2_c_reason": reason}
    tr = solve_transition(base, target, act, basis, along="s2", approximation=approximation)
    if not bool(tr.found):
        return {"s2_c": nan, "u_c": nan, "q_star_c": nan, "t_star_c": nan,
                "s2_c_reason": "no GFL -> GMFL-I transition within s2/100 .. 100*s2 for these parameters"}
    return {"s2_c": float(tr.value), "u_c": float(tr.u), "q_star_c": float(tr.q_star), "t_star_c": float(tr.t_star)}


def _limit_only(base, s2, target, act, basis, beta, approximation, limit, transition) -> xr.Dataset:
    params = scaled_params(base, s2, beta)
    data = {"u": xr.Variable(("s2",), np.asarray(params.u), {"long_name": "u = n^2 sa2/(s2^2 d N)"}),
            "r": xr.Variable(("s2",), np.asarray(params.r), {"long_name": "r = s2 N/n"}),
            "yhat": xr.Variable(("degree",), target.yhat(basis)),
            **_limit_vars(base, s2, target, act, basis, approximation, limit)}
    extra = _transition_attrs(base, target, act, basis, approximation) if transition else {}
    ds = xr.Dataset(data, coords={"s2": s2, "degree": np.array(basis, dtype=np.int64)})
    parameters = {k: float(np.asarray(getattr(base, k))) for k in PARAM_NAMES if k != "s2"}
    parameters.update({"s2": s2.tolist(), "beta": float(beta), "activation": act.name, "target": target.spec,
                       "degrees": list(basis), "approximation": approximation, "limit": True})
    return annotate(ds, kind=KIND, parameters=parameters,
                    extra={"activation": act.name, "target": target.spec, "degrees": ",".join(map(str, basis)),
                           "approximation": approximation, **extra})


GP_KIND = "theory.single_index.gp"
PHASE_DIAGRAM_KIND = "theory.single_index.phase_diagram"


def build_single_index_gp_curve(base: SingleIndexParams, s2, n, target, activation="erf",
                                degrees=None) -> xr.Dataset:
    """The infinite-width (NNGP) baseline per degree: exact Rayleigh quotients lambda_k =
    sa2 E_prior[g_k^2] (:func:`.nngp.nngp_eigenvalues`) and the equivalent-kernel learning curves
    lambda_k/(lambda_k + s2/n) on the (s2, n) grid, with the half-learning n_half = s2/lambda_k."""
    target = get_target(target)
    act = get_activation(activation)
    basis = resolve_degrees(target, act, degrees)
    s2 = np.atleast_1d(np.asarray(s2, dtype=np.float64))
    n = np.atleast_1d(np.asarray(n, dtype=np.float64))
    point = SingleIndexParams(**{k: float(np.asarray(getattr(base, k))) for k in PARAM_NAMES})
    lam = nngp_eigenvalues(point, act, basis)
    with np.errstate(divide="ignore"):
        n_half = s2[:, None] / lam[None, :]
    learned = lam[None, None, :] / (lam[None, None, :] + s2[:, None, None] / n[None, :, None])
    data = {"nngp_eigenvalue": xr.Variable(("degree",), lam, {
                "long_name": "NNGP eigenvalue sa2 E_prior[g_k^2] (exact Rayleigh quotient)"}),
            "learned": xr.Variable(("s2", "n", "degree"), learned, {
                "long_name": "GP (EK) learned fraction lambda_k/(lambda_k + s2/n)"}),
            "n_half": xr.Variable(("s2", "degree"), n_half, {"long_name": "n at which half is learned, s2/lambda_k"})}
    ds = xr.Dataset(data, coords={"s2": s2, "n": n, "degree": np.array(basis, dtype=np.int64)})
    parameters = {k: float(np.asarray(getattr(base, k))) for k in PARAM_NAMES if k != "s2"}
    parameters.update({"s2": s2.tolist(), "n": n.tolist(), "activation": act.name, "target": target.spec,
                       "degrees": list(basis), "approximation": "exact"})
    return annotate(ds, kind=GP_KIND, parameters=parameters,
                    extra={"activation": act.name, "target": target.spec, "degrees": ",".join(map(str, basis)),
                           "learning_curve": "equivalent kernel: lambda/(lambda + s2/n)"})


def build_single_index_phase_diagram(base: TeacherStudentParams, x, y, target, activation="erf", degrees=None, *,
                                     limit: bool = False, beta: float = 1.0, alpha: float | None = None,
                                     sa2_times_N: float | None = None, approximation: str = "exact") -> xr.Dataset:
    """Phase label and learned fraction per degree on the (y, x) grid (finite d, or the scaling limit
    with ``limit``) for the family, with the scaling-limit boundary (x at the transition for every
    y; NaN and a ``boundary_reason`` attribute where the argument does not carry over).  ``base`` is
    a :class:`TeacherStudentParams` (its eps is ignored) so that the axes u and r and the
    ``sa2_times_N`` rule work as on the paper's model's diagrams; axis values are beta = 1 units."""
    from grokphase.theory.results import apply_axes

    check_approximation(approximation)
    target = get_target(target)
    act = get_activation(activation)
    basis = resolve_degrees(target, act, degrees)
    if x.name == y.name:
        raise ParameterError(f"--x and --y must be different parameters (both are {x.name})")
    for axis in (x, y):
        if axis.name == "eps":
            raise ParameterError("eps is not a parameter of this model (the target sets the coefficients): "
                                 "choose another axis")
    alpha = beta if alpha is None else alpha
    base = base.broadcast()
    X, Y = np.meshgrid(x.values, y.values)
    grid_ts = apply_axes(base, {x.name: X, y.name: Y}, sa2_times_N=sa2_times_N).scaled(alpha=alpha, beta=beta)
    grid = SingleIndexParams.from_teacher_student(grid_ts)
    dims = (y.name, x.name)
    reason = limit_support(target, act, basis)
    if limit:
        if reason is not None:
            raise ParameterError(f"the scaling limit is not available for {act.name} on target {target.spec}: {reason}")
        sol = solve_limit(grid, target, act, basis, approximation=approximation, check=True)
    else:
        sol = solve_finite_d(grid, target, act, basis, approximation=approximation)
    data = {"learned": xr.Variable(dims + ("degree",), np.asarray(sol.learned),
                                   {"long_name": "learned fraction 1 - v_k/yhat_k (NaN: not a target degree)"}),
            "discrepancy": xr.Variable(dims + ("degree",), np.asarray(sol.v)),
            "phase": xr.Variable(dims, np.asarray(sol.phase), {"long_name": "0 GFL, 1 GMFL-I, 2 GMFL-II"}),
            "status": xr.Variable(dims, np.asarray(sol.status)),
            "free_energy": xr.Variable(dims, np.asarray(sol.free_energy)),
            "droplet_fraction": xr.Variable(dims, np.asarray(sol.droplet_fraction))}
    for inv in ("u", "r"):
        key = inv if inv not in (x.name, y.name) else f"{inv}_grid"
        data[key] = xr.Variable(dims, np.broadcast_to(np.asarray(getattr(grid_ts, inv)), X.shape))
    extra = {}
    if reason is None:
        def make(xv):
            return apply_axes(base, {x.name: xv, y.name: y.values[:, None]},
                              sa2_times_N=sa2_times_N).scaled(alpha=alpha, beta=beta)
        rows = base.replace(eps=np.broadcast_to(np.asarray(base.eps), y.values.shape))
        lo, hi = float(x.values.min()), float(x.values.max())
        tr = solve_transition(rows, target, act, basis, along=x.name, lo=lo, hi=hi, log=x.log or lo > 0, make=make,
                              num_scan=65, approximation=approximation)
        boundary = tr.value
    else:
        boundary = np.full(y.values.shape, np.nan)
        extra["boundary_reason"] = reason
    data["boundary_x"] = xr.Variable((y.name,), boundary, {
        "long_name": f"{x.name} at the scaling-limit transition ({approximation}; NaN: none in range)"})
    ds = xr.Dataset(data, coords={x.name: (x.name, x.values), y.name: (y.name, y.values),
                                  "degree": np.array(basis, dtype=np.int64)})
    parameters = {k: np.asarray(getattr(base, k)).tolist() for k in PARAM_NAMES}
    parameters.update({"x": x.name, "x_values": x.values.tolist(), "y": y.name, "y_values": y.values.tolist(),
                       "limit": bool(limit), "beta": beta, "alpha": alpha, "sa2_times_N": sa2_times_N,
                       "approximation": approximation, "activation": act.name, "target": target.spec,
                       "degrees": list(basis)})
    return annotate(ds, kind=PHASE_DIAGRAM_KIND, parameters=parameters,
                    extra={"x_axis": x.name, "y_axis": y.name, "x_log": int(x.log), "y_log": int(y.log),
                           "solver": "limit" if limit else "finite-d", "approximation": approximation,
                           "activation": act.name, "target": target.spec, "degrees": ",".join(map(str, basis)),
                           **extra})
