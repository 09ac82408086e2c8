"""Figures of theory results (sweeps, phase diagrams, GP learning curves), from saved Datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from grokphase.errors import ResultFileError
from grokphase.plotting.base import (S2, S2_C, _below, _beta_label, _colors, _save, axis_label, label_regions, plt,
                                     smooth_level)
from grokphase.theory import modular as md


#: top of the -log p(q) panels (the curves rise far beyond it at large |q|)
ACTION_TOP = 60.0


def plot_teacher_student_sweep(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """Theory half of the paper's Fig. 2: (a, b) -log p(q) at a sigma^2 before and after the
    transition, one line per beta; (c) cubic learned fraction vs sigma^2 per beta, the scaling limit
    and the GP; (d) the same for the linear part."""
    if ds.attrs.get("grokphase_kind") != "theory.teacher_student.sweep":
        raise ResultFileError("plot_teacher_student_sweep needs a theory.teacher_student.sweep dataset")
    has_density = "log_p" in ds
    ncols = 4 if has_density else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.6))
    betas = ds["beta"].values if "beta" in ds.dims else np.array([])
    colors = _colors(len(betas))
    s2 = ds["s2"].values
    s2_c = float(ds.attrs.get("s2_c", np.nan))
    if has_density:
        for j, ds2 in enumerate(ds["density_s2"].values):
            ax = axes[j]
            q = ds["q"].values
            for i, beta in enumerate(betas):
                lp = ds["log_p"].sel(beta=beta, density_s2=ds2).values
                ax.plot(q, _below(-(lp - lp.max()), ACTION_TOP), color=colors[i], lw=1.4, label=_beta_label(beta))
            if "limit_action" in ds:
                # scaling limit: -log p / d -> Shat, shown rescaled to the beta = 1 dimension
                d1 = float(np.asarray(ds.attrs.get("param_d", 150.0)))
                sh = ds["limit_action"].sel(density_s2=ds2).values
                ax.plot(q, _below(d1 * (sh - sh.min()), ACTION_TOP), color="k", lw=1.0, ls="--",
                        label=r"scaling limit ($d\,\hat S$, d of β = 1)")
            side = "GMFL-I" if np.isfinite(s2_c) and ds2 < s2_c else "GFL"
            ax.set_title(f"({'ab'[j]}) {S2} = {ds2:g} ({side} in the limit)")
            ax.set_xlabel(r"$q = w\cdot w^*$")
            ax.set_ylabel(r"$-\log p(q)$ + const")
            ax.set_ylim(-1, ACTION_TOP)
            if j == 0:
                ax.legend(fontsize=7)
    ax_c = axes[-2]
    ax_l = axes[-1]
    for i, beta in enumerate(betas):
        if "cubic_learned" in ds:
            ax_c.plot(s2, ds["cubic_learned"].sel(beta=beta), color=colors[i], lw=1.4, label=_beta_label(beta))
            ax_l.plot(s2, ds["linear_learned"].sel(beta=beta), color=colors[i], lw=1.4)
        if "ridge_cubic_learned" in ds:        # the renormalised-ridge (finite-n) theory: dash-dotted
            ax_c.plot(s2, ds["ridge_cubic_learned"].sel(beta=beta), color=colors[i], lw=1.0, ls="-.",
                      label="renormalised ridge (finite n)" if i == 0 else None)
            ax_l.plot(s2, ds["ridge_linear_learned"].sel(beta=beta), color=colors[i], lw=1.0, ls="-.")
    if "limit_cubic_learned" in ds:
        ax_c.plot(s2, ds["limit_cubic_learned"], color="k", lw=1.8, label="scaling limit")
        ax_l.plot(s2, ds["limit_linear_learned"], color="k", lw=1.8)
    if "gp_cubic_learned" in ds:
        ax_c.plot(s2, ds["gp_cubic_learned"], color="gray", ls=":", lw=1.6, label="GP (EK)")
        ax_l.plot(s2, ds["gp_linear_learned"], color="gray", ls=":", lw=1.6)
    approx = ds.attrs.get("approximation")
    other = {"exact": "concentrated", "concentrated": "exact"}.get(approx)
    s2_other = float(ds.attrs.get(f"s2_c_{other}", np.nan)) if other else np.nan
    for ax in (ax_c, ax_l):
        if np.isfinite(s2_c):
            ax.axvline(s2_c, color="crimson", lw=0.8, ls="--",
                       label=f"{S2_C} = {s2_c:.4f}" + (f" ({approx})" if approx else ""))
        if np.isfinite(s2_other):
            ax.axvline(s2_other, color="0.45", lw=0.8, ls=":", label=f"{S2_C} = {s2_other:.4f} ({other})")
        ax.set_xlabel(f"{S2}  (β = 1 units)")
    ax_c.set_ylabel("cubic learned fraction 1 − c/ε")
    ax_l.set_ylabel("linear learned fraction 1 − b")
    ax_c.set_title(f"({'c' if has_density else 'a'}) cubic part")
    ax_l.set_title(f"({'d' if has_density else 'b'}) linear")
    ax_c.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


FIELD_LABELS = {"cubic_learned": "cubic learned fraction 1 − c/ε", "linear_learned": "linear learned fraction 1 − b",
                "target_component": "target component 1 + a", "droplet_fraction": "droplet fraction"}


def _fine_axis(values: np.ndarray, log: bool, num: int = 400) -> np.ndarray:
    lo, hi = float(np.min(values)), float(np.max(values))
    return np.geomspace(lo, hi, num) if log else np.linspace(lo, hi, num)


def modular_limit_boundaries(ds: xr.Dataset, num: int = 400, x: np.ndarray | None = None,
                             y: np.ndarray | None = None):
    """The P -> infinity GFL | GMFL-I and GMFL-I | GMFL-II boundaries of a modular phase diagram as
    smooth level lines: the closed forms of :func:`grokphase.theory.modular.transitions` (sigma^2 at
    which u = 2 sqrt(gamma/3), and that less 3 kappa sa2/gamma) evaluated from the saved parameters on
    a ``num x num`` grid spanning the diagram, or on the axes ``x``, ``y`` when given (a formula, not a
    solve: the stored ``limit_phase`` is the same condition on the diagram's own grid, whose level
    lines are staircases of its cells).
    Returns ``(x, y, gap1, gap2)``: the axes and sigma^2 minus each boundary's sigma^2 (shape
    ``(y, x)``); each boundary is the zero level of its gap, GFL lies where gap1 > 0, GMFL-II where
    gap2 < 0."""
    par = json.loads(ds.attrs["parameters_json"])
    xname, yname = ds.attrs["x_axis"], ds.attrs["y_axis"]
    conv = par.get("convention", "paper")
    x = _fine_axis(ds[xname].values, bool(int(ds.attrs.get("x_log", 0))), num) if x is None else np.asarray(x)
    y = _fine_axis(ds[yname].values, bool(int(ds.attrs.get("y_log", 0))), num) if y is None else np.asarray(y)
    X, Y = np.meshgrid(x, y)
    grid = md.ModularParams(**{k: par[k] for k in md.PARAM_NAMES}).broadcast()
    for name, values in ((xname, X), (yname, Y)):
        grid = grid.with_axis(name, values, sa2_times_N=par.get("sa2_times_N") if name == "N" else None)
    grid = grid.scaled(par.get("beta", 1.0), conv)
    tr = md.transitions(grid, conv)
    s2 = np.broadcast_to(np.asarray(grid.s2, dtype=float), X.shape)
    return x, y, s2 - tr.gmfl1_s2, s2 - tr.gmfl2_s2


def plot_phase_diagram(ds: xr.Dataset, path, also_pdf: bool = False, field: str | None = None) -> list[Path]:
    """Colour: ``field`` (default: cubic learned fraction, or the target component 1 + a for the
    modular model); red: the limit transition(s) (teacher-student: Lambda = 1; modular: the GMFL-I and
    GMFL-II boundaries from their closed forms, :func:`modular_limit_boundaries`); white: the finite-size
    crossovers of the solver's phase label, GFL | GMFL-I (dashed; teacher-student: the droplet basin
    disappears; modular: fewer than one droplet neuron expected) and GMFL-I | GMFL-II (dotted: fewer
    than one neuron expected in the q = 0 / disordered basin), at the grid's resolution.  Each phase
    region is named at its deepest cell."""
    field = field or ("cubic_learned" if "cubic_learned" in ds else "target_component")
    if not str(ds.attrs.get("grokphase_kind", "")).endswith("phase_diagram"):
        raise ResultFileError("plot_phase_diagram needs a phase_diagram dataset")
    xname, yname = ds.attrs["x_axis"], ds.attrs["y_axis"]
    x, y = ds[xname].values, ds[yname].values
    modular = ds.attrs.get("grokphase_kind") == "theory.modular.phase_diagram"
    fig, ax = plt.subplots(figsize=(5.8, 4.6))
    mesh = ax.pcolormesh(x, y, ds[field].values, shading="auto", cmap="viridis", vmin=0.0,
                         vmax=max(1e-12, float(np.nanmax(ds[field].values))))
    fig.colorbar(mesh, ax=ax, label=FIELD_LABELS.get(field, field.replace("_", " ")))
    if modular and "limit_phase" in ds:
        fx, fy, gap1, gap2 = modular_limit_boundaries(ds)
        for gap, ls, name in ((gap1, "-", "GFL | GMFL-I"), (gap2, "--", "GMFL-I | GMFL-II")):
            if np.nanmin(gap) < 0.0 < np.nanmax(gap):
                ax.contour(fx, fy, gap, levels=[0.0], colors="crimson", linewidths=1.8, linestyles=ls)
                ax.plot([], [], color="crimson", lw=1.8, ls=ls, label=f"P → ∞: {name} (closed form)")
    approx = ds.attrs.get("approximation")  # teacher-student files written before the option: concentrated
    if "degeneracy" in ds and np.nanmin(ds["degeneracy"].values) < 1 < np.nanmax(ds["degeneracy"].values):
        ax.contour(x, y, ds["degeneracy"].values, levels=[1.0], colors="crimson", linewidths=1.8)
        ax.plot([], [], color="crimson", lw=1.8,
                label="scaling-limit transition (Λ = 1" + (f", {approx})" if approx else ")"))
    both = [ap for ap in ("exact", "concentrated") if f"boundary_x_{ap}" in ds]
    if both:
        style = {"exact": ("o", "orange"), "concentrated": ("s", "deepskyblue")}
        for ap in both:
            marker, color = style[ap]
            label = f"limit boundary, {ap}" + (" (paper's reduction)" if ap == "concentrated" else r" ($|w_\perp|^2$ integrated)")
            ax.plot(ds[f"boundary_x_{ap}"].values, y, marker, ms=2.2, color=color, label=label)
    elif "boundary_x" in ds:
        ax.plot(ds["boundary_x"].values, y, "o", ms=2.2, color="orange", label="same, root finding per row")
    finite = ds.attrs.get("solver", "").startswith("finite")
    if finite and "phase" in ds:
        ph = ds["phase"].values.astype(float)
        what = "finite P" if modular else "finite d"
        for level, ls, name in ((0.5, "--", "GFL | GMFL-I"), (1.5, ":", "GMFL-I | GMFL-II")):
            if ph.min() < level < ph.max():
                ax.contour(x, y, smooth_level(ph, level), levels=[0.5], colors="w", linewidths=1.2, linestyles=ls)
                ax.plot([], [], color="w", ls=ls, label=f"{what} crossover: {name}")
    if finite and "ridge_phase" in ds:        # the renormalised-ridge (finite-n) crossover
        ph = ds["ridge_phase"].values.astype(float)
        if ph.min() < 0.5 < ph.max():
            ax.contour(x, y, smooth_level(ph, 0.5), levels=[0.5], colors="yellow", linewidths=1.2, linestyles="-.")
            ax.plot([], [], color="yellow", ls="-.", label="renormalised ridge (finite n): GFL | GMFL-I")
    regions = ds["phase"].values if "phase" in ds else ds["limit_phase"].values if "limit_phase" in ds else None
    if regions is not None:
        label_regions(ax, x, y, regions)
    if int(ds.attrs.get("x_log", 0)):
        ax.set_xscale("log")
    if int(ds.attrs.get("y_log", 0)):
        ax.set_yscale("log")
    ax.set_xlabel(axis_label(xname))
    ax.set_ylabel(axis_label(yname))
    model = ds.attrs.get("model", "teacher-student")
    conv = ds.attrs.get("convention")
    ax.set_title(f"{model} phase diagram ({ds.attrs.get('solver', '')}"
                 + (f", {conv} convention)" if conv else (f", {approx})" if approx else ")")), fontsize=10)
    leg = ax.legend(fontsize=6.5, loc="upper right", facecolor="0.35", labelcolor="w")
    leg.get_frame().set_alpha(0.8)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_gp_learning_curve(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """GP (EK) learned fractions of the linear and cubic parts vs n, with the half-learning n."""
    fig, ax = plt.subplots(figsize=(8.0, 3.8))
    n = ds["n"].values
    for i, s2 in enumerate(ds["s2"].values):
        c = _colors(ds.sizes["s2"])[i]
        ax.plot(n, ds["linear_learned"].sel(s2=s2), color=c, ls="-", label=f"linear, {S2} = {s2:g}")
        ax.plot(n, ds["cubic_learned"].sel(s2=s2), color=c, ls="--", label=f"cubic, {S2} = {s2:g}")
        if "ridge_linear_learned" in ds:      # the renormalised-ridge learning curve (finite n)
            ax.plot(n, ds["ridge_linear_learned"].sel(s2=s2), color=c, ls="-.", lw=1.0,
                    label=f"linear, renormalised ridge, {S2} = {s2:g}")
            ax.plot(n, ds["ridge_cubic_learned"].sel(s2=s2), color=c, ls=(0, (1, 1)), lw=1.0,
                    label=f"cubic, renormalised ridge, {S2} = {s2:g}")
        ax.axvline(float(ds["n_half_cubic"].sel(s2=s2)), color=c, ls=":", lw=0.8)
    ax.plot([], [], color="0.4", ls=":", lw=0.8, label="n at which half the cubic part is learned")
    ax.set_xscale("log")
    ax.set_xlabel("n (training points)")
    ax.set_ylabel("learned fraction (EK)")
    ax.set_title(f"GP baseline, d = {float(np.asarray(ds.attrs.get('param_d'))):g}")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_modular_sweep(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """The paper's Fig. 3: (a) -log p along Phi = Psi scaled by 1/P (= Shat(Phi; a)) for sigma^2 in
    each phase, (b) the same zoomed on the mixed phase's degenerate minima; (c) the target component
    1 + a vs sigma^2 at finite P, the P -> infinity equilibrium, the metastable ordered branch, and
    both transitions."""
    if ds.attrs.get("grokphase_kind") != "theory.modular.sweep":
        raise ResultFileError("plot_modular_sweep needs a theory.modular.sweep dataset")
    conv = ds.attrs.get("convention")       # absent in files written before the option existed
    fig, (ax_a, inset, ax_b) = plt.subplots(1, 3, figsize=(15.5, 4.2))
    phi = ds["phi"].values
    colors = _colors(ds.sizes["density_s2"])
    s1, s2_ = float(ds.attrs["gmfl1_s2"]), float(ds.attrs["gmfl2_s2"])

    def phase_of(v):
        return "GFL" if v > s1 else ("GMFL-I" if v > s2_ else "GMFL-II")

    ra = ds["reduced_action"].values
    # vertical range: every curve's minimum (GMFL-II dips far below 0) and the first half's maximum;
    # curves that rise beyond it at large Phi leave through the top edge
    lim = max(1.0, float(np.nanmax(np.abs(ra[:, : len(phi) // 2]))))
    bottom = min(-0.5 * lim, 1.1 * float(np.nanmin(ra)))
    hi = float(np.nanmax(np.abs(ra)))
    inset_top = 0.05 * hi
    seen: dict[str, int] = {}
    for i, v in enumerate(ds["density_s2"].values):
        sh = ra[i]
        phase = phase_of(v)
        ls = ("-", "--", ":")[seen.get(phase, 0) % 3]     # GMFL-I curves coincide (a is pinned): dash the later
        seen[phase] = seen.get(phase, 0) + 1
        ax_a.plot(phi, _below(sh, lim), color=colors[i], lw=1.5, ls=ls, label=f"{S2} = {v:g} ({phase})")
        if phase == "GMFL-I":
            inset.plot(phi, _below(sh, inset_top), color=colors[i], lw=1.2, ls=ls)
    ax_a.axhline(0.0, color="0.6", lw=0.6)
    ax_a.set_ylim(bottom, lim)
    inset.set_ylim(-0.02 * hi, inset_top)
    inset.axhline(0.0, color="0.6", lw=0.6)
    inset.set_title("(b) GMFL-I: degenerate minima (the curves coincide: a is pinned)", fontsize=9)
    inset.set_xlabel(r"$\Phi = \Psi = |w_k|^2$")
    ax_a.set_xlabel(r"$\Phi = \Psi = |w_k|^2$")
    ax_a.set_ylabel(r"$-\log p\,/\,P$ + const  $(= \hat S(\Phi))$" if conv != "network"
                    else r"$-\log p\,/\,2P$ + const  $(= \hat S(\Phi))$")
    ax_a.set_title(r"(a) per-mode action along $\Phi = \Psi$")
    ax_a.legend(fontsize=7, loc="lower left")
    s2 = ds["s2"].values
    ax_b.plot(s2, ds["target_component"], color="tab:blue", lw=2.0,
              label=f"finite P ({ds.attrs.get('method', '')}" + (f", {conv} convention)" if conv else ")"))
    ax_b.plot(s2, ds["limit_target_component"], color="k", lw=1.0, ls="--", label="P → ∞ equilibrium")
    ax_b.plot(s2, 1.0 + ds["a_superheated"], color="tab:orange", lw=1.0, ls=":", label="ordered branch (metastable)")
    for v, name in ((s1, "GMFL-I onset"), (s2_, "GMFL-II onset")):
        if v > 0:
            ax_b.axvline(v, color="crimson", lw=0.8, ls="--")
            ax_b.text(v, 0.95, name, rotation=90, fontsize=7, ha="right", va="top",
                      transform=ax_b.get_xaxis_transform())
    ax_b.set_xlabel(S2)
    ax_b.set_ylabel("target component 1 + a")
    ax_b.set_title("(c) learned target component")
    ax_b.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_modular_gp(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """EK learned fraction of the modular target vs training pairs for each P (a GP needs O(P^2))."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    n = ds["n"].values
    for i, P in enumerate(ds["P"].values):
        c = _colors(ds.sizes["P"])[i]
        ax.plot(n, ds["learned"].sel(P=P), color=c, label=f"P = {P:g}")
        ax.axvline(P**2, color=c, ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training pairs n (dotted: the whole table, P²)")
    ax.set_ylabel("target learned fraction (EK)")
    ax.set_title("NNGP baseline, modular addition")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)



def plot_finite_n(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """A ``grokphase theory finite-n`` result: the cubic and linear learned fractions against sigma^2 (beta = 1
    units) — every converged data set (dots; run-away ones as crosses), their mean ± SE (squares), with a
    ``--one-loop`` file the finite-N prediction finite n + one loop (diamonds), and the exact EK theory at
    the same points (plus signs) — and log p(q) of every solved data set."""
    fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.6))
    x = ds["s2_reference"].values
    jitter = 0.004 * (np.ptp(x) if x.size > 1 else max(abs(float(x[0])), 1e-3))
    loop = "linear_corrected" in ds
    for ax, short in ((axes[0], "cubic"), (axes[1], "linear")):
        cell = ds[f"{short}_learned_dataset"].values
        ok = ds["solved"].values & ds["converged"].values
        bad = ds["solved"].values & ~ds["converged"].values
        for k in range(ds.sizes["dataset"]):
            dx = (k - (ds.sizes["dataset"] - 1) / 2) * jitter
            ax.plot(x[ok[:, k]] + dx, cell[ok[:, k], k], ".", color="0.6", ms=3)
            ax.plot(x[bad[:, k]] + dx, np.clip(cell[bad[:, k], k], None, 1.5), "x", color="tab:red", ms=4)
        ax.errorbar(x, ds[f"{short}_learned"].values, yerr=np.nan_to_num(ds[f"{short}_learned_sem"].values),
                    fmt="s", mfc="none", color="k", capsize=2, label="finite n (N → ∞): mean ± SE")
        if loop:
            ax.errorbar(x, ds[f"{short}_corrected"].values, yerr=np.nan_to_num(ds[f"{short}_corrected_sem"].values),
                        fmt="D", mfc="none", color="tab:blue", capsize=2, ms=4, label="finite n + one loop (1/N)")
        ax.plot(x, ds[f"ek_{short}_learned"].values, "+", color="tab:red", ms=9, label="EK theory (same point)")
        ax.plot([], [], ".", color="0.6", label="per data set")
        ax.set_xlabel(f"{S2} (β = 1 units)")
        ax.set_ylabel(f"{short} learned fraction")
    axes[0].legend(fontsize=7)
    cols = _colors(ds.sizes["s2"])
    for j in range(ds.sizes["s2"]):
        for k in range(ds.sizes["dataset"]):
            if not bool(ds["solved"].values[j, k]):
                continue
            lp = ds["log_p"].values[j, k]
            axes[2].plot(ds["q"].values, lp - np.nanmax(lp), color=cols[j], lw=0.8,
                         label=f"{S2} = {float(ds['s2_reference'].values[j]):g}" if k == 0 else None)
    axes[2].set_ylim(bottom=-30)
    axes[2].set_xlabel("q = w·w*")
    axes[2].set_ylabel("log p(q) (max 0)")
    axes[2].legend(fontsize=7)
    a = ds.attrs
    fig.suptitle(f"finite-n mean-field theory on the simulations' training sets: N = {float(a['N']):g}, "
                 f"n = {float(a['n']):g}, d = {float(a['d']):g}, σ_a² = {float(a['sa2']):.4g}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, also_pdf)
