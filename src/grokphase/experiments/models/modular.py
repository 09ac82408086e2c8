"""The modular-addition model (square activation; paper Sec. 5, Fig. 3) in the experiments layer: its
``[[sim]]`` options (derived from :class:`~grokphase.sims.modular.ModularSim`), its runs (one per
training fraction alpha) and its analysis tables (``[hysteresis]``, ``[compare]``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from grokphase.analysis.compare import compare_modular, compare_modular_summary
from grokphase.analysis.hysteresis import hysteresis_modular
from grokphase.analysis.replica import replica_summary
from grokphase.errors import ParameterError
from grokphase.experiments.options import (Applies, Option, check_fits, only_with, option_label, options_of, resolve,
                                           signed, with_rules)
from grokphase.experiments.free_energy_table import free_energy_table
from grokphase.experiments.registry import ModelSpec, register
from grokphase.io import save_dataset
from grokphase.plotting import plot_modular_compare, plot_modular_sim, plot_result
from grokphase.plotting.hysteresis import plot_hysteresis_modular
from grokphase.sims.budget import budget_gb, chunk_size, upfront_budget_gb
from grokphase.sims.memory import modular_bytes
from grokphase.sims.precision import MATMUL_PRECISIONS
from grokphase.sims.modular import ModularSim, run_modular, summary_points
from grokphase.sims.umbrella import several_coordinates
from grokphase.theory import modular as md

NAME = "modular"
KIND = "sims.modular"

_FIELDS = ("P", "N", "s2", "sa2", "gamma", "parametrisation", "optimizer", "lr", "weight_decay", "seeds", "seed",
           "steps", "burn_in", "record_every", "log_times", "dtype", "anneal", "start", "readout", "mala", "prior_exact",
           "replica_exchange",
           "swap_every", "ordered_droplets", "theory_convention", "umbrella_m0", "umbrella_kappa", "umbrella_start",
           "umbrella_range", "umbrella_windows", "umbrella_coordinates", "matmul_precision")

#: the [[sim]] schema: ModularSim's fields and defaults; alpha may list several training fractions
#: (one run each); parametrisation defaults to paper for Langevin and gromov for the plain optimisers
OPTIONS: dict[str, Option] = {
    **options_of(ModularSim, _FIELDS, helps={
        "matmul_precision": f"float32 matmuls: {', '.join(MATMUL_PRECISIONS)} (tf32/bf16: emulated by rounding the "
                            "network's matmul inputs; docs/precision.md)"}),
    "alpha": Option("alpha", "floats", (ModularSim.alpha,), "training fraction(s) in (0, 1]; one run each"),
    "parametrisation": Option("parametrisation", "str", None, "paper or gromov (default: paper for Langevin, "
                              "gromov otherwise)", True),
    "plot": Option("plot", "str", None, "figure of this run (FILE.png)", True),
    "memory_gb": Option("memory_gb", "float", None, "memory budget of one ensemble chunk, GB (default: 60% of each "
                        "device's reported memory, 2 GB where none is reported, e.g. CPU)", True),
}
#: options of the run, not of the result: left out of the ModularSim and of the run's identity
RUN_OPTIONS = ("plot", "memory_gb")


def _parametrisation(o) -> str:
    return o["parametrisation"] or ("paper" if o["optimizer"] == "langevin" else "gromov")


def _umbrella(o) -> bool:
    return o["umbrella_m0"] is not None or o["umbrella_range"] is not None


def _umbrella_counts(o) -> bool:
    """Where umbrella_windows has an effect: planned windows, or explicit centres of several coordinates."""
    return o["umbrella_range"] is not None or (o["umbrella_m0"] is not None
                                               and several_coordinates(o["umbrella_coordinates"]))


def _ordered_start(o) -> bool:
    """Whether some chain starts from the droplet saddle (driver.ladder_branches; replica exchange
    starts its rungs ordered only with start = ordered; umbrella windows with umbrella_start ordered or
    both)."""
    return (o["start"] == "ordered" or (o["anneal"] in ("up", "both") and o["start"] != "prior")
            or (_umbrella(o) and o["umbrella_start"] in ("ordered", "both")))


#: the umbrella options apply to umbrella runs only (sims/umbrella.py)
UMBRELLA = Applies("with umbrella windows (umbrella_m0 or umbrella_range)", _umbrella, ("umbrella_m0", "umbrella_range"))


#: where an option has an effect: given elsewhere it is an error, not silently ignored (and recorded)
OPTIONS = with_rules(OPTIONS, {
    "weight_decay": only_with("optimizer", "adamw"),
    "gamma": only_with("optimizer", "langevin"),
    "readout": only_with("optimizer", "langevin"),
    "mala": only_with("optimizer", "langevin"),
    "prior_exact": only_with("optimizer", "langevin"),
    "swap_every": only_with("replica_exchange", True),
    "sa2": Applies("with the paper parametrisation (gromov fixes the readout scale 1/((2P)^2 N))",
                   lambda o: _parametrisation(o) == "paper", ("parametrisation", "optimizer")),
    "ordered_droplets": Applies("with an ordered start (start = ordered, or a heating branch: anneal = up or both, "
                                "or umbrella_start = ordered or both)", _ordered_start,
                                ("start", "anneal", "umbrella_start")),
    "umbrella_kappa": UMBRELLA,
    "umbrella_start": UMBRELLA,
    "umbrella_coordinates": UMBRELLA,
    "umbrella_windows": Applies("with umbrella_range (planned windows), or with umbrella_m0 and several "
                                "umbrella_coordinates (the centres per coordinate)", _umbrella_counts,
                                ("umbrella_range", "umbrella_coordinates")),
})
#: window centres and ranges may be zero or negative, stiffnesses zero
OPTIONS = signed(OPTIONS, "umbrella_m0", "umbrella_kappa", "umbrella_range")
TABLE_KEYS = set(OPTIONS) | {"name"}


def sims_from_options(opts: Mapping[str, Any], where: str = "options", *, strict: bool = False,
                      given=None) -> list[ModularSim]:
    """One ModularSim per training fraction of the options; missing options take ModularSim's defaults;
    ``given`` options must apply (:func:`resolve`)."""
    o = resolve({k: v for k, v in opts.items() if k not in ("name", "plot")}, OPTIONS, where, strict=strict,
                given=given)
    alphas = np.asarray(o["alpha"], dtype=float)
    if np.any(alphas <= 0) or np.any(alphas > 1):
        raise ParameterError(f"--alpha values must be in (0, 1], got {alphas.tolist()}")
    par = o["parametrisation"] or ("paper" if o["optimizer"] == "langevin" else "gromov")
    fields = {k: o[k] for k in _FIELDS if k != "parametrisation"}
    sims = [ModularSim(alpha=float(a), parametrisation=par, **fields) for a in alphas]
    if opts.get("plot") and sims[0].umbrella:
        raise ParameterError(f"{option_label('plot', where)}: an umbrella run has no figure of its own (the "
                             "free-energy analysis reads its result); remove it")
    return sims


def _memory_gb(opts: Mapping[str, Any], where: str) -> float | None:
    return resolve({k: v for k, v in opts.items() if k == "memory_gb"}, {"memory_gb": OPTIONS["memory_gb"]},
                   where)["memory_gb"]


def check_memory(sims: list[ModularSim], opts: Mapping[str, Any], where: str, devices=None) -> None:
    """One network of each run within ``memory_gb`` (:mod:`grokphase.sims.memory`); without it, within
    the devices' budget (:func:`grokphase.sims.budget.budget_gb`; before the devices are set up, the
    CPU's fallback where no accelerator can be present, else nothing until they are)."""
    memory_gb = _memory_gb(opts, where)
    budget = budget_gb(devices, memory_gb) if devices is not None else upfront_budget_gb(memory_gb)
    if budget is None:
        return
    for sim in sims:
        check_fits(f"P={sim.P}, N={sim.N} ({sim.dtype}, {sim.steps} steps, record every {sim.record_every})",
                   modular_bytes(sim), budget, where)


def check(opts: Mapping[str, Any], where: str, given=None) -> None:
    """Everything about one run that is known before it starts: option types and ranges, that each
    ``given`` option applies, and that one network fits the memory budget."""
    check_memory(sims_from_options(opts, where, given=given), opts, where)


def run(opts: Mapping[str, Any], *, devices, progress: bool, checkpoint_dir=None, where: str = "options"
        ) -> xr.Dataset:
    """Run one modular simulation per training fraction; alpha is a dimension when several are given."""
    sims = sims_from_options(opts, where)
    check_memory(sims, opts, where, devices=devices)
    memory_gb = _memory_gb(opts, where)
    results = [run_modular(sim, devices=devices, checkpoint_dir=checkpoint_dir, progress=progress,
                           ensemble_chunk=chunk_size(modular_bytes(sim)["device"], devices, memory_gb))
               for sim in sims]
    if len(results) == 1:
        return results[0]
    alphas = np.asarray([s.alpha for s in sims])
    ds = xr.concat([r.expand_dims(alpha=[float(a)]) for r, a in zip(results, alphas)], dim="alpha",
                   combine_attrs="override")
    ds.attrs["param_alpha"] = alphas
    if ds.attrs.get("umbrella") == 1:             # every training fraction is a posterior of its own
        ds.attrs["umbrella_system_dims"] = " ".join(["alpha", *str(ds.attrs["umbrella_system_dims"]).split()])
    return ds


def points(ds: xr.Dataset) -> list[dict]:
    """summary_points of a result, one alpha at a time.  Windows on several umbrella coordinates: the
    points' window_m0 and window_kappa are lists, one value per coordinate."""
    if "alpha" in ds.dims:
        out = []
        for j in range(ds.sizes["alpha"]):
            out.extend(points(ds.isel(alpha=j).assign_attrs(param_alpha=float(ds["alpha"].values[j]))))
        return out
    if "window_m0" in ds.coords and "coordinate" in ds["window_m0"].dims:
        grid = {name: ds[name].transpose("window", "coordinate").values.tolist()
                for name in ("window_m0", "window_kappa")}
        first = ds.assign_coords(window_m0=ds["window_m0"].isel(coordinate=0, drop=True),
                                 window_kappa=ds["window_kappa"].isel(coordinate=0, drop=True))
        return [{**pt, **{name: grid[name][pt["window"]] for name in grid}} for pt in summary_points(first)]
    return summary_points(ds)


def cache_config(opts: Mapping[str, Any]) -> dict:
    """A run is identified by its table's own options (sorted; ``plot`` is not part of it)."""
    return {k: opts[k] for k in sorted(opts) if k not in (*RUN_OPTIONS, "name")}


HYSTERESIS_ROLES = ("cooling", "heating", "replica", "replica_ordered")


def hysteresis_table(path: str, hspec: dict, by_name: Mapping[str, xr.Dataset], out_dir: Path, summary: dict) -> None:
    """``[hysteresis]``: ``cooling``, ``heating``, ``replica``, ``replica_ordered`` name [[sim]]
    entries; ``convention`` (network or paper theory), ``out``, ``plot``."""
    missing = [hspec[k] for k in HYSTERESIS_ROLES if k in hspec and hspec[k] not in by_name]
    if missing:
        raise ParameterError(f"{path}: [hysteresis] names unknown [[sim]] entries: {', '.join(missing)}")
    hyst = hysteresis_modular({k: by_name[hspec[k]] for k in HYSTERESIS_ROLES if k in hspec},
                              convention=hspec.get("convention", "network"))
    out = Path(hspec.get("out", out_dir / "hysteresis.nc"))
    save_dataset(hyst, out)
    summary["hysteresis"] = {"out": str(out), **json.loads(hyst.attrs["summary_json"])}
    if hspec.get("plot"):
        plot_hysteresis_modular(hyst, hspec["plot"])
        summary.setdefault("plots", []).append(str(hspec["plot"]))


def modular_comparison(sims, conventions=("paper", "network"), plot=None) -> tuple:
    """compare_modular + its summary, and with ``plot`` the comparison figure and the diagnostics
    figure of the first simulation (``<plot stem>_diagnostics.png``)."""
    cmp = compare_modular(sims, conventions)
    summary = compare_modular_summary(cmp)
    if plot:
        plot_modular_compare(cmp, plot)
        diag = Path(plot).with_name(Path(plot).stem + "_diagnostics" + Path(plot).suffix)
        plot_modular_sim(sims[0], diag)
        summary["plot"], summary["diagnostics_plot"] = str(plot), str(diag)
    return cmp, summary


def compare_table(path: str, cspec: dict, by_name: Mapping[str, xr.Dataset], out_dir: Path, summary: dict) -> None:
    """``[compare]``: the simulations against the finite-P theory (``conventions``, ``out``, ``plot``)."""
    convs = cspec.get("conventions", ["paper", "network"])
    cmp, csum = modular_comparison(list(by_name.values()), tuple(convs), cspec.get("plot"))
    out = Path(cspec.get("out", out_dir / "compare.nc"))
    save_dataset(cmp, out)
    summary["modular_compare"] = {**csum, "out": str(out)}
    summary.setdefault("plots", []).extend(p for p in (csum.get("plot"), csum.get("diagnostics_plot")) if p)


def run_summary(names: list[str], results: list[xr.Dataset]) -> dict:
    reps = {name: replica_summary(ds) for name, ds in zip(names, results) if ds.attrs.get("protocol") == "replica exchange"}
    return {"replica_exchange": reps} if reps else {}


SPEC = register(ModelSpec(
    name=NAME,
    description="square-activation networks learning modular addition (paper Sec. 5, Fig. 3)",
    result_kind=KIND,
    options=OPTIONS,
    run=run,
    cache_config=cache_config,
    summary_points=summary_points,
    tables={"hysteresis": hysteresis_table, "compare": compare_table, "free_energy": free_energy_table},
    sim_config=ModularSim,
    theory_params=md.ModularParams,
    theory={"solve": md.solve, "solve_limit": md.solve_limit, "transitions": md.transitions},
    plot=plot_result,
    points=points,
    run_summary=run_summary,
    check=check,
))
