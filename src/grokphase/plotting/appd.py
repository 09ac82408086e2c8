"""Figures 4-6 of the paper (App. D, grokking in time) from the saved :func:`grokphase.analysis.appd.combine`
Dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from grokphase.analysis.appd import _check, _networks, crossing_time, q_density_all_bins
from grokphase.plotting.base import _save, plt


def _width_label(ds: xr.Dataset, i: int) -> str:
    N = int(ds["width"].values[i])
    base = np.asarray(ds.attrs.get("widths_beta1", []), np.float64)
    beta = float(ds.attrs.get("param_beta", 1.0))
    if beta != 1.0 and base.size == ds.sizes["width"]:
        return f"N = {N} (paper {base[i]:.0f})"
    return f"N = {N}"


def _colors(W: int):
    return [plt.cm.viridis(x) for x in np.linspace(0.0, 0.85, max(W, 1))]


def plot_fig4(ds: xr.Dataset, path) -> list[Path]:
    """Fig. 4: -log p(q) per width (markers: all neurons of all networks after burn-in, error bars
    from 5 disjoint sub-ensembles, App. C recipe; lines: the finite-d theory at the same sizes).
    Writes ``path`` (PNG) and the PDF next to it; returns both paths."""
    _check(ds)
    W = ds.sizes["width"]
    fig, axes = plt.subplots(1, W, figsize=(3.6 * W, 3.3), squeeze=False, sharey=True)
    colors = _colors(W)
    for i in range(W):
        ax = axes[0, i]
        q, mlp, err = q_density_all_bins(ds, i)
        offset = float(np.min(mlp)) if mlp.size else 0.0
        ax.errorbar(q, mlp - offset, yerr=err, fmt="o", ms=2.5, lw=0.8, color=colors[i], label="simulation")
        th = np.asarray(ds["theory_minus_log_p"].values[i])
        if np.all(np.isfinite(th)):
            ql = np.asarray(ds["q_line"].values)
            ax.plot(ql, th - offset, "k-", lw=1.0, label="finite-d theory")
        ax.set_title(_width_label(ds, i) + f"\nu = {float(ds['theory_u'].values[i]):.3g}", fontsize=9)
        ax.set_xlabel(r"$q = w\cdot w^*$")
        top = (np.max(mlp - offset) if mlp.size else 10.0) + 3.0
        ax.set_ylim(-1.0, top)
        if i == 0:
            ax.set_ylabel(r"$-\log p(q)$ (shifted)")
            ax.legend(fontsize=7, loc="upper center")
    fig.suptitle(f"App. D, Fig. 4: overlap statistics per width (d = {ds.attrs['d']}, n = {ds.attrs['n']}, "
                 f"$\\sigma^2$ = {float(ds.attrs['s2_value']):.3g})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, also_pdf=True)


def _time_panel(ax, times, traj, color, label, ls="-"):
    for row in traj:
        ax.plot(times, row, color="0.75", lw=0.5, ls=ls, zorder=1)
    ax.plot(times, traj.mean(axis=0), color=color, lw=1.8, ls=ls, label=label, zorder=3)


def plot_fig5(ds: xr.Dataset, path) -> list[Path]:
    """Fig. 5: train and test MSE against time (log axis) per width: ensemble mean in colour,
    individual networks in grey; dotted lines mark the half-change times of :func:`appd_summary`."""
    _check(ds)
    W = ds.sizes["width"]
    times = np.asarray(ds["time"].values, np.float64)
    fig, axes = plt.subplots(1, W, figsize=(3.6 * W, 3.3), squeeze=False, sharey=True)
    for i in range(W):
        ax = axes[0, i]
        tr, te = _networks(ds, "train_mse", i), _networks(ds, "test_mse", i)
        _time_panel(ax, times, tr, "tab:blue", "train")
        _time_panel(ax, times, te, "tab:red", "test")
        for series, color in ((tr, "tab:blue"), (te, "tab:red")):
            t = crossing_time(times, series.mean(axis=0))
            if np.isfinite(t):
                ax.axvline(t, color=color, ls=":", lw=1.0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Langevin steps")
        ax.set_title(_width_label(ds, i), fontsize=9)
        if i == 0:
            ax.set_ylabel("MSE")
            ax.legend(fontsize=7)
    fig.suptitle("App. D, Fig. 5: train and test loss (colour: ensemble mean; grey: networks)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, also_pdf=True)


def plot_fig6(ds: xr.Dataset, path) -> list[Path]:
    """Fig. 6: projections of the output on the normalised linear (H1) and cubic (eps H3) target
    components, over the training points (dashed) and the test points (solid), against time (log
    axis); rows: linear, cubic; columns: widths.  Ensemble mean in colour, networks in grey; the
    black dotted line is the exact population projection (ensemble mean)."""
    _check(ds)
    W = ds.sizes["width"]
    times = np.asarray(ds["time"].values, np.float64)
    fig, axes = plt.subplots(2, W, figsize=(3.6 * W, 5.6), squeeze=False, sharex=True)
    for i in range(W):
        for row, part in enumerate(("linear", "cubic")):
            ax = axes[row, i]
            _time_panel(ax, times, _networks(ds, f"{part}_learned_train", i), "tab:orange", "train points", ls="--")
            _time_panel(ax, times, _networks(ds, f"{part}_learned_test", i), "tab:green", "test points")
            ax.plot(times, _networks(ds, f"{part}_learned", i).mean(axis=0), "k:", lw=1.2, label="population (exact)")
            th = float(ds[f"theory_{part}_learned"].values[i])
            if np.isfinite(th):
                ax.axhline(th, color="0.3", lw=0.8, ls="-.", label="finite-d theory (EK)")
            ax.set_xscale("log")
            if row == 0:
                ax.set_title(_width_label(ds, i), fontsize=9)
            else:
                ax.set_xlabel("Langevin steps")
            if i == 0:
                ax.set_ylabel(f"{part} component learned")
                if row == 0:
                    ax.legend(fontsize=6.5)
    fig.suptitle("App. D, Fig. 6: learned fractions of the target's components (train vs test points)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, also_pdf=True)
