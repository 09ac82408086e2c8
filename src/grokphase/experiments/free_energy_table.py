"""The ``[free_energy]`` table of an experiment file (issue 19): the MBAR analysis of its umbrella runs,
for any model whose runs can carry umbrella windows (teacher-student and modular register it).

One table, or a list (``[[free_energy]]``), each with the keys of ``grokphase free-energy``:

* ``sim``: the [[sim]] entry (a name, or a list of names) to analyse; default every umbrella run of the file;
* ``s2`` (list), ``bins``, ``bootstrap``, ``seed``, ``coordinate``, ``theory`` (true: the mean-field F(m)
  constrained to the same coordinate beside the simulated one): as the command's options;
* ``out``, ``plot``: the result file (netCDF) and the figure; with several runs in one table they
  are refused (give one table per run), by default ``out_dir/free_energy_<sim>.nc`` and no figure.

Each analysis is :func:`grokphase.analysis.free_energy.free_energy_report`, the command's own, so a table
and ``grokphase free-energy RESULT.nc`` with the same options give the same numbers.  The run's summary
gains ``free_energy``: one entry per analysed run (``sim``, the command's JSON keys, ``out``, ``plot``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import xarray as xr

from grokphase.analysis.free_energy import DEFAULT_BINS, DEFAULT_BOOTSTRAP, free_energy_report
from grokphase.errors import ParameterError
from grokphase.io import save_dataset

#: the keys a [free_energy] table may hold
KEYS = ("sim", "s2", "bins", "bootstrap", "seed", "coordinate", "theory", "out", "plot")


def _integer(where: str, key: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ParameterError(f"{where}: {key} must be an integer >= {lo}, got {value!r}")
    return value


def _options(where: str, t: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis options of one table, checked (one-line errors naming the key)."""
    unknown = sorted(set(t) - set(KEYS))
    if unknown:
        raise ParameterError(f"{where} has unknown key(s) {', '.join(unknown)} (allowed: {', '.join(KEYS)})")
    s2 = t.get("s2")
    if s2 is not None:
        values = s2 if isinstance(s2, list) else [s2]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                                 for v in values):
            raise ParameterError(f"{where}: s2 must be a list of numbers > 0, got {s2!r}")
        s2 = [float(v) for v in values]
    coordinate = t.get("coordinate")
    if coordinate is not None and not isinstance(coordinate, str):
        raise ParameterError(f"{where}: coordinate must be a coordinate's name, got {coordinate!r}")
    theory = t.get("theory", False)
    if not isinstance(theory, bool):
        raise ParameterError(f"{where}: theory must be true or false, got {theory!r}")
    for key in ("out", "plot"):
        if key in t and not isinstance(t[key], str):
            raise ParameterError(f"{where}: {key} must be a file name, got {t[key]!r}")
    return {"s2": s2, "bins": _integer(where, "bins", t.get("bins", DEFAULT_BINS), 3),
            "n_bootstrap": _integer(where, "bootstrap", t.get("bootstrap", DEFAULT_BOOTSTRAP), 10),
            "seed": _integer(where, "seed", t.get("seed", 0), 0), "coordinate": coordinate, "theory": theory}


def _is_umbrella(ds: xr.Dataset) -> bool:
    return bool(int(ds.attrs.get("umbrella", 0)))


def _runs(where: str, t: Mapping[str, Any], by_name: Mapping[str, xr.Dataset]) -> list[str]:
    """The [[sim]] names a table analyses: its ``sim`` (each must be an umbrella run of the file), or every
    umbrella run."""
    names = t.get("sim")
    if names is None:
        names = [name for name, ds in by_name.items() if _is_umbrella(ds)]
        if not names:
            raise ParameterError(f"{where}: the file has no umbrella run (umbrella_m0 or umbrella_range) to analyse")
        return names
    names = names if isinstance(names, list) else [names]
    for name in names:
        if not isinstance(name, str) or name not in by_name:
            raise ParameterError(f"{where}: sim {name!r} is not a [[sim]] entry of the file "
                                 f"(entries: {', '.join(by_name)})")
        if not _is_umbrella(by_name[name]):
            raise ParameterError(f"{where}: sim {name!r} has no umbrella windows (umbrella_m0 or umbrella_range): "
                                 "there is no free-energy profile to compute")
    return names


def free_energy_table(path: str, spec, by_name: Mapping[str, xr.Dataset], out_dir: Path, summary: dict) -> None:
    """The ``[free_energy]`` table(s) of an experiment file (module docstring)."""
    tables = spec if isinstance(spec, list) else [spec]
    entries = []
    for i, t in enumerate(tables):
        where = f"{path}: [free_energy]" if len(tables) == 1 else f"{path}: [[free_energy]] {i + 1}"
        if not isinstance(t, dict):
            raise ParameterError(f"{where} must be a table of keys ({', '.join(KEYS)})")
        options = _options(where, t)
        names = _runs(where, t, by_name)
        if len(names) > 1 and ("out" in t or "plot" in t):
            raise ParameterError(f"{where}: out and plot name one file, but the table analyses {len(names)} runs "
                                 f"({', '.join(names)}): give one table per run ([[free_energy]] with sim = ...)")
        for name in names:
            ds = by_name[name]
            report, result, theory = free_energy_report(ds, source=str(Path(out_dir) / f"{name}.nc"), **options)
            out = Path(t.get("out", Path(out_dir) / f"free_energy_{name}.nc"))
            save_dataset(result, out)
            entry = {"sim": name, **report, "out": str(out)}
            if t.get("plot"):
                from grokphase.plotting.free_energy import plot_free_energy
                plot_free_energy(result, t["plot"], theory=theory)
                entry["plot"] = str(t["plot"])
                summary.setdefault("plots", []).append(str(t["plot"]))
            entries.append(entry)
    summary["free_energy"] = entries


def check_free_energy_table(path: str, spec, sim_names) -> None:
    """Everything about the table(s) known before the runs (``grokphase run`` calls it before the first
    simulation): its keys and their types, and that every ``sim`` it names is a [[sim]] entry."""
    tables = spec if isinstance(spec, list) else [spec]
    for i, t in enumerate(tables):
        where = f"{path}: [free_energy]" if len(tables) == 1 else f"{path}: [[free_energy]] {i + 1}"
        if not isinstance(t, dict):
            raise ParameterError(f"{where} must be a table of keys ({', '.join(KEYS)})")
        _options(where, t)
        names = t.get("sim")
        for name in ([] if names is None else names if isinstance(names, list) else [names]):
            if name not in sim_names:
                raise ParameterError(f"{where}: sim {name!r} is not a [[sim]] entry of the file "
                                     f"(entries: {', '.join(map(str, sim_names))})")


#: the pre-run check :func:`grokphase.experiments.runner.check_file` calls for a table handler that has one
free_energy_table.check = check_free_energy_table
