r"""``grokphase reproduce``: every result of the paper from the experiment definitions, cached.

Each figure is a small graph of *steps* (a theory solve, one simulation, a comparison, the figure's
data).  A step's result is an annotated Dataset saved under ``cache_dir`` with a name that is a
hash of (step kind, its configuration, the keys of the steps it depends on, the recipe version):
a second call loads every step instead of recomputing it, and a changed parameter recomputes only
the steps whose configuration (or whose inputs) changed.  Figures are always drawn from the saved
figure-data file, never from in-memory results.

The definitions live in the repository's top-level folders: ``theory/reproduce.toml`` (one table
per figure, with ``[NAME.tiny]``, ``[NAME.quick]``, ``[NAME.paper]`` overrides) and the simulation
experiment files in ``sims/`` that it names; they ship in the package too, so that an installed
grokphase reproduces outside a checkout (the checkout's files win inside one:
:mod:`grokphase.experiments.files`).  Scales: ``quick`` (this 2-core CPU, minutes per
figure), ``paper`` (the paper's sizes, for a GPU) and ``tiny`` (seconds; tests and smoke checks).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from grokphase.analysis import appd
from grokphase.analysis.compare import compare_summary
from grokphase.analysis.single_index import family_summary
from grokphase.errors import ParameterError
from grokphase.experiments.files import definitions_root
from grokphase.experiments.reproduce._fig1 import fig1_data, fig1_summary
from grokphase.experiments.reproduce.cache import (COMPUTED, DEFINITIONS, FIGURES, RECIPE_VERSION, RECIPES,  # noqa: F401
                                                   SCALES, Context, Step, figure_config, step_key)
from grokphase.experiments.reproduce.modular import fig3_data, fig3_summary, pd_modular_data
from grokphase.experiments.reproduce.single_index import single_index_data
from grokphase.experiments.reproduce.teacher_student import (appd_data, fig2_data, pd_ts_data,
                                                             sample_complexity_data)
from grokphase.io import _jsonable, load_dataset, writes_files
from grokphase.plotting import appd as appd_plots
from grokphase.plotting import reproduce as pr
from grokphase.plotting.single_index import plot_family
from grokphase.theory.teacher_student import PHASE_LABELS

# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


def _finite(x):
    x = float(x)
    return x if math.isfinite(x) else None


def reproduce_one(ctx: Context, name: str) -> dict:
    """Compute (or load) one figure's data, draw its PNG + PDF from the saved file, return its summary."""
    t0 = time.perf_counter()
    path = ctx.figure_paths(name)
    summary: dict[str, Any] = {"name": name, "scale": ctx.scale}
    if name == "fig1":
        st = fig1_data(ctx)
        files = pr.plot_fig1(load_dataset(st.path), path)
        summary.update(fig1_summary(st.ds))
    elif name == "fig2":

        st = fig2_data(ctx)
        files = pr.plot_fig2(load_dataset(st.path), path)
        summary.update(compare_summary(st.ds))
    elif name == "fig3":
        theory, cmp = fig3_data(ctx)
        st = theory
        files = pr.plot_fig3(load_dataset(theory.path), load_dataset(cmp.path) if cmp else None, path)
        summary.update(fig3_summary(theory.ds, cmp.ds if cmp else None))
    elif name in ("fig4", "fig5", "fig6"):

        st = appd_data(ctx)
        plot = {"fig4": appd_plots.plot_fig4, "fig5": appd_plots.plot_fig5, "fig6": appd_plots.plot_fig6}[name]
        files = plot(load_dataset(st.path), path)
        summary.update(appd.appd_summary(st.ds))
    elif name == "phase-diagram-ts":
        st = pd_ts_data(ctx)
        files = pr.plot_pd_ts(load_dataset(st.path), path)
        summary.update({k: _finite(v) for k, v in st.ds.attrs.items() if k.startswith("limit_")})
        for ap in ("exact", "concentrated"):
            summary[f"phase_counts_{ap}"] = {lab: int((st.ds[f"{ap}_phase"].values == c).sum())
                                             for c, lab in PHASE_LABELS.items()}
        summary["simulated_points"] = int(st.ds.sizes.get("sim_point", 0))
    elif name == "phase-diagram-modular":
        st = pd_modular_data(ctx)
        files = pr.plot_pd_modular(load_dataset(st.path), path)
        summary.update({k: st.ds.attrs[k] for k in ("gmfl1_s2", "gmfl2_s2", "convention")})
        summary["simulated_points"] = int(st.ds.sizes.get("sim_point", 0))
        if "sim_droplet" in st.ds:
            summary["max_simulated_droplet_fraction"] = _finite(np.nanmax(st.ds["sim_droplet"].values)) \
                if st.ds.sizes.get("sim_point", 0) else None
    elif name == "sample-complexity":
        st = sample_complexity_data(ctx)
        files = pr.plot_sample_complexity(load_dataset(st.path), path)
        summary.update({k: _finite(v) for k, v in st.ds.attrs.items() if "n_half" in k or "n_onset" in k})
        if st.ds.sizes.get("sim_point", 0):
            summary["points"] = [{k: float(st.ds[f"point_{k}"].values[j]) for k in
                                  ("n", "beta", "s2", "cubic", "cubic_sem", "theory_exact_cubic",
                                   "theory_concentrated_cubic", "gp_cubic")} for j in range(st.ds.sizes["sim_point"])]
    elif name == "single-index":
        st = single_index_data(ctx)
        files = plot_family(load_dataset(st.path), path)
        summary.update(family_summary(st.ds))
    else:
        raise ParameterError(f"unknown figure {name!r}; choose from {', '.join(FIGURES)} or all")
    summary["data"] = str(st.path)
    summary["figures"] = [str(f) for f in files]
    summary["seconds"] = time.perf_counter() - t0
    return summary


def reproduce(names: Sequence[str], *, scale: str = "quick", out_dir: str | os.PathLike = "figures",
              cache_dir: str | os.PathLike | None = None, defs: str | os.PathLike | None = None,
              progress: bool = True) -> dict:
    """Python API of ``grokphase reproduce``: returns {name: summary} and writes ``summary.json`` next
    to the cache (``results/reproduce/<scale>/`` by default)."""

    names = list(FIGURES) if list(names) == ["all"] or "all" in names else list(names)
    for name in names:
        if name not in FIGURES:
            raise ParameterError(f"unknown figure {name!r}; choose from {', '.join(FIGURES)} or all")
    root = definitions_root(defs)
    cache = Path(cache_dir) if cache_dir is not None else Path("results") / "reproduce" / scale
    ctx = Context(scale=scale, defs_root=root, cache_dir=cache, out_dir=Path(out_dir), progress=progress)
    out = {}
    for name in names:
        out[name] = reproduce_one(ctx, name)
    if not writes_files():              # multi-process runs: process 0 writes the summary
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / ".summary.json.tmp"
    tmp.write_text(json.dumps(_jsonable(out), indent=1, default=str))
    os.replace(tmp, cache / f"summary_{'_'.join(n.replace('-', '_') for n in names) if len(names) < 4 else 'all'}.json")
    return out
