r"""Theory against Langevin simulations for the single-index family (THEORY.md §6, issue 18).

:func:`compare_family` takes teacher-student simulation results of any activation and Hermite target
and puts each simulated learned fraction per target degree (the exact population projection
<f, Hhat_k>/yhat_k, time and ensemble mean, standard error over data sets) next to the exact (q, t)
finite-d theory at the simulated sizes (:func:`grokphase.theory.single_index.solve_finite_d`, basis =
the target's degrees), with z = (sim - theory)/SE.

**Equivalent-kernel (EK) control.**  The theory depends on n and s2 only through u = n^2 sa2/(s2^2 d N)
and r = s2 N/n at fixed N, d, sa2, sw2, so a run at (k n, k s2) has the same theory as the run at
(n, s2).  Runs of one model (activation, target, N, d, sa2, sw2) are grouped; the smallest n of a
group is its reference, and every point is also reported at its *equivalent* s2 at the reference n,
s2_eq = s2 n_ref/n (same u and r).  The EK runs' shift from the plain ones is the simulations'
finite-n error, which the EK-limit theory does not describe (issue 22).  Where a group has runs at
two or more n for the same equivalent s2, the learned fraction is extrapolated to 1/n -> 0 by a
weighted least-squares line in 1/n (the form the paper's model follows: at beta = 1/8, s2 = 0.17 its
cubic fraction at n, 4n, 8n is 0.0721, 0.0927, 0.0956, and the line through the first two predicts
0.0961 at 8n), with the intercept's standard error propagated from the runs' SEs: that value,
finite n controlled, is the one that tests the theory (``extrap_z``).

The result is flat: one ``point`` per (run, s2, degree) and one ``curve`` point per (model, s2 grid
value, degree) of the theory curve at the reference sizes, so models with different degrees and s2
lists share one Dataset (and one netCDF file).
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np
import xarray as xr

from grokphase.errors import ResultFileError
from grokphase.io import annotate, parameters_of
from grokphase.theory import single_index as si
from grokphase.theory.single_index.target import HermiteTarget
from grokphase.theory.status import Status

KIND = "analysis.single_index.family"
PHASES = {0: "GFL", 1: "GMFL-I", 2: "GMFL-II"}


def require_paper_model(ds: xr.Dataset, what: str) -> None:
    """Refuse a teacher-student result of another activation or target in an analysis that compares with
    the paper's model's theory (erf student, He1 + eps He3): it would be compared with the wrong theory."""
    p = parameters_of(ds)
    act, target = p.get("activation", "erf"), p.get("target")
    if act != "erf" or target is not None:
        raise ResultFileError(f"{what} compares with the paper's model (erf student, target He1 + eps He3); this "
                              f"result is activation {act!r}, target {get_spec(target, p.get('eps', -0.3))!r}: use "
                              f"`grokphase compare teacher-student` or the [single_index] table for the family")


def _model_of(ds: xr.Dataset) -> dict:
    """activation, target spec, sizes and priors of one teacher-student simulation result."""
    if ds.attrs.get("grokphase_kind") != "sims.teacher_student":
        raise ResultFileError(f"expected a teacher-student simulation result, got {ds.attrs.get('grokphase_kind')!r}")
    if "learned" not in ds or "degree" not in ds.coords:
        raise ResultFileError("the simulation result has no per-degree 'learned' variable (written before "
                              "issue 18's family): run it again")
    p = parameters_of(ds)
    target = p.get("target")
    spec = get_spec(target, p.get("eps", -0.3))
    return {"activation": str(p.get("activation", "erf")), "target": spec,
            "N": float(ds.attrs["N"]), "n": float(ds.attrs["n"]), "d": float(ds.attrs["d"]),
            "sa2": float(ds.attrs["sa2"]), "sw2": float(p.get("sw2", 0.5)), "beta": float(p.get("beta", 1.0)),
            "name": str(ds.attrs.get("experiment_name", ""))}


def get_spec(target, eps) -> str:
    """The target's spec string (None: the paper's He1 + eps He3)."""
    return HermiteTarget.paper(float(eps)).spec if target is None else si.get_target(target).spec


def _theory(model: dict, s2, n=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(learned (S, K), phase (S,), droplet_fraction (S,)) of the exact finite-d theory; NaN where it
    does not converge."""
    params = si.SingleIndexParams(N=model["N"], n=model["n"] if n is None else n, d=model["d"],
                                  s2=np.asarray(s2, np.float64), sa2=model["sa2"], sw2=model["sw2"])
    sol = si.solve_finite_d(params, model["target"], model["activation"], check=False)
    ok = np.asarray(sol.status) == Status.CONVERGED
    learned = np.where(ok[..., None], np.asarray(sol.learned, np.float64), np.nan)
    drop = np.where(ok, np.asarray(sol.droplet_fraction, np.float64), np.nan)
    return learned, np.asarray(sol.phase), drop


def compare_family(sims: Sequence[xr.Dataset], curve_points: int = 41, curve_range: tuple | None = None) -> xr.Dataset:
    """Every simulated learned fraction per target degree against the exact finite-d theory at the
    simulated sizes, the EK grouping, and the theory curves (``curve_points`` values of s2 over the
    simulated range at each group's reference n, or ``curve_range`` = (lo, hi))."""
    if not sims:
        raise ResultFileError("compare_family needs at least one simulation result")
    models = [_model_of(ds) for ds in sims]
    group_key = [(m["activation"], m["target"], m["N"], m["d"], m["sa2"], m["sw2"]) for m in models]
    keys = list(dict.fromkeys(group_key))
    n_ref = {k: min(m["n"] for m, g in zip(models, group_key) if g == k) for k in keys}
    rows: dict[str, list] = {name: [] for name in ("group", "run", "activation", "target", "n", "n_ref", "s2", "s2_eq",
                                                   "degree", "sim", "sim_sem", "theory", "z", "theory_phase",
                                                   "droplet_fraction", "droplet_fraction_sem", "theory_droplet")}
    for j, (ds, m, g) in enumerate(zip(sims, models, group_key)):
        s2 = np.asarray(ds["s2"].values, np.float64)
        degrees = [int(k) for k in ds["degree"].values]
        learned, phase, drop = _theory(m, s2)
        theory_degrees = list(si.get_target(m["target"]).degrees)
        for i, s in enumerate(s2):
            for kk, k in enumerate(degrees):
                sim_v = float(ds["learned"].values[i, kk])
                sem_v = float(ds["learned_sem"].values[i, kk])
                th = float(learned[i, theory_degrees.index(k)])
                rows["group"].append(keys.index(g))
                rows["run"].append(j)
                rows["activation"].append(m["activation"])
                rows["target"].append(m["target"])
                rows["n"].append(m["n"])
                rows["n_ref"].append(n_ref[g])
                rows["s2"].append(float(s))
                rows["s2_eq"].append(float(s) * n_ref[g] / m["n"])
                rows["degree"].append(k)
                rows["sim"].append(sim_v)
                rows["sim_sem"].append(sem_v)
                rows["theory"].append(th)
                rows["z"].append((sim_v - th) / sem_v if sem_v > 0 else math.nan)
                rows["theory_phase"].append(int(phase[i]))
                rows["droplet_fraction"].append(float(ds["droplet_fraction"].values[i]))
                rows["droplet_fraction_sem"].append(float(ds["droplet_fraction_sem"].values[i]))
                rows["theory_droplet"].append(float(drop[i]))
    data = {}
    for name, values in rows.items():
        arr = np.asarray(values, dtype=object if name in ("activation", "target") else None)
        data[f"point_{name}"] = (("point",), arr.astype(str) if arr.dtype == object else arr)
    # theory curves at each group's reference sizes
    curve: dict[str, list] = {name: [] for name in ("group", "s2", "degree", "theory", "phase")}
    group_info = []
    for gi, k in enumerate(keys):
        members = [j for j, g in enumerate(group_key) if g == k]
        m = dict(models[members[0]])
        s2_eq = np.concatenate([np.asarray(sims[j]["s2"].values) * n_ref[k] / models[j]["n"] for j in members])
        lo, hi = curve_range if curve_range is not None else (float(s2_eq.min()) * 0.8, float(s2_eq.max()) * 1.1)
        grid = np.linspace(lo, hi, curve_points)
        learned, phase, _ = _theory(m, grid, n=n_ref[k])
        degrees = si.get_target(m["target"]).degrees
        for i, s in enumerate(grid):
            for kk, deg in enumerate(degrees):
                curve["group"].append(gi)
                curve["s2"].append(float(s))
                curve["degree"].append(int(deg))
                curve["theory"].append(float(learned[i, kk]))
                curve["phase"].append(int(phase[i]))
        group_info.append({"activation": m["activation"], "target": m["target"], "N": m["N"], "d": m["d"],
                           "n_ref": n_ref[k], "sa2": m["sa2"], "sw2": m["sw2"], "beta": m["beta"],
                           "runs": [int(j) for j in members]})
    for name, values in curve.items():
        data[f"curve_{name}"] = (("curve",), np.asarray(values))
    for name, values in _extrapolate(rows).items():
        data[f"extrap_{name}"] = (("extrap",), np.asarray(values, dtype=np.int64 if name in ("group", "degree", "runs")
                                                          else np.float64))
    out = xr.Dataset(data)
    out.attrs["groups_json"] = json.dumps(group_info)
    out.attrs["theory"] = "exact finite-d theory (single-index), basis = the target's degrees"
    return annotate(out, kind=KIND, parameters={"runs": [parameters_of(ds) for ds in sims],
                                                "curve_points": int(curve_points)})


def extrapolate_inverse_n(n, value, sem) -> tuple[float, float]:
    """Weighted least-squares line value = a + b/n through the points (weights 1/sem^2): the
    intercept a (the 1/n -> 0 value) and its standard error (exact for Gaussian errors of known SE)."""
    x = 1.0 / np.asarray(n, np.float64)
    w = 1.0 / np.asarray(sem, np.float64) ** 2
    X = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    coef = cov @ (X.T @ (w * np.asarray(value, np.float64)))
    return float(coef[0]), float(np.sqrt(cov[0, 0]))


def _extrapolate(rows: dict) -> dict:
    """Per group, equivalent s2 (matched to 1 %: n is an integer) and degree with runs at >= 2 distinct
    n: the 1/n -> 0 value, its SE, the theory at the reference sizes and z."""
    out: dict[str, list] = {k: [] for k in ("group", "s2", "degree", "runs", "value", "sem", "theory", "z")}
    g, s2_eq, deg, n = (np.asarray(rows[k], np.float64) for k in ("group", "s2_eq", "degree", "n"))
    sim, sem, th = (np.asarray(rows[k], np.float64) for k in ("sim", "sim_sem", "theory"))
    used = np.zeros(g.size, bool)
    for i in np.argsort(n, kind="stable"):
        if used[i]:
            continue
        same = (g == g[i]) & (deg == deg[i]) & (np.abs(s2_eq / s2_eq[i] - 1.0) < 0.01) & ~used
        used |= same
        idx = np.flatnonzero(same)
        if np.unique(n[idx]).size < 2 or not np.all(sem[idx] > 0):
            continue
        a, se = extrapolate_inverse_n(n[idx], sim[idx], sem[idx])
        ref = idx[np.argmin(n[idx])]
        out["group"].append(int(g[i]))
        out["s2"].append(float(s2_eq[ref]))
        out["degree"].append(int(deg[i]))
        out["runs"].append(int(idx.size))
        out["value"].append(a)
        out["sem"].append(se)
        out["theory"].append(float(th[ref]))
        out["z"].append((a - float(th[ref])) / se)
    return out


def family_summary(cmp: xr.Dataset) -> dict:
    """JSON summary: per model group and run, per s2 and degree: sim +- SE, theory, z; per group the
    largest |z| of its largest-n run, and the 1/n -> 0 extrapolations with their z (finite n controlled)."""
    groups = json.loads(cmp.attrs["groups_json"])
    out = []
    g_of = cmp["point_group"].values
    for gi, info in enumerate(groups):
        sel = np.flatnonzero(g_of == gi)
        n = cmp["point_n"].values[sel]
        points = [{k: (float(cmp[f"point_{k}"].values[j]) if k not in ("degree", "run") else int(cmp[f"point_{k}"].values[j]))
                   for k in ("run", "n", "s2", "s2_eq", "degree", "sim", "sim_sem", "theory", "z")}
                  for j in sel]
        largest = sel[n == n.max()]
        z = np.abs(cmp["point_z"].values[largest])
        entry = {**{k: info[k] for k in ("activation", "target", "N", "d", "n_ref", "beta")},
                 "points": points, "max_abs_z_largest_n": float(np.nanmax(z)) if z.size else None,
                 "largest_n": float(n.max())}
        if "extrap_group" in cmp:
            ex = np.flatnonzero(cmp["extrap_group"].values == gi)
            entry["extrapolated"] = [{k: (int(cmp[f"extrap_{k}"].values[j]) if k in ("degree", "runs")
                                          else float(cmp[f"extrap_{k}"].values[j]))
                                      for k in ("s2", "degree", "runs", "value", "sem", "theory", "z")} for j in ex]
            if ex.size:
                entry["max_abs_z_extrapolated"] = float(np.max(np.abs(cmp["extrap_z"].values[ex])))
        out.append(entry)
    return {"theory": cmp.attrs["theory"], "groups": out}
