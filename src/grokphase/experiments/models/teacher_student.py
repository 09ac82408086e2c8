"""The teacher-student model (erf student, cubic teacher; paper App. C; and the single-index family of
issue 18: ``activation``, ``target``) in the experiments layer:
its ``[[sim]]`` options (derived from :class:`~grokphase.theory.teacher_student.TeacherStudentParams`
and :class:`~grokphase.sims.teacher_student.TeacherStudentSim`), its runs and its analysis tables
(``[compare]``, ``[perp_norm]``, ``[hysteresis]``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import xarray as xr

from grokphase.analysis.compare import compare_summary, compare_teacher_student
from grokphase.analysis.hysteresis import hysteresis_teacher_student
from grokphase.analysis.perp_norm import compare_perp_norm, perp_norm_summary
from grokphase.analysis.single_index import compare_family, family_summary
from grokphase.errors import ParameterError
from grokphase.experiments.options import (Applies, Option, check_fits, only_with, option_label, options_of, resolve,
                                           signed, with_rules)
from grokphase.experiments.free_energy_table import free_energy_table
from grokphase.experiments.registry import ModelSpec, register
from grokphase.io import _jsonable, load_dataset, parameters_of, save_dataset
from grokphase.plotting import plot_result
from grokphase.plotting.hysteresis import plot_hysteresis_teacher_student
from grokphase.plotting.perp_norm import plot_perp_norm
from grokphase.plotting.single_index import plot_family
from grokphase.sims.budget import budget_gb, upfront_budget_gb
from grokphase.sims.memory import format_bytes, teacher_student_bytes
from grokphase.sims.precision import MATMUL_PRECISIONS
from grokphase.sims.teacher_student import FAMILY_DEFAULTS, TeacherStudentSim, run_teacher_student, summary_points
from grokphase.sims.umbrella import several_coordinates
from grokphase.theory.single_index import ACTIVATIONS
from grokphase.theory import teacher_student as ts

NAME = "teacher-student"
KIND = "sims.teacher_student"

#: the [[sim]] schema: the beta = 1 model (TeacherStudentParams' fields and defaults, App. C), the
#: s2 values at beta = 1, the Table-1 scaling, the simulation's own fields (TeacherStudentSim), and
#: options of the run (not of the result)
OPTIONS: dict[str, Option] = {
    **options_of(ts.TeacherStudentParams, ("N", "n", "d", "sa2", "sw2", "eps")),
    "s2": Option("s2", "floats", TeacherStudentSim.s2, "sigma^2 values at beta = 1 (scaled by alpha/beta)"),
    "beta": Option("beta", "float", TeacherStudentSim.beta, "Table-1 scaling of the beta = 1 configuration"),
    "alpha": Option("alpha", "float", None, "Table-1 data scaling n -> alpha n (default alpha = beta)", True),
    **options_of(TeacherStudentSim, ("datasets", "inits", "seed", "steps")),
    "burn_in": Option("burn_in", "int", None, "steps before recording averages (default steps // 4)", True),
    **options_of(TeacherStudentSim, ("lr", "record_every", "log_times", "optimizer", "weight_decay", "dtype",
                                     "replica_exchange", "swap_every", "anneal", "start", "ordered_droplets",
                                     "ordered_theory", "ordered_approximation", "umbrella_m0", "umbrella_kappa",
                                     "umbrella_start", "umbrella_range", "umbrella_windows", "umbrella_degree",
                                     "umbrella_coordinates", "readout", "mala", "readout_lr_scale", "prior_exact",
                                     "rao_blackwell")),
    "matmul_precision": Option("matmul_precision", "str", TeacherStudentSim.matmul_precision,
                               f"float32 matmuls: {', '.join(MATMUL_PRECISIONS)} (tf32/bf16: emulated by rounding "
                               "the network's matmul inputs; docs/precision.md)"),
    "activation": Option("activation", "str", FAMILY_DEFAULTS["activation"],
                         f"the student's activation: {', '.join(ACTIVATIONS)}"),
    "target": Option("target", "str", FAMILY_DEFAULTS["target"],
                     "Hermite target 'degree:coefficient,...' of He_k(w*.x), e.g. '2:1,4:0.3' (default: He1 + eps "
                     "He3; give eps or target, not both)", True),
    "ensemble_chunk": Option("ensemble_chunk", "int", None, "networks per compiled call (default: memory_gb)", True),
    "memory_gb": Option("memory_gb", "float", None, "memory budget of one ensemble chunk, GB (default: 60% of "
                        "each device's reported memory, 2 GB where none is reported, e.g. CPU)", True),
    "checkpoint_every": Option("checkpoint_every", "float", 60.0, "seconds between checkpoints"),
}


def _umbrella(o) -> bool:
    return o["umbrella_m0"] is not None or o["umbrella_range"] is not None


def _umbrella_counts(o) -> bool:
    """Where umbrella_windows has an effect: planned windows, or explicit centres of several coordinates."""
    return o["umbrella_range"] is not None or (o["umbrella_m0"] is not None
                                               and several_coordinates(o["umbrella_coordinates"]))


def _ordered_start(o) -> bool:
    """Whether some chain starts from the ordered droplet saddle (driver.ladder_branches; umbrella
    windows with umbrella_start ordered or both)."""
    return (o["start"] == "ordered" or (o["anneal"] in ("up", "both") and o["start"] != "prior")
            or (_umbrella(o) and o["umbrella_start"] in ("ordered", "both")))


ORDERED_START = Applies("with an ordered start (start = ordered, or a heating branch: anneal = up or both, or "
                        "umbrella_start = ordered or both)", _ordered_start, ("start", "anneal", "umbrella_start"))
#: the umbrella options apply to umbrella runs only (sims/umbrella.py)
UMBRELLA = Applies("with umbrella windows (umbrella_m0 or umbrella_range)", _umbrella, ("umbrella_m0", "umbrella_range"))
#: where an option has an effect: given elsewhere it is an error, not silently ignored (and recorded)
OPTIONS = with_rules(OPTIONS, {
    "weight_decay": only_with("optimizer", "adamw"),
    "swap_every": only_with("replica_exchange", True),
    "ordered_droplets": ORDERED_START,
    "ordered_theory": ORDERED_START,
    "ordered_approximation": ORDERED_START,
    "umbrella_kappa": UMBRELLA,
    "umbrella_start": UMBRELLA,
    "umbrella_degree": UMBRELLA,
    "umbrella_coordinates": UMBRELLA,
    "umbrella_windows": Applies("with umbrella_range (planned windows), or with umbrella_m0 and several "
                                "umbrella_coordinates (the centres per coordinate)", _umbrella_counts,
                                ("umbrella_range", "umbrella_coordinates")),
})
#: window centres and ranges may be zero or negative, stiffnesses zero
OPTIONS = signed(OPTIONS, "umbrella_m0", "umbrella_kappa", "umbrella_range")
TABLE_KEYS = set(OPTIONS) | {"name"}


def sim_from_options(opts: Mapping[str, Any], where: str = "options", *, strict: bool = False,
                     given=None) -> TeacherStudentSim:
    """TeacherStudentSim from CLI/TOML options (the beta = 1 configuration and the Table-1 scaling);
    missing options take the dataclasses' defaults; ``given`` options must apply (:func:`resolve`)."""
    o = resolve({k: v for k, v in opts.items() if k != "name"}, OPTIONS, where, strict=strict, given=given)
    base = ts.TeacherStudentParams(N=o["N"], n=o["n"], d=o["d"], s2=ts.TeacherStudentParams.s2, sa2=o["sa2"],
                                   sw2=o["sw2"], eps=o["eps"])
    burn_in = o["steps"] // 4 if o["burn_in"] is None else o["burn_in"]
    sim_fields = {k: o[k] for k in ("datasets", "inits", "seed", "steps", "lr", "record_every", "log_times",
                                    "optimizer", "weight_decay", "dtype", "replica_exchange", "swap_every", "anneal",
                                    "start", "ordered_droplets", "ordered_theory", "ordered_approximation",
                                    "activation", "target", "umbrella_m0", "umbrella_kappa", "umbrella_start",
                                    "umbrella_range", "umbrella_windows", "umbrella_degree",
                                    "umbrella_coordinates", "readout", "mala", "readout_lr_scale", "prior_exact",
                                    "rao_blackwell", "matmul_precision")}
    return TeacherStudentSim.from_scaling(base, beta=o["beta"], alpha=o["alpha"], s2=o["s2"], burn_in=burn_in,
                                          **sim_fields)


def run_sim(sim: TeacherStudentSim, *, devices, progress: bool, checkpoint_dir=None, ensemble_chunk=None,
            memory_gb: float | None = OPTIONS["memory_gb"].default,
            checkpoint_every: float = OPTIONS["checkpoint_every"].default) -> xr.Dataset:
    """One simulation with the run options of an experiment table."""
    return run_teacher_student(sim, devices=devices, ensemble_chunk=ensemble_chunk,
                               memory_budget=None if memory_gb is None else memory_gb * 1e9,
                               checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, progress=progress)


def _run_options(opts: Mapping[str, Any], where: str) -> dict:
    return resolve({k: v for k, v in opts.items() if k in ("ensemble_chunk", "memory_gb", "checkpoint_every")},
                   {k: OPTIONS[k] for k in ("ensemble_chunk", "memory_gb", "checkpoint_every")}, where)


def check_memory(sim: TeacherStudentSim, opts: Mapping[str, Any], where: str, devices=None) -> None:
    """One network within ``memory_gb`` (:mod:`grokphase.sims.memory`), and an explicit
    ``ensemble_chunk`` of them within an explicit ``memory_gb``.  Without ``memory_gb`` the budget is
    the devices' (:func:`grokphase.sims.budget.budget_gb`); before the devices are set up (the up-front
    check) the CPU's fallback where no accelerator can be present, else nothing until they are."""
    o = _run_options(opts, where)
    need = teacher_student_bytes(sim)
    budget = budget_gb(devices, o["memory_gb"]) if devices is not None else upfront_budget_gb(o["memory_gb"])
    if budget is not None:
        check_fits(f"N={sim.N}, n={sim.n}, d={sim.d} ({sim.dtype})", need, budget, where)
    chunk = o["ensemble_chunk"]
    if chunk is not None and opts.get("memory_gb") is not None and chunk * need["device"] > o["memory_gb"] * 1e9:
        raise ParameterError(f"{option_label('ensemble_chunk', where)} {chunk} networks of ~"
                             f"{format_bytes(need['device'])} each need ~{format_bytes(chunk * need['device'])}, over "
                             f"{option_label('memory_gb', where)} {o['memory_gb']:g}: give one of the two")


def check(opts: Mapping[str, Any], where: str, given=None) -> None:
    """Everything about one run that is known before it starts: option types and ranges, that each
    ``given`` option applies, and that one network fits the memory budget."""
    check_memory(sim_from_options(opts, where, given=given), opts, where)


def run(opts: Mapping[str, Any], *, devices, progress: bool, checkpoint_dir=None, where: str = "options"
        ) -> xr.Dataset:
    sim = sim_from_options(opts, where)
    check_memory(sim, opts, where, devices=devices)
    return run_sim(sim, devices=devices, progress=progress, checkpoint_dir=checkpoint_dir,
                   **_run_options(opts, where))


def cache_config(opts: Mapping[str, Any]) -> dict:
    """A run is identified by the simulation's full parameters (so the same run shared by two
    figures, or written differently in two files, is computed once)."""
    return sim_from_options(opts).parameters()


def matches(old: xr.Dataset, config: dict) -> bool:
    return parameters_of(old) == json.loads(json.dumps(_jsonable(config)))


def mark(ds: xr.Dataset, config: dict) -> xr.Dataset:
    return ds          # its parameters are already in the result's attributes


def compare_table(path: str, cspec: dict, by_name: Mapping[str, xr.Dataset], out_dir: Path, summary: dict) -> None:
    """``[compare]``: the simulations against the finite-d theory (``theory``: a saved sweep to use
    instead; ``out``, ``plot``)."""
    theory = cspec.get("theory")
    theory = load_dataset(theory, "theory.teacher_student.sweep") if theory else None
    cmp = compare_teacher_student(list(by_name.values()), theory)
    out = Path(cspec.get("out", out_dir / "compare.nc"))
    save_dataset(cmp, out)
    summary.update(compare_summary(cmp))
    summary["compare"] = str(out)
    if cspec.get("plot"):
        plot_result(cmp, cspec["plot"])
        summary["plot"] = str(cspec["plot"])


def perp_norm_table(path: str, pspec: dict, by_name: Mapping[str, xr.Dataset], out_dir: Path, summary: dict) -> None:
    """``[perp_norm]`` (``out``, ``plot``): compare_perp_norm of all the file's simulations."""
    cmp = compare_perp_norm(list(by_name.values()))
    out = Path(pspec.get("out", out_dir / "perp_norm.nc"))
    save_dataset(cmp, out)
    entry = {**perp_norm_summary(cmp), "out": str(out)}
    if pspec.get("plot"):
        plot_perp_norm(cmp, pspec["plot"])
        entry["plot"] = str(pspec["plot"])
    summary["perp_norm"] = entry


def single_index_table(path: str, spec: dict, by_name: Mapping[str, xr.Dataset], out_dir: Path, summary: dict) -> None:
    """``[single_index]`` (``out``, ``plot``, ``curve_points``): every run's learned fraction per target
    degree against the single-index exact finite-d theory at its sizes, grouped for the EK control
    (:func:`grokphase.analysis.single_index.compare_family`)."""
    unknown = sorted(set(spec) - {"out", "plot", "curve_points"})
    if unknown:
        raise ParameterError(f"{path}: [single_index] has unknown keys {', '.join(unknown)} (allowed: out, plot, "
                             f"curve_points)")
    cmp = compare_family(list(by_name.values()), curve_points=int(spec.get("curve_points", 41)))
    out = Path(spec.get("out", out_dir / "single_index.nc"))
    save_dataset(cmp, out)
    entry = {**family_summary(cmp), "out": str(out)}
    if spec.get("plot"):
        plot_family(cmp, spec["plot"])
        entry["plot"] = str(spec["plot"])
        summary.setdefault("plots", []).append(str(spec["plot"]))
    summary["single_index"] = entry


HYSTERESIS_ROLES = ("cooling", "heating", "replica")


def hysteresis_table(path: str, hspec, by_name: Mapping[str, xr.Dataset], out_dir: Path, summary: dict) -> None:
    """The ``[hysteresis]`` table(s): ``cooling``, ``heating``, ``replica`` name [[sim]] entries (an
    annealing run supplies both branches), ``approximation`` (exact or concentrated theory), ``out``,
    ``plot``.  A list of tables ([[hysteresis]]) gives one analysis each (e.g. one per beta)."""
    tables = hspec if isinstance(hspec, list) else [hspec]
    out = []
    for i, h in enumerate(tables):
        missing = [h[k] for k in HYSTERESIS_ROLES if k in h and h[k] not in by_name]
        if missing:
            raise ParameterError(f"{path}: [hysteresis] names unknown [[sim]] entries: {', '.join(missing)}")
        hyst = hysteresis_teacher_student({k: by_name[h[k]] for k in HYSTERESIS_ROLES if k in h},
                                          approximation=h.get("approximation", "exact"))
        target = Path(h.get("out", out_dir / (f"hysteresis{i}.nc" if len(tables) > 1 else "hysteresis.nc")))
        save_dataset(hyst, target)
        entry = {"out": str(target), **json.loads(hyst.attrs["summary_json"])}
        if h.get("plot"):
            plot_hysteresis_teacher_student(hyst, h["plot"])
            entry["plot"] = str(h["plot"])
        out.append(entry)
    summary["hysteresis"] = out
    summary.setdefault("plots", []).extend(e["plot"] for e in out if e.get("plot"))


def select_only(spec: dict, sims: list, prefix: str, path: str) -> tuple[dict, list]:
    """``--only PREFIX``: the [[sim]] entries whose name starts with PREFIX, and the [hysteresis]
    tables all of whose entries are kept."""
    sims = [e for i, e in enumerate(sims) if str(e.get("name", f"sim{i}")).startswith(prefix)]
    if not sims:
        raise ParameterError(f"{path}: no [[sim]] name starts with {prefix!r}")
    keep = {str(e["name"]) for e in sims if "name" in e}
    h = spec.get("hysteresis")
    if h is not None:
        tables = [t for t in (h if isinstance(h, list) else [h]) if all(t[k] in keep for k in HYSTERESIS_ROLES if k in t)]
        spec = {**spec, "hysteresis": tables or None}
    return spec, sims


SPEC = register(ModelSpec(
    name=NAME,
    description="erf networks learning the cubic teacher He1 + eps He3 (paper App. C, Fig. 2, App. D); any "
                "activation and Hermite target with activation / target",
    result_kind=KIND,
    options=OPTIONS,
    run=run,
    cache_config=cache_config,
    summary_points=summary_points,
    tables={"compare": compare_table, "perp_norm": perp_norm_table, "hysteresis": hysteresis_table,
            "single_index": single_index_table, "free_energy": free_energy_table},
    sim_config=TeacherStudentSim,
    theory_params=ts.TeacherStudentParams,
    theory={"solve_finite_d": ts.solve_finite_d, "solve_limit": ts.solve_limit, "solve_transition": ts.solve_transition},
    plot=plot_result,
    matches=matches,
    mark=mark,
    select_only=select_only,
    cache_kind="sim_ts",
    check=check,
))
