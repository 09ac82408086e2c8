"""Pre-flight checks of a parsed command line, run before any computation: a long simulation must not
be thrown away at the end because its ``--out`` points at a directory, a file's parent is a file, the
folder is read-only, or ``--plot`` names a format matplotlib cannot write; an input file that is not
there, flags that contradict each other, a sweep too large to hold, or an experiment file with a
mistyped, inapplicable or oversized [[sim]] table are refused before the first solve or step.

The rules are tables (:data:`EXCLUSIVE`, :data:`INPUT_FILES`, :data:`SWEEPS`, :data:`AXES`) read by
:func:`preflight`; a simulation's own options carry where they apply in their schema
(:class:`grokphase.experiments.options.Applies`), checked by ``options.resolve`` for the command line
and for every [[sim]] table alike.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from grokphase.errors import ParameterError
from grokphase.experiments.files import entries, find_experiment, load_toml, table
from grokphase.experiments.runner import check_file as check_experiment
from grokphase.plotting.base import FIGURE_FORMATS

#: the most points a sweep (or a phase-diagram grid, x times y) may have: 10^5 solves is already hours
MAX_SWEEP_POINTS = 100_000

#: pairs of flags of which at most one may be given (the second would be silently ignored)
EXCLUSIVE = (("P", "Ps"), ("s2", "s2_sweep"), ("n", "n_sweep"))

#: (dest, flag, kind) of the input files a command reads: checked to exist and be readable files
INPUT_FILES = (("result", "RESULT", "result"), ("sim", "--sim", "simulation"), ("theory", "--theory", "theory"),
               ("finite_n", "--finite-n", "finite-n theory"),
               ("file", "FILE.toml", "experiment"))

#: (dest, flag) of START:STOP:NUM[:log] sweeps, and of NAME:START:STOP:NUM[:log] phase-diagram axes
SWEEPS = (("s2_sweep", "--s2-sweep"), ("n_sweep", "--n-sweep"))
AXES = (("x", "--x"), ("y", "--y"))


def _writable_dir(path: Path, flag: str, given: str) -> None:
    """The folder ``path`` exists and takes a new file, or can be created under its nearest existing
    ancestor, which then takes one (tried: permission bits say nothing for root or read-only mounts)."""
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ParameterError(f"{flag} {given}: {anc} is a file, not a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=anc, prefix=".grokphase-preflight-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise ParameterError(f"{flag} {given}: cannot write in {anc} ({err.strerror or err})") from None


def check_file(value: str | None, flag: str, suffixes, kind: str) -> None:
    """``value`` names a writable file with one of ``suffixes`` (``None``: not requested)."""
    if value is None:
        return
    if not value.strip():
        raise ParameterError(f"{flag}: empty path")
    path = Path(value).expanduser().absolute()
    if path.is_dir():
        raise ParameterError(f"{flag} {value} is a directory, not a file")
    if path.suffix.lower().lstrip(".") not in suffixes:
        allowed = ", ".join("." + s for s in sorted(suffixes))
        raise ParameterError(f"{flag} {value}: expected a {kind} file name ending in {allowed}")
    _writable_dir(path.parent, flag, value)


def check_dir(value: str | None, flag: str) -> None:
    """``value`` names a folder that exists or can be created, and takes files (``None``: not requested)."""
    if value is None:
        return
    if not value.strip():
        raise ParameterError(f"{flag}: empty path")
    path = Path(value).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ParameterError(f"{flag} {value} is a file, not a directory")
    _writable_dir(path, flag, value)


def check_input(value: str, flag: str, kind: str) -> None:
    """``value`` names an existing, readable file."""
    path = Path(value).expanduser()
    if not str(value).strip():
        raise ParameterError(f"{flag}: empty path")
    if path.is_dir():
        raise ParameterError(f"{kind} file {value} is a directory, not a file")
    if not path.exists():
        raise ParameterError(f"{kind} file {value} does not exist")
    if not os.access(path, os.R_OK):
        raise ParameterError(f"{kind} file {value} is not readable (permission denied)")


def sweep_size(spec: str) -> int | None:
    """The NUM of ``START:STOP:NUM[:log]`` (None when malformed: the command's own parser says why)."""
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        return None
    try:
        return int(parts[2])
    except ValueError:
        return None


def check_sizes(args) -> None:
    """Sweeps and phase-diagram grids of at most :data:`MAX_SWEEP_POINTS` points."""
    for dest, flag in SWEEPS:
        spec = getattr(args, dest, None)
        num = sweep_size(spec) if spec else None
        if num is not None and num > MAX_SWEEP_POINTS:
            raise ParameterError(f"{flag} {spec}: {num} points, over the maximum {MAX_SWEEP_POINTS} of one sweep")
    grid, shown = 1, []
    for dest, flag in AXES:
        spec = getattr(args, dest, None)
        if not isinstance(spec, str):
            continue
        num = sweep_size(spec.partition(":")[2])
        if num is not None:
            grid *= num
            shown.append(f"{flag} {spec}")
    if len(shown) == 2 and grid > MAX_SWEEP_POINTS:
        raise ParameterError(f"{' x '.join(shown)}: a grid of {grid} points, over the maximum {MAX_SWEEP_POINTS}")


def check_flags(args, given: set[str]) -> None:
    """No two flags of :data:`EXCLUSIVE` together; on a phase diagram no model flag for a parameter
    that an axis varies (the axis would silently override it)."""
    for a, b in EXCLUSIVE:
        if a in given and b in given:
            raise ParameterError(f"give either --{a.replace('_', '-')} or --{b.replace('_', '-')}, not both")
    axis_names = {}
    for dest, flag in AXES:
        spec = getattr(args, dest, None)
        if isinstance(spec, str) and ":" in spec:
            axis_names.setdefault(spec.partition(":")[0], []).append(flag)
    for name, flags in axis_names.items():
        if len(flags) > 1:
            raise ParameterError(f"--x and --y both vary {name}: choose two different parameters")
        if name in given:
            raise ParameterError(f"--{name} is overridden by the {flags[0]} axis over {name}: give one of the two")


def check_experiment_file(args) -> None:
    """``grokphase run FILE``: the whole file, before its first run: the model, every [[sim]] table's
    types and ranges, that each option a table sets itself applies (a [common] default may serve only
    some tables), that one network of each run fits its memory budget, and its outputs (``out_dir``,
    each table's ``plot``, the analysis tables' ``out`` and ``plot``)."""
    path = args.file
    spec = load_toml(path)
    model, sims, common = check_experiment(path, spec)
    if args.only is not None and model.select_only is not None:
        spec, sims = model.select_only(spec, sims, args.only, path)
    out_dir = spec.get("out_dir")
    if out_dir is not None:
        if not isinstance(out_dir, str):
            raise ParameterError(f"{path}: out_dir must be a string, got {out_dir!r}")
        check_dir(out_dir, f"{path}: out_dir")
    allowed = set(model.options) | {"name"}
    for i, (entry, (_, opts)) in enumerate(zip(sims, entries(path, sims, common, allowed))):
        where = f"{path}: [[sim]] #{i + 1}"
        if model.check is not None:
            try:
                model.check(opts, where, given=set(entry) - {"name"})
            except ParameterError as err:          # the configuration's own range checks name no table
                if str(err).startswith(path):
                    raise
                raise ParameterError(f"{where}: {err}") from None
        _check_outputs(opts, where, ("plot",))
    for key in model.tables:
        value = spec.get(key)
        for t in (value if isinstance(value, list) else [value] if value else []):
            _check_outputs(t if isinstance(t, dict) else table(spec, key, path), f"{path}: [{key}]", ("out", "plot"))


def _check_outputs(tbl: dict, where: str, keys: Iterable[str]) -> None:
    for key in keys:
        value = tbl.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ParameterError(f"{where}: {key} must be a file name, got {value!r}")
        if key == "out":
            check_file(value, f"{where}: out", {"nc"}, "netCDF")
        else:
            check_file(value, f"{where}: plot", FIGURE_FORMATS, "figure")


def given_dests(parser: argparse.ArgumentParser, args, argv: Sequence[str]) -> set[str]:
    """The destinations of the options written out on the command line (not left at their defaults),
    found in the options of the sub-command ``args`` selected."""
    leaf = parser
    while leaf._subparsers is not None:
        action = next(a for a in leaf._subparsers._group_actions if isinstance(a, argparse._SubParsersAction))
        leaf = action.choices[getattr(args, action.dest)]
    strings = leaf._option_string_actions
    out = set()
    for token in argv:
        if token == "--":
            break
        if not token.startswith("--"):
            continue
        opt = token.split("=", 1)[0]
        matches = [opt] if opt in strings else [s for s in strings if s.startswith(opt)]
        if len({strings[m].dest for m in matches}) == 1:
            out.add(strings[matches[0]].dest)
    return out


def preflight(args, given: set[str] | None = None) -> None:
    """Check a parsed command line before the command runs (``given``: the flags written out on it)."""
    if getattr(args, "group", None) == "plot":         # `grokphase plot RESULT --out FIGURE`
        check_file(args.out, "--out", FIGURE_FORMATS, "figure")
    else:
        check_file(getattr(args, "out", None), "--out", {"nc"}, "netCDF")
    check_file(getattr(args, "plot", None), "--plot", FIGURE_FORMATS, "figure")
    for dest, flag in (("checkpoint_dir", "--checkpoint-dir"), ("out_dir", "--out-dir"), ("cache_dir", "--cache-dir")):
        check_dir(getattr(args, dest, None), flag)
    defs = getattr(args, "defs", None)
    if defs is not None and not Path(defs).is_dir():
        raise ParameterError(f"--defs {defs}: not a folder")
    if getattr(args, "group", None) == "run":        # `run NAME`: the checkout's or the shipped sims/NAME.toml
        args.file = str(find_experiment(args.file))
    for dest, flag, kind in INPUT_FILES:
        values = getattr(args, dest, None)
        for value in (values if isinstance(values, list) else [values] if isinstance(values, str) else []):
            check_input(value, flag, kind)
    check_flags(args, given or set())
    check_sizes(args)
    if getattr(args, "group", None) == "run":
        check_experiment_file(args)
