"""The model registry: a model registers itself once, and the experiment runner, ``reproduce``, the
TOML schema and the CLI find it here.

A :class:`ModelSpec` names what the layers below provide for one model: its theory parameter
dataclass and entry points, its simulation configuration dataclass, how one ``[[sim]]`` table is
turned into a run (options derived from the dataclasses, :mod:`grokphase.experiments.options`), how
a saved result is summarised, and the analysis tables an experiment file may add after its runs
(``[compare]``, ``[hysteresis]``, ...).  The two models of the paper register themselves in
:mod:`grokphase.experiments.models`; ``docs/adding-a-model.md`` shows how to add a third, and
``tests/test_registry.py`` adds one (a linear-activation teacher-student with a closed-form GP
theory) through this module alone.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import warnings
from typing import Any, Callable, Mapping

import xarray as xr

from grokphase.errors import ParameterError
from grokphase.experiments.options import Option

#: an experiment-file table handler: (file path, the table, {sim name: Dataset}, out_dir, summary);
#: it saves its results and adds its entries to ``summary`` (figures it writes go to summary["plots"])
TableHandler = Callable[[str, Any, Mapping[str, xr.Dataset], Any, dict], None]


def _options_matches(old: xr.Dataset, config: dict) -> bool:
    return old.attrs.get("experiment_options") == json.dumps(config, sort_keys=True, default=str)


def _options_mark(ds: xr.Dataset, config: dict) -> xr.Dataset:
    ds.attrs["experiment_options"] = json.dumps(config, sort_keys=True, default=str)
    return ds


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the experiments layer needs to know about one model.

    Attributes:
      name: the model's name in experiment files (``model = "..."``) and on the command line
        (``grokphase sim NAME``).
      description: one line for ``--help`` and ``grokphase models``.
      result_kind: the ``grokphase_kind`` attribute of its simulation results (``io.load_dataset``).
      options: the ``[[sim]]`` schema (:func:`grokphase.experiments.options.options_of` of the
        configuration dataclasses, plus run options such as ``name``).
      run: ``run(opts, *, devices, progress, checkpoint_dir) -> Dataset`` for one resolved table.
      cache_config: ``cache_config(raw_opts) -> dict``: what identifies a run (the cache key of
        ``reproduce`` and the reuse check of ``grokphase run``); ``raw_opts`` are the table's own keys.
      matches, mark: ``matches(old_ds, config)``: whether a saved result is the run ``config``
        describes (``grokphase run`` reuses it); ``mark(ds, config)`` records ``config`` on a new
        result.  Default: the config as JSON in the ``experiment_options`` attribute.
      summary_points: ``summary_points(ds) -> list[dict]``, one per simulated point.
      tables: handlers of the experiment file's analysis tables, by table name.
      sim_config: the simulation configuration dataclass.
      theory_params: the theory parameter dataclass (``None`` for a model without theory).
      theory: named theory entry points (``{"solve": ..., ...}``) for users and figure recipes.
      plot: ``plot(ds, path)`` for one simulation result (``plot = "FILE.png"`` in a table), or None.
      select_only: ``select_only(spec, sims, prefix, path) -> (spec, sims)`` for ``grokphase run
        --only PREFIX`` (None: the model's files run whole).
      points: ``points(ds) -> list[dict]`` of a saved result for ``grokphase run``'s summary (None:
        the run's summary lists files only).
      cache_kind: the step kind of its runs in the ``reproduce`` cache (default ``sim_<name>``).
      run_summary: ``run_summary(names, results) -> dict``: entries a run's summary adds (e.g.
        replica-exchange diagnostics), or None.
      check: ``check(opts, where, given)``: everything about one table's run that is known before it
        starts (types and ranges, that each explicitly ``given`` option applies, that one network fits
        the memory budget), raising a ParameterError; ``grokphase run`` checks every table with it
        before the first run starts.  None: the options' types only.
    """

    name: str
    description: str
    result_kind: str
    options: Mapping[str, Option]
    run: Callable[..., xr.Dataset]
    cache_config: Callable[[dict], dict]
    summary_points: Callable[[xr.Dataset], list]
    tables: Mapping[str, TableHandler] = dataclasses.field(default_factory=dict)
    sim_config: type | None = None
    theory_params: type | None = None
    theory: Mapping[str, Callable] = dataclasses.field(default_factory=dict)
    plot: Callable | None = None
    matches: Callable[[xr.Dataset, dict], bool] = _options_matches
    mark: Callable[[xr.Dataset, dict], xr.Dataset] = _options_mark
    select_only: Callable | None = None
    points: Callable[[xr.Dataset], list] | None = None
    run_summary: Callable[[list, list], dict] | None = None
    cache_kind: str = ""
    check: Callable[..., None] | None = None

    def __post_init__(self):
        if not self.cache_kind:
            object.__setattr__(self, "cache_kind", "sim_" + self.name.replace("-", "_"))
        missing = [k for k in ("run", "cache_config", "summary_points") if not callable(getattr(self, k))]
        if missing:
            raise TypeError(f"model {self.name!r}: {', '.join(missing)} must be callable")


_MODELS: dict[str, ModelSpec] = {}
_PLUGINS_LOADED = False

#: entry-point group through which an installed package registers its models: in its pyproject.toml,
#: ``[project.entry-points."grokphase.models"] mymodel = "mypackage.grokphase_model"`` (a module whose
#: import calls :func:`register`)
ENTRY_POINTS = "grokphase.models"


def load_plugins() -> None:
    """Import the modules that installed packages list under the ``grokphase.models`` entry points
    (once per process); each registers its model on import."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
        try:
            ep.load()
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not break the other models
            warnings.warn(f"grokphase model plug-in {ep.name!r} ({ep.value}) failed to load: {err}", stacklevel=2)


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add ``spec`` to the registry (``replace`` to re-register a name, e.g. in tests)."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"register() takes a ModelSpec, got {type(spec).__name__}")
    if spec.name in _MODELS and not replace:
        raise ParameterError(f"model {spec.name!r} is already registered")
    _MODELS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a model (tests that register a temporary one clean up with this)."""
    _MODELS.pop(name, None)


def get_model(name: str, where: str = "model") -> ModelSpec:
    """The registered model ``name``, or a ParameterError listing the registered ones."""
    load_plugins()
    try:
        return _MODELS[name]
    except KeyError:
        raise ParameterError(f"{where}: unknown model {name!r}; registered: {', '.join(sorted(_MODELS))}") from None


def models() -> dict[str, ModelSpec]:
    """The registered models, by name (the paper's two first)."""
    load_plugins()
    return dict(_MODELS)
