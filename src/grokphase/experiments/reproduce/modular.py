"""Figure recipes of the modular-addition model: fig3 and phase-diagram-modular."""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from grokphase.analysis.compare import compare_modular, compare_modular_summary
from grokphase.errors import ParameterError
from grokphase.experiments.reproduce.cache import Context, Step, _annotated, _modular_base, _range, simulations
from grokphase.theory import modular as md
from grokphase.theory.modular_gp import is_prime
from grokphase.theory.results import build_modular_sweep

# ------------------------------------------------------------------------------------------------
# fig3: the modular theory (paper Fig. 3) with Langevin points
# ------------------------------------------------------------------------------------------------


def _modular_compare(ctx: Context, cfg: dict) -> tuple[list[Step], Step | None]:
    if not cfg.get("sims"):
        return [], None
    path, spec = ctx.sims_file(cfg)
    sims = simulations(ctx, path, spec, "modular")
    convs = tuple(cfg.get("sim_conventions", ["paper", "network"]))
    num_line, rf_draws = int(cfg.get("compare_num_line", 121)), int(cfg.get("compare_rf_draws", 16))
    cmp = ctx.step("compare_modular", {"conventions": list(convs), "num_line": num_line, "rf_draws": rf_draws},
                   lambda: compare_modular([s.ds for s in sims], convs, num_line=num_line, rf_draws=rf_draws),
                   deps=sims)
    return sims, cmp


def fig3_data(ctx: Context) -> tuple[Step, Step | None]:
    cfg = ctx.config("fig3")
    base = _modular_base(cfg)
    if cfg.get("sa2") is None:
        base = base.replace(sa2=float(cfg.get("sa2_times_N", 0.002)) / base.N)
    s2 = _range(cfg.get("s2", "0.1:0.3:201"), "fig3 s2")
    method, conv = str(cfg.get("method", "saddle")), str(cfg.get("convention", "paper"))
    theory = ctx.step("theory_modular_sweep", {"base": dataclasses.asdict(base), "s2": s2, "method": method,
                                               "convention": conv, "density_s2": cfg.get("density_s2")},
                      lambda: build_modular_sweep(base, s2, method=method, convention=conv,
                                                  density_s2=cfg.get("density_s2")))
    _, cmp = _modular_compare(ctx, cfg)
    return theory, cmp


def fig3_summary(theory: xr.Dataset, cmp: xr.Dataset | None) -> dict:
    s2 = theory["s2"].values
    s1, s2_ = float(theory.attrs["gmfl1_s2"]), float(theory.attrs["gmfl2_s2"])
    lim = theory["limit_a"].values
    inside = (s2 <= s1) & (s2 >= s2_)
    out = {"gmfl1_s2": s1, "gmfl2_s2": s2_, "spinodal_s2": float(theory.attrs["spinodal_s2"]),
           "a_at_gmfl1": float(np.interp(s1, s2, lim)) if s2.min() <= s1 <= s2.max() else None,
           "a_at_gmfl2": float(np.interp(s2_, s2, lim)) if s2.min() <= s2_ <= s2.max() else None,
           "finite_P_target_component_range": [float(theory["target_component"].min()),
                                               float(theory["target_component"].max())],
           "mixed_phase_points": int(inside.sum())}
    if cmp is not None:
        out["simulations"] = compare_modular_summary(cmp)
    return out

def pd_modular_data(ctx: Context) -> Step:
    """Finite-P theory over (sigma^2, P) at the simulations' width with sa2 P^2 fixed, the P -> infinity
    boundaries, and the modular Langevin points coloured by their droplet fraction."""
    cfg = ctx.config("phase-diagram-modular")
    s2 = _range(cfg.get("s2", "0.05:0.35:61"), "phase-diagram-modular s2")
    Ps = np.asarray(cfg.get("P", [7, 11, 13, 17, 19, 23, 29, 31]), dtype=float)
    bad = [int(p) for p in Ps if not is_prime(int(p))]
    if bad:
        raise ParameterError(f"phase-diagram-modular: P must be prime, got {bad}")
    N, gamma = float(cfg.get("N", 64)), float(cfg.get("gamma", 0.01))
    sa2P2 = float(cfg.get("sa2_times_P2", 4e-4 * 23**2))
    conv, method = str(cfg.get("convention", "network")), str(cfg.get("method", "saddle"))
    theory_cfg = {"s2": s2, "P": Ps, "N": N, "gamma": gamma, "sa2_times_P2": sa2P2, "convention": conv, "method": method}

    def theory():
        S, PP = np.meshgrid(s2, Ps)
        grid = md.ModularParams(N=N, P=PP, s2=S, sa2=sa2P2 / PP**2, gamma=gamma)
        sol = md.solve(grid, method, convention=conv)
        lim = md.solve_limit(grid, conv)
        tr = md.transitions(md.ModularParams(N=N, P=Ps[:1], s2=s2[:1], sa2=sa2P2 / Ps[:1] ** 2, gamma=gamma), conv)
        dims = ("P", "s2")
        ds = xr.Dataset({"phase": (dims, np.asarray(sol.phase, np.int32)),
                         "target_component": (dims, np.asarray(sol.target_component)),
                         "droplet_fraction": (dims, np.asarray(sol.droplet_fraction)),
                         "limit_phase": (dims, np.asarray(lim.phase, np.int32)),
                         "limit_target_component": (dims, np.asarray(lim.target_component))},
                        coords={"P": Ps, "s2": s2})
        return _annotated(ds, "reproduce.theory_modular_P_diagram", theory_cfg,
                          extra={"gmfl1_s2": float(np.asarray(tr.gmfl1_s2).ravel()[0]),
                                 "gmfl2_s2": float(np.asarray(tr.gmfl2_s2).ravel()[0]), "convention": conv})

    th = ctx.step("theory_modular_P_diagram", theory_cfg, theory)
    sims, _ = ([], None)
    if cfg.get("sims"):
        path, spec = ctx.sims_file(cfg)
        sims = simulations(ctx, path, spec, "modular")

    def compute():
        ds = th.ds.copy()
        pts = {k: [] for k in ("P", "s2", "branch", "droplet", "droplet_sem", "target", "target_sem")}
        for s in sims:
            sd = s.ds
            P = float(sd.attrs["param_P"])
            branches = [str(b) for b in sd["branch"].values] if "branch" in sd.dims else ["independent"]
            for b in branches:
                part = sd.sel(branch=b) if "branch" in sd.dims else sd
                for i, v in enumerate(sd["s2"].values):
                    pts["P"].append(P)
                    pts["s2"].append(float(v))
                    pts["branch"].append(b)
                    for k, name in (("droplet", "droplet_fraction"), ("target", "target_component")):
                        src = f"{name}_mean" if f"{name}_mean" in part else name
                        pts[k].append(float(part[src].values[i]))
                        pts[f"{k}_sem"].append(float(part[f"{src}_sem"].values[i]))
        for k, v in pts.items():
            ds[f"sim_{k}"] = (("sim_point",), np.asarray(v) if k == "branch" else np.asarray(v, np.float64))
        return _annotated(ds, "reproduce.phase_diagram_modular", {"scale": ctx.scale, **cfg},
                          extra={k: th.ds.attrs[k] for k in ("gmfl1_s2", "gmfl2_s2", "convention")})

    return ctx.step("phase_diagram_modular", {"scale": ctx.scale, **cfg}, compute, deps=[th, *sims])
