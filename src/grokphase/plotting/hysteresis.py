"""Figure of the modular hysteresis loop (issue 8), drawn from a saved :func:`grokphase.analysis.hysteresis.
hysteresis_modular` result: target component and droplet fraction against s2 for the cooling and
heating branches (error bars: standard errors over seeds), the replica-exchange points, the finite-P
equilibrium theory, the P -> infinity equilibrium and the supercooled (disordered) branch, and the
transition temperature."""

from __future__ import annotations

import numpy as np

from grokphase.plotting.base import _save, plt

STYLE = {"cooling": dict(color="tab:blue", marker="v", label="cooling (from the prior)"),
         "heating": dict(color="tab:red", marker="^", label="heating (from the ordered start)"),
         "replica": dict(color="k", marker="o", label="replica exchange (from the prior)", mfc="none"),
         "replica_ordered": dict(color="tab:purple", marker="s", label="replica exchange (from the ordered start)",
                                 mfc="none")}


def plot_hysteresis_modular(ds, path, also_pdf: bool = False):
    """Panels: target component and droplet fraction against s2; when a heating branch was run above
    the transition, a third panel with the target component on a log scale from 0.9 s1 up (the
    superheated branch against the equilibrium, which is at the GP level there, and the marginal bound)."""
    s1 = float(ds.attrs["gmfl1_s2"])
    s2v = np.asarray(ds["s2"].values)
    protos = [str(p) for p in ds["protocol"].values]
    superheat = "heating" in protos and np.any(
        np.isfinite(ds["target_component"].sel(protocol="heating").values) & (s2v > s1 * (1 + 1e-9)))
    fig, axes = plt.subplots(1, 3 if superheat else 2, figsize=(16 if superheat else 11, 4.2))
    conv = ds.attrs.get("param_convention", "network")
    for ax, var, theory, lim in ((axes[0], "target_component", "theory_fine_target_component", "limit_target_component"),
                                 (axes[1], "droplet_fraction", "theory_fine_droplet_fraction", None)):
        ax.plot(ds["s2_theory"], ds[theory], "-", color="0.3", lw=1.5, label=f"theory, finite P ({conv})")
        if lim is not None:
            ax.plot(ds["s2_theory"], ds[lim], "--", color="0.5", lw=1, label="theory, P → ∞")
            ax.plot(ds["s2_theory"], ds["supercooled_target_component"], ":", color="tab:blue", lw=1,
                    label="supercooled branch (metastable)")
            if "marginal_target_component" in ds:
                ax.plot(ds["s2_theory"], ds["marginal_target_component"], "-.", color="tab:red", lw=1,
                        label="droplets' limit of stability (superheating bound)")
        for p in ds["protocol"].values:
            st = dict(STYLE.get(str(p), {}))
            y = ds[var].sel(protocol=p)
            ok = np.isfinite(y.values)           # protocols share the union of their s2 grids
            ax.errorbar(ds["s2"].values[ok], y.values[ok], yerr=ds[f"{var}_sem"].sel(protocol=p).values[ok],
                        capsize=2, ls="none" if str(p).startswith("replica") else "-", lw=0.8, **st)
        ax.axvline(s1, color="0.7", lw=0.8)
        ax.set_xlabel("$\\sigma^2$")
    axes[0].set_ylabel("target component 1 + a")
    axes[1].set_ylabel("droplet fraction (neurons)")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"P={ds.attrs['param_P']:g}, N={ds.attrs['param_N']:g}, γ={ds.attrs['param_gamma']:g}")
    if superheat:
        ax = axes[2]
        x = np.asarray(ds["s2_theory"].values) / s1
        ax.semilogy(x, ds["theory_fine_target_component"], "-", color="0.3", lw=1.5, label="equilibrium, finite P")
        if "marginal_target_component" in ds:
            ax.semilogy(x, ds["marginal_target_component"], "-.", color="tab:red", lw=1, label="superheating bound")
        for p in protos:
            y = ds["target_component"].sel(protocol=p).values
            ok = np.isfinite(y) & (y > 0)
            st = dict(STYLE.get(p, {}))
            ax.errorbar(s2v[ok] / s1, y[ok], yerr=ds["target_component_sem"].sel(protocol=p).values[ok], capsize=2,
                        ls="none" if p.startswith("replica") else "-", lw=0.8, **st)
        ax.axvline(1.0, color="0.7", lw=0.8)
        ax.set_xlim(0.9, max(1.15, float(s2v.max() / s1) * 1.01))
        ax.set_xlabel("$\\sigma^2/\\sigma^2_1$")
        ax.set_ylabel("target component (log)")
        ax.set_title("above the transition: superheated droplets", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_hysteresis_teacher_student(ds, path, also_pdf: bool = False):
    """Teacher-student loop from a saved :func:`grokphase.analysis.hysteresis.hysteresis_teacher_student` result:
    (a) the cubic learned fraction 1 - c/eps of the cooling and heating branches (error bars: standard
    errors over data sets), the replica-exchange points, the finite-d equilibrium theory, its metastable
    GFL (droplet-free) and superheated droplet branches, the scaling limit, and the limit's s2_c in
    both approximations; (b) the droplet fraction against the theory's."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    appr = ds.attrs.get("param_approximation", "exact")
    s2t = ds["s2_theory"]
    ax = axes[0]
    ax.plot(s2t, ds["theory_fine_cubic_learned"], "-", color="0.3", lw=1.5, label=f"equilibrium, finite d ({appr})")
    ax.plot(s2t, ds["gfl_branch_cubic_learned"], ":", color="tab:blue", lw=1.2, label="GFL branch (no droplets)")
    frozen = float(ds.attrs.get("frozen_droplet_fraction", float("nan")))
    ax.plot(s2t, ds["droplet_branch_cubic_learned"], ":", color="tab:red", lw=1.2,
            label=f"droplet branch (fraction {frozen:.3g} frozen)")
    ax.plot(s2t, ds["limit_cubic_learned"], "--", color="0.6", lw=1, label="scaling limit")
    for k, col in (("s2_c_exact", "0.5"), ("s2_c_concentrated", "0.8")):
        if k in ds.attrs:
            ax.axvline(float(ds.attrs[k]), color=col, lw=0.8, ls="-" if "exact" in k else "--")
    for a, var, theory in ((axes[0], "cubic_learned", None), (axes[1], "droplet_fraction", "theory_fine_droplet_fraction")):
        if theory is not None:
            a.plot(s2t, ds[theory], "-", color="0.3", lw=1.5, label=f"theory: mass beyond its barrier ({appr})")
            a.plot(ds["s2"], ds["theory_droplet_fraction_threshold"], "s--", color="0.5", ms=3, lw=0.8,
                   label="theory: mass beyond each run's threshold")
        for p in ds["protocol"].values:
            st = dict(STYLE.get(str(p), {}))
            a.errorbar(ds["s2"], ds[var].sel(protocol=p), yerr=ds[f"{var}_sem"].sel(protocol=p), capsize=2,
                       ls="none" if str(p).startswith("replica") else "-", lw=0.8, **st)
        a.set_xlabel("$\\sigma^2$")
    axes[0].set_ylabel("cubic learned fraction 1 − c/ε")
    axes[1].set_ylabel("droplet fraction (|q| beyond the threshold)")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    axes[0].set_title(f"teacher-student N={ds.attrs['param_N']:g}, d={ds.attrs['param_d']:g}, "
                      f"n={ds.attrs['param_n']:g}; lines: $\\sigma^2_c$ (limit)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, also_pdf)
