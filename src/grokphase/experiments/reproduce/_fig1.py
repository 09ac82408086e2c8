"""fig1: the schematic phase diagram of both models, computed."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import xarray as xr

from grokphase.experiments.reproduce.cache import (Context, Step, _annotated, _axis, _interior_point, _labels,
                                                   _modular_base, _sub, _ts_base)
from grokphase.theory import modular as md
from grokphase.theory import teacher_student as ts
from grokphase.theory.results import build_modular_phase_diagram, build_teacher_student_phase_diagram, limit_profile

# ------------------------------------------------------------------------------------------------
# fig1: the schematic phase diagram, computed
# ------------------------------------------------------------------------------------------------


def fig1_data(ctx: Context) -> Step:
    """Phase regions of both models in the (sigma^2, N) plane (teacher-student: scaling limit at the
    App. C configuration with sa2 = 8/N; modular: P -> infinity phases at P = 401, sa2 = 0.002/N),
    with Shat at the deepest interior point of each phase region."""
    cfg = ctx.config("fig1")
    tcfg, mcfg = _sub(cfg, "ts_"), _sub(cfg, "modular_")
    ts_x = _axis(tcfg.get("x", "s2:0.05:0.4:64"), ts.PARAM_NAMES + ts.DERIVED_AXES, "fig1 ts_x")
    ts_y = _axis(tcfg.get("y", "N:100:3000:64"), ts.PARAM_NAMES + ts.DERIVED_AXES, "fig1 ts_y")
    m_x = _axis(mcfg.get("x", "s2:0.05:0.35:64"), md.PARAM_NAMES, "fig1 modular_x")
    m_y = _axis(mcfg.get("y", "N:300:3000:64"), md.PARAM_NAMES, "fig1 modular_y")
    ts_base, m_base = _ts_base(tcfg), _modular_base(mcfg)
    ts_sa2N = None if tcfg.get("sa2") is not None else float(tcfg.get("sa2_times_N", 8.0))
    m_sa2N = None if mcfg.get("sa2") is not None else float(mcfg.get("sa2_times_N", 0.002))
    conv = str(mcfg.get("convention", "paper"))
    approx = str(tcfg.get("approximation", "concentrated"))
    ts.check_approximation(approx)

    ts_step = ctx.step("theory_ts_phase_diagram", {"base": ts_base.as_dict(),
                                                    "x": tcfg.get("x"), "y": tcfg.get("y"), "sa2_times_N": ts_sa2N,
                                                    "limit": True, "approximation": approx},
                       lambda: build_teacher_student_phase_diagram(ts_base, ts_x, ts_y, limit=True, sa2_times_N=ts_sa2N,
                                                                   approximation=approx))
    m_step = ctx.step("theory_modular_phase_diagram", {"base": dataclasses.asdict(m_base), "x": mcfg.get("x"),
                                                       "y": mcfg.get("y"), "sa2_times_N": m_sa2N, "convention": conv},
                      lambda: build_modular_phase_diagram(m_base, m_x, m_y, convention=conv, sa2_times_N=m_sa2N))

    def compute():
        tsd, mdd = ts_step.ds, m_step.ds
        xs, ys = tsd[ts_x.name].values, tsd[ts_y.name].values
        q = np.linspace(-1.4, 1.4, 561)
        ts_pts, ts_curves, ts_codes = [], [], []
        phase = tsd["phase"].values.astype(int)
        for code in sorted(_labels()):
            ij = _interior_point(phase, code)
            if ij is None:
                continue
            i, j = ij
            b, c = float(tsd["b"].values[i, j]), float(tsd["c"].values[i, j])
            u, sw2 = float(tsd["u"].values[i, j]), float(ts_base.sw2)
            ts_curves.append(np.asarray(limit_profile(q, b, c, u, sw2, approx)))
            ts_pts.append((float(xs[j]), float(ys[i])))
            ts_codes.append(code)
        xm, ym = mdd[m_x.name].values, mdd[m_y.name].values
        lphase = mdd["limit_phase"].values.astype(int)
        m_pts, m_codes, m_curves = [], [], []
        phi_max = 1.4 * math.sqrt(3.0 / float(m_base.gamma))
        phi = np.linspace(0.0, phi_max, 561)
        for code in sorted(_labels()):
            ij = _interior_point(lphase, code)
            if ij is None:
                continue
            i, j = ij
            a = float(mdd["limit_target_component"].values[i, j]) - 1.0
            u = float(mdd["u_grid"].values[i, j])
            m_curves.append(np.asarray(md.reduced_action(phi, a, u, float(m_base.gamma))))
            m_pts.append((float(xm[j]), float(ym[i])))
            m_codes.append(code)
        data = {
            "ts_phase": ((f"ts_{ts_y.name}", f"ts_{ts_x.name}"), phase),
            "ts_cubic_learned": ((f"ts_{ts_y.name}", f"ts_{ts_x.name}"), tsd["cubic_learned"].values),
            "ts_boundary": ((f"ts_{ts_y.name}",), tsd["boundary_x"].values),
            "ts_inset_action": (("ts_inset", "q"), np.asarray(ts_curves)),
            "ts_inset_x": (("ts_inset",), [p[0] for p in ts_pts]),
            "ts_inset_y": (("ts_inset",), [p[1] for p in ts_pts]),
            "ts_inset_phase": (("ts_inset",), np.asarray(ts_codes, np.int32)),
            "modular_phase": ((f"modular_{m_y.name}", f"modular_{m_x.name}"), lphase),
            "modular_target_component": ((f"modular_{m_y.name}", f"modular_{m_x.name}"),
                                         mdd["limit_target_component"].values),
            "modular_inset_action": (("modular_inset", "phi"), np.asarray(m_curves)),
            "modular_inset_x": (("modular_inset",), [p[0] for p in m_pts]),
            "modular_inset_y": (("modular_inset",), [p[1] for p in m_pts]),
            "modular_inset_phase": (("modular_inset",), np.asarray(m_codes, np.int32)),
        }
        coords = {f"ts_{ts_x.name}": xs, f"ts_{ts_y.name}": ys, "q": q,
                  f"modular_{m_x.name}": xm, f"modular_{m_y.name}": ym, "phi": phi}
        ds = xr.Dataset(data, coords=coords)
        return _annotated(ds, "reproduce.fig1", {"scale": ctx.scale, **cfg},
                          extra={"ts_x": ts_x.name, "ts_y": ts_y.name, "modular_x": m_x.name, "modular_y": m_y.name,
                                 "ts_x_log": int(ts_x.log), "ts_y_log": int(ts_y.log), "modular_x_log": int(m_x.log),
                                 "modular_y_log": int(m_y.log), "modular_convention": conv, "ts_approximation": approx,
                                 "phase_meanings": "GFL GMFL-I GMFL-II"})

    return ctx.step("fig1", {"scale": ctx.scale, **cfg}, compute, deps=[ts_step, m_step])


def fig1_summary(ds: xr.Dataset) -> dict:
    labels = _labels()
    out = {}
    for model in ("ts", "modular"):
        ph = ds[f"{model}_phase"].values
        out[model] = {
            "phase_counts": {labels[c]: int((ph == c).sum()) for c in labels},
            "insets": [{ds.attrs[f"{model}_x"]: float(x), ds.attrs[f"{model}_y"]: float(y), "phase": labels[int(p)],
                        "action_min": float(np.min(s))}
                       for x, y, p, s in zip(ds[f"{model}_inset_x"].values, ds[f"{model}_inset_y"].values,
                                             ds[f"{model}_inset_phase"].values, ds[f"{model}_inset_action"].values)]}
    return out
