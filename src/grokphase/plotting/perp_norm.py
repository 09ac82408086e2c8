"""Figure of the |w_perp|^2 comparison (:func:`grokphase.analysis.perp_norm.compare_perp_norm`), from its
saved Dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from grokphase.plotting.base import _save, plt


def plot_perp_norm(cmp: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """Per simulation file (row): the simulated log p(q, t) per s2 (pooled over networks and record
    times after burn-in) with the exact finite-d theory's density as contours, the exact theory's
    scaling-limit saddles (+-q*, t*) and the bulk (0, sw2) (white), the concentrated saddles
    (+-q*, sw2) (cyan), the droplet threshold (dashed); last column: mean t of droplet and bulk neurons
    vs s2, simulated (points, SEM) and exact theory (lines; the concentrated theory is sw2)."""
    K, S = cmp.sizes["sim"], cmp.sizes["point"]
    fig, axes = plt.subplots(K, S + 1, figsize=(2.6 * (S + 1), 2.4 * K), squeeze=False)
    q, t = cmp["qt_q"].values, cmp["t"].values
    for k in range(K):
        sw2 = float(cmp["sw2"].values[k])
        for i in range(S):
            ax = axes[k, i]
            s2 = cmp["s2"].values[k, i]
            if not np.isfinite(s2):
                ax.axis("off")
                continue
            lp = cmp["sim_log_p_qt"].values[k, i]
            fin = lp[np.isfinite(lp)]
            vmax = fin.max() if fin.size else 0.0
            # relative to the panel's maximum, so that one colour scale serves every panel
            mesh = ax.pcolormesh(q, t, np.where(np.isfinite(lp), lp - vmax, np.nan).T, vmin=-10.0, vmax=0.0,
                                 cmap="viridis", shading="nearest")
            if i == S - 1 or not np.isfinite(cmp["s2"].values[k, i + 1]):
                fig.colorbar(mesh, ax=ax, label=r"$\log p(q, t) - \max$", pad=0.02)
            th = cmp["exact_log_p_qt"].values[k, i]
            if np.all(np.isfinite(th)):
                ax.contour(q, t, (th - vmax).T, levels=-np.array([8, 6, 4, 2, 0.5]), colors="w", linewidths=0.5,
                           alpha=0.7)
            qs, ts_ = cmp["limit_exact_q_star"].values[k, i], cmp["limit_exact_t_star"].values[k, i]
            qc = cmp["limit_concentrated_q_star"].values[k, i]
            ax.plot([0], [sw2], "w+", ms=8, label="bulk (0, $\\sigma_w^2$)")
            if qs > 0:
                ax.plot([-qs, qs], [ts_, ts_], "wx", ms=8, label="exact (±q*, t*)")
            if qc > 0:
                ax.plot([-qc, qc], [sw2, sw2], "c^", ms=5, mfc="none", label="concentrated (±q*, $\\sigma_w^2$)")
            thr = cmp["droplet_threshold"].values[k, i]
            for sgn in (-1, 1):
                ax.axvline(sgn * thr, color="w", ls="--", lw=0.6)
            ax.set_xlim(-1.2, 1.2)
            ax.set_ylim(0.0, min(t.max(), 2.2 * sw2))
            ax.set_title(f"β={cmp['beta'].values[k]:.3g} n={int(cmp['n'].values[k])} $\\sigma^2$={s2:.3g}", fontsize=8)
            if i == 0:
                ax.set_ylabel("t = $|w_\\perp|^2$")
            if k == K - 1:
                ax.set_xlabel(r"$q = w\cdot w^*$")
            if k == 0 and i == 0:
                ax.legend(fontsize=5, loc="lower left")
        ax = axes[k, S]
        s2 = cmp["s2"].values[k]
        for name, color in (("t_droplet", "C3"), ("t_bulk", "C0")):
            ax.errorbar(s2, cmp[f"sim_{name}"].values[k], cmp[f"sim_{name}_sem"].values[k], fmt="o", color=color,
                        ms=3, label=f"sim {name}")
            ax.plot(s2, cmp[f"exact_{name}"].values[k], "s-", color=color, lw=1, mfc="none", ms=5, label=f"exact {name}")
        ax.axhline(sw2, color="k", ls=":", lw=0.8, label="concentrated ($\\sigma_w^2$)")
        ax.set_xlabel("$\\sigma^2$")
        ax.set_ylabel("mean t")
        ax.set_ylim(0.0, 1.2 * sw2)
        if k == 0:
            ax.legend(fontsize=5)
    fig.tight_layout()
    return _save(fig, path, also_pdf)
