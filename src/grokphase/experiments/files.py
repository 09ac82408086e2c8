"""Experiment files (TOML): loading and the ``[[sim]]`` tables with their ``[common]`` defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Iterator

from grokphase.errors import ParameterError


def load_toml(path: str | Path) -> dict:
    """The parsed TOML file, or a ParameterError that says why it cannot be read."""
    path = Path(path)
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
