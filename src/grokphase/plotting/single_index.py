"""Figure of the single-index family's theory-vs-simulation comparison
(:func:`grokphase.analysis.single_index.compare_family`): one panel per model (activation x target),
the learned fraction of every target degree vs sigma^2 — the exact finite-d theory at the reference
sizes (line; dotted where the theory is in GFL, solid in GMFL), the plain-n simulations (open) and
the equivalent-kernel controls n -> k n, sigma^2 -> k sigma^2 (filled) at their equivalent sigma^2, and
their extrapolation to 1/n -> 0 (stars)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
import numpy as np
import xarray as xr

from grokphase.errors import ResultFileError
from grokphase.plotting.base import S2, _beta_label, _save

_DEGREE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                  "tab:gray", "tab:olive")
_HE = {0: "He$_0$", 1: "He$_1$", 2: "He$_2$", 3: "He$_3$", 4: "He$_4$", 5: "He$_5$", 6: "He$_6$", 7: "He$_7$",
       8: "He$_8$"}


def target_label(spec: str) -> str:
    """"1:1,3:-0.3" -> "He1 − 0.3 He3" in mathtext."""
    parts = []
    for term in spec.split(","):
        k, c = term.split(":")
        c = float(c)
        coef = "" if abs(c) == 1 else f"{abs(c):g} "
        sign = "−" if c < 0 else "+"
        parts.append((sign, f"{coef}{_HE[int(k)]}"))
    text = ("−" if parts[0][0] == "−" else "") + parts[0][1]
    return text + "".join(f" {s} {t}" for s, t in parts[1:])


def plot_family(cmp: xr.Dataset, path, also_pdf: bool = True) -> list[Path]:
    if cmp.attrs.get("grokphase_kind") != "analysis.single_index.family":
        raise ResultFileError(f"expected a single-index comparison, got {cmp.attrs.get('grokphase_kind')!r}")
    groups = json.loads(cmp.attrs["groups_json"])
    G = len(groups)
    fig, axes = plt.subplots(1, G, figsize=(4.3 * G, 4.0), squeeze=False)
    pg, cg = cmp["point_group"].values, cmp["curve_group"].values
    for gi, (ax, info) in enumerate(zip(axes[0], groups)):
        sel_c = cg == gi
        degrees = sorted(set(int(k) for k in cmp["curve_degree"].values[sel_c]))
        for k in degrees:
            col = _DEGREE_COLORS[k % len(_DEGREE_COLORS)]
            m = sel_c & (cmp["curve_degree"].values == k)
            s2, th, ph = cmp["curve_s2"].values[m], cmp["curve_theory"].values[m], cmp["curve_phase"].values[m]
            ax.plot(s2, np.where(ph > 0, th, np.nan), color=col, lw=1.8, label=_HE[k])
            ax.plot(s2, np.where(ph == 0, th, np.nan), color=col, lw=1.2, ls=":")
            mp = (pg == gi) & (cmp["point_degree"].values == k)
            n = cmp["point_n"].values[mp]
            for is_ref in (True, False):
                sel = n == n.min() if is_ref else n > n.min()
                if np.any(sel):
                    ax.errorbar(cmp["point_s2_eq"].values[mp][sel], cmp["point_sim"].values[mp][sel],
                                yerr=cmp["point_sim_sem"].values[mp][sel], fmt="s" if is_ref else "o",
                                mfc="white" if is_ref else col, color=col, ms=5, capsize=2)
            if "extrap_group" in cmp:
                me = (cmp["extrap_group"].values == gi) & (cmp["extrap_degree"].values == k)
                if np.any(me):
                    ax.errorbar(cmp["extrap_s2"].values[me], cmp["extrap_value"].values[me],
                                yerr=cmp["extrap_sem"].values[me], fmt="*", color=col, mec="k", mew=0.5, ms=11,
                                capsize=2)
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_xlabel(S2 + f" (at n = {info['n_ref']:g})")
        ax.set_ylabel("learned fraction 1 − δ$_k$/ŷ$_k$")
        ax.set_title(f"{info['activation']}: y = {target_label(info['target'])}\n"
                     f"{_beta_label(info['beta'])}: N = {info['N']:g}, d = {info['d']:g}", fontsize=9)
        ax.legend(fontsize=7, loc="best", title="target degree", title_fontsize=7)
    handles = [Line2D([], [], color="k", lw=1.8, label="exact finite-d theory, GMFL"),
               Line2D([], [], color="k", lw=1.2, ls=":", label="exact finite-d theory, GFL"),
               Line2D([], [], color="k", marker="s", mfc="white", ls="", label="Langevin, plain n"),
               Line2D([], [], color="k", marker="o", ls="", label="Langevin, EK control (n, σ² × k)"),
               Line2D([], [], color="k", marker="*", ms=10, ls="", label="Langevin, extrapolated to 1/n → 0")]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7.5, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path, also_pdf=also_pdf)


def _family_title(ds: xr.Dataset) -> str:
    approx = ds.attrs.get("approximation", "exact")
    return f"{ds.attrs.get('activation', '?')}: y = {target_label(ds.attrs['target'])} ({approx} finite-d theory)"


def plot_family_sweep(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """A single-index sigma^2 sweep (``theory teacher-student --activation ...``): the learned fraction of
    every basis degree vs sigma^2, solid where the solver labels the point GMFL, dotted in GFL, with
    the droplet fraction on a second axis."""
    if ds.attrs.get("grokphase_kind") != "theory.single_index.sweep":
        raise ResultFileError(f"expected a single-index sweep, got {ds.attrs.get('grokphase_kind')!r}")
    s2 = ds["s2"].values
    ph = ds["phase"].values
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    for kk, k in enumerate(int(v) for v in ds["degree"].values):
        col = _DEGREE_COLORS[k % len(_DEGREE_COLORS)]
        y = ds["learned"].values[:, kk]
        ax.plot(s2, np.where(ph > 0, y, np.nan), "-o", ms=3, color=col, lw=1.8, label=f"{_HE[k]} (GMFL)")
        ax.plot(s2, np.where(ph == 0, y, np.nan), ":o", ms=3, color=col, lw=1.2, label=f"{_HE[k]} (GFL)")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel(S2)
    ax.set_ylabel("learned fraction 1 − δ$_k$/ŷ$_k$")
    if "droplet_fraction" in ds:
        ax2 = ax.twinx()
        ax2.plot(s2, ds["droplet_fraction"].values, color="0.5", lw=1, ls="--")
        ax2.set_ylabel("droplet fraction (dashed)", color="0.4")
    ax.set_title(_family_title(ds), fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, path, also_pdf=also_pdf)


def plot_family_phase_diagram(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """A single-index phase diagram: the learned fraction of the basis's highest degree in colour, with
    the limit boundary and the finite-d phase crossovers of
    :func:`grokphase.plotting.theory.plot_phase_diagram`."""
    from grokphase.plotting.theory import plot_phase_diagram
    if ds.attrs.get("grokphase_kind") != "theory.single_index.phase_diagram":
        raise ResultFileError(f"expected a single-index phase diagram, got {ds.attrs.get('grokphase_kind')!r}")
    k = int(ds["degree"].values[-1])
    field = f"learned fraction of He{k}"
    flat = ds.drop_vars(["learned", "discrepancy"]).assign({field: ds["learned"].sel(degree=k).drop_vars("degree")})
    return plot_phase_diagram(flat, path, also_pdf=also_pdf, field=field)
