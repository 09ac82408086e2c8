r"""|w_perp|^2 as a second order parameter: teacher-student simulations against both theories
(THEORY.md §3b, issue 7).

The paper's reduction (the ``concentrated`` approximation) fixes t = |w_perp|^2 = |w|^2 - q^2 of
every neuron at its prior mean sw2; the ``exact`` approximation integrates over t, so droplet
neurons (|q| beyond the free-energy barrier) sit at t well below sw2.  The simulations record t
with q for every neuron after burn-in (:mod:`grokphase.sims.teacher_student`: ``t_sum_q`` per q
bin, the 2-D histogram ``qt_hist``), so the mean t of droplet and bulk neurons, with jackknife
standard errors over data sets, can be compared with both theories at the simulated sizes.

:func:`compare_perp_norm` builds the comparison (one row per simulation file, one column per
simulated s2), :func:`perp_norm_summary` its JSON, :func:`plot_perp_norm` the figure (simulated
density on (q, t) with both theories' saddles, and the mean t of droplet and bulk neurons vs s2).

Two diagnostics go beyond point-by-point z-scores:

* **equivalent-kernel (EK) control.**  Simulation files at the same (N, d) and the same
  invariants u = n^2 sa2/(s2^2 d N), r = s2 N/n (n -> k n with s2 -> k s2) have the same theory
  (both approximations depend on n and s2 only through u and r at fixed N, d); their difference is
  finite-n (EK) error of the simulations' theory.  The summary lists the shift of every observable
  from the smallest-n member of each such group.
* **matched s2.**  For each point and theory, the s2 at which that theory's finite-d cubic learned
  fraction (at the simulated sizes) equals the simulated one, with the error propagated through the
  slope; the ratio s2/s2_match rescales the theory's scaling-limit transition into the transition
  the simulations imply under that theory (``implied_s2_c``), in beta = 1 units.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import xarray as xr

from grokphase.errors import ResultFileError
import jax.numpy as jnp
import jax
from grokphase.analysis.single_index import require_paper_model
from grokphase.io import annotate
from grokphase.theory import teacher_student as ts

APPROXIMATIONS = ("exact", "concentrated")
#: the beta = 1 configuration the s2 values are reported in (paper's App. C): s2_beta1 = r n/N
REFERENCE_N, REFERENCE_n = 700.0, 3000.0
SIM_FIELDS = ("t_droplet", "t_bulk", "droplet_fraction", "cubic_learned", "linear_learned")


def _params(ds: xr.Dataset, s2=None):

    N, n, d, sa2 = (float(ds.attrs[k]) for k in ("N", "n", "d", "sa2"))
    s2 = np.asarray(ds["s2"].values if s2 is None else s2, np.float64)
    return ts.TeacherStudentParams(N=N, n=n, d=d, s2=s2, sa2=sa2, sw2=float(ds.attrs["param_sw2"]),
                                   eps=float(ds.attrs["param_eps"]))


def _check_sim(ds: xr.Dataset) -> None:
    if ds.attrs.get("grokphase_kind") != "sims.teacher_student":
        raise ResultFileError(f"expected a teacher-student simulation result, got {ds.attrs.get('grokphase_kind')!r}")
    require_paper_model(ds, "the |w_perp|^2 comparison")
    missing = [k for k in ("t_droplet", "t_bulk", "qt_hist", "t_sum_q") if k not in ds]
    if missing:
        raise ResultFileError(f"simulation file lacks {', '.join(missing)} (written before t = |w_perp|^2 was "
                              "recorded): re-run it with this version")


def theory_t_split(sol, params, threshold: float, q_max: float = 1.6, num_q: int = 1201, num_t: int = 1200):
    """Exact finite-d theory (scalar solution ``sol`` at scalar ``params``): the mean t of neurons
    with |q| beyond / inside ``threshold``, the mass beyond it, and the mode (q, t) of the joint
    density in the droplet region (|q| > threshold) and in the bulk, from :func:`log_density_qt` on
    a uniform (q, t) grid (q >= 0, the density is even in q).  The grid resolves the density:
    spacing 1.3e-3 in q and ~1.3e-3 in t against widths >= sqrt(sw2/d)/... ~ 0.05 for d <= 200."""

    sw2, d = float(params.sw2), float(params.d)
    q = np.linspace(0.0, q_max, num_q)
    t_hi = sw2 * (1.0 + 12.0 * math.sqrt(2.0 / d)) + 0.5
    t = np.linspace(1e-4, t_hi, num_t)
    L = np.asarray(ts.log_density_qt(sol, params, jnp.asarray(q)[:, None], jnp.asarray(t)[None, :]), np.float64)
    wq = np.ones(num_q)
    wq[0] = wq[-1] = 0.5
    logw = L + np.log(wq)[:, None]
    m = np.max(logw)
    p = np.exp(logw - m)
    beyond = q > threshold
    pb, pi = p[beyond], p[~beyond]
    out = {"t_droplet": float((pb * t).sum() / pb.sum()) if pb.sum() > 0 else math.nan,
           "t_bulk": float((pi * t).sum() / pi.sum()),
           "droplet_fraction": float(pb.sum() / p.sum())}
    kb = np.unravel_index(np.argmax(np.where(beyond[:, None], L, -np.inf)), L.shape)
    ki = np.unravel_index(np.argmax(np.where(~beyond[:, None], L, -np.inf)), L.shape)
    out.update(q_mode_droplet=float(q[kb[0]]), t_mode_droplet=float(t[kb[1]]), q_mode_bulk=float(q[ki[0]]),
               t_mode_bulk=float(t[ki[1]]))
    return out


def _take(sol, i):

    return jax.tree_util.tree_map(lambda a: None if a is None or np.ndim(a) == 0 else np.asarray(a)[i], sol)


def _line_fraction(line_s2, line_vals, value, sem):
    """s2 at which a theory line (monotone decreasing in s2) equals ``value``, and its error from
    ``sem`` through the local slope; NaN outside the line."""
    x, y = np.asarray(line_s2), np.asarray(line_vals)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or not math.isfinite(value):
        return math.nan, math.nan
    order = np.argsort(y)
    ys, xs = y[order], x[order]
    if not (ys[0] <= value <= ys[-1]):
        return math.nan, math.nan
    s = float(np.interp(value, ys, xs))
    slope = float(np.interp(s, x, np.gradient(y, x)))
    return s, abs(sem / slope) if slope != 0 else math.inf


def compare_perp_norm(sims: Sequence[xr.Dataset], num_line: int = 25) -> xr.Dataset:
    """Simulated t = |w_perp|^2 of droplet and bulk neurons, droplet fraction and learned fractions
    against the exact and the concentrated finite-d theory at exactly the simulated sizes.

    Dims ``(sim, point)`` (points: the simulated s2 values of each file, NaN-padded) and, for the
    densities, ``(sim, point, qt_q, t)``.  Variables: ``sim_<x>`` and ``sim_<x>_sem`` for x in
    t_droplet, t_bulk, droplet_fraction, cubic_learned, linear_learned; ``<a>_<x>`` for each
    approximation a (t split at the simulation's own droplet threshold; the concentrated theory's t
    is sw2 by assumption); ``exact_t_droplet_barrier`` (the exact theory's own split at its barrier),
    the exact density's droplet mode ``exact_q_mode``/``exact_t_mode``, the scaling-limit saddles
    ``limit_<a>_q_star``/``limit_<a>_t_star``; z-scores ``z_<x>_<a>`` = (sim - theory)/sem;
    ``z_t_gap`` = (t_bulk - t_droplet)/sqrt(sem_b^2 + sem_d^2); ``rel_t_droplet_exact`` =
    sim/theory - 1; ``s2_match_<a>`` (+ ``_err``): the s2 at which theory a's cubic fraction equals
    the simulated one; the simulated density ``sim_log_p_qt`` (per unit q per unit t, pooled over
    networks) and the exact theory's ``exact_log_p_qt`` on the same bin centres."""

    if len(sims) == 0:
        raise ResultFileError("no simulation files given")
    for ds in sims:
        _check_sim(ds)
    qt_q, tt = sims[0]["qt_q"].values, sims[0]["t"].values
    for ds in sims[1:]:
        if ds["qt_q"].values.shape != qt_q.shape or not np.allclose(ds["qt_q"].values, qt_q) \
                or ds["t"].values.shape != tt.shape or not np.allclose(ds["t"].values, tt):
            raise ResultFileError("simulation files have different (q, t) histogram bins (qt_q_bins, t_bins, "
                                  "q_max, t_max must agree)")
    K, S = len(sims), max(ds.sizes["s2"] for ds in sims)
    names = ["s2", "s2_beta1", "u", "r", "droplet_threshold"]
    names += [f"sim_{x}" for x in SIM_FIELDS] + [f"sim_{x}_sem" for x in SIM_FIELDS]
    for a in APPROXIMATIONS:
        names += [f"{a}_{x}" for x in SIM_FIELDS] + [f"limit_{a}_q_star", f"limit_{a}_t_star", f"limit_{a}_cubic_learned"]
        names += [f"z_{x}_{a}" for x in SIM_FIELDS] + [f"s2_match_{a}", f"s2_match_{a}_err"]
    names += ["exact_t_droplet_barrier", "exact_t_bulk_barrier", "exact_q_barrier", "exact_q_mode", "exact_t_mode",
              "exact_t_mode_bulk", "z_t_gap", "rel_t_droplet_exact"]
    v = {k: np.full((K, S), np.nan) for k in names}
    sim_lp = np.full((K, S, qt_q.size, tt.size), np.nan)
    th_lp = np.full((K, S, qt_q.size, tt.size), np.nan)
    line_s2 = np.full((K, num_line), np.nan)
    lines = {a: np.full((K, num_line), np.nan) for a in APPROXIMATIONS}
    per_sim = {k: np.zeros(K) for k in ("N", "n", "d", "beta", "alpha", "sa2", "sw2", "networks")}
    dq, dt = np.diff(sims[0]["qt_q_edges"].values).mean(), np.diff(sims[0]["t_edges"].values).mean()
    for k, ds in enumerate(sims):
        p = _params(ds)
        M = ds.sizes["s2"]
        s2 = np.asarray(ds["s2"].values, np.float64)
        sw2 = float(ds.attrs["param_sw2"])
        for key, val in (("N", ds.attrs["N"]), ("n", ds.attrs["n"]), ("d", ds.attrs["d"]), ("sa2", ds.attrs["sa2"]),
                         ("beta", ds.attrs.get("param_beta", 1.0)), ("alpha", ds.attrs.get("param_alpha", 1.0)),
                         ("sw2", sw2), ("networks", ds.sizes["dataset"] * ds.sizes["init"])):
            per_sim[key][k] = float(val)
        v["s2"][k, :M] = s2
        v["u"][k, :M] = np.asarray(p.u, np.float64) * np.ones(M)
        v["r"][k, :M] = np.asarray(p.r, np.float64) * np.ones(M)
        v["s2_beta1"][k, :M] = v["r"][k, :M] * REFERENCE_n / REFERENCE_N
        thr = np.asarray(ds["droplet_threshold"].values, np.float64)
        v["droplet_threshold"][k, :M] = thr
        for x in SIM_FIELDS:
            v[f"sim_{x}"][k, :M] = ds[x].values
            v[f"sim_{x}_sem"][k, :M] = ds[f"{x}_sem"].values
        hist = ds["qt_hist"].values.sum(axis=(1, 2))                       # (M, qt_q, t)
        total = hist.sum(axis=(1, 2)) + ds["qt_overflow"].values.sum(axis=(1, 2))
        with np.errstate(divide="ignore"):
            sim_lp[k, :M] = np.log(hist / (total[:, None, None] * dq * dt))
        lo, hi = s2.min(), s2.max()
        line = np.geomspace(0.6 * lo, 1.6 * hi, num_line)
        line_s2[k] = line
        for a in APPROXIMATIONS:
            # one solve (one compile) for the points and the line
            both = ts.solve_finite_d(_params(ds, np.concatenate([s2, line])), approximation=a, density=True)
            sol = _take(both, slice(0, M))
            lines[a][k] = np.asarray(both.cubic_learned)[M:]
            lim = ts.solve_limit(p, approximation=a)
            v[f"{a}_cubic_learned"][k, :M] = np.asarray(sol.cubic_learned)
            v[f"{a}_linear_learned"][k, :M] = np.asarray(sol.linear_learned)
            v[f"limit_{a}_q_star"][k, :M] = np.asarray(lim.q_star)
            v[f"limit_{a}_t_star"][k, :M] = np.asarray(lim.t_star)
            v[f"limit_{a}_cubic_learned"][k, :M] = np.asarray(lim.cubic_learned)
            for i in range(M):
                pi = _params(ds, s2[i])
                if a == "exact":
                    split = theory_t_split(_take(sol, i), pi, thr[i])
                    v["exact_t_droplet"][k, i], v["exact_t_bulk"][k, i] = split["t_droplet"], split["t_bulk"]
                    v["exact_droplet_fraction"][k, i] = split["droplet_fraction"]
                    v["exact_q_mode"][k, i], v["exact_t_mode"][k, i] = split["q_mode_droplet"], split["t_mode_droplet"]
                    v["exact_t_mode_bulk"][k, i] = split["t_mode_bulk"]
                    v["exact_t_droplet_barrier"][k, i] = float(np.asarray(sol.t_droplet)[i])
                    v["exact_t_bulk_barrier"][k, i] = float(np.asarray(sol.t_bulk)[i])
                    v["exact_q_barrier"][k, i] = float(np.asarray(sol.q_barrier)[i])
                    th_lp[k, i] = np.asarray(ts.log_density_qt(_take(sol, i), pi, qt_q[:, None], tt[None, :]))
                else:
                    qq = np.asarray(sol.q)[i]
                    pq = np.exp(np.asarray(sol.log_p)[i])
                    g = np.linspace(thr[i], qq.max(), 4001)
                    v["concentrated_droplet_fraction"][k, i] = min(1.0, 2.0 * np.trapezoid(np.interp(g, qq, pq), g))
                    v["concentrated_t_droplet"][k, i] = v["concentrated_t_bulk"][k, i] = sw2
            for i in range(M):
                s_m, s_e = _line_fraction(line, lines[a][k], v["sim_cubic_learned"][k, i],
                                          v["sim_cubic_learned_sem"][k, i])
                v[f"s2_match_{a}"][k, i], v[f"s2_match_{a}_err"][k, i] = s_m, s_e
    with np.errstate(invalid="ignore", divide="ignore"):
        for a in APPROXIMATIONS:
            for x in SIM_FIELDS:
                v[f"z_{x}_{a}"] = (v[f"sim_{x}"] - v[f"{a}_{x}"]) / v[f"sim_{x}_sem"]
        v["z_t_gap"] = (v["sim_t_bulk"] - v["sim_t_droplet"]) / np.hypot(v["sim_t_bulk_sem"], v["sim_t_droplet_sem"])
        v["rel_t_droplet_exact"] = v["sim_t_droplet"] / v["exact_t_droplet"] - 1.0
    data = {k: (("sim", "point"), val) for k, val in v.items()}
    data.update({k: (("sim",), val) for k, val in per_sim.items()})
    data["sim_log_p_qt"] = (("sim", "point", "qt_q", "t"), sim_lp)
    data["exact_log_p_qt"] = (("sim", "point", "qt_q", "t"), th_lp)
    data["line_s2"] = (("sim", "line"), line_s2)
    for a in APPROXIMATIONS:
        data[f"{a}_cubic_learned_line"] = (("sim", "line"), lines[a])
    cmp = xr.Dataset(data, coords={"qt_q": qt_q, "t": tt})
    base = ts.TeacherStudentParams(sw2=float(per_sim["sw2"][0]), eps=float(sims[0].attrs["param_eps"]))
    for a in APPROXIMATIONS:
        tr = ts.solve_transition(base, approximation=a)
        cmp.attrs[f"limit_s2_c_{a}"] = float(np.asarray(tr.value))
        cmp.attrs[f"limit_u_c_{a}"] = float(np.asarray(tr.u))
        cmp.attrs[f"limit_t_star_c_{a}"] = float(np.asarray(tr.t_star))

    return annotate(cmp, kind="compare.perp_norm", parameters={"files": len(sims)})


def _ek_groups(cmp: xr.Dataset):
    """Groups of (sim, point) with the same N, d, u and r (relative 1e-6): EK controls."""
    groups: list[list[tuple[int, int]]] = []
    keys: list[tuple] = []
    for k in range(cmp.sizes["sim"]):
        for i in range(cmp.sizes["point"]):
            if not np.isfinite(cmp["s2"].values[k, i]):
                continue
            key = (cmp["N"].values[k], cmp["d"].values[k], cmp["u"].values[k, i], cmp["r"].values[k, i])
            for g, kk in zip(groups, keys):
                if kk[0] == key[0] and kk[1] == key[1] and np.isclose(kk[2], key[2], rtol=1e-6) \
                        and np.isclose(kk[3], key[3], rtol=1e-6):
                    g.append((k, i))
                    break
            else:
                groups.append([(k, i)])
                keys.append(key)
    return groups


def perp_norm_summary(cmp: xr.Dataset) -> dict:
    """JSON: per point the simulated and theoretical values and z-scores; EK-control shifts; the
    matched-s2 transition estimates; the scaling-limit transitions of both theories."""
    def f(name, k, i):
        x = float(cmp[name].values[k, i])
        return x if math.isfinite(x) else None

    rows = []
    for k in range(cmp.sizes["sim"]):
        for i in range(cmp.sizes["point"]):
            if not np.isfinite(cmp["s2"].values[k, i]):
                continue
            row = {"sim": k, "beta": float(cmp["beta"].values[k]), "N": int(cmp["N"].values[k]),
                   "n": int(cmp["n"].values[k]), "d": int(cmp["d"].values[k]),
                   "networks": int(cmp["networks"].values[k])}
            for name in cmp.data_vars:
                if cmp[name].dims == ("sim", "point"):
                    row[name] = f(name, k, i)
            rows.append(row)
    ek = []
    for g in _ek_groups(cmp):
        if len(g) < 2:
            continue
        g = sorted(g, key=lambda ki: cmp["n"].values[ki[0]])
        k0, i0 = g[0]
        for k, i in g[1:]:
            entry = {"beta": float(cmp["beta"].values[k0]), "s2_beta1": f("s2_beta1", k0, i0),
                     "n_ref": int(cmp["n"].values[k0]), "n": int(cmp["n"].values[k]),
                     "s2_ref": f("s2", k0, i0), "s2": f("s2", k, i)}
            for x in SIM_FIELDS:
                a, b = cmp[f"sim_{x}"].values[k0, i0], cmp[f"sim_{x}"].values[k, i]
                ea, eb = cmp[f"sim_{x}_sem"].values[k0, i0], cmp[f"sim_{x}_sem"].values[k, i]
                shift, err = float(b - a), float(math.hypot(ea, eb))
                entry[f"shift_{x}"] = shift if math.isfinite(shift) else None
                entry[f"shift_{x}_sem"] = err if math.isfinite(err) else None
                # linear extrapolation in 1/n to n -> infinity (the EK limit) at fixed u, r
                w = cmp["n"].values[k0] / (cmp["n"].values[k] - cmp["n"].values[k0])
                ext, ext_e = b + w * (b - a), math.hypot((1 + w) * eb, w * ea)
                entry[f"n_inf_{x}"] = float(ext) if math.isfinite(ext) else None
                entry[f"n_inf_{x}_sem"] = float(ext_e) if math.isfinite(ext_e) else None
                for th in APPROXIMATIONS:
                    entry[f"{th}_{x}"] = f(f"{th}_{x}", k, i)
            ek.append(entry)
    # matched s2 from the largest-n member of every EK group (the least finite-n error)
    best = [max(g, key=lambda ki: cmp["n"].values[ki[0]]) for g in _ek_groups(cmp)]
    implied = {}
    for a in APPROXIMATIONS:
        s2c = float(cmp.attrs[f"limit_s2_c_{a}"])
        ratio, w = [], []
        for k, i in best:
            if True:
                s, e = cmp[f"s2_match_{a}"].values[k, i], cmp[f"s2_match_{a}_err"].values[k, i]
                if np.isfinite(s) and np.isfinite(e) and e > 0:
                    rho = cmp["s2"].values[k, i] / s
                    ratio.append(rho)
                    w.append((rho * e / s) ** -2)
        if ratio:
            ratio, w = np.asarray(ratio), np.asarray(w)
            mean = float(np.sum(w * ratio) / np.sum(w))
            err = float(np.sum(w) ** -0.5)
            chi2 = float(np.sum(w * (ratio - mean) ** 2))
            implied[a] = {"s2_ratio": mean, "s2_ratio_err": err, "chi2": chi2, "points": int(ratio.size),
                          "implied_s2_c": s2c * mean, "implied_s2_c_err": s2c * err * max(1.0, math.sqrt(
                              chi2 / max(ratio.size - 1, 1)))}
    chi2 = {}
    for a in APPROXIMATIONS:
        for x in ("cubic_learned", "linear_learned", "droplet_fraction", "t_droplet"):
            z = cmp[f"z_{x}_{a}"].values
            z = z[np.isfinite(z)]
            chi2[f"{x}_{a}"] = {"chi2": float(np.sum(z**2)), "points": int(z.size)}
    out = {"points": rows, "ek_control": ek, "matched_s2": implied, "chi2": chi2}
    for a in APPROXIMATIONS:
        out[f"limit_s2_c_{a}"] = float(cmp.attrs[f"limit_s2_c_{a}"])
        out[f"limit_u_c_{a}"] = float(cmp.attrs[f"limit_u_c_{a}"])
        out[f"limit_t_star_c_{a}"] = float(cmp.attrs[f"limit_t_star_c_{a}"])
    return out


def perp_norm_lines(summary: dict) -> list[str]:
    """Human-readable table of the summary (the CLI's text output)."""
    def s(x, fmt="{:.3f}"):
        return "   nan" if x is None else fmt.format(x)

    lines = [f"scaling-limit transition (beta = 1 units): exact s2_c = {summary['limit_s2_c_exact']:.4f} "
             f"(u_c {summary['limit_u_c_exact']:.1f}, t* {summary['limit_t_star_c_exact']:.3f}), concentrated "
             f"s2_c = {summary['limit_s2_c_concentrated']:.4f} (u_c {summary['limit_u_c_concentrated']:.1f})",
             f"{'beta':>6} {'n':>5} {'s2':>6} {'s2@b1':>6} | {'t_drop sim':>13} {'exact':>6} | {'t_bulk sim':>13} "
             f"{'exact':>6} | {'drop frac':>13} {'exact':>6} {'conc':>6} | {'cubic sim':>13} {'exact':>6} {'conc':>6}"]
    for r in summary["points"]:
        lines.append(
            f"{r['beta']:6.4g} {r['n']:5d} {r['s2']:6.3f} {r['s2_beta1']:6.3f} | {s(r['sim_t_droplet'])}±"
            f"{s(r['sim_t_droplet_sem'])} {s(r['exact_t_droplet'])} | {s(r['sim_t_bulk'])}±{s(r['sim_t_bulk_sem'])} "
            f"{s(r['exact_t_bulk'])} | {s(r['sim_droplet_fraction'])}±{s(r['sim_droplet_fraction_sem'])} "
            f"{s(r['exact_droplet_fraction'])} {s(r['concentrated_droplet_fraction'])} | "
            f"{s(r['sim_cubic_learned'])}±{s(r['sim_cubic_learned_sem'])} {s(r['exact_cubic_learned'])} "
            f"{s(r['concentrated_cubic_learned'])}")
    for e in summary["ek_control"]:
        lines.append(f"EK control beta={e['beta']:.4g} s2@b1={s(e['s2_beta1'])}: n {e['n_ref']} -> {e['n']}: "
                     f"cubic {s(e['shift_cubic_learned'], '{:+.3f}')}±{s(e['shift_cubic_learned_sem'])}, "
                     f"t_droplet {s(e['shift_t_droplet'], '{:+.3f}')}±{s(e['shift_t_droplet_sem'])}, "
                     f"droplets {s(e['shift_droplet_fraction'], '{:+.3f}')}±{s(e['shift_droplet_fraction_sem'])}; "
                     f"1/n -> 0: cubic {s(e['n_inf_cubic_learned'])}±{s(e['n_inf_cubic_learned_sem'])} (exact "
                     f"{s(e['exact_cubic_learned'])}, conc {s(e['concentrated_cubic_learned'])}), t_droplet "
                     f"{s(e['n_inf_t_droplet'])}±{s(e['n_inf_t_droplet_sem'])} (exact {s(e['exact_t_droplet'])})")
    for a, m in summary["matched_s2"].items():
        lines.append(f"matched s2 ({a}): s2/s2_match = {m['s2_ratio']:.3f}±{m['s2_ratio_err']:.3f} over {m['points']} "
                     f"points (chi2 {m['chi2']:.1f}) -> implied s2_c = {m['implied_s2_c']:.4f}±{m['implied_s2_c_err']:.4f}")
    return lines
