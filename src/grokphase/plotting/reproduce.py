"""Figures of ``grokphase reproduce``, drawn from the saved figure-data files of
:mod:`grokphase.reproduce` (each writes a PNG and a PDF next to it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm
from matplotlib.patches import Patch

from grokphase.errors import ResultFileError
from grokphase.plotting.base import S2, _below, _colors, _save, axis_label, label_regions, plt, smooth_level
from grokphase.plotting.sims import plot_teacher_student_compare

PHASE_NAMES = ("GFL", "GMFL-I", "GMFL-II")
PHASE_COLORS = ("#d9e6f2", "#f7d9a8", "#e8a3a3")


def _check(ds: xr.Dataset, kind: str) -> None:
    if ds.attrs.get("grokphase_kind") != kind:
        raise ResultFileError(f"expected a {kind} dataset, got {ds.attrs.get('grokphase_kind')!r}")


def _phase_map(ax, x, y, phase, xlog=False, ylog=False):

    cmap = ListedColormap(PHASE_COLORS)
    ax.pcolormesh(x, y, phase, shading="auto", cmap=cmap, norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3))
    levels = [lv for lv in (0.5, 1.5) if phase.min() < lv < phase.max()]
    if levels:
        ax.contour(x, y, phase.astype(float), levels=levels, colors="k", linewidths=1.0)
    if xlog:
        ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")


def _legend_patches():

    return [Patch(facecolor=c, edgecolor="0.4", label=n) for c, n in zip(PHASE_COLORS, PHASE_NAMES)]


def plot_fig1(ds: xr.Dataset, path) -> list[Path]:
    """Fig. 1, computed: the phase regions of both models (bottom) with the normalised action Shat at
    the deepest point of each phase region (top row; the numbered markers show where)."""
    _check(ds, "reproduce.fig1")
    fig = plt.figure(figsize=(12.5, 7.0))
    gs = fig.add_gridspec(2, 6, height_ratios=[1.0, 2.6], hspace=0.35, wspace=0.5)
    for col, model, title, var in ((0, "ts", "teacher-student (scaling limit, App. C, $\\sigma_a^2$ = 8/N)", "q"),
                                   (3, "modular", "modular addition (P → ∞, P = 401, $\\sigma_a^2$ = 0.002/N)", "phi")):
        ax = fig.add_subplot(gs[1, col:col + 3])
        xn, yn = ds.attrs[f"{model}_x"], ds.attrs[f"{model}_y"]
        x, y = ds[f"{model}_{xn}"].values, ds[f"{model}_{yn}"].values
        _phase_map(ax, x, y, ds[f"{model}_phase"].values, int(ds.attrs[f"{model}_x_log"]),
                   int(ds.attrs[f"{model}_y_log"]))
        for k in range(ds.sizes[f"{model}_inset"]):
            code = int(ds[f"{model}_inset_phase"].values[k])
            px, py = float(ds[f"{model}_inset_x"].values[k]), float(ds[f"{model}_inset_y"].values[k])
            ax.plot(px, py, "o", color="k", ms=7, mfc=PHASE_COLORS[code])
            ax.annotate(str(k + 1), (px, py), xytext=(5, 5), textcoords="offset points", fontsize=9)
            ins = fig.add_subplot(gs[0, col + k])
            grid = ds[var].values
            S = ds[f"{model}_inset_action"].values[k]
            ins.plot(grid, S, color="k", lw=1.2)
            ins.axhline(0.0, color="0.6", lw=0.5)
            core = np.abs(grid) <= 0.75 * np.max(np.abs(grid))
            R = max(1e-4, float(np.nanmax(np.abs(S[core]))))
            ins.set_ylim(min(-0.15 * R, 1.1 * float(np.nanmin(S))), R)
            ins.set_facecolor(PHASE_COLORS[code])
            ins.set_title(f"{k + 1}: {PHASE_NAMES[code]}", fontsize=8, pad=2)
            ins.tick_params(labelsize=6)
            ins.set_xlabel(r"$q = w\cdot w^*$" if var == "q" else r"$\Phi = \Psi = |w_k|^2$", fontsize=7, labelpad=1)
            ins.set_ylabel("Ŝ", fontsize=7, labelpad=1)
        ax.set_xlabel(axis_label(xn))
        ax.set_ylabel(axis_label(yn))
        ax.set_title(title, fontsize=9)
        ax.legend(handles=_legend_patches(), fontsize=7, loc="upper right")
    fig.suptitle("Fig. 1 (computed): phases of the two models; top: the normalised action Ŝ in each phase",
                 fontsize=10)
    return _save(fig, path, also_pdf=True)


def plot_fig2(cmp: xr.Dataset, path) -> list[Path]:
    return plot_teacher_student_compare(cmp, path, also_pdf=True)


def plot_fig3(theory: xr.Dataset, cmp: xr.Dataset | None, path) -> list[Path]:
    """Fig. 3: (a) Shat along Phi = Psi for sigma^2 in each phase; (b) the target component vs sigma^2
    (finite P, P -> infinity equilibrium and metastable branch) at the paper's sizes; (c) Langevin
    simulations at the sizes they were run at, over the finite-P theory at those sizes."""
    _check(theory, "theory.modular.sweep")
    ncol = 3 if cmp is not None else 2
    fig, axes = plt.subplots(1, ncol, figsize=(5.3 * ncol, 4.3))
    ax_a, ax_b = axes[0], axes[1]
    phi = theory["phi"].values
    s1, s2_ = float(theory.attrs["gmfl1_s2"]), float(theory.attrs["gmfl2_s2"])
    cols = _colors(theory.sizes["density_s2"])
    for i, v in enumerate(theory["density_s2"].values):
        ph = "GFL" if v > s1 else ("GMFL-I" if v > s2_ else "GMFL-II")
        ra = theory["reduced_action"].values
        top = max(float(np.nanmax(np.abs(ra[:, : len(phi) // 2]))), 1e-3)
        ax_a.plot(phi, _below(ra[i], top), color=cols[i], ls=("-", "--", "-.", ":")[i % 4], lw=1.6,
                  label=f"{S2} = {v:g} ({ph})")
    ax_a.axhline(0.0, color="0.6", lw=0.6)
    # every curve's minimum is shown (GMFL-II dips far below 0); rising curves leave through the top
    ax_a.set_ylim(min(-0.5 * top, 1.1 * float(np.nanmin(ra))), top)
    ax_a.set_xlabel(r"$\Phi = \Psi = |w_k|^2$")
    ax_a.set_ylabel(r"$\hat S(\Phi) = -\log p(\Phi, \Phi)/P$ + const")
    ax_a.set_title("(a) per-mode action (inside GMFL-I the curves coincide: a is pinned)", fontsize=9)
    ax_a.legend(fontsize=7)
    s2 = theory["s2"].values
    ax_b.plot(s2, theory["target_component"], color="tab:blue", lw=2, label="finite P")
    ax_b.plot(s2, theory["limit_target_component"], "k--", lw=1, label="P → ∞ equilibrium")
    ax_b.plot(s2, 1.0 + theory["a_superheated"], ":", color="tab:orange", label="ordered branch (metastable)")
    for v, ls, name in ((s1, "--", "GFL | GMFL-I"), (s2_, ":", "GMFL-I | GMFL-II")):
        if v > 0:
            ax_b.axvline(v, color="crimson", lw=0.8, ls=ls, label=f"P → ∞ {name}: {S2} = {v:.3f}")
    ax_b.set_xlabel(S2)
    ax_b.set_ylabel("target component 1 + a")
    ax_b.set_title(f"(b) P = {float(theory.attrs['param_P']):g}, N = {float(theory.attrs['param_N']):g}"
                   f" ({theory.attrs.get('convention', 'paper')} convention)", fontsize=9)
    ax_b.legend(fontsize=7)
    if cmp is not None:
        ax_c = axes[2]
        s2l = cmp["s2_line"].values
        rc = _colors(cmp.sizes["run"])
        convs = [str(c) for c in cmp["convention"].values]
        for r in range(cmp.sizes["run"]):
            for c, conv in enumerate(convs):
                ax_c.plot(s2l, cmp["line_target_component"].values[r, c], "-" if conv == "network" else "--",
                          color=rc[r], lw=1.2)
            if "line_rf_target_component" in cmp:
                ax_c.plot(s2l, cmp["line_rf_target_component"].values[r], color=rc[r], lw=3, alpha=0.3)
            pts = np.flatnonzero(cmp["point_run"].values == r)
            for b in np.unique(cmp["point_branch"].values[pts]):
                sel = pts[cmp["point_branch"].values[pts] == b]
                ax_c.errorbar(cmp["point_s2"].values[sel], cmp["sim_target_component"].values[sel],
                              yerr=cmp["sim_target_component_sem"].values[sel], fmt="v" if str(b) == "cooling" else "^",
                              color=rc[r], mfc="white" if str(b) == "cooling" else rc[r], ms=5, capsize=2, lw=0.8,
                              label=f"P = {float(cmp['run_P'].values[r]):g}, N = {float(cmp['run_N'].values[r]):g}, {b}")
        ax_c.set_yscale("log")
        ax_c.set_xlabel("$\\sigma^2$")
        ax_c.set_ylabel("target component")
        ax_c.set_title("(c) Langevin (markers) vs finite-P theory at the simulated sizes\n"
                       "solid: network, dashed: paper normalisation; band: disordered branch at width N", fontsize=8)
        ax_c.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path, also_pdf=True)


def plot_pd_ts(ds: xr.Dataset, path) -> list[Path]:
    """Teacher-student phase diagram over (sigma^2, beta): finite-d cubic learned fraction, its phase
    boundary, the scaling-limit transition, and the simulations coloured by their measured cubic
    learned fraction (same colour scale)."""
    _check(ds, "reproduce.phase_diagram_ts")
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    s2, beta = ds["s2"].values, ds["beta"].values
    vmax = max(float(np.nanmax(ds["exact_cubic_learned"].values)),
               float(np.nanmax(ds["sim_cubic"].values)) if "sim_cubic" in ds and ds.sizes.get("sim_point") else 0.0)
    mesh = ax.pcolormesh(s2, beta, ds["exact_cubic_learned"].values, shading="auto", cmap="viridis", vmin=0,
                         vmax=vmax)
    fig.colorbar(mesh, ax=ax, label="cubic learned fraction 1 − c/ε (exact theory)")
    for ap, ls, col in (("exact", "-", "w"), ("concentrated", "--", "orange")):
        ph = ds[f"{ap}_phase"].values.astype(float)
        if ph.min() < 0.5 < ph.max():
            ax.contour(s2, beta, smooth_level(ph, 0.5), levels=[0.5], colors=col, linewidths=1.3, linestyles=ls)
            ax.plot([], [], ls, color=col, label=f"finite d, {ap}: GFL | GMFL-I")
        sc = float(ds.attrs.get(f"limit_s2_c_{ap}", np.nan))
        if np.isfinite(sc):
            ax.axvline(sc, color="crimson", lw=1.3, ls=ls, label=f"scaling limit, {ap}: $\\sigma^2_c$ = {sc:.3f}")
    if "sim_s2" in ds and ds.sizes.get("sim_point"):
        ax.scatter(ds["sim_s2"].values, ds["sim_beta"].values, c=ds["sim_cubic"].values, cmap="viridis", vmin=0,
                   vmax=vmax, s=70, edgecolors="k", linewidths=1.2, zorder=5, label="Langevin (colour: measured)")
    label_regions(ax, s2, beta, ds["exact_phase"].values)
    ax.set_yscale("log")
    ax.set_xlabel(f"{S2} (β = 1 units)")
    ax.set_ylabel("β  (N = 700β, d = 150√β, n = 3000β)")
    ax.set_title("teacher-student: theory and simulations", fontsize=9)
    leg = ax.legend(fontsize=7, loc="upper right", facecolor="0.35", labelcolor="w")
    leg.get_frame().set_alpha(0.8)
    fig.tight_layout()
    return _save(fig, path, also_pdf=True)


def plot_pd_modular(ds: xr.Dataset, path) -> list[Path]:
    """Modular phase diagram over (sigma^2, P) at the simulations' width (sa2 P^2 fixed): (a) the
    finite-P target component 1 + a with the simulations coloured by their measured target component;
    (b) the finite-P droplet fraction (log scale) with the simulations coloured by their measured
    droplet fraction; both with the P -> infinity boundaries."""

    _check(ds, "reproduce.phase_diagram_modular")
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.6))
    s2, P = ds["s2"].values, ds["P"].values
    have = "sim_s2" in ds and ds.sizes.get("sim_point", 0) > 0
    floor = 1e-4
    specs = ((axes[0], "target_component", "sim_target", "target component 1 + a", None),
             (axes[1], "droplet_fraction", "sim_droplet", "droplet fraction (log scale; sims at 0 drawn at 1e-4)",
              LogNorm(vmin=floor, vmax=1.0)))
    for ax, field, simfield, label, norm in specs:
        vals = ds[field].values
        if norm is None:
            vmax = max(float(np.nanmax(vals)), float(np.nanmax(ds[simfield].values)) if have else 0.0, 1e-6)
            kw = dict(vmin=0.0, vmax=vmax, cmap="viridis")
        else:
            kw = dict(norm=norm, cmap="magma")
            vals = np.clip(vals, floor, 1.0)
        mesh = ax.pcolormesh(s2, P, vals, shading="nearest", **kw)
        fig.colorbar(mesh, ax=ax, label=label)
        for v, name, ls in ((float(ds.attrs["gmfl1_s2"]), "GMFL-I onset (P → ∞)", "-"),
                            (float(ds.attrs["gmfl2_s2"]), "GMFL-II onset (P → ∞)", "--")):
            if v > 0:
                ax.axvline(v, color="deepskyblue", lw=1.5, ls=ls, label=f"{name}: $\\sigma^2$ = {v:.3f}")
        if have:
            br = ds["sim_branch"].values.astype(str)
            for b, mk, off in (("cooling", "v", -0.3), ("heating", "^", 0.3), ("independent", "o", 0.0)):
                sel = br == b
                if sel.any():
                    c = ds[simfield].values[sel]
                    ax.scatter(ds["sim_s2"].values[sel], ds["sim_P"].values[sel] + off,
                               c=np.clip(c, floor, 1.0) if norm is not None else c, marker=mk, s=70,
                               edgecolors="w", linewidths=1.0, zorder=5, label=f"Langevin, {b}", **kw)
        g1, g2 = float(ds.attrs["gmfl1_s2"]), float(ds.attrs["gmfl2_s2"])
        limit = np.where(s2 > g1, 0, np.where(s2 > g2, 1, 2))           # P -> infinity phase along sigma^2
        label_regions(ax, s2, P, np.broadcast_to(limit, (P.size, s2.size)))
        ax.set_xlabel(S2)
        ax.set_ylabel("P")
        leg = ax.legend(fontsize=7, loc="upper right", facecolor="0.35", labelcolor="w")
        leg.get_frame().set_alpha(0.8)
    fig.suptitle(f"modular addition: finite-P theory ({ds.attrs.get('convention', '')} normalisation) at "
                 f"N = {float(ds.attrs.get('param_N', 64)):g}, γ = {float(ds.attrs.get('param_gamma', 0.01)):g}, "
                 f"$\\sigma_a^2 P^2$ fixed, and Langevin simulations", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, also_pdf=True)


def plot_sample_complexity(ds: xr.Dataset, path) -> list[Path]:
    """Cubic learned fraction vs n: GP (EK, exact Rayleigh quotients) against the finite-width theory,
    (a) at the paper's configuration, (b) at the simulations' configuration with the simulations."""
    _check(ds, "reproduce.sample_complexity")
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2))
    for ax, tag, title in ((axes[0], "paper", "(a) paper's configuration (N = 700, d = 150)"),
                           (axes[1], "sim", "(b) the simulations' configuration")):
        n = ds[f"{tag}_n"].values
        ax.plot(n, ds[f"{tag}_gp_cubic"], color="tab:gray", lw=2, label="GP (NNGP, EK)")
        ax.plot(n, ds[f"{tag}_finite_exact_cubic"], color="tab:blue", lw=2, label="finite width, finite d (exact)")
        ax.plot(n, ds[f"{tag}_finite_concentrated_cubic"], color="tab:orange", lw=1.5,
                label="finite width, finite d (concentrated, paper)")
        ax.plot(n, ds[f"{tag}_limit_exact_cubic"], "k--", lw=1, label="scaling limit (exact)")
        for kind, col, y, ha in (("gp", "tab:gray", 0.55, "right"), ("finite_exact", "tab:blue", 0.45, "right"),
                                 ("finite_concentrated", "tab:orange", 0.62, "left")):
            v = float(ds.attrs.get(f"{tag}_{kind}_n_half_cubic", np.nan))
            if np.isfinite(v):
                ax.axvline(v, color=col, ls=":", lw=1)
                ax.text(v, y, f" n½ = {v:.3g} ", color=col, fontsize=7, ha=ha, va="center",
                        bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=0.5))
        for ap, col in (("exact", "tab:blue"), ("concentrated", "tab:orange")):
            v = float(ds.attrs.get(f"{tag}_limit_{ap}_n_onset", np.nan))
            if np.isfinite(v):
                ax.plot([v], [0.0], "^", color=col, ms=8, mec="k",
                        label=f"GFL → GMFL-I onset ({ap}): n = {v:.3g}")
        if tag == "sim" and "point_n" in ds and ds.sizes.get("sim_point"):
            ax.errorbar(ds["point_n"].values, ds["point_cubic"].values, yerr=ds["point_cubic_sem"].values, fmt="o",
                        color="tab:red", capsize=2, label="Langevin")
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("n (training points)")
        ax.set_ylabel("cubic learned fraction 1 − c/ε")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    return _save(fig, path, also_pdf=True)
