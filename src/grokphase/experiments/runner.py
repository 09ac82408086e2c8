"""``grokphase run FILE.toml``: an experiment file's simulations and analyses, for any registered model.

An experiment file names its model (``model = "teacher-student"``, the default, or any registered
name), a ``[common]`` table of defaults and ``[[sim]]`` tables whose keys are the model's options
(:mod:`grokphase.experiments.options`, derived from its configuration dataclasses); then the
model's analysis tables (``[compare]``, ``[hysteresis]``, ...: :class:`~grokphase.experiments.
registry.ModelSpec.tables`).  Each run is saved to ``out_dir/NAME.nc`` (default
``results/<file stem>/``); a run whose result file exists and describes the same run is reused, an
interrupted one resumes from its checkpoints.

A reused result keeps the attributes it was written with (its ``seconds`` and
``network_steps_per_second`` are those of the run that computed it); in memory it gains
``reused = 1`` and ``reused_from`` (the file).  A result file that exists but cannot be read (corrupt,
its data not matching their checksum, foreign, of another kind) is an error naming it, before
anything runs: it is never silently overwritten.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from grokphase.errors import ParameterError, ResultFileError
from grokphase.experiments import models as _models  # noqa: F401  (registers the paper's models)
from grokphase.experiments.devices import experiment_devices
from grokphase.experiments.files import entries, load_toml, sim_tables, table
from grokphase.experiments.options import resolve
from grokphase.experiments.registry import ModelSpec, get_model
from grokphase.analysis.diagnostics import attach_diagnostics, diagnose
from grokphase.io import load_dataset, save_dataset

#: keys of an experiment file's top level besides the model's analysis tables
TOP_KEYS = {"model", "sim", "common", "out_dir", "host_devices", "description"}


def with_diagnostics(ds):
    """``ds`` with its convergence diagnostics attached (:func:`grokphase.analysis.diagnostics.attach_diagnostics`,
    default thresholds), or with the attribute ``diagnostics_unavailable`` saying why not (one init, not
    Langevin, ...).  A finished run is never lost to its diagnostics: any failure of theirs is recorded
    the same way."""
    try:
        return attach_diagnostics(ds, diagnose(ds))
    except Exception as exc:  # noqa: BLE001 (the run's result is saved whatever the diagnostics do)
        out = ds.copy()
        out.attrs["diagnostics_unavailable"] = f"{type(exc).__name__}: {exc}"
        return out


def diagnostics_status(ds) -> str:
    """One line on a result file's convergence diagnostics: how many points are flagged, or why none."""
    if "diagnostics_flagged" in ds.attrs:
        return (f"{int(ds.attrs['diagnostics_flagged'])} flagged (R-hat > {float(ds.attrs['diagnostics_rhat_max']):g} "
                f"or ESS < {float(ds.attrs['diagnostics_min_ess']):g}; grokphase diagnose FILE)")
    return f"unavailable: {ds.attrs.get('diagnostics_unavailable', 'a file written before grokphase had diagnostics')}"


def mark_reused(ds, source: str | os.PathLike):
    """``ds`` (a result loaded from ``source``) marked as reused: ``reused = 1``, ``reused_from`` =
    the file; its own attributes (timing included) are kept."""
    ds = ds.copy()
    ds.attrs["reused"] = 1
    ds.attrs["reused_from"] = str(source)
    return ds


def _reusable(target: Path, model: ModelSpec, config: dict, name: str):
    """The saved result at ``target`` if it is the same run (marked :func:`mark_reused`); None when
    there is none or it describes another run.  A file there that cannot be read as the model's result
    is an error naming it."""
    if not target.exists():
        return None
    try:
        old = load_dataset(target, model.result_kind)
    except ResultFileError as exc:
        raise ResultFileError(f"{exc}; delete it (or choose another out_dir) to run {name!r} again") from None
    if not model.matches(old, config):
        return None
    print(f"[{name}] reusing {target}", file=sys.stderr)
    return mark_reused(old, target)


def check_file(path: str, spec: dict) -> tuple[ModelSpec, list, dict]:
    """The model, [[sim]] tables and [common] table of a parsed experiment file, checked: unknown top-level
    keys, unknown or mistyped options are errors that name the file and the key."""
    name = spec.get("model", "teacher-student")
    if not isinstance(name, str):
        raise ParameterError(f"{path}: model must be a string, got {name!r}")
    model = get_model(name, path)
    unknown = sorted(set(spec) - TOP_KEYS - set(model.tables))
    if unknown:
        raise ParameterError(f"{path}: unknown table(s) or key(s) {', '.join(unknown)} for model {model.name!r} "
                             f"(allowed: {', '.join(sorted(TOP_KEYS | set(model.tables)))})")
    sims = sim_tables(spec, path)
    common = table(spec, "common", path)
    allowed = set(model.options) | {"name"}
    for i, (_, opts) in enumerate(entries(path, sims, common, allowed)):
        resolve(opts, model.options, f"{path}: [[sim]] #{i + 1}")       # types, before anything runs
    return model, sims, common


def run_experiment(path: str, *, devices_k: int | None = None, progress: bool = True,
                   only: str | None = None) -> dict:
    """Run an experiment file (module docstring); returns its summary (the result files, the model's
    points and the analysis tables' summaries)."""
    spec = load_toml(path)
    model, sims, common = check_file(path, spec)
    if only is not None:
        if model.select_only is None:
            raise ParameterError(f"--only selects [[sim]] entries of files of models that support it; "
                                 f"{model.name} files run whole")
        spec, sims = model.select_only(spec, sims, only, path)
    out_dir = Path(spec.get("out_dir", os.path.join("results", Path(path).stem)))
    devices = experiment_devices(spec, devices_k)
    names, results, files, plots = [], [], [], []
    runs = []
    for name, opts in entries(path, sims, common, set(model.options) | {"name"}):
        config = model.cache_config(opts)
        target = out_dir / f"{name}.nc"
        runs.append((name, opts, config, target, _reusable(target, model, config, name)))  # every file before any run
    written: dict[Path, Any] = {}           # results saved by this call (a name given twice is run once)
    for i, (name, opts, config, target, ds) in enumerate(runs):
        plot = opts.get("plot") if "plot" in model.options else None
        if ds is None and target in written and model.matches(written[target], config):
            ds = written[target]
        if ds is None:
            ds = model.run(opts, devices=devices, progress=progress, checkpoint_dir=str(out_dir / "checkpoints"),
                           where=f"{path}: [[sim]] #{i + 1}")
            ds = with_diagnostics(model.mark(ds, config))
            save_dataset(ds, target)
            written[target] = ds
        names.append(name)
        results.append(ds)
        files.append(str(target))
        if plot:
            model.plot(ds, plot)
            plots.append(str(plot))
    summary: dict[str, Any] = {"simulations": files,
                               "diagnostics": {f: diagnostics_status(ds) for f, ds in zip(files, results)}}
    if model.points is not None:
        summary["points"] = [p for ds in results for p in model.points(ds)]
        summary["plots"] = plots
    elif plots:
        summary["plots"] = plots
    if model.run_summary is not None:
        summary.update(model.run_summary(names, results))
    by_name = dict(zip(names, results))
    for key, handler in model.tables.items():
        if spec.get(key):
            handler(path, spec[key], by_name, out_dir, summary)
    return summary
