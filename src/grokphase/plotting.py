"""Figures drawn from saved result Datasets (never recomputing theory or simulations).

Every ``plot_*`` function takes a Dataset (as produced by :mod:`grokphase.theory.results` or loaded
with :func:`grokphase.io.load_dataset`) and a path; ``.png`` and ``.pdf`` are both supported, and a
PNG is also written as PDF when ``also_pdf=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from grokphase.errors import ResultFileError  # noqa: E402

_BETA_CMAP = plt.get_cmap("viridis")


def _beta_label(beta: float) -> str:
    if beta < 1 and abs(1 / beta - round(1 / beta)) < 1e-9:
        return f"β = 1/{int(round(1 / beta))}"
    return f"β = {beta:g}"


def _save(fig, path, also_pdf=False) -> list[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path]
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=150, bbox_inches="tight")
    os.replace(tmp, path)
    if also_pdf and path.suffix.lower() != ".pdf":
        pdf = path.with_suffix(".pdf")
        fig.savefig(pdf, bbox_inches="tight")
        out.append(pdf)
    plt.close(fig)
    return out


def _colors(n):
    return [_BETA_CMAP(x) for x in np.linspace(0.05, 0.85, max(n, 1))]


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
    for ax in (ax_c, ax_l):
        if np.isfinite(s2_c):
            ax.axvline(s2_c, color="crimson", lw=0.8, ls="--")
        ax.set_xlabel("σ²  (β = 1 units)")
    ax_c.set_ylabel("cubic learned fraction 1 − c/ε")
    ax_l.set_ylabel("linear learned fraction 1 − b")
    ax_c.set_title(f"({'c' if has_density else 'a'}) cubic; σ²_c = {s2_c:.4f}")
    ax_l.set_title(f"({'d' if has_density else 'b'}) linear")
    ax_c.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_phase_diagram(ds: xr.Dataset, path, also_pdf: bool = False, field: str = "cubic_learned") -> list[Path]:
    """Colour: ``field`` on the grid; solid black: scaling-limit transition (Lambda = 1);
    dashed white: the finite-d crossover (N x droplet fraction = 1), when present."""
    if not str(ds.attrs.get("grokphase_kind", "")).endswith("phase_diagram"):
        raise ResultFileError("plot_phase_diagram needs a phase_diagram dataset")
    xname, yname = ds.attrs["x_axis"], ds.attrs["y_axis"]
    x, y = ds[xname].values, ds[yname].values
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    mesh = ax.pcolormesh(x, y, ds[field].values, shading="auto", cmap="viridis", vmin=0.0,
                         vmax=max(1e-12, float(np.nanmax(ds[field].values))))
    fig.colorbar(mesh, ax=ax, label=field.replace("_", " "))
    if "degeneracy" in ds and np.nanmin(ds["degeneracy"].values) < 1 < np.nanmax(ds["degeneracy"].values):
        ax.contour(x, y, ds["degeneracy"].values, levels=[1.0], colors="crimson", linewidths=1.8)
        ax.plot([], [], color="crimson", lw=1.8, label="scaling-limit transition (Λ = 1)")
    if "boundary_x" in ds:
        ax.plot(ds["boundary_x"].values, y, "o", ms=2.2, color="orange", label="same, root finding per row")
    if ds.attrs.get("solver") == "finite-d" and "phase" in ds:
        ph = (ds["phase"].values >= 1).astype(float)
        if 0 < ph.mean() < 1:
            ax.contour(x, y, ph, levels=[0.5], colors="w", linewidths=1.2, linestyles="--")
            ax.plot([], [], color="w", ls="--", label="finite-d crossover (N·droplet = 1)")
    if int(ds.attrs.get("x_log", 0)):
        ax.set_xscale("log")
    if int(ds.attrs.get("y_log", 0)):
        ax.set_yscale("log")
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title(f"teacher-student phase diagram ({ds.attrs.get('solver', '')})")
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


PLOTTERS = {
    "theory.teacher_student.sweep": plot_teacher_student_sweep,
    "theory.teacher_student.phase_diagram": plot_phase_diagram,
    "theory.teacher_student.gp": plot_gp_learning_curve,
}


def plot_result(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """Dispatch on the dataset's ``grokphase_kind``."""
    kind = ds.attrs.get("grokphase_kind")
    if kind not in PLOTTERS:
        raise ResultFileError(f"no plot is defined for results of kind {kind!r}")
    return PLOTTERS[kind](ds, path, also_pdf)
