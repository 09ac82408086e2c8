"""The cache of ``grokphase reproduce``: definitions, steps keyed by their configuration, and the
simulations of experiment files as cached steps (any registered model).

A step loaded from the cache keeps the attributes it was computed with (a simulation's ``seconds``
and ``network_steps_per_second`` are its own run's, over all the segments that produced it;
``reproduce_seconds`` is the wall time of the call that computed the step); in memory it gains
``reused = 1`` and ``reused_from`` (the cache file).  A cache file that cannot be read, or whose data
do not match their checksum, is reported and recomputed."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr
from scipy.ndimage import distance_transform_edt

from grokphase import __version__
from grokphase.axes import parse_axis, parse_range
from grokphase.errors import ParameterError, ResultFileError
from grokphase.experiments.devices import cached_run_devices
from grokphase.experiments.files import definitions_root, entries, load_toml
from grokphase.experiments.runner import check_file, mark_reused
from grokphase.io import _jsonable, annotate, load_dataset, save_dataset
from grokphase.theory.modular import ModularParams
from grokphase.theory.teacher_student import PHASE_LABELS, TeacherStudentParams

#: bump when a step's recipe changes in a way that changes its result (invalidates old caches):
#: RECIPE_VERSION for every step, RECIPES[kind] for one kind of step (and what depends on it)
RECIPE_VERSION = 1
RECIPES = {"theory_sample_complexity": 2, "sample_complexity": 2}
SCALES = ("tiny", "quick", "paper")
FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "phase-diagram-ts", "phase-diagram-modular",
           "sample-complexity", "single-index")
DEFINITIONS = "theory/reproduce.toml"

#: how many times each step kind was computed (not loaded) in this process; tests read it
COMPUTED: collections.Counter = collections.Counter()

# ------------------------------------------------------------------------------------------------
# definitions and the cache
# ------------------------------------------------------------------------------------------------


#: the folder holding ``theory/reproduce.toml`` and ``sims/``: the checkout, else the package's copy
find_definitions = definitions_root


_TS_BASE = tuple(f.name for f in dataclasses.fields(TeacherStudentParams))
_MODULAR_BASE = tuple(f.name for f in dataclasses.fields(ModularParams))

#: the keys each figure table of reproduce.toml may set (the model parameters are the dataclasses'
#: fields); anything else is a typo, reported instead of silently ignored
FIGURE_KEYS = {
    "fig1": {*(f"ts_{k}" for k in (*_TS_BASE, "x", "y", "sa2_times_N", "approximation")),
             *(f"modular_{k}" for k in (*_MODULAR_BASE, "x", "y", "sa2_times_N", "convention"))},
    "fig2": {"sims"},
    "fig3": {*_MODULAR_BASE, "sa2_times_N", "method", "convention", "density_s2", "sims", "sim_conventions",
             "compare_num_line", "compare_rf_draws"},
    "appD": {"sims"},
    "phase-diagram-ts": {*_TS_BASE, "beta", "sims"},
    "phase-diagram-modular": {"s2", "P", "N", "gamma", "sa2_times_P2", "convention", "method", "sims"},
    "sample-complexity": {*_TS_BASE, "sim_beta", "sims"},
    "single-index": {"sims", "curve_points"},
}


def figure_config(defs: dict, name: str, scale: str) -> dict:
    """The table ``[name]`` with the ``[name.<scale>]`` overrides applied (other scales dropped); an
    unknown key in either is an error."""
    if scale not in SCALES:
        raise ParameterError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    table = defs.get(name)
    if not isinstance(table, dict):
        raise ParameterError(f"{DEFINITIONS} has no [{name}] table")
    allowed = FIGURE_KEYS.get(name)
    for sub in (table, *(table.get(sc, {}) for sc in SCALES)):
        if not isinstance(sub, dict):
            raise ParameterError(f"{DEFINITIONS}: [{name}.<scale>] must be a table, got {sub!r}")
        unknown = sorted(k for k in sub if k not in SCALES and allowed is not None and k not in allowed)
        if unknown:
            raise ParameterError(f"{DEFINITIONS}: unknown key(s) {', '.join(unknown)} in [{name}]; "
                                 f"allowed: {', '.join(sorted(allowed))}")
    base = {k: v for k, v in table.items() if k not in SCALES}
    base.update(table.get(scale, {}))
    return base


def _canonical(obj: Any) -> str:

    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))


def step_key(kind: str, config: Any, deps: Sequence[str] = ()) -> str:
    """sha256 of the step kind, its configuration, its inputs' keys, the recipe and package versions."""
    payload = {"kind": kind, "config": config, "deps": list(deps), "recipe": RECIPE_VERSION, "version": __version__}
    if RECIPES.get(kind, 1) != 1:
        payload["kind_recipe"] = RECIPES[kind]
    text = _canonical(payload)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass
class Step:
    """A computed or loaded step result."""

    ds: xr.Dataset
    key: str
    path: Path
    computed: bool


@dataclasses.dataclass
class Context:
    """Where a reproduction reads its definitions and writes its cache and figures."""

    scale: str
    defs_root: Path
    cache_dir: Path
    out_dir: Path
    progress: bool = True
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)
    defs: dict = dataclasses.field(default_factory=dict)
    steps: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ParameterError(f"unknown scale {self.scale!r}; choose from {', '.join(SCALES)}")
        if not self.defs:
            self.defs = load_toml(self.defs_root / DEFINITIONS)

    def config(self, name: str) -> dict:
        return figure_config(self.defs, name, self.scale)

    def step(self, kind: str, config: Any, compute: Callable[[], xr.Dataset], deps: Sequence[Step] = ()) -> Step:
        """Load the step from the cache or compute and save it (atomically)."""

        key = step_key(kind, config, [d.key for d in deps])
        path = self.cache_dir / f"{kind}-{key[:16]}.nc"
        if path.exists():
            try:
                ds = load_dataset(path)
                if ds.attrs.get("reproduce_key") == key:
                    self.log(f"[{kind}] cached {path}")
                    st = Step(mark_reused(ds, path), key, path, False)
                    self.steps.append(st)
                    return st
                self.log(f"[{kind}] {path} belongs to another configuration; recomputing")
            except ResultFileError as exc:
                self.log(f"[{kind}] unreadable cache file ({exc}); recomputing")
        t0 = time.perf_counter()
        ds = compute()
        if "grokphase_kind" not in ds.attrs:
            raise ResultFileError(f"step {kind} produced a dataset without provenance")
        ds = ds.copy()
        ds.attrs.update({"reproduce_key": key, "reproduce_step": kind, "reproduce_config": _canonical(config),
                         "reproduce_deps": _canonical([d.key for d in deps]), "reproduce_seconds": time.perf_counter() - t0})
        save_dataset(ds, path)
        COMPUTED[kind] += 1
        self.log(f"[{kind}] computed in {time.perf_counter() - t0:.1f} s -> {path}")
        st = Step(load_dataset(path), key, path, True)
        self.steps.append(st)
        return st

    def sims_file(self, cfg: dict, what: str = "sims") -> tuple[Path, dict]:
        rel = cfg.get(what)
        if not rel:
            raise ParameterError(f"{DEFINITIONS}: no '{what}' experiment file for scale {self.scale}")
        path = self.defs_root / rel
        return path, load_toml(path)

    def runs(self, cfg: dict, model: str) -> list[Step]:
        """The runs of the figure's ``sims`` file, an experiment file of ``model`` (none if it names none)."""
        if not cfg.get("sims"):
            return []
        path, spec = self.sims_file(cfg)
        return simulations(self, path, spec, model)

    def figure_paths(self, name: str) -> Path:
        return self.out_dir / f"{name.replace('-', '_')}_{self.scale}.png"


def _annotated(ds: xr.Dataset, kind: str, parameters: dict, extra: dict | None = None) -> xr.Dataset:
    return annotate(ds, kind=kind, parameters=parameters, extra=extra)

# ------------------------------------------------------------------------------------------------
# simulations as cached steps
# ------------------------------------------------------------------------------------------------


def simulations(ctx: Context, path: Path, spec: dict, model: str) -> list[Step]:
    """Every [[sim]] of an experiment file of ``model`` as a cached step (key: the model's
    :attr:`~grokphase.experiments.registry.ModelSpec.cache_config` of the run, so the same run shared by
    two figures is computed once)."""
    spec_model, sims, common = check_file(str(path), spec)
    if spec_model.name != model:
        raise ParameterError(f"{path}: expected a {model} experiment file (model = \"{model}\"), "
                             f"got {spec_model.name}")
    kind = spec_model.cache_kind
    out = []
    for i, (name, opts) in enumerate(entries(str(path), sims, common, set(spec_model.options) | {"name"})):
        config = spec_model.cache_config(opts)
        key = step_key(kind, config)

        def compute(opts=opts, key=key, name=name, where=f"{path}: [[sim]] #{i + 1}"):
            ctx.log(f"[{kind}] {path.name}:{name}")
            return spec_model.run(opts, devices=cached_run_devices(spec), progress=ctx.progress,
                                  checkpoint_dir=str(ctx.cache_dir / "checkpoints" / key[:16]), where=where)

        out.append(ctx.step(kind, config, compute))
    return out

# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _axis(spec: str, allowed, what: str):

    return parse_axis(spec, allowed, what)


def _range(spec, what: str, positive: bool = True) -> np.ndarray:

    if isinstance(spec, (list, tuple)):
        vals = np.asarray(spec, dtype=float)
        if vals.size == 0 or not np.all(np.isfinite(vals)) or (positive and np.any(vals <= 0)):
            raise ParameterError(f"{what}: expected finite numbers > 0, got {list(spec)}")
        return vals
    return parse_range(str(spec), what, positive=positive)[0]


def _interior_point(labels: np.ndarray, code: int) -> tuple[int, int] | None:
    """Grid index deepest inside the region ``labels == code`` (farthest from its edge), or None."""

    mask = labels == code
    if not mask.any():
        return None
    dist = distance_transform_edt(np.pad(mask, 1, constant_values=False))[1:-1, 1:-1]
    i, j = np.unravel_index(int(np.argmax(dist)), mask.shape)
    return int(i), int(j)


def _num(cfg: dict, key: str, default):
    """A scalar parameter from a figure table; a sweep string such as "100:1e7:61:log" is an axis (the
    default is the base value then); anything else that is not a number is an error."""
    v = cfg.get(key, default)
    if isinstance(v, str) and ":" in v:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ParameterError(f"{DEFINITIONS}: {key} must be a finite number (or an axis A:B:K), got {v!r}")
    return float(v)


def _ts_base(cfg: dict):

    P = TeacherStudentParams       # defaults: the dataclass's (App. C)
    return TeacherStudentParams(N=_num(cfg, "N", P.N), n=_num(cfg, "n", P.n), d=_num(cfg, "d", P.d),
                                s2=_num(cfg, "s2", P.s2), sa2=cfg.get("sa2"), sw2=_num(cfg, "sw2", P.sw2),
                                eps=_num(cfg, "eps", P.eps))


def _modular_base(cfg: dict):

    M = ModularParams              # defaults: the dataclass's (Fig. 3)
    return ModularParams(N=_num(cfg, "N", M.N), P=_num(cfg, "P", M.P), s2=_num(cfg, "s2", M.s2),
                         sa2=cfg.get("sa2"), gamma=_num(cfg, "gamma", M.gamma))


def _sub(cfg: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in cfg.items() if k.startswith(prefix)}


def _labels() -> dict[int, str]:

    return PHASE_LABELS
