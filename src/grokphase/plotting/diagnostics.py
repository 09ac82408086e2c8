"""Trace and rank plots of a simulation result's chains (issue 20), drawn from the saved result and its
:func:`grokphase.analysis.diagnostics.diagnose` Dataset.

One row per drawn point (observable, σ², data set): on the left the trace of every init of that data set
over all records, the burn-in shaded and the MSER-5 equilibration estimate dashed; on the right ArviZ's
rank plot (``az.plot_rank``) of the records after the burn-in, whose bars are uniform when the chains
sample the same distribution (Vehtari et al. 2021).  The flagged points are drawn first; with none
flagged, the first observable at each σ² of data set 0."""

from __future__ import annotations

import numpy as np
import xarray as xr

from grokphase.analysis.diagnostics import _arviz, _quiet, layout, observables
from grokphase.plotting.base import S2, _save, plt

#: most rows of one figure
MAX_ROWS = 6


def _points(diag: xr.Dataset, max_rows: int) -> list[dict]:
    """Index dicts (dim -> position) of the rows: the flagged points, else the first observable of data
    set 0 at every σ² (other point dims at their first value)."""
    dims = diag["rhat"].dims
    every = [dict(zip(dims, idx)) for idx in np.ndindex(*diag["rhat"].shape)]
    rows = [c for c in every if diag["flagged"].values[tuple(c[d] for d in dims)]]
    if not rows:
        rows = [c for c in every if all(v == 0 for d, v in c.items() if d != "s2")]
    return rows[:max_rows]


def plot_diagnostics(ds: xr.Dataset, diag: xr.Dataset, path, also_pdf: bool = False, max_rows: int = MAX_ROWS):
    """Trace and rank plots (module docstring) of up to ``max_rows`` points of ``diag`` (the diagnostics
    of ``ds`` at its burn-in).  Returns the written paths."""
    az = _arviz()
    lay = layout(ds, int(diag.attrs["burn_in"]))
    obs = observables(ds, lay)
    keep = lay.times > lay.burn_in
    rows = _points(diag, max_rows)
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 2.4 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": (2, 1)})
    dims = diag["rhat"].dims
    for r, c in enumerate(rows):
        name = str(diag["observable"].values[c["observable"]])
        sel = {d: i for d, i in c.items() if d not in ("observable", "dataset")}
        if lay.dataset_dim:
            sel[lay.dataset_dim] = c["dataset"]
        x = np.asarray(obs[name].isel(sel).values)               # (chain, time)
        idx = tuple(c[d] for d in dims)
        ax = axes[r, 0]
        for k, chain in enumerate(x):
            ax.plot(lay.times, chain, lw=0.8, label=f"{lay.chain_dim} {k}")
        if lay.burn_in > 0:
            ax.axvspan(0, lay.burn_in, color="0.9", zorder=0, label="burn-in")
        eq = float(diag["equilibration"].values[idx])
        if np.isfinite(eq) and eq > 0:
            ax.axvline(eq, color="k", ls="--", lw=0.8, label="MSER-5")
        s2 = float(diag["s2"].values[c["s2"]])
        extra = "".join(f", {d} {diag[d].values[c[d]]}" for d in dims if d not in ("observable", "s2", "dataset"))
        rhat, ess = float(diag["rhat"].values[idx]), float(diag["ess_bulk"].values[idx])
        mark = "  FLAGGED" if diag["flagged"].values[idx] else ""
        ax.set_title(f"{name}, {S2} = {s2:g}, data set {int(diag['dataset'].values[c['dataset']])}{extra}: "
                     f"R̂ {rhat:.3f}, bulk ESS {ess:.0f}{mark}", fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=6, loc="best")
        with _quiet():
            az.plot_rank(x[:, keep], ax=axes[r, 1])
        axes[r, 1].set_title("rank plot (after burn-in)", fontsize=8)
        axes[r, 1].set_xlabel("rank (all chains)", fontsize=8)
        axes[r, 1].set_ylabel(lay.chain_dim, fontsize=8)
    fig.subplots_adjust(hspace=0.75, wspace=0.22)      # not tight_layout: it doubles the drawing time
    return _save(fig, path, also_pdf=also_pdf)
