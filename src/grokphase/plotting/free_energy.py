"""Figure of free-energy profiles from umbrella sampling (issue 19), drawn from a saved
:func:`grokphase.analysis.free_energy.FreeEnergyResult.to_dataset` result (kind ``analysis.free_energy``):
F(m) = -log p(m) at every target s2, shifted to minimum 0, with a band of ± one standard error, the basin
minima (circles) and the saddle (triangle) where the profile has two wells, the coexistence s2 in the title
and, optionally, a theory curve per s2 drawn dashed in the same colour."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from grokphase.errors import ResultFileError
from grokphase.plotting.base import S2, _colors, _save, plt

KIND = "analysis.free_energy"


def _title(ds) -> str:
    op = str(ds.attrs.get("order_parameter", "m"))
    c, c_sem = float(ds.attrs.get("coexistence_s2", np.nan)), float(ds.attrs.get("coexistence_s2_sem", np.nan))
    if np.isfinite(c):
        b, b_sem = float(ds.attrs.get("barrier", np.nan)), float(ds.attrs.get("barrier_sem", np.nan))
        sem = f" ± {c_sem:.2g}" if np.isfinite(c_sem) else ""
        bsem = f" ± {b_sem:.2g}" if np.isfinite(b_sem) else ""
        return f"{op}: coexistence {S2} = {c:.4g}{sem}, barrier {b:.3g}{bsem}"
    reason = str(ds.attrs.get("reason", ""))
    return f"{op}: no coexistence" + (f" ({reason[:70]}{'…' if len(reason) > 70 else ''})" if reason and
                                      reason != "none" else "")


def plot_free_energy(ds, path, also_pdf: bool = False,
                     theory: Mapping[float, tuple[np.ndarray, np.ndarray]] | None = None):
    """F(m) at every s2 of ``ds`` (lines, ± SE bands; minima and saddle marked) and, for the s2 keys of
    ``theory`` (s2 -> (m grid, F_theory)), the theory dashed, shifted like the profiles to minimum 0.  A
    theory s2 without a simulated profile is drawn in black.  Returns the written paths."""
    if ds.attrs.get("grokphase_kind") != KIND:
        raise ResultFileError(f"expected a free-energy result ({KIND}), got {ds.attrs.get('grokphase_kind')!r}")
    s2 = np.asarray(ds["s2"].values, np.float64)
    m = np.asarray(ds["m"].values, np.float64)
    colors = _colors(s2.size)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    top = 0.0
    for i, s in enumerate(s2):
        F = np.asarray(ds["F"].values[i], np.float64)
        se = np.asarray(ds["F_sem"].values[i], np.float64)
        ok = np.isfinite(F)
        if not ok.any():
            continue
        F = F - np.min(F[ok])                    # -log p(m) is stored normalised; drawn from minimum 0
        top = max(top, float(np.nanmax(F[ok])))
        band = ok & np.isfinite(se)
        ax.fill_between(m, np.where(band, F - se, np.nan), np.where(band, F + se, np.nan), color=colors[i],
                        alpha=0.25, lw=0)
        ax.plot(m[ok], F[ok], "-", color=colors[i], lw=1.4, label=f"{S2} = {s:.4g}")
        if int(ds["wells"].values[i]) == 2:
            for x in np.asarray(ds["minima_m"].values[i], np.float64):
                j = int(np.argmin(np.abs(m - x)))
                ax.plot(m[j], F[j], "o", color=colors[i], mec="k", mew=0.6, ms=5, zorder=5)
            j = int(np.argmin(np.abs(m - float(ds["saddle_m"].values[i]))))
            ax.plot(m[j], F[j], "^", color=colors[i], mec="k", mew=0.6, ms=6, zorder=5)
    for key, (mt, Ft) in (theory or {}).items():
        mt, Ft = np.asarray(mt, np.float64), np.asarray(Ft, np.float64)
        ok = np.isfinite(Ft)
        if not ok.any():
            continue
        match = np.flatnonzero(np.isclose(s2, float(key), rtol=1e-6))
        color = colors[match[0]] if match.size else "k"
        ax.plot(mt[ok], Ft[ok] - Ft[ok].min(), "--", color=color, lw=1.1,
                label=f"theory, {S2} = {float(key):.4g}")
    ax.set_xlabel(f"order parameter m ({ds.attrs.get('order_parameter', 'm')})")
    ax.set_ylabel(r"$F(m) = -\log p(m)$ (minimum 0)")
    if top > 0:
        ax.set_ylim(-0.05 * top, 1.08 * top)
    ax.set_title(_title(ds), fontsize=9)
    ax.plot([], [], "o", color="0.6", mec="k", label="basin minima")
    ax.plot([], [], "^", color="0.6", mec="k", label="saddle")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)
