"""Finite-n mean-field theory at the simulated sizes (issue 22): :func:`grokphase.theory.finite_n.solve_finite_n`
on the simulations' own training sets (data-set keys of ``sims.teacher_student.run.member_keys``), averaged over
data sets, next to the exact EK (q, t) theory.

    python -m grokphase.experiments.finite_n --s2 0.17 --alpha 1 --datasets 0 1 2 3 --out results/finite_n/x.json

``--alpha a`` is the EK control of ``sims/perp_norm.toml``: n -> a n and s2 -> a s2 at the same N, d, sa2
(u and r unchanged).

:func:`run_finite_n` is the Python API behind ``grokphase theory finite-n``: several sigma^2, any data sets,
an annotated xarray Dataset (per (sigma^2, data set) cells, their means and standard errors over converged
data sets, the exact EK theory beside them), written atomically after every solve and resumed from that
file, and the retry rule for run-away solves (continuation in sigma^2)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
import xarray as xr

from grokphase.errors import ParameterError, ResultFileError
from grokphase.io import annotate, load_dataset, parameters_of, save_dataset, to_json
from grokphase.stats import sem
from grokphase.theory import finite_n as fn
from grokphase.theory.teacher_student import PARAM_NAMES, TeacherStudentParams, solve_finite_d

#: beta = 1/8 of the paper's configuration (sims/perp_norm.toml): N = 88, d = 53, n = 375, sa2 = (8/700) sqrt(8)
BETA_8 = {"N": 88.0, "n": 375.0, "d": 53.0, "sa2": 8.0 / 700.0 * math.sqrt(8.0), "sw2": 0.5, "eps": -0.3}


def run_point(base: dict, s2: float, alpha: float, datasets, seed: int = 0, config: fn.FiniteNConfig = fn.FiniteNConfig(),
              sampler_seed: int = 1, verbose: bool = False, retry: bool = True) -> dict:
    """Solve every listed data set at (n alpha, s2 alpha); returns per-data-set numbers, their mean and the
    standard error over the converged data sets, and the EK (exact finite-d) theory at the same point.  With
    ``retry`` a data set that does not converge is solved once more from tau0 = tau_EK/2 with fresh chains
    and twice the iterations (``retried`` in its row)."""
    p = TeacherStudentParams(**{**base, "n": float(round(base["n"] * alpha)), "s2": s2 * alpha})
    ek = solve_finite_d(p)
    out = {"params": {k: float(v) for k, v in p.as_dict().items()}, "alpha": alpha, "seed": seed,
           "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
           "ek_linear": float(1.0 - np.asarray(ek.b)), "ek_cubic": float(1.0 - np.asarray(ek.c) / base["eps"]),
           "datasets": []}
    for i in datasets:
        t0 = time.time()
        x, y, ws = fn.draw_dataset(fn.dataset_key(seed, i), int(p.n), int(p.d), base["eps"])
        key = jax.random.fold_in(jax.random.PRNGKey(sampler_seed), i)
        sol = fn.solve_finite_n(p, x, y, ws, key, config, verbose=verbose)
        retried = False
        if not sol.converged and retry:
            # caught in the runaway state (chains stuck in modes the current tau no longer supports):
            # one fresh start, from half the EK discrepancy, with fresh chains and twice the iterations
            retried = True
            tau0 = 0.5 * fn.ek_tau(p, fn.make_problem(p, x, y, ws).s)
            sol = fn.solve_finite_n(p, x, y, ws, jax.random.fold_in(key, 1000),
                                    dataclasses.replace(config, iterations=2 * config.iterations), tau0=tau0,
                                    verbose=verbose)
        row = {k: float(v) for k, v in sol._asdict().items() if np.ndim(v) == 0}
        row.update(dataset=int(i), seconds=time.time() - t0, retried=retried)
        out["datasets"].append(row)
        print(json.dumps(row), flush=True)
    ok = [r for r in out["datasets"] if r["converged"]]       # the mean is over converged data sets only
    out["failed"] = [r["dataset"] for r in out["datasets"] if not r["converged"]]
    for name in ("linear_learned", "cubic_learned", "droplet_mass"):
        v = np.array([r[name] for r in ok])
        out[name] = float(v.mean())
        out[f"{name}_sem"] = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return out


# ------------------------------------------------------------------------------------------------
# the Dataset API behind ``grokphase theory finite-n``: several sigma^2, resumable, with retries

#: the result-file kind written by :func:`run_finite_n`
KIND = "theory.teacher_student.finite_n"
#: the start of a kept solution (the ``start`` variable's flag values; -1: not solved)
STARTS = {0: "ek", 1: "continuation", 2: "half_ek"}
#: a retry's chains: fold_in(data set key, RETRY_KEY); its iterations: RETRY_ITERATIONS x the configured ones
RETRY_KEY = 1000
RETRY_ITERATIONS = 2
#: per-(sigma^2, data set) numbers: (Dataset variable, FiniteNSolution field, long name)
CELL_VARS = (
    ("linear_learned_dataset", "linear_learned", "linear learned fraction <fbar, H1> of this data set"),
    ("linear_learned_mc_error", "linear_learned_sem", "batch-means Monte-Carlo error of linear_learned_dataset"),
    ("cubic_learned_dataset", "cubic_learned", "cubic learned fraction <fbar, H3>/(sqrt(6) eps) of this data set"),
    ("cubic_learned_mc_error", "cubic_learned_sem", "batch-means Monte-Carlo error of cubic_learned_dataset"),
    ("droplet_mass_dataset", "droplet_mass", "mass of p(q) beyond the barrier (|q| > 0.4 without one)"),
    ("tail", "tail", "mass of p(q) in the last 10 % of the q grid (must be small)"),
    ("residual", "residual", "|grad G|/|y| at the frozen tau (converged: < RESIDUAL_OK)"),
    ("accept", "accept", "mean MALA acceptance in production"),
)
#: the one-loop (1/N) corrections of a cell (``one_loop=True`` runs only)
LOOP_VARS = (
    ("linear_one_loop_dataset", "linear_one_loop", "one-loop (1/N) correction of linear_learned_dataset"),
    ("linear_one_loop_mc_error", "linear_one_loop_sem", "batch-means Monte-Carlo error of linear_one_loop_dataset"),
    ("cubic_one_loop_dataset", "cubic_one_loop", "one-loop (1/N) correction of cubic_learned_dataset"),
    ("cubic_one_loop_mc_error", "cubic_one_loop_sem", "batch-means Monte-Carlo error of cubic_one_loop_dataset"),
)


def _cell_vars(params: dict):
    return CELL_VARS + (LOOP_VARS if params.get("one_loop") else ())


def scaled_point(base: TeacherStudentParams, beta: float = 1.0, alpha: float | None = None) -> TeacherStudentParams:
    """The Table-1 scaling of the beta = 1 configuration ``base`` with the simulations' integer sizes
    (``sims.teacher_student``'s ``from_scaling``): N -> round(beta N), d -> round(sqrt(beta) d),
    n -> round(alpha n), sa2 -> sa2/sqrt(beta), s2 -> (alpha/beta) s2 (``alpha`` defaults to ``beta``; base.s2
    may be a vector).  ``--beta 1/8 --alpha 1/2`` is the EK control n x 4, s2 x 4 of beta = 1/8."""
    alpha = beta if alpha is None else alpha
    sc = base.scaled(alpha, beta)
    r = lambda v: float(round(float(np.asarray(v))))  # noqa: E731
    return TeacherStudentParams(N=r(sc.N), n=r(sc.n), d=r(sc.d), s2=np.asarray(sc.s2, np.float64),
                                sa2=float(np.asarray(sc.sa2)), sw2=float(np.asarray(sc.sw2)), eps=float(np.asarray(sc.eps)))


def solve_with_retry(p: TeacherStudentParams, x, y, w_star, key, config: fn.FiniteNConfig, *, retry: bool = True,
                     previous: tuple[float, np.ndarray] | None = None, one_loop: bool = False):
    """One (sigma^2, data set) solve with the retry rule: (solution, start, retried).

    The first solve starts from the exact EK discrepancy (start 0, ``ek``).  A solution flagged not
    converged (``residual >= RESIDUAL_OK``: the run-away state of docs/finite_size.md) is solved once more
    with fresh chains (key folded with RETRY_KEY) and RETRY_ITERATIONS x the iterations, from
    ``previous = (s2', tau')``, a converged solution of the *same* training set at a larger s2' (weaker
    coupling, fewer droplets): the discrepancy is carried over, tau0 = s2' tau'/s2 (start 1,
    ``continuation``); without one from tau_EK/2 (start 2, ``half_ek``).  The retry is kept if it converged
    or has the smaller residual; else the first solve is kept (start 0, retried True).  ``one_loop``: every
    solve also measures the one-loop (1/N) correction (:func:`grokphase.theory.finite_n.solve_finite_n`)."""
    loop = {"one_loop": True} if one_loop else {}        # the plain call unchanged (a substituted solver need not know it)
    sol = fn.solve_finite_n(p, x, y, w_star, key, config, **loop)
    if sol.converged or not retry:
        return sol, 0, False
    s2 = float(p.s2)
    if previous is not None:
        tau0, start = np.asarray(previous[1], np.float64) * (float(previous[0]) / s2), 1
    else:
        tau0, start = 0.5 * np.asarray(fn.ek_tau(p, fn.make_problem(p, x, y, w_star).s)), 2
    again = fn.solve_finite_n(p, x, y, w_star, jax.random.fold_in(key, RETRY_KEY),
                              dataclasses.replace(config, iterations=RETRY_ITERATIONS * config.iterations), tau0=tau0,
                              **loop)
    if again.converged or again.residual <= sol.residual:
        return again, start, True
    return sol, 0, True


def _check_index(value, what: str) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or value < 0:
        raise ParameterError(f"{what} must be an integer >= 0, got {value!r}")
    return int(value)


def _run_parameters(p: TeacherStudentParams, s2: np.ndarray, beta: float, alpha: float, seed: int, sampler_seed: int,
                    retry: bool, config: fn.FiniteNConfig, one_loop: bool = False) -> dict:
    """What a result file must agree on to be resumed (everything but the data sets), JSON-normalised
    (``one_loop`` recorded only when on, so files without it keep their parameters)."""
    params = {k: float(np.asarray(getattr(p, k))) for k in PARAM_NAMES if k != "s2"}
    params.update(s2=[float(v) for v in s2], s2_reference=[float(v) * beta / alpha for v in s2], beta=float(beta),
                  alpha=float(alpha), seed=seed, sampler_seed=sampler_seed, retry=bool(retry),
                  config={k: getattr(config, k) for k in config.__dataclass_fields__})
    if one_loop:
        params["one_loop"] = True
    return json.loads(to_json(params))


def _resume_cells(path: Path, params: dict, S: int) -> dict:
    """The finished cells {(s2 index, data set): row} of an earlier run's file; a file of other parameters
    is refused, naming them."""
    prev = load_dataset(path, KIND)
    old = parameters_of(prev)
    diff = [k for k in sorted(set(old) | set(params)) if old.get(k) != params.get(k)]
    if diff:
        shown = "; ".join(f"{k}: file {old.get(k)!r}, now {params.get(k)!r}" for k in diff[:4])
        raise ParameterError(f"{path} holds a finite-n run with other parameters ({shown}); give another --out or "
                             "remove the file to start afresh")
    if prev.sizes["s2"] != S:
        raise ResultFileError(f"{path} has {prev.sizes['s2']} sigma^2 points, its parameters {S}: it is damaged")
    cells = {}
    for j in range(S):
        for k, i in enumerate(prev["dataset"].values):
            if not bool(prev["solved"].values[j, k]):
                continue
            row = {name: float(prev[name].values[j, k]) for name, _, _ in _cell_vars(params)}
            row.update(converged=bool(prev["converged"].values[j, k]), retried=bool(prev["retried"].values[j, k]),
                       start=int(prev["start"].values[j, k]), seconds=float(prev["seconds"].values[j, k]),
                       tau=np.asarray(prev["tau"].values[j, k], np.float64),
                       log_p=np.asarray(prev["log_p"].values[j, k], np.float64))
            cells[(j, int(i))] = row
    return cells


def _assemble(cells: dict, s2: np.ndarray, params: dict, config: fn.FiniteNConfig,
              ek: tuple[np.ndarray, np.ndarray]) -> xr.Dataset:
    """The annotated Dataset of every finished cell (data sets: those with at least one), their means and
    standard errors over converged data sets and the exact EK theory at each sigma^2."""
    S, n = s2.size, int(params["n"])
    ds_idx = sorted({i for _, i in cells})
    D = len(ds_idx)
    col = {i: k for k, i in enumerate(ds_idx)}
    q = np.linspace(0.0, config.q_max, config.q_size)
    cell_vars = _cell_vars(params)
    data = {name: np.full((S, D), np.nan) for name, _, _ in cell_vars}
    data["seconds"] = np.full((S, D), np.nan)
    solved, converged, retried = (np.zeros((S, D), bool) for _ in range(3))
    start = np.full((S, D), -1, np.int8)
    tau, log_p = np.full((S, D, n), np.nan), np.full((S, D, q.size), np.nan)
    for (j, i), row in cells.items():
        k = col[i]
        for name, _, _ in cell_vars:
            data[name][j, k] = row[name]
        data["seconds"][j, k] = row["seconds"]
        solved[j, k], converged[j, k], retried[j, k], start[j, k] = True, row["converged"], row["retried"], row["start"]
        tau[j, k], log_p[j, k] = row["tau"], row["log_p"]
    v = {name: (("s2", "dataset"), data[name], {"long_name": doc}) for name, _, doc in cell_vars}
    v["seconds"] = (("s2", "dataset"), data["seconds"], {"long_name": "wall time of the solve(s), s"})
    v["solved"] = (("s2", "dataset"), solved, {"long_name": "this cell has been solved"})
    v["converged"] = (("s2", "dataset"), converged, {"long_name": f"residual < {fn.RESIDUAL_OK}"})
    v["retried"] = (("s2", "dataset"), retried, {"long_name": "the first solve did not converge and was retried"})
    v["start"] = (("s2", "dataset"), start, {"long_name": "start of the kept solution", "flag_values": np.array(list(STARTS), np.int8),
                                             "flag_meanings": " ".join(STARTS.values())})
    v["tau"] = (("s2", "dataset", "point"), tau, {"long_name": "frozen tau = t/s2 on the training points"})
    v["log_p"] = (("s2", "dataset", "q"), log_p, {"long_name": "log p(q) on the q grid (up to a constant)"})
    ok = solved & converged
    means = [(name, data[f"{name}_dataset"], f"finite-n {doc}") for name, doc in (
        ("linear_learned", "1 - b"), ("cubic_learned", "1 - c/eps"), ("droplet_mass", "droplet mass"))]
    if params.get("one_loop"):
        for short in ("linear", "cubic"):
            loop = data[f"{short}_one_loop_dataset"]
            means += [(f"{short}_one_loop", loop, "one-loop (1/N) correction"),
                      (f"{short}_corrected", data[f"{short}_learned_dataset"] + loop,
                       "finite-n theory + its one-loop (1/N) correction: the finite-N prediction")]
    for name, cell, doc in means:
        mean = np.array([cell[j, ok[j]].mean() if ok[j].any() else np.nan for j in range(S)])
        err = np.array([float(sem(cell[j, ok[j]], single=np.nan)) for j in range(S)])
        v[name] = (("s2",), mean, {"long_name": f"{doc}: mean over converged data sets"})
        v[f"{name}_sem"] = (("s2",), err, {"long_name": "standard error over converged data sets (NaN below 2)"})
    v["n_converged"] = (("s2",), ok.sum(axis=1).astype(np.int64))
    v["n_solved"] = (("s2",), solved.sum(axis=1).astype(np.int64))
    v["ek_linear_learned"] = (("s2",), ek[0], {"long_name": "exact (q, t) EK theory 1 - b at the same point"})
    v["ek_cubic_learned"] = (("s2",), ek[1], {"long_name": "exact (q, t) EK theory 1 - c/eps at the same point"})
    coords = {"s2": ("s2", s2, {"long_name": "sigma^2 of the solved model (scaled)"}),
              "s2_reference": ("s2", np.asarray(params["s2_reference"]), {"long_name": "sigma^2 at beta = 1"}),
              "dataset": ("dataset", np.asarray(ds_idx, np.int64), {"long_name": "the simulations' data-set index"}),
              "q": ("q", q), "point": ("point", np.arange(n))}
    out = xr.Dataset(v, coords=coords)
    return annotate(out, kind=KIND, parameters=params,
                    seeds={"seed": params["seed"], "sampler_seed": params["sampler_seed"], "datasets": ds_idx},
                    extra={"residual_ok": fn.RESIDUAL_OK, "N": params["N"], "n": params["n"], "d": params["d"],
                           "sa2": params["sa2"]})


def run_finite_n(params: TeacherStudentParams, datasets: Sequence[int], *, seed: int = 0, sampler_seed: int = 1,
                 config: fn.FiniteNConfig = fn.FiniteNConfig(), retry: bool = True, beta: float = 1.0,
                 alpha: float | None = None, out: str | Path | None = None, progress=None,
                 one_loop: bool = False) -> xr.Dataset:
    """The finite-n mean-field theory (:func:`grokphase.theory.finite_n.solve_finite_n`) at every sigma^2 of
    ``params`` on the simulations' training sets ``datasets`` (indices; data set i of simulation seed
    ``seed``), as an annotated xarray Dataset of kind :data:`KIND`.

    Args:
      params: one model point (N, n, d integer sizes, sa2, sw2, eps scalars) with ``s2`` one value or a
        1-D array of distinct values (the solved model's, already scaled: :func:`scaled_point`).
      datasets: distinct data-set indices >= 0.
      seed: the simulations' seed (data set i is ``dataset_key(seed, i)``).
      sampler_seed: the sampler's key of data set i is fold_in(PRNGKey(sampler_seed), i) at every sigma^2.
      config: the solver settings.
      retry: retry a run-away solve once (:func:`solve_with_retry`; sigma^2 is solved from the largest down,
        so a continuation start is the nearest larger sigma^2's converged solution of the same data set).
      beta: the Table-1 beta the point came from (recorded; ``s2_reference = s2 beta/alpha``).
      alpha: the Table-1 alpha (default ``beta``; recorded).
      out: a netCDF path: rewritten atomically after every finished (sigma^2, data set) solve, so an
        interrupted run loses at most the solve in progress; if it exists, its solved cells are kept and
        skipped (resume; data sets of the file not asked for now are kept too) — a file written with
        other parameters is a :class:`ParameterError` naming them.
      progress: a tqdm-like bar (``reset(total=)``, ``update()``, ``set_postfix_str()``), one step per solve.
      one_loop: also the one-loop (first order in 1/N) finite-width correction of every cell
        (:func:`grokphase.theory.finite_n.one_loop_correction`): variables ``linear_one_loop_dataset``,
        ``cubic_one_loop_dataset`` with their ``*_mc_error``, and over s2 ``linear_one_loop``,
        ``cubic_one_loop`` and the finite-N predictions ``linear_corrected``, ``cubic_corrected`` (finite n +
        one loop), each with ``*_sem``.  Off, the file is the same as before this option existed.

    Returns:
      Variables over (s2, dataset): ``linear_learned_dataset``, ``cubic_learned_dataset`` and their
      ``*_mc_error`` (batch means), ``droplet_mass_dataset``, ``residual`` (final |grad G|/|y|),
      ``converged``, ``retried``, ``start`` (0 ek, 1 continuation, 2 half_ek), ``tail``, ``accept``,
      ``seconds``, ``solved``; ``tau`` (s2, dataset, point) and ``log_p`` (s2, dataset, q); over s2 the means
      ``linear_learned``, ``cubic_learned``, ``droplet_mass`` over converged data sets with their standard
      errors ``*_sem`` (NaN with fewer than two), ``n_converged``, ``n_solved`` and the exact EK theory
      ``ek_linear_learned``, ``ek_cubic_learned``.
    """
    alpha = beta if alpha is None else alpha
    s2 = np.atleast_1d(np.asarray(params.s2, np.float64))
    if s2.ndim != 1 or np.unique(s2).size != s2.size:
        raise ParameterError(f"s2 must be one value or distinct values, got {s2.tolist()}")
    s2 = np.sort(s2)
    for name in PARAM_NAMES:
        if name != "s2" and np.shape(getattr(params, name)) != ():
            raise ParameterError(f"{name} must be one value (only s2 may list several), got shape "
                                 f"{np.shape(getattr(params, name))}")
    points = [fn.check_params(params.replace(s2=float(v))) for v in s2]
    datasets = [_check_index(i, "every data-set index") for i in datasets]
    if not datasets:
        raise ParameterError("datasets: give at least one data-set index")
    if len(set(datasets)) != len(datasets):
        raise ParameterError(f"datasets: data set {next(i for i in datasets if datasets.count(i) > 1)} given twice")
    seed, sampler_seed = _check_index(seed, "seed"), _check_index(sampler_seed, "sampler_seed")
    run = _run_parameters(points[0], s2, beta, alpha, seed, sampler_seed, retry, config, one_loop)
    path = None if out is None else Path(out)
    cells = _resume_cells(path, run, s2.size) if path is not None and path.exists() else {}
    ek_sols = [solve_finite_d(pt) for pt in points]     # point by point: the compiled solve of the EK start
    ek = (np.array([1.0 - float(np.asarray(e.b)) for e in ek_sols]),
          np.array([1.0 - float(np.asarray(e.c)) / float(params.eps) for e in ek_sols]))
    todo = [(j, i) for i in datasets for j in range(s2.size) if (j, i) not in cells]
    if progress is not None:
        progress.reset(total=len(todo))
    n, d = int(run["n"]), int(run["d"])
    for i in datasets:
        if not any((j, i) in todo for j in range(s2.size)):
            continue
        x, y, w_star = fn.draw_dataset(fn.dataset_key(seed, i), n, d, float(params.eps))
        key = jax.random.fold_in(jax.random.PRNGKey(sampler_seed), i)
        for j in reversed(range(s2.size)):                  # largest s2 (weakest coupling) first
            if (j, i) in cells:
                continue
            if progress is not None:
                progress.set_postfix_str(f"data set {i}, s2 = {s2[j]:.4g}")
            t0 = time.perf_counter()
            above = [k for k in range(j + 1, s2.size) if cells.get((k, i), {}).get("converged")]
            previous = (float(s2[above[0]]), cells[(above[0], i)]["tau"]) if above else None
            sol, start, retried = solve_with_retry(points[j], x, y, w_star, key, config, retry=retry, previous=previous,
                                                   one_loop=one_loop)
            row = {name: float(getattr(sol, field)) for name, field, _ in _cell_vars(run)}
            row.update(converged=bool(sol.converged), retried=retried, start=start, seconds=time.perf_counter() - t0,
                       tau=np.asarray(sol.tau, np.float64), log_p=np.asarray(sol.log_p, np.float64))
            cells[(j, i)] = row
            if path is not None:
                save_dataset(_assemble(cells, s2, run, config, ek), path)
            if progress is not None:
                progress.update(1)
    return _assemble(cells, s2, run, config, ek)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--s2", type=float, default=0.17)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--datasets", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--q-size", type=int, default=24)
    ap.add_argument("--walkers", type=int, default=24)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--block-steps", type=int, default=60)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--out", required=True)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    cfg = fn.FiniteNConfig(q_size=a.q_size, walkers=a.walkers, iterations=a.iterations, steps=a.steps,
                           blocks=a.blocks, block_steps=a.block_steps, stride=a.stride)
    res = run_point(BETA_8, a.s2, a.alpha, a.datasets, a.seed, cfg, verbose=a.verbose)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "datasets"}))


if __name__ == "__main__":
    main()
