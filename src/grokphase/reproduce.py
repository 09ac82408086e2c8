r"""``grokphase reproduce``: every result of the paper from the experiment definitions, cached.

Each figure is a small graph of *steps* (a theory solve, one simulation, a comparison, the figure's
data).  A step's result is an annotated Dataset saved under ``cache_dir`` with a name that is a
hash of (step kind, its configuration, the keys of the steps it depends on, the recipe version):
a second call loads every step instead of recomputing it, and a changed parameter recomputes only
the steps whose configuration (or whose inputs) changed.  Figures are always drawn from the saved
figure-data file, never from in-memory results.

The definitions live in the repository's top-level folders: ``theory/reproduce.toml`` (one table
per figure, with ``[NAME.tiny]``, ``[NAME.quick]``, ``[NAME.paper]`` overrides) and the simulation
experiment files in ``sims/`` that it names.  Scales: ``quick`` (this 2-core CPU, minutes per
figure), ``paper`` (the paper's sizes, for a GPU) and ``tiny`` (seconds; tests and smoke checks).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr

from grokphase import __version__
from grokphase.errors import ParameterError, ResultFileError

#: bump when a step's recipe changes in a way that changes its result (invalidates old caches):
#: RECIPE_VERSION for every step, RECIPES[kind] for one kind of step (and what depends on it)
RECIPE_VERSION = 1
RECIPES = {"theory_sample_complexity": 2, "sample_complexity": 2}
SCALES = ("tiny", "quick", "paper")
FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "phase-diagram-ts", "phase-diagram-modular",
           "sample-complexity")
DEFINITIONS = "theory/reproduce.toml"

#: how many times each step kind was computed (not loaded) in this process; tests read it
COMPUTED: collections.Counter = collections.Counter()


# ------------------------------------------------------------------------------------------------
# definitions and the cache
# ------------------------------------------------------------------------------------------------


def find_definitions(root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``theory/reproduce.toml`` and ``sims/``: ``root`` if given, else the
    current directory or one of its parents, else the source checkout this package was installed from."""
    if root is not None:
        root = Path(root)
        if not (root / DEFINITIONS).is_file():
            raise ParameterError(f"--defs {root}: no {DEFINITIONS} there")
        return root
    here = Path.cwd().resolve()
    for cand in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if (cand / DEFINITIONS).is_file() and (cand / "sims").is_dir():
            return cand
    raise ParameterError(f"cannot find {DEFINITIONS}: run from a grokphase checkout or pass --defs DIR")


def _load_toml(path: Path) -> dict:
    from grokphase.cli_sims import _load_toml as load

    return load(str(path))


def figure_config(defs: dict, name: str, scale: str) -> dict:
    """The table ``[name]`` with the ``[name.<scale>]`` overrides applied (other scales dropped)."""
    if scale not in SCALES:
        raise ParameterError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    table = defs.get(name)
    if not isinstance(table, dict):
        raise ParameterError(f"{DEFINITIONS} has no [{name}] table")
    base = {k: v for k, v in table.items() if k not in SCALES}
    base.update(table.get(scale, {}))
    return base


def _canonical(obj: Any) -> str:
    from grokphase.io import _jsonable

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
            self.defs = _load_toml(self.defs_root / DEFINITIONS)

    def config(self, name: str) -> dict:
        return figure_config(self.defs, name, self.scale)

    def step(self, kind: str, config: Any, compute: Callable[[], xr.Dataset], deps: Sequence[Step] = ()) -> Step:
        """Load the step from the cache or compute and save it (atomically)."""
        from grokphase.io import load_dataset, save_dataset

        key = step_key(kind, config, [d.key for d in deps])
        path = self.cache_dir / f"{kind}-{key[:16]}.nc"
        if path.exists():
            try:
                ds = load_dataset(path)
                if ds.attrs.get("reproduce_key") == key:
                    self.log(f"[{kind}] cached {path}")
                    st = Step(ds, key, path, False)
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
        return path, _load_toml(path)

    def ts_runs(self, cfg: dict) -> list[Step]:
        """The teacher-student runs of the figure's ``sims`` file (none if it names none)."""
        if not cfg.get("sims"):
            return []
        path, spec = self.sims_file(cfg)
        return ts_simulations(self, path, spec)

    def figure_paths(self, name: str) -> Path:
        return self.out_dir / f"{name.replace('-', '_')}_{self.scale}.png"


def _annotated(ds: xr.Dataset, kind: str, parameters: dict, extra: dict | None = None) -> xr.Dataset:
    from grokphase.io import annotate

    return annotate(ds, kind=kind, parameters=parameters, extra=extra)


# ------------------------------------------------------------------------------------------------
# simulations as cached steps
# ------------------------------------------------------------------------------------------------


def _devices(spec: dict):
    import jax

    from grokphase.cli_sims import configure_devices

    k = spec.get("host_devices")
    if jax.default_backend() != "cpu" or k is None:
        return configure_devices(None)
    return jax.devices()[: max(1, min(int(k), len(jax.devices())))]


def ts_simulations(ctx: Context, path: Path, spec: dict) -> list[Step]:
    """Every [[sim]] of a teacher-student experiment file as a cached step (key: the simulation's
    full parameters, so the same run shared by two figures is computed once)."""
    from grokphase.cli_sims import _SIM_KEYS, _entries, _run_sim, _sim_from_options

    if spec.get("model", "teacher-student") != "teacher-student":
        raise ParameterError(f"{path}: expected a teacher-student experiment file")
    out = []
    for name, opts in _entries(str(path), spec.get("sim", []), spec.get("common", {}), _SIM_KEYS):
        sim = _sim_from_options(opts)
        config = sim.parameters()
        key = step_key("sim_ts", config)

        def compute(sim=sim, opts=opts, key=key, name=name):
            ctx.log(f"[sim_ts] {path.name}:{name}: N={sim.N} d={sim.d} n={sim.n}, "
                    f"{sim.datasets * sim.inits} networks x {len(sim.s2)} s2, {sim.steps} steps")
            run_opts = {**opts, "checkpoint_dir": str(ctx.cache_dir / "checkpoints" / key[:16])}
            return _run_sim(sim, devices=_devices(spec), opts=run_opts, progress=ctx.progress)

        out.append(ctx.step("sim_ts", config, compute))
    if not out:
        raise ParameterError(f"{path}: needs at least one [[sim]] table")
    return out


def modular_simulations(ctx: Context, path: Path, spec: dict) -> list[Step]:
    """Every [[sim]] of a modular experiment file as a cached step."""
    from grokphase.cli_sims import _MODULAR_KEYS, _entries, run_modular_options

    if spec.get("model") != "modular":
        raise ParameterError(f"{path}: expected a modular experiment file (model = \"modular\")")
    out = []
    for name, opts in _entries(str(path), spec.get("sim", []), spec.get("common", {}), _MODULAR_KEYS):
        opts.pop("plot", None)
        config = {k: opts[k] for k in sorted(opts)}
        key = step_key("sim_modular", config)

        def compute(opts=opts, key=key, name=name):
            ctx.log(f"[sim_modular] {path.name}:{name}")
            run_opts = {**opts, "checkpoint_dir": str(ctx.cache_dir / "checkpoints" / key[:16])}
            ds, _ = run_modular_options(run_opts, devices=_devices(spec), progress=ctx.progress)
            return ds

        out.append(ctx.step("sim_modular", config, compute))
    if not out:
        raise ParameterError(f"{path}: needs at least one [[sim]] table")
    return out


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _axis(spec: str, allowed, what: str):
    from grokphase.axes import parse_axis

    return parse_axis(spec, allowed, what)


def _range(spec, what: str, positive: bool = True) -> np.ndarray:
    from grokphase.axes import parse_range

    if isinstance(spec, (list, tuple)):
        vals = np.asarray(spec, dtype=float)
        if vals.size == 0 or not np.all(np.isfinite(vals)) or (positive and np.any(vals <= 0)):
            raise ParameterError(f"{what}: expected finite numbers > 0, got {list(spec)}")
        return vals
    return parse_range(str(spec), what, positive=positive)[0]


def _interior_point(labels: np.ndarray, code: int) -> tuple[int, int] | None:
    """Grid index deepest inside the region ``labels == code`` (farthest from its edge), or None."""
    from scipy.ndimage import distance_transform_edt

    mask = labels == code
    if not mask.any():
        return None
    dist = distance_transform_edt(np.pad(mask, 1, constant_values=False))[1:-1, 1:-1]
    i, j = np.unravel_index(int(np.argmax(dist)), mask.shape)
    return int(i), int(j)


def _num(cfg: dict, key: str, default):
    """A scalar parameter from a figure table (sweep strings such as "100:1e7:61:log" are axes, not values)."""
    v = cfg.get(key, default)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def _ts_base(cfg: dict):
    from grokphase.theory.teacher_student import TeacherStudentParams

    return TeacherStudentParams(N=_num(cfg, "N", 700.0), n=_num(cfg, "n", 3000.0), d=_num(cfg, "d", 150.0),
                                s2=_num(cfg, "s2", 0.14), sa2=cfg.get("sa2"), sw2=_num(cfg, "sw2", 0.5),
                                eps=_num(cfg, "eps", -0.3))


def _modular_base(cfg: dict):
    from grokphase.theory.modular import ModularParams

    return ModularParams(N=_num(cfg, "N", 1000.0), P=_num(cfg, "P", 401.0), s2=_num(cfg, "s2", 0.2),
                         sa2=cfg.get("sa2"), gamma=_num(cfg, "gamma", 1e-4))


def _sub(cfg: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in cfg.items() if k.startswith(prefix)}


def _labels() -> dict[int, str]:
    from grokphase.theory.teacher_student import PHASE_LABELS

    return PHASE_LABELS


# ------------------------------------------------------------------------------------------------
# fig1: the schematic phase diagram, computed
# ------------------------------------------------------------------------------------------------


def fig1_data(ctx: Context) -> Step:
    """Phase regions of both models in the (sigma^2, N) plane (teacher-student: scaling limit at the
    App. C configuration with sa2 = 8/N; modular: P -> infinity phases at P = 401, sa2 = 0.002/N),
    with Shat at the deepest interior point of each phase region."""
    from grokphase.theory import modular as md
    from grokphase.theory import teacher_student as ts
    from grokphase.theory.results import (build_modular_phase_diagram, build_teacher_student_phase_diagram,
                                          limit_profile)

    cfg = ctx.config("fig1")
    tcfg, mcfg = _sub(cfg, "ts_"), _sub(cfg, "modular_")
    ts_x = _axis(tcfg.get("x", "s2:0.05:0.4:64"), ts.PARAM_NAMES + ts.DERIVED_AXES, "fig1 ts_x")
    ts_y = _axis(tcfg.get("y", "N:100:3000:64"), ts.PARAM_NAMES + ts.DERIVED_AXES, "fig1 ts_y")
    m_x = _axis(mcfg.get("x", "s2:0.05:0.35:64"), md.PARAM_NAMES, "fig1 modular_x")
    m_y = _axis(mcfg.get("y", "N:300:3000:64"), md.PARAM_NAMES, "fig1 modular_y")
    ts_base, m_base = _ts_base(tcfg), _modular_base(mcfg)
    ts_sa2N = None if tcfg.get("sa2") is not None else float(tcfg.get("sa2_times_N", 8.0))
    m_sa2N = None if mcfg.get("sa2") is not None else float(mcfg.get("sa2_times_N", 0.002))
    conv = str(mcfg.get("convention", "paper"))
    approx = str(tcfg.get("approximation", "concentrated"))
    ts.check_approximation(approx)

    ts_step = ctx.step("theory_ts_phase_diagram", {"base": ts_base.as_dict(),
                                                    "x": tcfg.get("x"), "y": tcfg.get("y"), "sa2_times_N": ts_sa2N,
                                                    "limit": True, "approximation": approx},
                       lambda: build_teacher_student_phase_diagram(ts_base, ts_x, ts_y, limit=True, sa2_times_N=ts_sa2N,
                                                                   approximation=approx))
    m_step = ctx.step("theory_modular_phase_diagram", {"base": dataclasses.asdict(m_base), "x": mcfg.get("x"),
                                                       "y": mcfg.get("y"), "sa2_times_N": m_sa2N, "convention": conv},
                      lambda: build_modular_phase_diagram(m_base, m_x, m_y, convention=conv, sa2_times_N=m_sa2N))

    def compute():
        tsd, mdd = ts_step.ds, m_step.ds
        xs, ys = tsd[ts_x.name].values, tsd[ts_y.name].values
        q = np.linspace(-1.4, 1.4, 561)
        ts_pts, ts_curves, ts_codes = [], [], []
        phase = tsd["phase"].values.astype(int)
        for code in sorted(_labels()):
            ij = _interior_point(phase, code)
            if ij is None:
                continue
            i, j = ij
            b, c = float(tsd["b"].values[i, j]), float(tsd["c"].values[i, j])
            u, sw2 = float(tsd["u"].values[i, j]), float(ts_base.sw2)
            ts_curves.append(np.asarray(limit_profile(q, b, c, u, sw2, approx)))
            ts_pts.append((float(xs[j]), float(ys[i])))
            ts_codes.append(code)
        xm, ym = mdd[m_x.name].values, mdd[m_y.name].values
        lphase = mdd["limit_phase"].values.astype(int)
        m_pts, m_codes, m_curves = [], [], []
        phi_max = 1.4 * math.sqrt(3.0 / float(m_base.gamma))
        phi = np.linspace(0.0, phi_max, 561)
        for code in sorted(_labels()):
            ij = _interior_point(lphase, code)
            if ij is None:
                continue
            i, j = ij
            a = float(mdd["limit_target_component"].values[i, j]) - 1.0
            u = float(mdd["u_grid"].values[i, j])
            m_curves.append(np.asarray(md.reduced_action(phi, a, u, float(m_base.gamma))))
            m_pts.append((float(xm[j]), float(ym[i])))
            m_codes.append(code)
        data = {
            "ts_phase": ((f"ts_{ts_y.name}", f"ts_{ts_x.name}"), phase),
            "ts_cubic_learned": ((f"ts_{ts_y.name}", f"ts_{ts_x.name}"), tsd["cubic_learned"].values),
            "ts_boundary": ((f"ts_{ts_y.name}",), tsd["boundary_x"].values),
            "ts_inset_action": (("ts_inset", "q"), np.asarray(ts_curves)),
            "ts_inset_x": (("ts_inset",), [p[0] for p in ts_pts]),
            "ts_inset_y": (("ts_inset",), [p[1] for p in ts_pts]),
            "ts_inset_phase": (("ts_inset",), np.asarray(ts_codes, np.int32)),
            "modular_phase": ((f"modular_{m_y.name}", f"modular_{m_x.name}"), lphase),
            "modular_target_component": ((f"modular_{m_y.name}", f"modular_{m_x.name}"),
                                         mdd["limit_target_component"].values),
            "modular_inset_action": (("modular_inset", "phi"), np.asarray(m_curves)),
            "modular_inset_x": (("modular_inset",), [p[0] for p in m_pts]),
            "modular_inset_y": (("modular_inset",), [p[1] for p in m_pts]),
            "modular_inset_phase": (("modular_inset",), np.asarray(m_codes, np.int32)),
        }
        coords = {f"ts_{ts_x.name}": xs, f"ts_{ts_y.name}": ys, "q": q,
                  f"modular_{m_x.name}": xm, f"modular_{m_y.name}": ym, "phi": phi}
        ds = xr.Dataset(data, coords=coords)
        return _annotated(ds, "reproduce.fig1", {"scale": ctx.scale, **cfg},
                          extra={"ts_x": ts_x.name, "ts_y": ts_y.name, "modular_x": m_x.name, "modular_y": m_y.name,
                                 "ts_x_log": int(ts_x.log), "ts_y_log": int(ts_y.log), "modular_x_log": int(m_x.log),
                                 "modular_y_log": int(m_y.log), "modular_convention": conv, "ts_approximation": approx,
                                 "phase_meanings": "GFL GMFL-I GMFL-II"})

    return ctx.step("fig1", {"scale": ctx.scale, **cfg}, compute, deps=[ts_step, m_step])


def fig1_summary(ds: xr.Dataset) -> dict:
    labels = _labels()
    out = {}
    for model in ("ts", "modular"):
        ph = ds[f"{model}_phase"].values
        out[model] = {
            "phase_counts": {labels[c]: int((ph == c).sum()) for c in labels},
            "insets": [{ds.attrs[f"{model}_x"]: float(x), ds.attrs[f"{model}_y"]: float(y), "phase": labels[int(p)],
                        "action_min": float(np.min(s))}
                       for x, y, p, s in zip(ds[f"{model}_inset_x"].values, ds[f"{model}_inset_y"].values,
                                             ds[f"{model}_inset_phase"].values, ds[f"{model}_inset_action"].values)]}
    return out


# ------------------------------------------------------------------------------------------------
# fig2: teacher-student simulations over the theory
# ------------------------------------------------------------------------------------------------


def fig2_data(ctx: Context) -> Step:
    from grokphase.analysis import compare_teacher_student

    cfg = ctx.config("fig2")
    path, spec = ctx.sims_file(cfg)
    sims = ts_simulations(ctx, path, spec)
    return ctx.step("fig2", {"scale": ctx.scale}, lambda: compare_teacher_student([s.ds for s in sims]), deps=sims)


# ------------------------------------------------------------------------------------------------
# fig3: the modular theory (paper Fig. 3) with Langevin points
# ------------------------------------------------------------------------------------------------


def _modular_compare(ctx: Context, cfg: dict) -> tuple[list[Step], Step | None]:
    from grokphase.analysis import compare_modular

    if not cfg.get("sims"):
        return [], None
    path, spec = ctx.sims_file(cfg)
    sims = modular_simulations(ctx, path, spec)
    convs = tuple(cfg.get("sim_conventions", ["paper", "network"]))
    num_line, rf_draws = int(cfg.get("compare_num_line", 121)), int(cfg.get("compare_rf_draws", 16))
    cmp = ctx.step("compare_modular", {"conventions": list(convs), "num_line": num_line, "rf_draws": rf_draws},
                   lambda: compare_modular([s.ds for s in sims], convs, num_line=num_line, rf_draws=rf_draws),
                   deps=sims)
    return sims, cmp


def fig3_data(ctx: Context) -> tuple[Step, Step | None]:
    from grokphase.theory.results import build_modular_sweep

    cfg = ctx.config("fig3")
    base = _modular_base(cfg)
    if cfg.get("sa2") is None:
        base = base.replace(sa2=float(cfg.get("sa2_times_N", 0.002)) / base.N)
    s2 = _range(cfg.get("s2", "0.1:0.3:201"), "fig3 s2")
    method, conv = str(cfg.get("method", "saddle")), str(cfg.get("convention", "paper"))
    theory = ctx.step("theory_modular_sweep", {"base": dataclasses.asdict(base), "s2": s2, "method": method,
                                               "convention": conv, "density_s2": cfg.get("density_s2")},
                      lambda: build_modular_sweep(base, s2, method=method, convention=conv,
                                                  density_s2=cfg.get("density_s2")))
    _, cmp = _modular_compare(ctx, cfg)
    return theory, cmp


def fig3_summary(theory: xr.Dataset, cmp: xr.Dataset | None) -> dict:
    from grokphase.analysis import compare_modular_summary

    s2 = theory["s2"].values
    s1, s2_ = float(theory.attrs["gmfl1_s2"]), float(theory.attrs["gmfl2_s2"])
    lim = theory["limit_a"].values
    inside = (s2 <= s1) & (s2 >= s2_)
    out = {"gmfl1_s2": s1, "gmfl2_s2": s2_, "spinodal_s2": float(theory.attrs["spinodal_s2"]),
           "a_at_gmfl1": float(np.interp(s1, s2, lim)) if s2.min() <= s1 <= s2.max() else None,
           "a_at_gmfl2": float(np.interp(s2_, s2, lim)) if s2.min() <= s2_ <= s2.max() else None,
           "finite_P_target_component_range": [float(theory["target_component"].min()),
                                               float(theory["target_component"].max())],
           "mixed_phase_points": int(inside.sum())}
    if cmp is not None:
        out["simulations"] = compare_modular_summary(cmp)
    return out


# ------------------------------------------------------------------------------------------------
# fig4-fig6: App. D, grokking in time
# ------------------------------------------------------------------------------------------------


def appd_data(ctx: Context) -> Step:
    from grokphase import appd

    cfg = ctx.config("appD")
    path, spec = ctx.sims_file(cfg)
    sims = appd.appd_sims(spec)
    steps = []
    for sim in sims:
        config = sim.parameters()
        key = step_key("sim_ts", config)

        def compute(sim=sim, key=key):
            from grokphase.cli_sims import _run_sim

            ctx.log(f"[sim_ts] {path.name}: width N={sim.N} (d={sim.d}, n={sim.n}), "
                    f"{sim.datasets * sim.inits} networks, {sim.steps} steps")
            return _run_sim(sim, devices=_devices(spec), progress=ctx.progress,
                            opts={"checkpoint_dir": str(ctx.cache_dir / "checkpoints" / key[:16])})

        steps.append(ctx.step("sim_ts", config, compute))

    def combine():
        return appd.combine([s.ds for s in steps])

    return ctx.step("appD", {"scale": ctx.scale}, combine, deps=steps)


# ------------------------------------------------------------------------------------------------
# phase diagrams with simulation points
# ------------------------------------------------------------------------------------------------


def pd_ts_data(ctx: Context) -> Step:
    """Finite-d theory over (sigma^2, beta) (App. C configuration scaled by Table 1, alpha = beta), the
    scaling-limit transition, and the fig2 simulations placed at their (sigma^2, beta)."""
    from grokphase.theory import teacher_student as ts

    cfg = ctx.config("phase-diagram-ts")
    base = _ts_base(cfg)
    s2 = _range(cfg.get("s2", "0.05:0.4:48"), "phase-diagram-ts s2")
    betas = _range(cfg.get("beta", "0.0625:8:25:log"), "phase-diagram-ts beta")
    theory_cfg = {"base": base.as_dict(), "s2": s2, "beta": betas, "approximations": list(ts.APPROXIMATIONS)}

    def theory():
        S, B = np.meshgrid(s2, betas)
        grid = base.broadcast().replace(s2=S).scaled(alpha=B, beta=B)
        dims = ("beta", "s2")
        data, extra = {}, {}
        for ap in ts.APPROXIMATIONS:
            sol = ts.solve_finite_d(grid, approximation=ap)
            lim = ts.solve_limit(grid, approximation=ap)
            tr = ts.solve_transition(base.broadcast(), along="s2", lo=float(s2.min()), hi=float(s2.max()),
                                     approximation=ap)
            data.update({f"{ap}_phase": (dims, np.asarray(sol.phase, np.int32)),
                         f"{ap}_cubic_learned": (dims, np.asarray(sol.cubic_learned)),
                         f"{ap}_linear_learned": (dims, np.asarray(sol.linear_learned)),
                         f"{ap}_droplet_fraction": (dims, np.asarray(sol.droplet_fraction)),
                         f"{ap}_limit_phase": (dims, np.asarray(lim.phase, np.int32)),
                         f"{ap}_limit_cubic_learned": (dims, np.asarray(lim.cubic_learned))})
            extra[f"limit_s2_c_{ap}"] = float(np.asarray(tr.value))
            extra[f"limit_u_c_{ap}"] = float(np.asarray(tr.u))
        ds = xr.Dataset(data, coords={"beta": betas, "s2": s2})
        return _annotated(ds, "reproduce.theory_ts_beta_diagram", {"scale": ctx.scale, **theory_cfg}, extra=extra)

    th = ctx.step("theory_ts_beta_diagram", theory_cfg, theory)
    sims = ctx.ts_runs(cfg)

    def compute():
        ds = th.ds.copy()
        if sims:
            pts = {k: [] for k in ("beta", "s2", "cubic", "cubic_sem", "linear", "linear_sem", "droplet")}
            for s in sims:
                beta = float(s.ds.attrs.get("param_beta", 1.0))
                for i, v in enumerate(s.ds["s2"].values):
                    pts["beta"].append(beta)
                    pts["s2"].append(float(v) * beta / float(s.ds.attrs.get("param_alpha", beta)))
                    for k, name in (("cubic", "cubic_learned"), ("linear", "linear_learned")):
                        pts[k].append(float(s.ds[name].values[i]))
                        pts[f"{k}_sem"].append(float(s.ds[f"{name}_sem"].values[i]))
                    pts["droplet"].append(float(s.ds["droplet_fraction"].values[i]))
            for k, v in pts.items():
                ds[f"sim_{k}"] = (("sim_point",), np.asarray(v, np.float64))
            return _annotated(ds, "reproduce.phase_diagram_ts", {"scale": ctx.scale, **cfg},
                          extra={k: v for k, v in th.ds.attrs.items() if k.startswith("limit_")})

    return ctx.step("phase_diagram_ts", {"scale": ctx.scale, **cfg}, compute, deps=[th, *sims])


def pd_modular_data(ctx: Context) -> Step:
    """Finite-P theory over (sigma^2, P) at the simulations' width with sa2 P^2 fixed, the P -> infinity
    boundaries, and the modular Langevin points coloured by their droplet fraction."""
    from grokphase.theory import modular as md
    from grokphase.theory.modular_gp import is_prime

    cfg = ctx.config("phase-diagram-modular")
    s2 = _range(cfg.get("s2", "0.05:0.35:61"), "phase-diagram-modular s2")
    Ps = np.asarray(cfg.get("P", [7, 11, 13, 17, 19, 23, 29, 31]), dtype=float)
    bad = [int(p) for p in Ps if not is_prime(int(p))]
    if bad:
        raise ParameterError(f"phase-diagram-modular: P must be prime, got {bad}")
    N, gamma = float(cfg.get("N", 64)), float(cfg.get("gamma", 0.01))
    sa2P2 = float(cfg.get("sa2_times_P2", 4e-4 * 23**2))
    conv, method = str(cfg.get("convention", "network")), str(cfg.get("method", "saddle"))
    theory_cfg = {"s2": s2, "P": Ps, "N": N, "gamma": gamma, "sa2_times_P2": sa2P2, "convention": conv, "method": method}

    def theory():
        S, PP = np.meshgrid(s2, Ps)
        grid = md.ModularParams(N=N, P=PP, s2=S, sa2=sa2P2 / PP**2, gamma=gamma)
        sol = md.solve(grid, method, convention=conv)
        lim = md.solve_limit(grid, conv)
        tr = md.transitions(md.ModularParams(N=N, P=Ps[:1], s2=s2[:1], sa2=sa2P2 / Ps[:1] ** 2, gamma=gamma), conv)
        dims = ("P", "s2")
        ds = xr.Dataset({"phase": (dims, np.asarray(sol.phase, np.int32)),
                         "target_component": (dims, np.asarray(sol.target_component)),
                         "droplet_fraction": (dims, np.asarray(sol.droplet_fraction)),
                         "limit_phase": (dims, np.asarray(lim.phase, np.int32)),
                         "limit_target_component": (dims, np.asarray(lim.target_component))},
                        coords={"P": Ps, "s2": s2})
        return _annotated(ds, "reproduce.theory_modular_P_diagram", theory_cfg,
                          extra={"gmfl1_s2": float(np.asarray(tr.gmfl1_s2).ravel()[0]),
                                 "gmfl2_s2": float(np.asarray(tr.gmfl2_s2).ravel()[0]), "convention": conv})

    th = ctx.step("theory_modular_P_diagram", theory_cfg, theory)
    sims, _ = ([], None)
    if cfg.get("sims"):
        path, spec = ctx.sims_file(cfg)
        sims = modular_simulations(ctx, path, spec)

    def compute():
        ds = th.ds.copy()
        pts = {k: [] for k in ("P", "s2", "branch", "droplet", "droplet_sem", "target", "target_sem")}
        for s in sims:
            sd = s.ds
            P = float(sd.attrs["param_P"])
            branches = [str(b) for b in sd["branch"].values] if "branch" in sd.dims else ["independent"]
            for b in branches:
                part = sd.sel(branch=b) if "branch" in sd.dims else sd
                for i, v in enumerate(sd["s2"].values):
                    pts["P"].append(P)
                    pts["s2"].append(float(v))
                    pts["branch"].append(b)
                    for k, name in (("droplet", "droplet_fraction"), ("target", "target_component")):
                        src = f"{name}_mean" if f"{name}_mean" in part else name
                        pts[k].append(float(part[src].values[i]))
                        pts[f"{k}_sem"].append(float(part[f"{src}_sem"].values[i]))
        for k, v in pts.items():
            ds[f"sim_{k}"] = (("sim_point",), np.asarray(v) if k == "branch" else np.asarray(v, np.float64))
        return _annotated(ds, "reproduce.phase_diagram_modular", {"scale": ctx.scale, **cfg},
                          extra={k: th.ds.attrs[k] for k in ("gmfl1_s2", "gmfl2_s2", "convention")})

    return ctx.step("phase_diagram_modular", {"scale": ctx.scale, **cfg}, compute, deps=[th, *sims])


# ------------------------------------------------------------------------------------------------
# sample complexity
# ------------------------------------------------------------------------------------------------


def _crossing(n: np.ndarray, f: np.ndarray, level: float = 0.5) -> float:
    """First n (log-interpolated) at which f reaches ``level``; NaN if it never does."""
    above = np.flatnonzero(np.asarray(f) >= level)
    if above.size == 0:
        return float("nan")
    k = int(above[0])
    if k == 0:
        return float(n[0])
    x0, x1 = math.log(n[k - 1]), math.log(n[k])
    f0, f1 = float(f[k - 1]), float(f[k])
    return float(math.exp(x0 + (level - f0) * (x1 - x0) / (f1 - f0)))


def sample_complexity_data(ctx: Context) -> Step:
    """Cubic learned fraction vs n: the GP (EK with the exact Rayleigh quotients), the finite-width
    theory (finite d and scaling limit) at the paper's configuration, and the same curves at the
    simulations' (scaled) configuration with the simulated points."""
    from grokphase.theory import gp
    from grokphase.theory import teacher_student as ts

    cfg = ctx.config("sample-complexity")
    base = _ts_base(cfg)
    n = _range(cfg.get("n", "100:1e7:61:log"), "sample-complexity n")
    sim_beta = float(cfg.get("sim_beta", 0.125))
    theory_cfg = {"base": base.as_dict(), "n": n, "sim_beta": sim_beta, "approximations": list(ts.APPROXIMATIONS)}

    def theory():
        out, extra = {}, {}
        for tag, beta in (("paper", 1.0), ("sim", sim_beta)):
            grid = base.broadcast().replace(n=n).scaled(alpha=beta, beta=beta)
            g = gp.solve_gp(grid)
            out[f"{tag}_n"] = (("n",), np.asarray(grid.n, np.float64))
            out[f"{tag}_gp_cubic"] = (("n",), np.asarray(g.cubic_learned))
            out[f"{tag}_gp_linear"] = (("n",), np.asarray(g.linear_learned))
            for ap in ts.APPROXIMATIONS:
                fd = ts.solve_finite_d(grid, approximation=ap)
                lim = ts.solve_limit(grid, approximation=ap)
                out[f"{tag}_finite_{ap}_cubic"] = (("n",), np.asarray(fd.cubic_learned))
                out[f"{tag}_finite_{ap}_linear"] = (("n",), np.asarray(fd.linear_learned))
                out[f"{tag}_limit_{ap}_cubic"] = (("n",), np.asarray(lim.cubic_learned))
            one = base.broadcast().scaled(alpha=beta, beta=beta)
            extra[f"{tag}_gp_n_half_cubic"] = float(np.asarray(gp.solve_gp(one).n_half_cubic).ravel()[0])
            for ap in ts.APPROXIMATIONS:        # GFL -> GMFL-I onset along n (scaling limit)
                tr = ts.solve_transition(one, along="n", lo=float(one.n) / 1e3, hi=float(one.n) * 1e3,
                                         approximation=ap)
                extra[f"{tag}_limit_{ap}_n_onset"] = float(np.asarray(tr.value).ravel()[0])
        ds = xr.Dataset(out, coords={"n_base": n})
        return _annotated(ds, "reproduce.theory_sample_complexity", theory_cfg, extra=extra)

    th = ctx.step("theory_sample_complexity", theory_cfg, theory)
    sims = ctx.ts_runs(cfg)

    def compute():
        ds = th.ds.copy()
        pts = {k: [] for k in ("n", "beta", "s2", "cubic", "cubic_sem", "linear", "linear_sem",
                               "theory_exact_cubic", "theory_concentrated_cubic", "gp_cubic")}
        for s in sims:
            sd = s.ds
            at = ts.TeacherStudentParams(N=float(sd.attrs["N"]), n=float(sd.attrs["n"]), d=float(sd.attrs["d"]),
                                         sa2=float(sd.attrs["sa2"]), s2=np.asarray(sd["s2"].values, np.float64),
                                         sw2=float(sd.attrs["param_sw2"]), eps=float(sd.attrs["param_eps"]))
            th_pts = {ap: np.asarray(ts.solve_finite_d(at, approximation=ap).cubic_learned)
                      for ap in ts.APPROXIMATIONS}
            gp_pts = np.asarray(gp.solve_gp(at).cubic_learned)
            for i, v in enumerate(sd["s2"].values):
                for ap in ts.APPROXIMATIONS:    # the theories at exactly the simulated sizes
                    pts[f"theory_{ap}_cubic"].append(float(th_pts[ap][i]))
                pts["gp_cubic"].append(float(gp_pts[i]))
                pts["n"].append(float(sd.attrs["n"]))
                pts["beta"].append(float(sd.attrs.get("param_beta", 1.0)))
                pts["s2"].append(float(v))
                for k, name in (("cubic", "cubic_learned"), ("linear", "linear_learned")):
                    pts[k].append(float(sd[name].values[i]))
                    pts[f"{k}_sem"].append(float(sd[f"{name}_sem"].values[i]))
        for k, v in pts.items():        # (not sim_*: the theory's curves at the sims' configuration are sim_*)
            ds[f"point_{k}"] = (("sim_point",), np.asarray(v, np.float64))
        extra = {k: v for k, v in th.ds.attrs.items() if k.endswith("_n_half_cubic") or k.endswith("_n_onset")}
        for tag in ("paper", "sim"):
            nn = ds[f"{tag}_n"].values
            for kind in ("finite_exact", "finite_concentrated", "limit_exact", "limit_concentrated"):
                extra[f"{tag}_{kind}_n_half_cubic"] = _crossing(nn, ds[f"{tag}_{kind}_cubic"].values)
        return _annotated(ds, "reproduce.sample_complexity", {"scale": ctx.scale, **cfg}, extra=extra)

    return ctx.step("sample_complexity", {"scale": ctx.scale, **cfg}, compute, deps=[th, *sims])


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


def _finite(x):
    x = float(x)
    return x if math.isfinite(x) else None


def reproduce_one(ctx: Context, name: str) -> dict:
    """Compute (or load) one figure's data, draw its PNG + PDF from the saved file, return its summary."""
    from grokphase import plotting_reproduce as pr
    from grokphase.io import load_dataset

    t0 = time.perf_counter()
    path = ctx.figure_paths(name)
    summary: dict[str, Any] = {"name": name, "scale": ctx.scale}
    if name == "fig1":
        st = fig1_data(ctx)
        files = pr.plot_fig1(load_dataset(st.path), path)
        summary.update(fig1_summary(st.ds))
    elif name == "fig2":
        from grokphase.analysis import compare_summary

        st = fig2_data(ctx)
        files = pr.plot_fig2(load_dataset(st.path), path)
        summary.update(compare_summary(st.ds))
    elif name == "fig3":
        theory, cmp = fig3_data(ctx)
        st = theory
        files = pr.plot_fig3(load_dataset(theory.path), load_dataset(cmp.path) if cmp else None, path)
        summary.update(fig3_summary(theory.ds, cmp.ds if cmp else None))
    elif name in ("fig4", "fig5", "fig6"):
        from grokphase import appd

        st = appd_data(ctx)
        plot = {"fig4": appd.plot_fig4, "fig5": appd.plot_fig5, "fig6": appd.plot_fig6}[name]
        files = plot(load_dataset(st.path), path)
        summary.update(appd.appd_summary(st.ds))
    elif name == "phase-diagram-ts":
        st = pd_ts_data(ctx)
        files = pr.plot_pd_ts(load_dataset(st.path), path)
        summary.update({k: _finite(v) for k, v in st.ds.attrs.items() if k.startswith("limit_")})
        for ap in ("exact", "concentrated"):
            summary[f"phase_counts_{ap}"] = {lab: int((st.ds[f"{ap}_phase"].values == c).sum())
                                             for c, lab in _labels().items()}
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
    from grokphase.io import _jsonable

    names = list(FIGURES) if list(names) == ["all"] or "all" in names else list(names)
    for name in names:
        if name not in FIGURES:
            raise ParameterError(f"unknown figure {name!r}; choose from {', '.join(FIGURES)} or all")
    root = find_definitions(defs)
    cache = Path(cache_dir) if cache_dir is not None else Path("results") / "reproduce" / scale
    ctx = Context(scale=scale, defs_root=root, cache_dir=cache, out_dir=Path(out_dir), progress=progress)
    out = {}
    for name in names:
        out[name] = reproduce_one(ctx, name)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / ".summary.json.tmp"
    tmp.write_text(json.dumps(_jsonable(out), indent=1, default=str))
    os.replace(tmp, cache / f"summary_{'_'.join(n.replace('-', '_') for n in names) if len(names) < 4 else 'all'}.json")
    return out
