"""Figure recipes of the teacher-student model: fig2, fig4-fig6 (App. D), phase-diagram-ts,
sample-complexity."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from grokphase.analysis import appd
from grokphase.analysis.compare import compare_teacher_student
from grokphase.experiments.devices import cached_run_devices
from grokphase.experiments.models.teacher_student import run_sim
from grokphase.experiments.reproduce.cache import Context, Step, _annotated, _range, _ts_base, simulations, step_key
from grokphase.theory import gp
from grokphase.theory import teacher_student as ts

# ------------------------------------------------------------------------------------------------
# fig2: teacher-student simulations over the theory
# ------------------------------------------------------------------------------------------------


def fig2_data(ctx: Context) -> Step:
    cfg = ctx.config("fig2")
    path, spec = ctx.sims_file(cfg)
    sims = simulations(ctx, path, spec, "teacher-student")
    return ctx.step("fig2", {"scale": ctx.scale}, lambda: compare_teacher_student([s.ds for s in sims]), deps=sims)

# ------------------------------------------------------------------------------------------------
# fig4-fig6: App. D, grokking in time
# ------------------------------------------------------------------------------------------------


def appd_data(ctx: Context) -> Step:
    cfg = ctx.config("appD")
    path, spec = ctx.sims_file(cfg)
    sims = appd.appd_sims(spec)
    steps = []
    for sim in sims:
        config = sim.parameters()
        key = step_key("sim_ts", config)

        def compute(sim=sim, key=key):

            ctx.log(f"[sim_ts] {path.name}: width N={sim.N} (d={sim.d}, n={sim.n}), "
                    f"{sim.datasets * sim.inits} networks, {sim.steps} steps")
            return run_sim(sim, devices=cached_run_devices(spec), progress=ctx.progress,
                           checkpoint_dir=str(ctx.cache_dir / "checkpoints" / key[:16]))

        steps.append(ctx.step("sim_ts", config, compute))

    def combine():
        return appd.combine([s.ds for s in steps])

    return ctx.step("appD", {"scale": ctx.scale}, combine, deps=steps)

# ------------------------------------------------------------------------------------------------
# phase diagrams with simulation points
# ------------------------------------------------------------------------------------------------


def pd_ts_data(ctx: Context) -> Step:
    """Finite-d theory over (sigma^2, beta) (App. C configuration scaled by Table 1, alpha = beta), the
    scaling-limit transition, and the fig2 simulations placed at their (sigma^2, beta)."""
    cfg = ctx.config("phase-diagram-ts")
    base = _ts_base(cfg)
    s2 = _range(cfg.get("s2", "0.05:0.4:48"), "phase-diagram-ts s2")
    betas = _range(cfg.get("beta", "0.0625:8:25:log"), "phase-diagram-ts beta")
    theory_cfg = {"base": base.as_dict(), "s2": s2, "beta": betas, "approximations": list(ts.APPROXIMATIONS)}

    def theory():
        S, B = np.meshgrid(s2, betas)
        grid = base.broadcast().replace(s2=S).scaled(alpha=B, beta=B)
        dims = ("beta", "s2")
        data, extra = {}, {}
        for ap in ts.APPROXIMATIONS:
            sol = ts.solve_finite_d(grid, approximation=ap)
            lim = ts.solve_limit(grid, approximation=ap)
            tr = ts.solve_transition(base.broadcast(), along="s2", lo=float(s2.min()), hi=float(s2.max()),
                                     approximation=ap)
            data.update({f"{ap}_phase": (dims, np.asarray(sol.phase, np.int32)),
                         f"{ap}_cubic_learned": (dims, np.asarray(sol.cubic_learned)),
                         f"{ap}_linear_learned": (dims, np.asarray(sol.linear_learned)),
                         f"{ap}_droplet_fraction": (dims, np.asarray(sol.droplet_fraction)),
                         f"{ap}_limit_phase": (dims, np.asarray(lim.phase, np.int32)),
                         f"{ap}_limit_cubic_learned": (dims, np.asarray(lim.cubic_learned))})
            extra[f"limit_s2_c_{ap}"] = float(np.asarray(tr.value))
            extra[f"limit_u_c_{ap}"] = float(np.asarray(tr.u))
        ds = xr.Dataset(data, coords={"beta": betas, "s2": s2})
        return _annotated(ds, "reproduce.theory_ts_beta_diagram", {"scale": ctx.scale, **theory_cfg}, extra=extra)

    th = ctx.step("theory_ts_beta_diagram", theory_cfg, theory)
    sims = ctx.runs(cfg, "teacher-student")

    def compute():
        ds = th.ds.copy()
        if sims:
            pts = {k: [] for k in ("beta", "s2", "cubic", "cubic_sem", "linear", "linear_sem", "droplet")}
            for s in sims:
                beta = float(s.ds.attrs.get("param_beta", 1.0))
                for i, v in enumerate(s.ds["s2"].values):
                    pts["beta"].append(beta)
                    pts["s2"].append(float(v) * beta / float(s.ds.attrs.get("param_alpha", beta)))
                    for k, name in (("cubic", "cubic_learned"), ("linear", "linear_learned")):
                        pts[k].append(float(s.ds[name].values[i]))
                        pts[f"{k}_sem"].append(float(s.ds[f"{name}_sem"].values[i]))
                    pts["droplet"].append(float(s.ds["droplet_fraction"].values[i]))
            for k, v in pts.items():
                ds[f"sim_{k}"] = (("sim_point",), np.asarray(v, np.float64))
            return _annotated(ds, "reproduce.phase_diagram_ts", {"scale": ctx.scale, **cfg},
                          extra={k: v for k, v in th.ds.attrs.items() if k.startswith("limit_")})

    return ctx.step("phase_diagram_ts", {"scale": ctx.scale, **cfg}, compute, deps=[th, *sims])

# ------------------------------------------------------------------------------------------------
# sample complexity
# ------------------------------------------------------------------------------------------------


def _crossing(n: np.ndarray, f: np.ndarray, level: float = 0.5) -> float:
    """First n (log-interpolated) at which f reaches ``level``; NaN if it never does."""
    above = np.flatnonzero(np.asarray(f) >= level)
    if above.size == 0:
        return float("nan")
    k = int(above[0])
    if k == 0:
        return float(n[0])
    x0, x1 = math.log(n[k - 1]), math.log(n[k])
    f0, f1 = float(f[k - 1]), float(f[k])
    return float(math.exp(x0 + (level - f0) * (x1 - x0) / (f1 - f0)))


def sample_complexity_data(ctx: Context) -> Step:
    """Cubic learned fraction vs n: the GP (EK with the exact Rayleigh quotients), the finite-width
    theory (finite d and scaling limit) at the paper's configuration, and the same curves at the
    simulations' (scaled) configuration with the simulated points."""
    cfg = ctx.config("sample-complexity")
    base = _ts_base(cfg)
    n = _range(cfg.get("n", "100:1e7:61:log"), "sample-complexity n")
    sim_beta = float(cfg.get("sim_beta", 0.125))
    theory_cfg = {"base": base.as_dict(), "n": n, "sim_beta": sim_beta, "approximations": list(ts.APPROXIMATIONS)}

    def theory():
        out, extra = {}, {}
        for tag, beta in (("paper", 1.0), ("sim", sim_beta)):
            grid = base.broadcast().replace(n=n).scaled(alpha=beta, beta=beta)
            g = gp.solve_gp(grid)
            out[f"{tag}_n"] = (("n",), np.asarray(grid.n, np.float64))
            out[f"{tag}_gp_cubic"] = (("n",), np.asarray(g.cubic_learned))
            out[f"{tag}_gp_linear"] = (("n",), np.asarray(g.linear_learned))
            for ap in ts.APPROXIMATIONS:
                fd = ts.solve_finite_d(grid, approximation=ap)
                lim = ts.solve_limit(grid, approximation=ap)
                out[f"{tag}_finite_{ap}_cubic"] = (("n",), np.asarray(fd.cubic_learned))
                out[f"{tag}_finite_{ap}_linear"] = (("n",), np.asarray(fd.linear_learned))
                out[f"{tag}_limit_{ap}_cubic"] = (("n",), np.asarray(lim.cubic_learned))
            one = base.broadcast().scaled(alpha=beta, beta=beta)
            extra[f"{tag}_gp_n_half_cubic"] = float(np.asarray(gp.solve_gp(one).n_half_cubic).ravel()[0])
            for ap in ts.APPROXIMATIONS:        # GFL -> GMFL-I onset along n (scaling limit)
                tr = ts.solve_transition(one, along="n", lo=float(one.n) / 1e3, hi=float(one.n) * 1e3,
                                         approximation=ap)
                extra[f"{tag}_limit_{ap}_n_onset"] = float(np.asarray(tr.value).ravel()[0])
        ds = xr.Dataset(out, coords={"n_base": n})
        return _annotated(ds, "reproduce.theory_sample_complexity", theory_cfg, extra=extra)

    th = ctx.step("theory_sample_complexity", theory_cfg, theory)
    sims = ctx.runs(cfg, "teacher-student")

    def compute():
        ds = th.ds.copy()
        pts = {k: [] for k in ("n", "beta", "s2", "cubic", "cubic_sem", "linear", "linear_sem",
                               "theory_exact_cubic", "theory_concentrated_cubic", "gp_cubic")}
        for s in sims:
            sd = s.ds
            at = ts.TeacherStudentParams(N=float(sd.attrs["N"]), n=float(sd.attrs["n"]), d=float(sd.attrs["d"]),
                                         sa2=float(sd.attrs["sa2"]), s2=np.asarray(sd["s2"].values, np.float64),
                                         sw2=float(sd.attrs["param_sw2"]), eps=float(sd.attrs["param_eps"]))
            th_pts = {ap: np.asarray(ts.solve_finite_d(at, approximation=ap).cubic_learned)
                      for ap in ts.APPROXIMATIONS}
            gp_pts = np.asarray(gp.solve_gp(at).cubic_learned)
            for i, v in enumerate(sd["s2"].values):
                for ap in ts.APPROXIMATIONS:    # the theories at exactly the simulated sizes
                    pts[f"theory_{ap}_cubic"].append(float(th_pts[ap][i]))
                pts["gp_cubic"].append(float(gp_pts[i]))
                pts["n"].append(float(sd.attrs["n"]))
                pts["beta"].append(float(sd.attrs.get("param_beta", 1.0)))
                pts["s2"].append(float(v))
                for k, name in (("cubic", "cubic_learned"), ("linear", "linear_learned")):
                    pts[k].append(float(sd[name].values[i]))
                    pts[f"{k}_sem"].append(float(sd[f"{name}_sem"].values[i]))
        for k, v in pts.items():        # (not sim_*: the theory's curves at the sims' configuration are sim_*)
            ds[f"point_{k}"] = (("sim_point",), np.asarray(v, np.float64))
        extra = {k: v for k, v in th.ds.attrs.items() if k.endswith("_n_half_cubic") or k.endswith("_n_onset")}
        for tag in ("paper", "sim"):
            nn = ds[f"{tag}_n"].values
            for kind in ("finite_exact", "finite_concentrated", "limit_exact", "limit_concentrated"):
                extra[f"{tag}_{kind}_n_half_cubic"] = _crossing(nn, ds[f"{tag}_{kind}_cubic"].values)
        return _annotated(ds, "reproduce.sample_complexity", {"scale": ctx.scale, **cfg}, extra=extra)

    return ctx.step("sample_complexity", {"scale": ctx.scale, **cfg}, compute, deps=[th, *sims])
