"""Theory computations packaged as xarray Datasets (the data behind every theory figure and file).

Functions here run the solvers and return annotated Datasets; :mod:`grokphase.plotting` only reads
them, and :func:`grokphase.io.save_dataset` writes them.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import xarray as xr

from grokphase.axes import Axis
from grokphase.errors import ParameterError
from grokphase.io import annotate
from grokphase.theory import gp
from grokphase.theory import modular as md
from grokphase.theory import modular_gp as mgp
from grokphase.theory import teacher_student as ts

PHASE_ATTRS = {"flag_values": np.array([0, 1, 2], dtype=np.int32), "flag_meanings": "GFL GMFL-I GMFL-II"}
STATUS_ATTRS = {
    "flag_values": np.array([int(s) for s in ts.Status], dtype=np.int32),
    "flag_meanings": " ".join(s.label for s in ts.Status),
}

FINITE_D_VARS = ("b", "c", "linear_learned", "cubic_learned", "droplet_fraction", "q_barrier", "q_droplet",
                 "free_energy", "residual", "quad_error", "iterations", "status", "phase", "t_droplet", "t_bulk")
LIMIT_VARS = ("b", "c", "linear_learned", "cubic_learned", "pi1", "droplet_fraction", "q_star", "kappa",
              "degeneracy", "free_energy", "status", "phase", "t_star")

DOCS = {
    "b": "discrepancy coefficient on H1 (eq. 12)",
    "c": "discrepancy coefficient on H3 (eq. 12)",
    "linear_learned": "1 - b",
    "cubic_learned": "1 - c/eps",
    "droplet_fraction": "fraction of neurons in the droplet basins |q| > barrier",
    "free_energy": "G/N, free energy per hidden neuron relative to the prior",
    "pi1": "scaling-limit droplet weight (p1 = pi1/d)",
    "q_star": "droplet overlap of the scaling limit",
    "degeneracy": "Lambda on the GFL branch; > 1 means GMFL-I",
    "t_droplet": "mean |w_perp|^2 of droplet neurons (|q| > q_barrier)",
    "t_bulk": "mean |w_perp|^2 of bulk neurons (|q| < q_barrier)",
    "t_star": "|w_perp|^2 at the scaling-limit droplet saddle",
}


def limit_profile(q, b, c, u, sw2, approximation: str):
    """Scaling-limit droplet profile along q: Shat(q) (concentrated) or min_t Shat(q, t) - Shat(0, sw2)
    (exact, the t-minimum by a dense scan in log t), both 0 at q = 0.  Broadcasts over the inputs."""
    q, b, c, u = (np.asarray(a, dtype=float) for a in (q, b, c, u))
    if approximation == "concentrated":
        return np.asarray(ts.reduced_action(q, b, c, u, sw2))
    t = sw2 * np.exp(np.linspace(np.log(1e-3), np.log(4.0), 4001))
    shape = np.broadcast_shapes(q.shape, b.shape, c.shape, u.shape)
    qq, bb, cc, uu = (np.broadcast_to(a, shape)[..., None] for a in (q, b, c, u))
    q2 = qq * qq
    D = 1.0 + 2.0 * (q2 + t)
    x = q2 / D
    S = (q2 + t) / (2.0 * sw2) - 0.5 * np.log(t) - (2.0 * uu / np.pi) * x * (bb - 2.0 * cc * x) ** 2
    return S.min(axis=-1) - (0.5 - 0.5 * np.log(sw2))


def _base_parameters(base: ts.TeacherStudentParams) -> dict:
    return {k: np.asarray(getattr(base, k)).tolist() for k in ts.PARAM_NAMES}


#: finite-n corrections of the finite-d teacher-student theory (``build_teacher_student_sweep``)
CORRECTIONS = ("ridge",)
RIDGE_VARS = {
    "b": "discrepancy coefficient on H1, renormalised-ridge theory",
    "c": "discrepancy coefficient on H3, renormalised-ridge theory",
    "linear_learned": "1 - b, renormalised-ridge (finite-n) theory",
    "cubic_learned": "1 - c/eps, renormalised-ridge (finite-n) theory",
    "droplet_fraction": "droplet fraction, renormalised-ridge theory",
    "phase": None,
    "status": None,
}


def check_corrections(corrections) -> tuple[str, ...]:
    """Validate a list of correction names (a comma-separated string is split); unknown or repeated
    names are a ParameterError naming them."""
    if corrections is None:
        return ()
    names = [c.strip() for c in corrections.split(",")] if isinstance(corrections, str) else list(corrections)
    names = [c for c in names if c]
    bad = [c for c in names if c not in CORRECTIONS]
    if bad:
        raise ParameterError(f"unknown correction {bad[0]!r}; choose from {', '.join(CORRECTIONS)}")
    if len(set(names)) != len(names):
        raise ParameterError(f"corrections: {', '.join(names)} names one twice")
    return tuple(names)


def _ridge_vars(params: ts.TeacherStudentParams, approximation: str, progress,
                dims: tuple[str, str] = ("beta", "s2")) -> dict[str, xr.Variable]:
    """The renormalised-ridge theory at the grid ``params`` (dimensions ``dims``) as ``ridge_*`` variables."""
    from grokphase.theory.teacher_student.finite_d import _more
    _more(progress, int(np.prod(np.broadcast_shapes(*(np.shape(getattr(params, k)) for k in ts.PARAM_NAMES)))))
    r = ts.solve_finite_d_ridge(params, approximation=approximation, progress=progress)
    out = {}
    for k, doc in RIDGE_VARS.items():
        v = _var(dims, getattr(r.solution, k), k)
        if doc:
            v.attrs["long_name"] = doc
        out[f"ridge_{k}"] = v
    s2 = np.broadcast_to(np.asarray(params.s2, dtype=float), r.kappa.shape)
    out["ridge_kappa"] = xr.Variable(dims, r.kappa, {"long_name": "renormalised ridge kappa (EK: s2/n)"})
    out["ridge_s2_eff"] = xr.Variable(dims, r.s2_eff, {"long_name": "effective noise n kappa solved at (scaled)"})
    out["ridge_shift"] = xr.Variable(dims, r.s2_eff / s2 - 1.0, {"long_name": "n kappa/s2 - 1"})
    out["ridge_lambda_perp"] = xr.Variable(dims, r.spectrum.perp,
                                           {"long_name": "kernel eigenvalue of each of the d - 1 perpendicular linear modes"})
    out["ridge_rest_trace"] = xr.Variable(dims, r.spectrum.rest, {"long_name": "kernel trace beyond the explicit modes"})
    out["ridge_iterations"] = xr.Variable((), r.iterations)
    return out


def _var(dims, values, name):
    attrs = dict(PHASE_ATTRS) if name == "phase" else dict(STATUS_ATTRS) if name == "status" else {}
    if name in DOCS:
        attrs["long_name"] = DOCS[name]
    return xr.Variable(dims, np.asarray(values), attrs)


def default_density_s2(s2_c: float) -> tuple[float, float]:
    """One sigma^2 on each side of the transition for the -log p(q) panels (rounded to 3 decimals,
    or to 3 significant digits where that would round to 0)."""
    def rounded(x):
        r = round(x, 3)
        return r if r > 0 else float(f"{x:.3g}")
    return rounded(0.75 * s2_c), rounded(1.35 * s2_c)


def _limit_or_nan(params: ts.TeacherStudentParams, approximation: str, check: bool) -> ts.LimitSolution:
    """The scaling limit at every point; with ``check`` a failing point raises, without it the
    failing points' fields are NaN (status records why), for curves drawn only where they exist."""
    lim = ts.solve_limit(params, approximation=approximation, check=check)
    ok = np.asarray(lim.status) == int(ts.Status.CONVERGED)
    if ok.all():
        return lim
    keep = ("status", "phase", "degeneracy", "u", "r")   # defined on the GFL branch alone
    return type(lim)(*[a if k in keep else np.where(ok, a, np.nan) for k, a in zip(lim._fields, lim)])


def build_teacher_student_sweep(base: ts.TeacherStudentParams, s2: Sequence[float], betas: Sequence[float],
                                alpha_ratio: float | None = None, *, limit: bool = True, finite_d: bool = True,
                                gp_baseline: bool = True, density_s2: Sequence[float] | None = None,
                                q_plot: float = 1.4, num_q: int = 561,
                                approximation: str = ts.DEFAULT_APPROXIMATION, check_limit: bool = True,
                                progress=None, corrections: Sequence[str] = ()) -> xr.Dataset:
    """Finite-d sweeps over sigma^2 for several beta (alpha = alpha_ratio * beta, default alpha = beta),
    the scaling limit, the GP baseline, the transition, and log p(q) at ``density_s2``, all in the
    chosen ``approximation`` ("exact" or "concentrated", recorded in the attributes; the transition
    of both is stored as ``s2_c_exact`` / ``s2_c_concentrated``).

    ``base`` and ``s2`` describe the beta = 1 configuration; scaling multiplies s2 by alpha/beta.
    ``check_limit=False``: a sweep point where the scaling limit has no solution gets NaN limit
    curves instead of an error (for callers that did not ask for the limit).  ``progress``: a
    tqdm-like bar (``reset(total=...)``, ``update(n)``) counting the finite-d points solved.
    ``corrections``: finite-n corrections of the finite-d theory to add, from :data:`CORRECTIONS`
    (``"ridge"``: the renormalised ridge, :func:`~grokphase.theory.teacher_student.solve_finite_d_ridge`,
    as ``ridge_*`` variables over (beta, s2)); files without corrections are unchanged.
    """
    ts.check_approximation(approximation)
    corrections = check_corrections(corrections)
    if corrections and not finite_d:
        raise ParameterError("corrections apply to the finite-d theory (the scaling limit has n -> infinity, "
                             "where they vanish); ask for the finite-d solver")
    s2 = np.asarray(s2, dtype=float)
    betas = np.asarray(betas, dtype=float)
    ratio = 1.0 if alpha_ratio is None else float(alpha_ratio)
    base = base.broadcast()
    sweep = base.replace(s2=s2)
    coords = {"s2": ("s2", s2, {"long_name": "sigma^2 at beta = 1 (scaled by alpha/beta)"}),
              "beta": ("beta", betas)}
    data = {}
    bb = betas[:, None]
    if finite_d and betas.size:  # every scaled configuration is validated before any work
        params = ts.TeacherStudentParams(**{k: np.broadcast_to(getattr(sweep, k), s2.shape)[None, :]
                                             for k in ts.PARAM_NAMES}).scaled(alpha=bb * ratio, beta=bb)
        if density_s2 is not None:
            _ = base.replace(s2=np.asarray(density_s2, dtype=float)[None, :]).scaled(alpha=bb * ratio, beta=bb)
    transitions = {ap: ts.solve_transition(base, along="s2", approximation=ap) for ap in ts.APPROXIMATIONS}
    transition = transitions[approximation]
    s2_c = float(transition.value) if transition.found else float("nan")

    if finite_d and betas.size:
        if density_s2 is None and np.isfinite(s2_c):
            density_s2 = default_density_s2(s2_c)
        if progress is not None:
            progress.reset(total=betas.size * (s2.size + (0 if density_s2 is None else len(density_s2))))
        sol = ts.solve_finite_d(params, approximation=approximation, progress=progress)
        for k in FINITE_D_VARS:
            data[k] = _var(("beta", "s2"), getattr(sol, k), k)
        for k in ("N", "n", "d", "sa2"):
            data[f"{k}_scaled"] = xr.Variable(("beta",), np.asarray(getattr(params, k))[:, 0] * np.ones(betas.size))
        data["s2_scaled"] = xr.Variable(("beta", "s2"), np.broadcast_to(params.s2, (betas.size, s2.size)))
        data["u"] = xr.Variable(("s2",), np.asarray(sweep.u) * np.ones(s2.size))
        data["r"] = xr.Variable(("s2",), np.asarray(sweep.r) * np.ones(s2.size))
        if "ridge" in corrections:
            data.update(_ridge_vars(params, approximation, progress))
        if density_s2 is not None:
            dens_s2 = np.asarray(density_s2, dtype=float)
            dparams = ts.TeacherStudentParams(**{k: np.asarray(getattr(base, k)) for k in ts.PARAM_NAMES})
            dparams = dparams.replace(s2=dens_s2[None, :]).scaled(alpha=bb * ratio, beta=bb)
            dsol = ts.solve_finite_d(dparams, approximation=approximation, progress=progress)
            q = np.linspace(-q_plot, q_plot, num_q)
            dp = dparams.broadcast()
            if approximation == "concentrated":
                S = np.asarray(ts.action(q[None, None, :], dsol.b[..., None], dsol.c[..., None],
                                         ts.TeacherStudentParams(**{k: np.asarray(getattr(dp, k))[..., None]
                                                                    for k in ts.PARAM_NAMES})))
                log_p = -S - dsol.log_norm[..., None]
            else:  # marginal over t, point by point (a handful of points)
                log_p = np.empty(dsol.b.shape + (num_q,))
                for idx in np.ndindex(dsol.b.shape):
                    pt = ts.TeacherStudentParams(**{k: float(np.asarray(getattr(dp, k))[idx]) for k in ts.PARAM_NAMES})
                    one = type(dsol)(*[None if a is None else a[idx] for a in dsol])
                    log_p[idx] = np.asarray(ts.log_density(one, pt, q, approximation="exact"))
            coords["density_s2"] = ("density_s2", dens_s2)
            coords["q"] = ("q", q, {"long_name": "overlap q = w.w*"})
            data["log_p"] = xr.Variable(("beta", "density_s2", "q"), log_p,
                                        {"long_name": f"log p(q), finite-d theory ({approximation})"})
            data["density_droplet_fraction"] = xr.Variable(("beta", "density_s2"), dsol.droplet_fraction)
            data["density_t_droplet"] = xr.Variable(("beta", "density_s2"), dsol.t_droplet)
            data["density_t_bulk"] = xr.Variable(("beta", "density_s2"), dsol.t_bulk)
            lim_d = _limit_or_nan(base.replace(s2=dens_s2), approximation, check=False)
            Shat = limit_profile(q[None, :], lim_d.b[:, None], lim_d.c[:, None],
                                 np.asarray(base.replace(s2=dens_s2).u)[:, None], float(base.sw2), approximation)
            data["limit_action"] = xr.Variable(("density_s2", "q"), Shat,
                                               {"long_name": "scaling-limit droplet profile Shat(q) = S/d "
                                                             "(exact: minimised over t, relative to the bulk)"})
    if limit:
        lim = _limit_or_nan(sweep, approximation, check=check_limit)
        for k in LIMIT_VARS:
            data[f"limit_{k}"] = _var(("s2",), getattr(lim, k), k)
    if gp_baseline:
        g = gp.solve_gp(sweep)
        data["gp_linear_learned"] = xr.Variable(("s2",), g.linear_learned, {"long_name": "GP (EK) 1 - b"})
        data["gp_cubic_learned"] = xr.Variable(("s2",), g.cubic_learned, {"long_name": "GP (EK) 1 - c/eps"})
    ds = xr.Dataset(data, coords=coords)
    return annotate(ds, kind="theory.teacher_student.sweep", parameters={
        **_base_parameters(base), "s2": s2.tolist(), "betas": betas.tolist(), "alpha_over_beta": ratio,
        "density_s2": None if density_s2 is None else list(map(float, density_s2)),
        "approximation": approximation, **({"corrections": list(corrections)} if corrections else {}),
    }, extra={"s2_c": s2_c, "u_c": float(transition.u) if transition.found else float("nan"),
              "q_star_c": float(transition.q_star) if transition.found else float("nan"),
              "t_star_c": float(transition.t_star) if transition.found else float("nan"),
              "approximation": approximation,
              **{f"{name}_{ap}": (float(getattr(tr, k)) if tr.found else float("nan"))
                 for ap, tr in transitions.items() for k, name in (("value", "s2_c"), ("u", "u_c"))}})


def apply_axes(base: ts.TeacherStudentParams, values: dict[str, np.ndarray], *,
               sa2_times_N: float | None = None) -> ts.TeacherStudentParams:
    """Set parameters (and then the invariants u, r, which are defined through sa2 and N) from
    broadcastable arrays.  With ``sa2_times_N``, varying N keeps sa2 = sa2_times_N / N."""
    p = base
    for name in [k for k in values if k in ts.PARAM_NAMES] + [k for k in ("r", "u") if k in values]:
        p = p.with_axis(name, values[name], sa2_times_N=sa2_times_N if name == "N" else None)
    return p


def build_teacher_student_phase_diagram(base: ts.TeacherStudentParams, x: Axis, y: Axis, *, limit: bool = False,
                                        beta: float = 1.0, alpha: float | None = None,
                                        sa2_times_N: float | None = None,
                                        approximation: str = ts.DEFAULT_APPROXIMATION,
                                        progress=None, corrections: Sequence[str] = ()) -> xr.Dataset:
    """Phase label and learned fractions on the (y, x) grid, finite-d (default) or scaling limit.

    Axis values describe the beta = 1 configuration, which is then scaled by (alpha, beta) (Table 1).
    Also stored: the scaling-limit degeneracy Lambda (its level 1 is the limit transition line) and,
    for every y, the x at which the limit transition occurs (``boundary_x``, by root finding; NaN
    where no crossing lies inside the plotted x-range), in the chosen ``approximation``; the limit
    boundaries of both approximations are stored as ``boundary_x_exact`` / ``boundary_x_concentrated``
    so that a plot can show both.

    With the finite-d solver, grid points where the scaling limit has no solution get NaN limit
    fields instead of an error.  ``progress``: a tqdm-like bar (``reset(total=...)``, ``update(n)``)
    counting the finite-d grid points solved.  ``corrections=("ridge",)`` (finite d only): the
    renormalised-ridge theory on the same grid as ``ridge_*`` variables (phase, learned fractions,
    droplet fraction, kappa, shift n kappa/s2 - 1): the phase diagram at the actual n."""
    ts.check_approximation(approximation)
    corrections = check_corrections(corrections)
    if corrections and limit:
        raise ParameterError("corrections apply to the finite-d theory (they vanish in the scaling limit); drop --limit")
    if x.name == y.name:
        raise ParameterError(f"--x and --y must be different parameters (both are {x.name})")
    alpha = beta if alpha is None else alpha
    base = base.broadcast()
    X, Y = np.meshgrid(x.values, y.values)
    grid = apply_axes(base, {x.name: X, y.name: Y}, sa2_times_N=sa2_times_N).scaled(alpha=alpha, beta=beta)
    lim = _limit_or_nan(grid, approximation, check=limit)
    dims = (y.name, x.name)
    data = {"degeneracy": _var(dims, lim.degeneracy, "degeneracy")}
    if not limit and progress is not None:
        progress.reset(total=X.size)
    sol, names = (lim, LIMIT_VARS) if limit else (ts.solve_finite_d(grid, approximation=approximation,
                                                                    progress=progress), FINITE_D_VARS)
    for k in names:
        data[k] = _var(dims, getattr(sol, k), k)
    if "ridge" in corrections:
        ridge = _ridge_vars(grid, approximation, progress, dims=dims)
        data.update({k: v for k, v in ridge.items() if k != "ridge_iterations"})
    data["limit_phase"] = _var(dims, lim.phase, "phase")
    for inv in ("u", "r"):  # the invariants at every grid point ('<name>_grid' if it is an axis)
        key = inv if inv not in (x.name, y.name) else f"{inv}_grid"
        data[key] = xr.Variable(dims, np.broadcast_to(np.asarray(getattr(grid, inv)), X.shape))

    # exact limit boundary: for each y, the x (in beta = 1 units) where Lambda crosses 1
    rows = base.replace(eps=np.broadcast_to(np.asarray(base.eps), y.values.shape))

    def make(xv):
        return apply_axes(base, {x.name: xv, y.name: y.values[:, None]},
                          sa2_times_N=sa2_times_N).scaled(alpha=alpha, beta=beta)

    lo, hi = float(x.values.min()), float(x.values.max())
    log = x.log or lo > 0
    for ap in ts.APPROXIMATIONS:
        tr = ts.solve_transition(rows, along=x.name, lo=lo, hi=hi, log=log, make=make, num_scan=129, approximation=ap)
        data[f"boundary_x_{ap}"] = xr.Variable((y.name,), tr.value, {
            "long_name": f"{x.name} at the scaling-limit transition, {ap} approximation (NaN: none in range)"})
    data["boundary_x"] = xr.Variable((y.name,), data[f"boundary_x_{approximation}"].values, {
        "long_name": f"{x.name} at the scaling-limit transition ({approximation}; NaN: none in range)"})
    coords = {x.name: (x.name, x.values), y.name: (y.name, y.values)}
    ds = xr.Dataset(data, coords=coords)
    return annotate(ds, kind="theory.teacher_student.phase_diagram", parameters={
        **_base_parameters(base), "x": x.name, "x_values": x.values.tolist(), "y": y.name,
        "y_values": y.values.tolist(), "limit": bool(limit), "beta": beta, "alpha": alpha,
        "sa2_times_N": sa2_times_N, "approximation": approximation,
        **({"corrections": list(corrections)} if corrections else {}),
    }, extra={"x_axis": x.name, "y_axis": y.name, "x_log": int(x.log), "y_log": int(y.log),
              "solver": "limit" if limit else "finite-d", "approximation": approximation})


def build_gp_learning_curve(base: ts.TeacherStudentParams, s2: Iterable[float], n: Iterable[float], *,
                            approximation: str = ts.DEFAULT_APPROXIMATION,
                            corrections: Sequence[str] = ()) -> xr.Dataset:
    """GP (EK) learned fractions on the (s2, n) grid, the Rayleigh quotients and the half-learning n.

    ``approximation="exact"``: the exact NNGP Rayleigh quotients (:func:`gp.rayleigh_quotients`);
    "concentrated": the u -> 0 kernel of the paper's one-variable theory (|w_perp|^2 = sw2,
    :func:`ts.prior_kernel`), O(1/d) off.  ``corrections=("ridge",)`` adds the renormalised-ridge
    learning curve (:func:`gp.solve_gp_ridge`): ``ridge_linear_learned``, ``ridge_cubic_learned``,
    ``ridge_kappa`` over (s2, n)."""
    ts.check_approximation(approximation)
    corrections = check_corrections(corrections)
    s2 = np.atleast_1d(np.asarray(s2, dtype=float))
    n = np.atleast_1d(np.asarray(n, dtype=float))
    base = base.broadcast()
    if approximation == "exact":
        eig = gp.rayleigh_quotients(base.d, base.sa2, base.sw2)
        l1, l3, l13 = float(eig.lambda1), float(eig.lambda3), float(eig.lambda13)
    else:
        Q = ts.prior_kernel(base, approximation)
        l1, l3, l13 = float(Q[0, 0]), float(Q[1, 1]), float(Q[0, 1])
    data = {
        "linear_learned": xr.Variable(("s2", "n"), np.asarray(gp.ek_learned_fraction(l1, s2[:, None], n[None, :]))),
        "cubic_learned": xr.Variable(("s2", "n"), np.asarray(gp.ek_learned_fraction(l3, s2[:, None], n[None, :]))),
        "n_half_linear": xr.Variable(("s2",), s2 / l1),
        "n_half_cubic": xr.Variable(("s2",), s2 / l3),
    }
    if "ridge" in corrections:
        grid = base.replace(s2=s2[:, None], n=n[None, :])
        r = gp.solve_gp_ridge(grid, eigen=(l1, l3, l13))
        data["ridge_linear_learned"] = xr.Variable(("s2", "n"), r.linear_learned,
                                                   {"long_name": "lambda1/(lambda1 + kappa), renormalised ridge"})
        data["ridge_cubic_learned"] = xr.Variable(("s2", "n"), r.cubic_learned,
                                                  {"long_name": "lambda3/(lambda3 + kappa), renormalised ridge"})
        data["ridge_kappa"] = xr.Variable(("s2", "n"), r.kappa, {"long_name": "renormalised ridge kappa (EK: s2/n)"})
    ds = xr.Dataset(data, coords={"s2": s2, "n": n})
    return annotate(ds, kind="theory.teacher_student.gp", parameters={
        **_base_parameters(base), "s2": s2.tolist(), "n": n.tolist(), "approximation": approximation,
        **({"corrections": list(corrections)} if corrections else {})},
        extra={"lambda1": l1, "lambda3": l3, "lambda13": l13, "approximation": approximation,
               "learning_curve": "equivalent kernel: lambda/(lambda + s2/n)"})


# ------------------------------------------------------------------------------------------------
# Modular addition
# ------------------------------------------------------------------------------------------------

MODULAR_VARS = ("a", "target_component", "lam", "droplet_fraction", "phi_plus", "action_gap", "quad_error",
                "status", "phase")


def _modular_parameters(base) -> dict:
    return {k: np.asarray(getattr(base, k)).tolist() for k in md.PARAM_NAMES}


def default_modular_density_s2(tr) -> list[float]:
    """One sigma^2 in GMFL-II (if reachable), two in GMFL-I and one in GFL, for the Fig. 3(a) curves."""
    s1, s2_ = float(tr.gmfl1_s2), float(tr.gmfl2_s2)
    lower = max(s2_, 0.2 * s1)  # GMFL-II may be unreachable (gmfl2_s2 <= 0)
    values = [lower + 0.25 * (s1 - lower), lower + 0.75 * (s1 - lower), 1.15 * s1]
    if s2_ > 0:
        values.insert(0, 0.8 * s2_)
    return [round(v, 4) for v in values]


def build_modular_sweep(base, s2: Sequence[float], *, method: str = "saddle", convention: str = "paper",
                        beta: float = 1.0, density_s2: Sequence[float] | None = None,
                        num_phi: int = 801, progress=None) -> xr.Dataset:
    """Finite-P solution over sigma^2 (``method`` saddle or exact, ``convention`` paper or network: see
    :mod:`grokphase.theory.modular`), the P -> infinity equilibrium and metastable branches, the
    transition temperatures, and Shat(Phi) = -log p(Phi, Phi)/P_eff + const at ``density_s2``
    (Fig. 3a; P_eff = P or 2P).  ``base`` and ``s2`` describe the beta = 1 configuration, scaled by
    ``ModularParams.scaled(beta, convention)`` (s2 -> s2/beta in both conventions).  ``progress``: a
    tqdm-like bar (``reset(total=...)``, ``update(n)``) counting the sweep points solved."""
    md.check_convention(convention)
    s2 = np.asarray(s2, dtype=float)
    base = base.broadcast()
    scaled_base = base.scaled(beta, convention)
    sweep = scaled_base.replace(s2=s2 / beta)
    if progress is not None:
        progress.reset(total=s2.size)
    sol = md.solve(sweep, method, convention=convention, progress=progress)
    lim = md.solve_limit(sweep, convention)
    tr = md.transitions(scaled_base, convention)
    data = {k: _var(("s2",), getattr(sol, k), k) for k in MODULAR_VARS}
    data["u"] = xr.Variable(("s2",), sol.u)
    for k in ("a", "target_component", "droplet_fraction", "phase"):
        data[f"limit_{k}"] = _var(("s2",), getattr(lim, k), k)
    data["a_superheated"] = xr.Variable(("s2",), lim.a_superheated,
                                        {"long_name": "ordered (superheated) branch, NaN beyond its spinodal"})
    data["barrier_supercooled"] = xr.Variable(("s2",), lim.barrier_supercooled,
                                              {"long_name": "P Shat(w-^2) at a = -1; inf: no droplet saddle"})
    coords = {"s2": ("s2", s2, {"long_name": "sigma^2 at beta = 1"})}
    if density_s2 is None:
        density_s2 = default_modular_density_s2(md.transitions(base, convention))
    dens = np.asarray(density_s2, dtype=float)
    dsol = md.solve(scaled_base.replace(s2=dens / beta), method, convention=convention)
    phi_max = 1.3 * max(float(np.max(dsol.phi_plus)), float(np.sqrt(3.0 / base.gamma)))
    phi = np.linspace(0.0, phi_max, num_phi)
    Shat = np.asarray(md.reduced_action(phi[None, :], dsol.a[:, None], np.asarray(dsol.u)[:, None],
                                        float(base.gamma)))
    coords["density_s2"] = ("density_s2", dens)
    coords["phi"] = ("phi", phi, {"long_name": "Phi = Psi = |w_k|^2"})
    data["reduced_action"] = xr.Variable(("density_s2", "phi"), Shat,
                                         {"long_name": "-log p(Phi, Phi)/P_eff + const = Shat(Phi; a)"})
    data["density_a"] = xr.Variable(("density_s2",), dsol.a)
    ds = xr.Dataset(data, coords=coords)
    return annotate(ds, kind="theory.modular.sweep", parameters={
        **_modular_parameters(base), "s2": s2.tolist(), "method": method, "convention": convention, "beta": beta,
        "density_s2": dens.tolist()},
        extra={"gmfl1_s2": float(tr.gmfl1_s2) * beta, "gmfl2_s2": float(tr.gmfl2_s2) * beta,
               "spinodal_s2": float(tr.spinodal_s2) * beta,
               "supercooled_spinodal_s2": float(tr.supercooled_spinodal_s2) * beta, "method": method,
               "convention": convention})


def build_modular_phase_diagram(base, x: Axis, y: Axis, *, method: str = "saddle", convention: str = "paper",
                                beta: float = 1.0, sa2_times_N: float | None = None, progress=None) -> xr.Dataset:
    """Phase label, target component and droplet fraction over a 2-D grid of any two of
    (s2, N, P, sa2, gamma) at finite P, with the P -> infinity phase (its level lines are the
    analytic GMFL-I and GMFL-II boundaries), in the paper or the network ``convention``.
    ``progress``: a tqdm-like bar (``reset(total=...)``, ``update(n)``) counting the grid points solved."""
    md.check_convention(convention)
    if x.name == y.name:
        raise ParameterError(f"--x and --y must be different parameters (both are {x.name})")
    base = base.broadcast()
    X, Y = np.meshgrid(x.values, y.values)
    grid = base
    for axis, values in ((x, X), (y, Y)):
        grid = grid.with_axis(axis.name, values, sa2_times_N=sa2_times_N if axis.name == "N" else None)
    grid = grid.scaled(beta, convention)
    if progress is not None:
        progress.reset(total=X.size)
    sol = md.solve(grid, method, convention=convention, progress=progress)
    lim = md.solve_limit(grid, convention)
    dims = (y.name, x.name)
    data = {k: _var(dims, getattr(sol, k), k) for k in MODULAR_VARS}
    data["limit_phase"] = _var(dims, lim.phase, "phase")
    data["limit_target_component"] = xr.Variable(dims, lim.target_component)
    data["u_grid"] = xr.Variable(dims, np.broadcast_to(np.asarray(grid.u), X.shape))
    ds = xr.Dataset(data, coords={x.name: (x.name, x.values), y.name: (y.name, y.values)})
    return annotate(ds, kind="theory.modular.phase_diagram", parameters={
        **_modular_parameters(base), "x": x.name, "x_values": x.values.tolist(), "y": y.name,
        "y_values": y.values.tolist(), "method": method, "convention": convention, "beta": beta,
        "sa2_times_N": sa2_times_N},
        extra={"x_axis": x.name, "y_axis": y.name, "x_log": int(x.log), "y_log": int(y.log),
               "solver": f"finite-P {method}", "model": "modular", "convention": convention})


def build_modular_gp_curve(P: Sequence[float], sa2: float, s2: float, n: Sequence[float]) -> xr.Dataset:
    """NNGP (eq. 21) spectrum and the EK learning curve of the modular target vs training pairs."""
    P = np.atleast_1d(np.asarray(P, dtype=float))
    n = np.atleast_1d(np.asarray(n, dtype=float))
    curve = mgp.gp_learning_curve(P[:, None], sa2, s2, n[None, :])
    spec = mgp.nngp_eigenvalues(P, sa2)
    data = {"learned": xr.Variable(("P", "n"), np.asarray(curve.learned)),
            "n_half": xr.Variable(("P",), np.asarray(mgp.n_half(P, sa2, s2))),
            "eigenvalues": xr.Variable(("P", "mode_class"), np.asarray(spec.values)),
            "multiplicities": xr.Variable(("P", "mode_class"), np.asarray(spec.multiplicities))}
    ds = xr.Dataset(data, coords={"P": P, "n": n, "mode_class": ["k=k'=0", "one zero", "k,k'!=0 (target)"]})
    return annotate(ds, kind="theory.modular.gp", parameters={"P": P.tolist(), "sa2": sa2, "s2": s2, "n": n.tolist()},
                    extra={"approximation": "equivalent kernel, uniform measure on the P^2 table"})
