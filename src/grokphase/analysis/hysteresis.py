"""Hysteresis (issue 8): cooling, heating and replica-exchange branches against the theory's
equilibrium curve and metastable branches, for the modular model (:func:`hysteresis_modular`) and
the teacher-student model (:func:`hysteresis_teacher_student`, below).  Reads saved simulation
results; the theory is solved at exactly the simulated sizes.

Modular model: the theory at exactly the simulated (N, P, sa2, gamma).

Observables: the Rao-Blackwellised target component (``target_component_mean``) and the droplet
fraction (fraction of neurons whose spectrum sits at the theory's Phi_+ in one mode; the theory's
per-mode droplet probability p times the (P - 1)/2 modes, since a neuron is a droplet in at most one
mode).  Distances: replica exchange minus the finite-P equilibrium theory per s2, in absolute units
and in standard errors, and their root mean square."""

from __future__ import annotations

import json
import warnings

import numpy as np
import xarray as xr

from grokphase.analysis.single_index import require_paper_model
from grokphase.errors import ParameterError
from grokphase.io import annotate
from grokphase.sims.teacher_student import DEFAULT_DROPLET_THRESHOLD
from grokphase.theory import modular as mt
from grokphase.theory import teacher_student as tst
from grokphase.theory.teacher_student.frozen import solve_frozen_branch

PROTOCOLS = ("cooling", "heating", "replica")
# modular only: replica exchange started at the theory's droplet saddle (teacher-student replica
# exchange starts from the prior)
MODULAR_PROTOCOLS = PROTOCOLS + ("replica_ordered",)


def _branch(ds: xr.Dataset, protocol: str) -> xr.Dataset:
    if "branch" in ds.dims:
        want = "cooling" if protocol == "cooling" else "heating"
        if want not in list(ds["branch"].values):
            raise ParameterError(f"the {protocol} result has no {want!r} branch (branches: {list(ds['branch'].values)})")
        return ds.sel(branch=want)
    return ds


def _modular_loop(protos: list, s2: np.ndarray, pts: dict) -> dict:
    """The loop in numbers: heating minus cooling target component per s2 in combined standard errors
    (the loop window is where it exceeds 3), and for each replica protocol the s2 where it lies inside
    [cooling - 2 SE, heating + 2 SE] ("between the branches")."""
    out: dict = {}
    if "cooling" not in protos or "heating" not in protos:
        return out
    ic, ih = protos.index("cooling"), protos.index("heating")
    tc, se = pts["tc"], pts["tc_sem"]
    both = np.isfinite(tc[ic]) & np.isfinite(tc[ih])
    gap = tc[ih] - tc[ic]
    z = gap / np.sqrt(np.maximum(se[ic] ** 2 + se[ih] ** 2, 1e-30))
    out["s2"] = s2[both].tolist()
    out["heating_minus_cooling"] = gap[both].tolist()
    out["z"] = z[both].tolist()
    out["window_s2"] = s2[both & (z > 3)].tolist()
    for p in protos:
        if not p.startswith("replica"):
            continue
        i = protos.index(p)
        ok = both & np.isfinite(tc[i])
        inside = (tc[i] >= tc[ic] - 2 * se[ic] - 2 * se[i]) & (tc[i] <= tc[ih] + 2 * se[ih] + 2 * se[i])
        out[f"{p}_between_s2"] = s2[ok & inside].tolist()
        out[f"{p}_outside_s2"] = s2[ok & ~inside].tolist()
    return out


def _superheating(protos: list, s2: np.ndarray, pts: dict, eq: np.ndarray, bound: np.ndarray, s1: float) -> dict:
    """The heating branch above the transition s1: its target component against the finite-P
    equilibrium and (where run) the cooling branch, in the heating run's standard errors, and against the
    marginal bound (:func:`grokphase.theory.modular.marginal_target_component`).  ``ordered_s2``: the
    s2 > s1 where heating exceeds the equilibrium, and the cooling branch if present, by more than
    3 SE (the ordered state superheated); ``within_bound``: every heating point above s1 at or below the
    bound plus 2 SE where the bound exists, and melted beyond it: within 3 combined SE of the cooling
    branch (the same width's disordered state), or of the equilibrium when no cooling branch was run."""
    if "heating" not in protos:
        return {}
    ih = protos.index("heating")
    tc, se = pts["tc"][ih], pts["tc_sem"][ih]
    above = (s2 > s1 * (1 + 1e-9)) & np.isfinite(tc)
    if not above.any():
        return {}
    se_safe = np.maximum(se, 1e-30)
    z_eq = (tc - eq) / se_safe
    ordered = z_eq > 3
    out = {"s2": s2[above].tolist(), "s2_over_s1": (s2[above] / s1).tolist(),
           "heating": tc[above].tolist(), "heating_sem": se[above].tolist(),
           "equilibrium": eq[above].tolist(), "z_vs_equilibrium": z_eq[above].tolist(),
           "marginal_bound": [None if not np.isfinite(b) else float(b) for b in bound[above]]}
    z_melt = z_eq                      # melted: compared with the same width's cooling branch where run
    if "cooling" in protos:
        ic = protos.index("cooling")
        tcc, sec = pts["tc"][ic], pts["tc_sem"][ic]
        z_c = (tc - tcc) / np.sqrt(np.maximum(se ** 2 + sec ** 2, 1e-30))
        out["cooling"] = tcc[above].tolist()
        out["z_vs_cooling"] = z_c[above].tolist()
        ordered &= np.where(np.isfinite(tcc), z_c > 3, True)
        z_melt = np.where(np.isfinite(tcc), z_c, z_eq)
    out["ordered_s2"] = s2[above & ordered].tolist()
    out["max_ordered_s2_over_s1"] = float(s2[above & ordered].max() / s1) if (above & ordered).any() else None
    ok = np.where(np.isfinite(bound), tc <= bound + 2 * se, np.abs(z_melt) <= 3)
    out["within_bound"] = bool(np.all(ok[above]))
    return out


def hysteresis_modular(results: dict, convention: str = "network", n_theory: int = 121) -> xr.Dataset:
    """``results``: protocol name (cooling, heating, replica, replica_ordered) -> modular simulation
    Dataset (an annealing result with a branch dimension, or a replica-exchange result; replica_ordered
    is a replica-exchange run started from the ordered droplet saddle, so that the two replica starts
    bracket the equilibrium when the ladder does not mix).  Returns per-protocol
    points (protocol, s2) with standard errors, the theory on a fine s2 grid (finite-P equilibrium,
    P -> infinity equilibrium, the supercooled disordered branch and its barrier, and the marginal
    bound under which a heated ordered state can keep droplets) and the distances; the summary's
    ``superheating`` entry compares the heating branch above s1 with the equilibrium, the cooling
    branch and that bound (:func:`_superheating`)."""

    if not results:
        raise ParameterError("hysteresis_modular needs at least one of cooling, heating, replica, replica_ordered")
    unknown = sorted(set(results) - set(MODULAR_PROTOCOLS))
    if unknown:
        raise ParameterError(f"unknown protocol(s) {unknown}; use {MODULAR_PROTOCOLS}")
    first = next(iter(results.values()))
    P, N = float(first.attrs["param_P"]), float(first.attrs["param_N"])
    sa2, gamma = float(first.attrs["param_sa2"]), float(first.attrs["param_gamma"])
    for name, ds in results.items():
        same = [float(ds.attrs[f"param_{k}"]) for k in ("P", "N", "sa2", "gamma")]
        if not np.allclose(same, [P, N, sa2, gamma]):
            raise ParameterError(f"{name}: (P, N, sa2, gamma) = {same} differ from {[P, N, sa2, gamma]}")
    s2_all = np.unique(np.concatenate([np.asarray(ds["s2"].values) for ds in results.values()]))
    protos = [p for p in MODULAR_PROTOCOLS if p in results]
    shape = (len(protos), s2_all.size)
    pts = {k: np.full(shape, np.nan) for k in ("tc", "tc_sem", "drop", "drop_sem")}
    for i, p in enumerate(protos):
        ds = _branch(results[p], p)
        for j, s in enumerate(ds["s2"].values):
            k = int(np.flatnonzero(np.isclose(s2_all, s))[0])
            pts["tc"][i, k] = float(ds["target_component_mean"].values[j])
            pts["tc_sem"][i, k] = float(ds["target_component_mean_sem"].values[j])
            pts["drop"][i, k] = float(ds["droplet_fraction"].values[j])
            pts["drop_sem"][i, k] = float(ds["droplet_fraction_sem"].values[j])
    modes = (P - 1) // 2
    grid = np.linspace(0.8 * s2_all.min(), 1.15 * s2_all.max(), n_theory)
    with warnings.catch_warnings():
        # the theory grid runs past the supercooled spinodal, where the bound and the metastable branch
        # are NaN by definition (numerical RuntimeWarnings only; other warnings still reach the user)
        warnings.simplefilter("ignore", RuntimeWarning)
        prm = mt.ModularParams(N=N, P=P, s2=np.concatenate([grid, s2_all]), sa2=sa2, gamma=gamma)
        fin = mt.solve(prm, "exact", convention=convention, check=False)
        lim = mt.solve_limit(prm, convention)
        tr = mt.transitions(mt.ModularParams(N=N, P=P, s2=float(s2_all[0]), sa2=sa2, gamma=gamma), convention)
        marginal = mt.marginal_target_component(prm)
    G = grid.size
    eq_pts = np.asarray(fin.target_component)[G:]
    drop_pts = np.asarray(fin.droplet_fraction)[G:] * modes
    data = {
        "target_component": (("protocol", "s2"), pts["tc"]),
        "target_component_sem": (("protocol", "s2"), pts["tc_sem"]),
        "droplet_fraction": (("protocol", "s2"), pts["drop"]),
        "droplet_fraction_sem": (("protocol", "s2"), pts["drop_sem"]),
        "theory_target_component": (("s2",), eq_pts),
        "theory_droplet_fraction": (("s2",), drop_pts),
        "theory_fine_target_component": (("s2_theory",), np.asarray(fin.target_component)[:G]),
        "theory_fine_droplet_fraction": (("s2_theory",), np.asarray(fin.droplet_fraction)[:G] * modes),
        "limit_target_component": (("s2_theory",), np.asarray(lim.target_component)[:G]),
        "limit_barrier_supercooled": (("s2_theory",), np.asarray(lim.barrier_supercooled)[:G]),
        "supercooled_target_component": (("s2_theory",), np.zeros(G)),
        "marginal_target_component": (("s2_theory",), marginal[:G]),
        "theory_marginal_target_component": (("s2",), marginal[G:]),
    }
    dist = pts["tc"] - eq_pts[None, :]
    data["distance"] = (("protocol", "s2"), dist)
    data["distance_z"] = (("protocol", "s2"), dist / np.where(pts["tc_sem"] > 0, pts["tc_sem"], np.nan))
    ds = xr.Dataset(data, coords={"protocol": protos, "s2": s2_all, "s2_theory": grid})
    s1 = float(np.asarray(tr.gmfl1_s2))
    summary = {"P": P, "N": N, "sa2": sa2, "gamma": gamma, "convention": convention, "gmfl1_s2": s1,
               "protocols": {}}
    below = s2_all < s1
    for i, p in enumerate(protos):
        ok = np.isfinite(dist[i])
        summary["protocols"][p] = {
            "s2": s2_all[ok].tolist(), "target_component": pts["tc"][i, ok].tolist(),
            "target_component_sem": pts["tc_sem"][i, ok].tolist(),
            "theory_target_component": eq_pts[ok].tolist(),
            "distance": dist[i, ok].tolist(),
            "rms_distance": float(np.sqrt(np.mean(dist[i, ok] ** 2))) if ok.any() else None,
            "rms_distance_below_transition": (float(np.sqrt(np.mean(dist[i, ok & below] ** 2)))
                                              if (ok & below).any() else None),
        }
        if p.startswith("replica"):
            r = results[p]
            summary["protocols"][p]["swap_acceptance"] = [float(x) for x in r["swap_acceptance_pooled"].values]
            summary["protocols"][p]["round_trips"] = int(r["round_trips"].values.sum())
            summary["protocols"][p]["ladder_warning"] = str(r.attrs.get("ladder_warning", "none"))
    summary["spinodal_s2"] = float(np.asarray(tr.spinodal_s2))           # superheated (ordered) branch
    summary["supercooled_spinodal_s2"] = float(np.asarray(tr.supercooled_spinodal_s2))
    summary["loop"] = _modular_loop(protos, s2_all, pts)
    summary["superheating"] = _superheating(protos, s2_all, pts, eq_pts, marginal[G:], s1)
    ds.attrs["summary_json"] = json.dumps(summary)
    ds.attrs["gmfl1_s2"] = s1
    return annotate(ds, kind="analysis.modular_hysteresis", parameters={"P": P, "N": N, "sa2": sa2, "gamma": gamma,
                                                                      "convention": convention})


# ---------------------------------------------------------------------------------------------
# teacher-student (THEORY.md §3, §3b)


TS_OBSERVABLES = ("cubic_learned", "linear_learned", "droplet_fraction", "t_droplet")


def _ts_branch(ds: xr.Dataset, protocol: str) -> xr.Dataset:
    if "branch" in ds.dims:
        return _branch(ds, protocol)
    if protocol != "replica" or ds.attrs.get("protocol") != "replica exchange":
        raise ParameterError(f"the {protocol} result must be an annealing run (branch dimension) "
                             f"{'or a replica-exchange run' if protocol == 'replica' else ''}".strip())
    return ds


def _threshold_mass(branches: dict, s2_all: np.ndarray) -> np.ndarray:
    """The theory's mass of p(q) beyond each simulation's own droplet threshold (the value its
    droplet fraction estimates; stored by the simulation as ``theory_droplet_fraction``)."""
    out = np.full(s2_all.size, np.nan)
    for ds in branches.values():
        for j, s in enumerate(ds["s2"].values):
            out[int(np.flatnonzero(np.isclose(s2_all, s))[0])] = float(np.ravel(ds["theory_droplet_fraction"].values)[j])
    return out


def hysteresis_teacher_student(results: dict, approximation: str = "exact", n_theory: int = 25,
                               loop_z: float = 3.0, q_cut: float | None = None) -> xr.Dataset:
    """``results``: protocol name (cooling, heating, replica) -> teacher-student simulation Dataset (an
    annealing run with a branch dimension supplies cooling and heating; a replica-exchange run the
    replica points).  Returns per-protocol points (protocol, s2) of the cubic and linear learned
    fractions, the droplet fraction and t_droplet with standard errors; the finite-d theory
    (``approximation``) at exactly the simulated sizes: equilibrium at the points and on a fine s2
    grid, the metastable GFL branch (droplet-free, bulk confined to |q| < the droplet threshold) and
    the superheated droplet branch (the heating start's droplet fraction frozen;
    :func:`solve_frozen_branch`); the scaling limit's equilibrium and transition s2_c (both
    approximations); distances to the equilibrium (absolute, in SEs, rms) and the loop: heating minus
    cooling per s2 in combined SEs, ``loop_seen`` where it exceeds ``loop_z``."""

    tst.check_approximation(approximation)
    if not results:
        raise ParameterError("hysteresis_teacher_student needs at least one of cooling, heating, replica")
    for ds in results.values():
        require_paper_model(ds, "the teacher-student hysteresis analysis")
    unknown = sorted(set(results) - set(PROTOCOLS))
    if unknown:
        raise ParameterError(f"unknown protocol(s) {unknown}; use {PROTOCOLS}")
    keys = ("N", "n", "d", "sa2")
    first = next(iter(results.values()))
    ref = [float(first.attrs[k]) for k in keys] + [float(first.attrs[f"param_{k}"]) for k in ("sw2", "eps")]
    for name, ds in results.items():
        got = [float(ds.attrs[k]) for k in keys] + [float(ds.attrs[f"param_{k}"]) for k in ("sw2", "eps")]
        if not np.allclose(got, ref):
            raise ParameterError(f"{name}: (N, n, d, sa2, sw2, eps) = {got} differ from {ref}")
    N, n, d, sa2, sw2, eps = ref
    protos = [p for p in PROTOCOLS if p in results]
    branches = {p: _ts_branch(results[p], p) for p in protos}
    s2_all = np.unique(np.concatenate([np.asarray(b["s2"].values) for b in branches.values()]))
    shape = (len(protos), s2_all.size)
    pts = {k: np.full(shape, np.nan) for name in TS_OBSERVABLES for k in (name, f"{name}_sem")}
    for i, p in enumerate(protos):
        ds = branches[p]
        for j, s in enumerate(ds["s2"].values):
            k = int(np.flatnonzero(np.isclose(s2_all, s))[0])
            for name in TS_OBSERVABLES:
                pts[name][i, k] = float(ds[name].values[j])
                pts[f"{name}_sem"][i, k] = float(ds[f"{name}_sem"].values[j])
    grid = np.linspace(0.8 * s2_all.min(), 1.15 * s2_all.max(), n_theory)
    s2_both = np.concatenate([grid, s2_all])
    prm = tst.TeacherStudentParams(N=N, n=n, d=d, s2=s2_both, sa2=sa2, sw2=sw2, eps=eps)
    G = grid.size
    fin = tst.solve_finite_d(prm, approximation=approximation)
    lim = tst.solve_limit(prm, approximation=approximation, check=False)
    # one fixed basin boundary for the metastable branches (smooth in s2; the equilibrium barrier of
    # the finite-d S(q) disappears at small d well below the limit's s2_c)
    q_cut = np.full(s2_both.size, float(q_cut if q_cut is not None else DEFAULT_DROPLET_THRESHOLD))
    gfl = solve_frozen_branch(prm, 0.0, q_cut, approximation=approximation)
    heat = results.get("heating")
    p_drop = float(heat.attrs["heating_start_droplet_fraction"]) if (
        heat is not None and "heating_start_droplet_fraction" in heat.attrs) else np.nan
    if np.isfinite(p_drop):
        drop = solve_frozen_branch(prm, p_drop, q_cut, approximation=approximation)
        drop_cubic = np.where(drop.exists, drop.cubic_learned, np.nan)
    else:
        drop_cubic = np.full(s2_both.size, np.nan)
    at = tst.TeacherStudentParams(N=N, n=n, d=d, s2=float(np.median(s2_all)), sa2=sa2, sw2=sw2, eps=eps)
    s2c = {a: float(np.asarray(tst.solve_transition(at, approximation=a).value)) for a in tst.APPROXIMATIONS}
    data = {name: (("protocol", "s2"), arr) for name, arr in pts.items()}
    data.update({
        "theory_cubic_learned": (("s2",), np.asarray(fin.cubic_learned)[G:]),
        "theory_linear_learned": (("s2",), np.asarray(fin.linear_learned)[G:]),
        "theory_droplet_fraction": (("s2",), np.asarray(fin.droplet_fraction)[G:]),
        "theory_droplet_fraction_threshold": (("s2",), _threshold_mass(branches, s2_all)),
        "theory_gfl_cubic_learned": (("s2",), gfl.cubic_learned[G:]),
        "theory_droplet_branch_cubic_learned": (("s2",), drop_cubic[G:]),
        "theory_fine_cubic_learned": (("s2_theory",), np.asarray(fin.cubic_learned)[:G]),
        "theory_fine_droplet_fraction": (("s2_theory",), np.asarray(fin.droplet_fraction)[:G]),
        "theory_fine_t_droplet": (("s2_theory",), np.asarray(fin.t_droplet)[:G]),
        "gfl_branch_cubic_learned": (("s2_theory",), gfl.cubic_learned[:G]),
        "droplet_branch_cubic_learned": (("s2_theory",), drop_cubic[:G]),
        "limit_cubic_learned": (("s2_theory",), np.asarray(lim.cubic_learned)[:G]),
        "limit_droplet_fraction": (("s2_theory",), np.asarray(lim.droplet_fraction)[:G]),
        "q_cut": (("s2_theory",), q_cut[:G]),
    })
    eq = np.asarray(fin.cubic_learned)[G:]
    dist = pts["cubic_learned"] - eq[None, :]
    sem = pts["cubic_learned_sem"]
    data["distance"] = (("protocol", "s2"), dist)
    data["distance_z"] = (("protocol", "s2"), dist / np.where(sem > 0, sem, np.nan))
    ds = xr.Dataset(data, coords={"protocol": protos, "s2": s2_all, "s2_theory": grid})
    ds["gfl_branch_cubic_learned"].attrs["long_name"] = ("metastable GFL branch: no droplets, bulk confined to "
                                                         "|q| < q_cut (finite-d theory)")
    ds["droplet_branch_cubic_learned"].attrs["long_name"] = (f"superheated droplet branch: droplet fraction frozen at "
                                                             f"{p_drop:.4g} (NaN past its spinodal)")
    summary = {"N": N, "n": n, "d": d, "sa2": sa2, "sw2": sw2, "eps": eps, "approximation": approximation,
               "s2_c_limit": s2c, "frozen_droplet_fraction": p_drop if np.isfinite(p_drop) else None,
               "theory": {"s2": s2_all.tolist(), "cubic_learned": eq.tolist(),
                          "droplet_fraction": np.asarray(fin.droplet_fraction)[G:].tolist(),
                          "gfl_branch_cubic_learned": gfl.cubic_learned[G:].tolist(),
                          "droplet_branch_cubic_learned": [None if not np.isfinite(x) else float(x)
                                                           for x in drop_cubic[G:]]},
               "protocols": {}}
    for i, p in enumerate(protos):
        ok = np.isfinite(dist[i])
        entry = {"s2": s2_all[ok].tolist()}
        for name in TS_OBSERVABLES:
            entry[name] = pts[name][i, ok].tolist()
            entry[f"{name}_sem"] = pts[f"{name}_sem"][i, ok].tolist()
        entry["distance"] = dist[i, ok].tolist()
        entry["distance_z"] = (dist[i, ok] / np.where(sem[i, ok] > 0, sem[i, ok], np.nan)).tolist()
        entry["rms_distance"] = float(np.sqrt(np.mean(dist[i, ok] ** 2))) if ok.any() else None
        if p == "replica":
            r = results[p]
            entry["swap_acceptance"] = [float(x) for x in r["swap_acceptance_pooled"].values]
            entry["round_trips"] = int(r["round_trips"].values.sum())
            entry["ladder_warning"] = str(r.attrs.get("ladder_warning", "none"))
        summary["protocols"][p] = entry
    if "cooling" in protos and "heating" in protos:
        ic, ih = protos.index("cooling"), protos.index("heating")
        gap = pts["cubic_learned"][ih] - pts["cubic_learned"][ic]
        se = np.sqrt(pts["cubic_learned_sem"][ih] ** 2 + pts["cubic_learned_sem"][ic] ** 2)
        z = gap / np.where(se > 0, se, np.nan)
        ok = np.isfinite(z)
        ds["loop_gap"] = (("s2",), gap)
        ds["loop_gap_z"] = (("s2",), z)
        summary["loop"] = {"s2": s2_all[ok].tolist(), "heating_minus_cooling": gap[ok].tolist(),
                           "z": z[ok].tolist(), "threshold_z": loop_z,
                           "loop_seen": bool(np.any(z[ok] > loop_z)),
                           "s2_open": s2_all[ok][z[ok] > loop_z].tolist()}
    ds.attrs["summary_json"] = json.dumps(summary)
    ds.attrs["s2_c_exact"] = s2c["exact"]
    ds.attrs["s2_c_concentrated"] = s2c["concentrated"]
    ds.attrs["frozen_droplet_fraction"] = p_drop
    return annotate(ds, kind="analysis.teacher_student_hysteresis",
                    parameters={"N": N, "n": n, "d": d, "sa2": sa2, "sw2": sw2, "eps": eps,
                                "approximation": approximation})
