"""Figures of theory results (sweeps, phase diagrams, GP learning curves), from saved Datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from grokphase.errors import ResultFileError
from grokphase.plotting.base import _beta_label, _colors, _save, plt


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
                ax.plot(q, -(lp - lp.max()), color=colors[i], lw=1.4, label=_beta_label(beta))
            if "limit_action" in ds:
                # scaling limit: -log p / d -> Shat, shown rescaled to the beta = 1 dimension
                d1 = float(np.asarray(ds.attrs.get("param_d", 150.0)))
                sh = ds["limit_action"].sel(density_s2=ds2).values
                ax.plot(q, d1 * (sh - sh.min()), color="k", lw=1.0, ls="--", label="limit (d·Ŝ, β = 1 d)")
            side = "GMFL-I" if np.isfinite(s2_c) and ds2 < s2_c else "GFL"
            ax.set_title(f"({'ab'[j]}) σ² = {ds2:g} ({side} in the limit)")
            ax.set_xlabel("q = w·w*")
            ax.set_ylabel("−log p(q) + const")
            ax.set_ylim(-1, 60)
            if j == 0:
                ax.legend(fontsize=7)
    ax_c = axes[-2]
    ax_l = axes[-1]
    for i, beta in enumerate(betas):
        if "cubic_learned" in ds:
            ax_c.plot(s2, ds["cubic_learned"].sel(beta=beta), color=colors[i], lw=1.4, label=_beta_label(beta))
            ax_l.plot(s2, ds["linear_learned"].sel(beta=beta), color=colors[i], lw=1.4)
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
            ax.axvline(s2_c, color="crimson", lw=0.8, ls="--")
        if np.isfinite(s2_other):
            ax.axvline(s2_other, color="0.45", lw=0.8, ls=":")
        ax.set_xlabel("σ²  (β = 1 units)")
    ax_c.set_ylabel("cubic learned fraction 1 − c/ε")
    ax_l.set_ylabel("linear learned fraction 1 − b")
    ax_c.set_title(f"({'c' if has_density else 'a'}) cubic; σ²_c = {s2_c:.4f}"
                   + (f" ({approx}; dotted: {other} {s2_other:.4f})" if np.isfinite(s2_other) else ""),
                   fontsize=8 if np.isfinite(s2_other) else None)
    ax_l.set_title(f"({'d' if has_density else 'b'}) linear")
    ax_c.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_phase_diagram(ds: xr.Dataset, path, also_pdf: bool = False, field: str | None = None) -> list[Path]:
    """Colour: ``field`` (default: cubic learned fraction, or the target component 1 + a for the
    modular model); red: the limit transition(s) (teacher-student: Lambda = 1; modular: the
    GMFL-I and GMFL-II boundaries); dashed white: the finite-size crossover of the phase label."""
    field = field or ("cubic_learned" if "cubic_learned" in ds else "target_component")
    if not str(ds.attrs.get("grokphase_kind", "")).endswith("phase_diagram"):
        raise ResultFileError("plot_phase_diagram needs a phase_diagram dataset")
    xname, yname = ds.attrs["x_axis"], ds.attrs["y_axis"]
    x, y = ds[xname].values, ds[yname].values
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    mesh = ax.pcolormesh(x, y, ds[field].values, shading="auto", cmap="viridis", vmin=0.0,
                         vmax=max(1e-12, float(np.nanmax(ds[field].values))))
    fig.colorbar(mesh, ax=ax, label=field.replace("_", " "))
    if "degeneracy" not in ds and "limit_phase" in ds:
        lp = ds["limit_phase"].values.astype(float)
        levels = [lv for lv in (0.5, 1.5) if lp.min() < lv < lp.max()]
        if levels:
            ax.contour(x, y, lp, levels=levels, colors="crimson", linewidths=1.8)
            ax.plot([], [], color="crimson", lw=1.8, label="P → ∞ boundaries (GFL | GMFL-I | GMFL-II)")
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
            label = f"limit boundary, {ap}" + (" (paper's reduction)" if ap == "concentrated" else " (|w⊥|² integrated)")
            ax.plot(ds[f"boundary_x_{ap}"].values, y, marker, ms=2.2, color=color, label=label)
    elif "boundary_x" in ds:
        ax.plot(ds["boundary_x"].values, y, "o", ms=2.2, color="orange", label="same, root finding per row")
    if ds.attrs.get("solver", "").startswith("finite") and "phase" in ds:
        ph = ds["phase"].values.astype(float)
        levels = [lv for lv in (0.5, 1.5) if ph.min() < lv < ph.max()]
        if levels:
            ax.contour(x, y, ph, levels=levels, colors="w", linewidths=1.2, linestyles="--")
            ax.plot([], [], color="w", ls="--", label="finite-size crossover (phase label)")
    if int(ds.attrs.get("x_log", 0)):
        ax.set_xscale("log")
    if int(ds.attrs.get("y_log", 0)):
        ax.set_yscale("log")
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    model = ds.attrs.get("model", "teacher-student")
    conv = ds.attrs.get("convention")
    ax.set_title(f"{model} phase diagram ({ds.attrs.get('solver', '')}"
                 + (f", {conv} convention)" if conv else (f", {approx})" if approx else ")")))
    leg = ax.legend(fontsize=7, loc="upper right", facecolor="0.35", labelcolor="w")
    leg.get_frame().set_alpha(0.8)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_gp_learning_curve(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """GP (EK) learned fractions of the linear and cubic parts vs n, with the half-learning n."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    n = ds["n"].values
    for i, s2 in enumerate(ds["s2"].values):
        c = _colors(ds.sizes["s2"])[i]
        ax.plot(n, ds["linear_learned"].sel(s2=s2), color=c, ls="-", label=f"linear, σ² = {s2:g}")
        ax.plot(n, ds["cubic_learned"].sel(s2=s2), color=c, ls="--", label=f"cubic, σ² = {s2:g}")
        ax.axvline(float(ds["n_half_cubic"].sel(s2=s2)), color=c, ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("n (training points)")
    ax.set_ylabel("learned fraction (EK)")
    ax.set_title(f"GP baseline, d = {float(np.asarray(ds.attrs.get('param_d'))):g}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_modular_sweep(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """The paper's Fig. 3: (a) -log p along Phi = Psi scaled by 1/P (= Shat(Phi; a)) for sigma^2 in
    each phase, with an inset on the mixed phase; (b) the target component 1 + a vs sigma^2 at
    finite P, the P -> infinity equilibrium, the metastable ordered branch, and both transitions."""
    if ds.attrs.get("grokphase_kind") != "theory.modular.sweep":
        raise ResultFileError("plot_modular_sweep needs a theory.modular.sweep dataset")
    conv = ds.attrs.get("convention")       # absent in files written before the option existed
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11.0, 4.2))
    phi = ds["phi"].values
    colors = _colors(ds.sizes["density_s2"])
    s1, s2_ = float(ds.attrs["gmfl1_s2"]), float(ds.attrs["gmfl2_s2"])

    def phase_of(v):
        return "GFL" if v > s1 else ("GMFL-I" if v > s2_ else "GMFL-II")

    inset = ax_a.inset_axes([0.52, 0.52, 0.45, 0.43])
    for i, v in enumerate(ds["density_s2"].values):
        sh = ds["reduced_action"].isel(density_s2=i).values
        ax_a.plot(phi, sh, color=colors[i], lw=1.5, label=f"σ² = {v:g} ({phase_of(v)})")
        if phase_of(v) == "GMFL-I":
            inset.plot(phi, sh, color=colors[i], lw=1.2)
    ax_a.axhline(0.0, color="0.6", lw=0.6)
    lim = max(1.0, float(np.nanmax(np.abs(ds["reduced_action"].values[:, : len(phi) // 2]))))
    ax_a.set_ylim(-0.5 * lim, lim)
    hi = np.nanmax(np.abs(ds["reduced_action"].values))
    inset.set_ylim(-0.02 * hi, 0.05 * hi)
    inset.axhline(0.0, color="0.6", lw=0.6)
    inset.set_title("mixed phase: degenerate minima", fontsize=7)
    inset.tick_params(labelsize=6)
    ax_a.set_xlabel("Φ = Ψ = |w_k|²")
    ax_a.set_ylabel("−log p / P + const  (= Ŝ(Φ))" if conv != "network" else "−log p / 2P + const  (= Ŝ(Φ))")
    ax_a.set_title("(a) per-mode action along Φ = Ψ")
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
    ax_b.set_xlabel("σ²")
    ax_b.set_ylabel("target component 1 + a")
    ax_b.set_title("(b) learned target component")
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

