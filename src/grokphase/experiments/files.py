"""Experiment files (TOML): where the definitions are, loading, and the ``[[sim]]`` tables with
their ``[common]`` defaults.

The experiment definitions are ``theory/reproduce.toml`` (the figures of ``grokphase reproduce``)
and the experiment files ``sims/**/*.toml``.  They are looked up, in this order, in

1. the grokphase checkout the current directory is in (it, or a parent, holds
   ``theory/reproduce.toml`` and ``sims/``): a user who edits ``sims/*.toml`` there runs the edits;
2. the definitions installed with the package (``grokphase/definitions/``, package data: in a
   checkout two symlinks to its top-level ``theory/`` and ``sims/``, in a wheel copies of them).

``grokphase run NAME`` (no ``.toml``, not a file) names the experiment file ``sims/NAME.toml``, e.g.
``fig2_quick`` or ``tiny/fig2``.
"""

from __future__ import annotations

import importlib.resources
import os
import tomllib
from pathlib import Path
from typing import Any, Iterator

from grokphase.errors import ParameterError

#: the figure definitions of ``grokphase reproduce`` and the folder of experiment files, relative to
#: a definitions root (a checkout, or the package's ``definitions/`` folder)
DEFINITIONS = "theory/reproduce.toml"
EXPERIMENTS = "sims"


def _is_root(folder: Path) -> bool:
    return (folder / DEFINITIONS).is_file() and (folder / EXPERIMENTS).is_dir()


def checkout_root(start: str | os.PathLike | None = None) -> Path | None:
    """The grokphase checkout holding ``start`` (default: the current directory): it or its nearest
    parent with ``theory/reproduce.toml`` and ``sims/``; None outside a checkout."""
    here = Path.cwd() if start is None else Path(start)
    here = here.resolve()
    return next((cand for cand in (here, *here.parents) if _is_root(cand)), None)


def shipped_root() -> Path | None:
    """The definitions installed with the package (``grokphase/definitions``), or None if this
    installation lacks them (or they are not plain files, e.g. inside a zip)."""
    folder = importlib.resources.files("grokphase") / "definitions"
    if not isinstance(folder, Path) or not _is_root(folder):
        return None
    return folder


def definition_roots() -> list[Path]:
    """Where definitions are looked up, in order (module docstring): the checkout, then the package."""
    roots: list[Path] = []
    for root in (checkout_root(), shipped_root()):
        if root is not None and all((root / DEFINITIONS).resolve() != (r / DEFINITIONS).resolve() for r in roots):
            roots.append(root)
    return roots


def definitions_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``theory/reproduce.toml`` and ``sims/`` for ``grokphase reproduce``:
    ``root`` if given (``--defs DIR``), else the first of :func:`definition_roots`."""
    if root is not None:
        root = Path(root)
        if not (root / DEFINITIONS).is_file():
            raise ParameterError(f"--defs {root}: no {DEFINITIONS} there")
        return root
    roots = definition_roots()
    if not roots:
        raise ParameterError(f"cannot find {DEFINITIONS}: not in a grokphase checkout and this installation "
                             f"ships no definitions (reinstall grokphase, or pass --defs DIR)")
    return roots[0]


def experiment_names(roots: list[Path] | None = None) -> list[str]:
    """The names of the experiment files under ``sims/`` of ``roots`` (default: :func:`definition_roots`),
    e.g. ``fig2_quick``, ``tiny/fig2``; sorted, each once."""
    names = set()
    for root in definition_roots() if roots is None else roots:
        sims = root / EXPERIMENTS
        names.update(p.relative_to(sims).with_suffix("").as_posix() for p in sims.rglob("*.toml"))
    return sorted(names)


def find_experiment(name: str | os.PathLike) -> Path:
    """The experiment file ``grokphase run`` means by ``name``: a file of that path if there is one;
    else, for a name without ``.toml``, ``sims/NAME.toml`` of the first definitions root that has it
    (module docstring); else ``name`` itself (:func:`load_toml` then says why it cannot be read).
    An unknown name is an error listing the names there are."""
    path = Path(name)
    if path.is_file() or path.suffix == ".toml" or not str(name):
        return path
    rel = path.as_posix()
    roots = definition_roots()
    if not path.is_absolute() and ".." not in path.parts:
        for root in roots:
            cand = root / EXPERIMENTS / f"{rel}.toml"
            if cand.is_file():
                return cand
    if path.exists():
        return path
    names = experiment_names(roots)
    raise ParameterError(f"unknown experiment {name!r} (and no such file); give a .toml file or one of: "
                         f"{', '.join(names) if names else '(none: no definitions found)'}")


def load_toml(path: str | Path) -> dict:
    """The parsed TOML file, or a ParameterError that says why it cannot be read; ``path`` may also be
    the name of an experiment file (:func:`find_experiment`)."""
    path = find_experiment(path)
    if path.is_dir():
        raise ParameterError(f"experiment file {path} is a directory, not a TOML file")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ParameterError(f"experiment file {path} does not exist") from None
    except PermissionError:
        raise ParameterError(f"experiment file {path} is not readable (permission denied)") from None
    except UnicodeDecodeError as err:
        raise ParameterError(f"experiment file {path} is not UTF-8 text: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ParameterError(f"experiment file {path} is not valid TOML: {err}") from None


def table(spec: dict, key: str, path: str | Path) -> dict:
    """``spec[key]`` as a table (an empty one if absent), or an error naming it."""
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise ParameterError(f"{path}: [{key}] must be a table, got {value!r}")
    return value


def sim_tables(spec: dict, path: str | Path) -> list[dict]:
    """The ``[[sim]]`` tables of an experiment file (at least one)."""
    sims = spec.get("sim")
    if not isinstance(sims, list) or not sims or not all(isinstance(s, dict) for s in sims):
        raise ParameterError(f"{path}: needs at least one [[sim]] table")
    return sims


def entries(path: str | Path, sims: list, common: dict, allowed) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, options) of every [[sim]] table, with [common] defaults; unknown options are errors."""
    for i, entry in enumerate(sims):
        opts = {**common, **entry}
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise ParameterError(f"{path}: unknown option(s) {', '.join(unknown)} in [[sim]] #{i + 1}")
        yield str(opts.pop("name", f"sim{i}")), opts
