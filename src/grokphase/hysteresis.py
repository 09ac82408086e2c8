"""Hysteresis of the modular model (issue 8): cooling, heating and replica-exchange branches against
the theory's equilibrium curve and metastable branches.  Reads saved simulation results; the theory
is solved at exactly the simulated (N, P, sa2, gamma).

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

from grokphase.errors import ParameterError

PROTOCOLS = ("cooling", "heating", "replica")


def _branch(ds: xr.Dataset, protocol: str) -> xr.Dataset:
    if "branch" in ds.dims:
        want = "cooling" if protocol == "cooling" else "heating"
        if want not in list(ds["branch"].values):
            raise ParameterError(f"the {protocol} result has no {want!r} branch (branches: {list(ds['branch'].values)})")
        return ds.sel(branch=want)
    return ds


def hysteresis_modular(results: dict, convention: str = "network", n_theory: int = 121) -> xr.Dataset:
    """``results``: protocol name (cooling, heating, replica) -> modular simulation Dataset (an
    annealing result with a branch dimension, or a replica-exchange result).  Returns per-protocol
    points (protocol, s2) with standard errors, the theory on a fine s2 grid (finite-P equilibrium,
    P -> infinity equilibrium, the supercooled disordered branch and its barrier) and the distances."""
    from grokphase.io import annotate
    from grokphase.theory import modular as mt

    if not results:
        raise ParameterError("hysteresis_modular needs at least one of cooling, heating, replica")
    unknown = sorted(set(results) - set(PROTOCOLS))
    if unknown:
        raise ParameterError(f"unknown protocol(s) {unknown}; use {PROTOCOLS}")
    first = next(iter(results.values()))
    P, N = float(first.attrs["param_P"]), float(first.attrs["param_N"])
    sa2, gamma = float(first.attrs["param_sa2"]), float(first.attrs["param_gamma"])
    for name, ds in results.items():
        same = [float(ds.attrs[f"param_{k}"]) for k in ("P", "N", "sa2", "gamma")]
        if not np.allclose(same, [P, N, sa2, gamma]):
            raise ParameterError(f"{name}: (P, N, sa2, gamma) = {same} differ from {[P, N, sa2, gamma]}")
    s2_all = np.unique(np.concatenate([np.asarray(ds["s2"].values) for ds in results.values()]))
    protos = [p for p in PROTOCOLS if p in results]
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
        warnings.simplefilter("ignore")
        prm = mt.ModularParams(N=N, P=P, s2=np.concatenate([grid, s2_all]), sa2=sa2, gamma=gamma)
        fin = mt.solve(prm, "exact", convention=convention, check=False)
        lim = mt.solve_limit(prm, convention)
        tr = mt.transitions(mt.ModularParams(N=N, P=P, s2=float(s2_all[0]), sa2=sa2, gamma=gamma), convention)
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
        if p == "replica":
            r = results[p]
            summary["protocols"][p]["swap_acceptance"] = [float(x) for x in r["swap_acceptance_pooled"].values]
            summary["protocols"][p]["round_trips"] = int(r["round_trips"].values.sum())
            summary["protocols"][p]["ladder_warning"] = str(r.attrs.get("ladder_warning", "none"))
    ds.attrs["summary_json"] = json.dumps(summary)
    ds.attrs["gmfl1_s2"] = s1
    return annotate(ds, kind="analysis.modular_hysteresis", parameters={"P": P, "N": N, "sa2": sa2, "gamma": gamma,
                                                                      "convention": convention})
