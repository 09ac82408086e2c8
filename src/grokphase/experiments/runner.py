"""``grokphase run FILE.toml``: an experiment file's simulations and analyses, for any registered model.

An experiment file names its model (``model = "teacher-student"``, the default, or any registered
name), a ``[common]`` table of defaults and ``[[sim]]`` tables whose keys are the model's options
(:mod:`grokphase.experiments.options`, derived from its configuration dataclasses); then the
model's analysis tables (``[compare]``, ``[hysteresis]``, ...: :class:`~grokphase.experiments.
registry.ModelSpec.tables`).  Each run is saved to ``out_dir/NAME.nc`` (default
``results/<file stem>/``); a run whose result file exists and describes the same run is reused, an
interrupted one resumes from its checkpoints.

**Until converged.**  A [[sim]] table (or [common]) with ``until_converged = true`` runs its simulation
block by block until every point meets the diagnostics' targets (:mod:`grokphase.analysis.converge`):
``block_steps`` (steps added per block, default ``steps``), ``max_steps`` (default 10 x ``steps``),
``rhat`` and ``min_ess`` (the thresholds, default 1.01 and 400).  These keys are not options of the
model: :func:`convergence_targets` reads and checks them, :func:`run_options` runs a table either
way (the command line's ``--until-converged`` uses the same two).  Such a result is reused when its
``until_converged_config`` attribute (the table's options and targets) matches.

A reused result keeps the attributes it was written with (its ``seconds`` and
``network_steps_per_second`` are those of the run that computed it); in memory it gains
``reused = 1`` and ``reused_from`` (the file).  A result file that exists but cannot be read (corrupt,
its data not matching their checksum, foreign, of another kind) is an error naming it, before
anything runs: it is never silently overwritten.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from grokphase.errors import ParameterError, ResultFileError
from grokphase.experiments import models as _models  # noqa: F401  (registers the paper's models)
from grokphase.experiments.devices import experiment_devices
from grokphase.experiments.files import entries, load_toml, sim_tables, table
from grokphase.experiments.options import COMMAND_LINE, Option, option_label, resolve
from grokphase.experiments.registry import ModelSpec, get_model
from grokphase.analysis.converge import Targets, convergence_line, convergence_summary, until_converged
from grokphase.analysis.diagnostics import attach_diagnostics, diagnose
from grokphase.io import load_dataset, save_dataset

#: keys of an experiment file's top level besides the model's analysis tables
TOP_KEYS = {"model", "sim", "common", "out_dir", "host_devices", "description"}


#: keys of a [[sim]] table that ask for a run until converged (module docstring; flags on the command line)
UNTIL_CONVERGED_KEYS = ("until_converged", "block_steps", "max_steps", "rhat", "min_ess")


def with_diagnostics(ds):
    """``ds`` with its convergence diagnostics attached (:func:`grokphase.analysis.diagnostics.attach_diagnostics`,
    default thresholds), or with the attribute ``diagnostics_unavailable`` saying why not (one init, not
    Langevin, ...).  A finished run is never lost to its diagnostics: any failure of theirs is recorded
    the same way.  A run until converged keeps the diagnostics at its own targets."""
    if "stopping_rule" in ds.attrs:
        return ds
    try:
        return attach_diagnostics(ds, diagnose(ds))
    except Exception as exc:  # noqa: BLE001 (the run's result is saved whatever the diagnostics do)
        out = ds.copy()
        out.attrs["diagnostics_unavailable"] = f"{type(exc).__name__}: {exc}"
        return out


def diagnostics_status(ds) -> str:
    """One line on a result file's convergence diagnostics: how many points are flagged, or why none."""
    if "diagnostics_flagged" in ds.attrs:
        stop = (f"; run until converged: stopped by {ds.attrs['stopping_rule']} after {int(ds.attrs['steps_run'])} "
                "steps" if "stopping_rule" in ds.attrs else "")
        return (f"{int(ds.attrs['diagnostics_flagged'])} flagged (R-hat > {float(ds.attrs['diagnostics_rhat_max']):g} "
                f"or ESS < {float(ds.attrs['diagnostics_min_ess']):g}; grokphase diagnose FILE){stop}")
    return f"unavailable: {ds.attrs.get('diagnostics_unavailable', 'a file written before grokphase had diagnostics')}"


def mark_reused(ds, source: str | os.PathLike):
    """``ds`` (a result loaded from ``source``) marked as reused: ``reused = 1``, ``reused_from`` =
    the file; its own attributes (timing included) are kept."""
    ds = ds.copy()
    ds.attrs["reused"] = 1
    ds.attrs["reused_from"] = str(source)
    return ds


def _reusable(target: Path, model: ModelSpec, config: Any, name: str, matches: Callable | None = None):
    """The saved result at ``target`` if it is the same run (marked :func:`mark_reused`); None when
    there is none or it describes another run (``matches(old, config)``, default the model's).  A file
    there that cannot be read as the model's result is an error naming it."""
    if not target.exists():
        return None
    try:
        old = load_dataset(target, model.result_kind)
    except ResultFileError as exc:
        raise ResultFileError(f"{exc}; delete it (or choose another out_dir) to run {name!r} again") from None
    if not (matches or model.matches)(old, config):
        return None
    print(f"[{name}] reusing {target}", file=sys.stderr)
    return mark_reused(old, target)


# ------------------------------------------------------------------------------------------------
# until converged


def convergence_targets(schema: Mapping[str, Option], opts: Mapping[str, Any], where: str) -> Targets | None:
    """The :class:`~grokphase.analysis.converge.Targets` of a table or command line that asks for a run
    until converged (``until_converged`` true), else None; a ParameterError naming the key or flag for a
    target given without ``until_converged``, a value of the wrong type or range, or a run that cannot
    be extended block by block: log-spaced record times, an annealing ladder, replica exchange, umbrella
    windows, an optimiser other than Langevin, fewer than 2 inits (seeds) per posterior, a model without
    ``steps`` and ``record_every`` options."""
    flag = opts.get("until_converged")
    if flag is not None and not isinstance(flag, bool):
        raise ParameterError(f"{option_label('until_converged', where)} must be true or false, got {flag!r}")
    if not flag:
        extra = [k for k in UNTIL_CONVERGED_KEYS[1:] if opts.get(k) is not None]
        if extra:
            raise ParameterError(f"{', '.join(option_label(k, where) for k in extra)} set the targets of a run until "
                                 f"converged: give {option_label('until_converged', where)} too, or remove them")
        return None
    for k, kinds in (("block_steps", "an integer"), ("max_steps", "an integer"), ("rhat", "a number"),
                     ("min_ess", "a number")):
        v = opts.get(k)
        if v is None:
            continue
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or (kinds == "an integer" and not isinstance(v, int))
        if bad:
            raise ParameterError(f"{option_label(k, where)} must be {kinds}, got {v!r}")
    missing = [k for k in ("steps", "record_every") if k not in schema]
    if missing:
        raise ParameterError(f"{option_label('until_converged', where)}: the model has no {' or '.join(missing)} option, "
                             "so its runs cannot be extended block by block")
    o = resolve({k: v for k, v in opts.items() if k in schema}, schema, where, strict=False)
    why = None
    if o.get("log_times"):
        why = ("log-spaced record times (log_times) are not extendable: a shorter run's records are not the first "
               "records of a longer one; record at linear times")
    elif o.get("anneal") not in (None, "none"):
        why = f"an annealing ladder (anneal = {o['anneal']!r}) runs the whole schedule at every s2; run independent s2"
    elif o.get("replica_exchange"):
        why = "replica exchange is not extended block by block; run independent s2"
    elif o.get("umbrella_m0") is not None or o.get("umbrella_range") is not None:
        why = "umbrella windows are not extended block by block"
    elif o.get("optimizer") not in (None, "langevin"):
        why = f"the optimizer {o['optimizer']!r} samples no posterior, so R-hat and ESS have no meaning"
    else:
        for chains in ("inits", "seeds"):
            if chains in o and o[chains] is not None and int(o[chains]) < 2:
                why = (f"R-hat needs at least 2 chains of one posterior, and {option_label(chains, where)} is "
                       f"{o[chains]}")
    if why is not None:
        raise ParameterError(f"{option_label('until_converged', where)}: {why}")
    try:
        return Targets(steps=o["steps"], record_every=o["record_every"], block_steps=opts.get("block_steps"),
                       max_steps=opts.get("max_steps"), rhat=opts.get("rhat", Targets.rhat),
                       min_ess=opts.get("min_ess", Targets.min_ess))
    except ParameterError as exc:
        prefix = "--until-converged: " if where == COMMAND_LINE else f"{where}: "
        raise ParameterError(f"{prefix}{exc}") from None


def run_options(run: Callable[..., Any], schema: Mapping[str, Option], opts: Mapping[str, Any], *, devices,
                progress: bool, checkpoint_dir: str | None, where: str):
    """One table's (or command line's) run: ``run(opts, devices=, progress=, checkpoint_dir=, where=)``
    (a model's run), or with ``until_converged`` the loop of :func:`grokphase.analysis.converge.until_converged`
    around it (``steps`` and ``burn_in`` set per block; a temporary checkpoint folder when
    ``checkpoint_dir`` is None)."""
    targets = convergence_targets(schema, opts, where)
    plain = {k: v for k, v in opts.items() if k not in UNTIL_CONVERGED_KEYS}
    if targets is None:
        return run(plain, devices=devices, progress=progress, checkpoint_dir=checkpoint_dir, where=where)

    def block(steps: int, burn_in: int | None, folder: str):
        pinned = {**plain, "steps": steps, **({"burn_in": burn_in} if burn_in is not None else {})}
        return run(pinned, devices=devices, progress=progress, checkpoint_dir=folder, where=where)

    log = (lambda line: print(line, file=sys.stderr)) if progress else None
    return until_converged(block, targets, checkpoint_dir=checkpoint_dir, log=log)


def until_converged_report(ds, summary: dict, lines: list[str]) -> None:
    """A run until converged's ``until_converged`` summary entry (:func:`~grokphase.analysis.converge.
    convergence_summary`: the stopping rule, steps run, blocks, targets) and its line of text; nothing
    for any other run."""
    if "stopping_rule" in ds.attrs:
        summary["until_converged"] = convergence_summary(ds)
        lines.append(convergence_line(summary["until_converged"]))


def final_options(opts: Mapping[str, Any], ds) -> dict:
    """The options of the single run a run until converged equals: ``opts`` without the until-converged
    keys, with the steps it ran and its burn-in."""
    plain = {k: v for k, v in opts.items() if k not in UNTIL_CONVERGED_KEYS}
    return {**plain, "steps": int(ds.attrs["steps_run"]), "burn_in": int(ds.attrs["param_burn_in"])}


def _uc_config(config: dict, opts: Mapping[str, Any]) -> str:
    """What identifies a run until converged in ``grokphase run``: its table's run identity and targets."""
    targets = {k: opts[k] for k in UNTIL_CONVERGED_KEYS if opts.get(k) is not None}
    return json.dumps({"run": config, "until_converged": targets}, sort_keys=True, default=str)


def _uc_matches(old, key: str) -> bool:
    return old.attrs.get("until_converged_config") == key


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
    allowed = set(model.options) | {"name"} | set(UNTIL_CONVERGED_KEYS)
    for i, (_, opts) in enumerate(entries(path, sims, common, allowed)):
        where = f"{path}: [[sim]] #{i + 1}"
        resolve({k: v for k, v in opts.items() if k not in UNTIL_CONVERGED_KEYS}, model.options, where)  # types
        convergence_targets(model.options, opts, where)                  # before anything runs
    sim_names = [name for name, _ in entries(path, sims, common, allowed)]
    for key, handler in model.tables.items():                          # tables that can be checked up front
        if key in spec and callable(getattr(handler, "check", None)):
            handler.check(path, spec[key], sim_names)
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
    for name, opts in entries(path, sims, common, set(model.options) | {"name"} | set(UNTIL_CONVERGED_KEYS)):
        config = model.cache_config({k: v for k, v in opts.items() if k not in UNTIL_CONVERGED_KEYS})
        matches = model.matches
        if opts.get("until_converged"):
            config, matches = _uc_config(config, opts), _uc_matches
        target = out_dir / f"{name}.nc"
        runs.append((name, opts, config, matches, target,
                     _reusable(target, model, config, name, matches)))  # every file before any run
    written: dict[Path, Any] = {}           # results saved by this call (a name given twice is run once)
    for i, (name, opts, config, matches, target, ds) in enumerate(runs):
        plot = opts.get("plot") if "plot" in model.options else None
        if ds is None and target in written and matches(written[target], config):
            ds = written[target]
        if ds is None:
            ds = run_options(model.run, model.options, opts, devices=devices, progress=progress,
                             checkpoint_dir=str(out_dir / "checkpoints"), where=f"{path}: [[sim]] #{i + 1}")
            if "stopping_rule" in ds.attrs:       # the single run it equals, and the table's targets
                ds = model.mark(ds, model.cache_config(final_options(opts, ds)))
                ds.attrs["until_converged_config"] = config
            else:
                ds = model.mark(ds, config)
            ds = with_diagnostics(ds)
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
    converged = {f: convergence_summary(ds) for f, ds in zip(files, results) if "stopping_rule" in ds.attrs}
    if converged:
        summary["until_converged"] = converged
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
