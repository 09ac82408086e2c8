r"""Paper App. D: time-dependent grokking of the teacher-student model at finite n (Figs. 4, 5, 6).

App. D trains 50 networks per width for 7e6 epochs of Langevin dynamics from the prior at

    n = 600, d = 150, eps = -1.2, s2 = 0.05, sa2 = 0.011, sw2 = 0.5,  N in {2800, 1400, 700}

(the readout prior a_i ~ N(0, sa2/N) with sa2 fixed, so u = n^2 sa2/(s2^2 d N) grows as N shrinks
and the narrowest width sits deepest in the droplet phase), and shows

* Fig. 4: -log p(q), the histogram of q = w.w* over all neurons of all networks, per width;
* Fig. 5: train and test MSE against log time, ensemble mean and individual networks;
* Fig. 6: the output's projections on the linear (H1) and cubic (eps H3) target components,
  measured on the training and on the test points, against log time.

This module is the library behind ``grokphase reproduce fig4|fig5|fig6``:

* :func:`appd_sims` turns an experiment definition (``sims/appD_*.toml``, parsed) into one
  :class:`~grokphase.sims.teacher_student.TeacherStudentSim` per width, with the Table-1 scaling
  (N -> beta N, d -> sqrt(beta) d, sa2 -> sa2/sqrt(beta), s2 -> (alpha/beta) s2, n -> alpha n; the
  invariants u, r, sw2, eps are kept) applied to the App. D numbers;
* :func:`combine` stacks the per-width result Datasets along a ``width`` dimension and adds the
  finite-d theory (THEORY.md §3) at exactly each width's simulated sizes;
* :func:`plot_fig4`, :func:`plot_fig5`, :func:`plot_fig6` draw the figures from the combined Dataset
  (never recomputing anything);
* :func:`appd_summary` gives the numbers the figures show, as JSON-able floats.

Every width uses the same ``seed``, so data set k is the same training set (same teacher w*, same
inputs) at every width: differences between widths are not data-set noise.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np
import xarray as xr

from grokphase.analysis.single_index import require_paper_model
from grokphase.errors import ParameterError, SolverError
from grokphase.io import _jsonable, annotate, parameters_of
from grokphase.sims.teacher_student import TeacherStudentSim
from grokphase.stats import grouped_sem, sem
from grokphase.theory.teacher_student import TeacherStudentParams, log_density, solve_finite_d

#: the App. D configuration at beta = 1 (eq. 44 of the paper) and its three widths
PAPER = {"n": 600.0, "d": 150.0, "s2": 0.05, "sa2": 0.011, "sw2": 0.5, "eps": -1.2}
PAPER_WIDTHS = (2800.0, 1400.0, 700.0)
KIND = "appd.teacher_student"

#: keys of the ``[appd]`` table (beta = 1 model, scaling, ensemble and dynamics)
_MODEL_KEYS = ("widths", "n", "d", "s2", "sa2", "sw2", "eps")
_RUN_KEYS = ("beta", "alpha", "datasets", "inits", "seed", "steps", "burn_in", "lr", "record_every",
             "log_times", "dtype", "n_test", "q_bins", "q_max")
_TOP_KEYS = {"model", "out_dir", "host_devices", "appd", "description"}
#: record-time series the figures draw (per network)
_SERIES = ("train_mse", "test_mse", "linear_learned", "cubic_learned", "linear_learned_train",
           "cubic_learned_train", "linear_learned_test", "cubic_learned_test", "w_norm2")


# ------------------------------------------------------------------------------------------------
# experiment definition -> simulations
# ------------------------------------------------------------------------------------------------


def _number(table: dict, key: str, default, *, positive: bool = True, integer: bool = False):
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"[appd] {key} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ParameterError(f"[appd] {key} must be > 0, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ParameterError(f"[appd] {key} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def appd_sims(spec: dict) -> list:
    """One :class:`~grokphase.sims.teacher_student.TeacherStudentSim` per width, from a parsed
    experiment definition (``sims/appD_quick.toml``, ``sims/appD_paper.toml``).

    ``spec`` has top-level ``model`` (must be "teacher-student"), ``out_dir``, ``host_devices``,
    ``description`` (all optional) and a table ``[appd]``:

    * the beta = 1 model (defaults: App. D, eq. 44): ``widths`` (list of N, default [2800, 1400, 700]),
      ``n``, ``d``, ``s2``, ``sa2`` (fixed across widths: the readout prior is a_i ~ N(0, sa2/N)),
      ``sw2``, ``eps``;
    * the Table-1 scaling ``beta``, ``alpha`` (default alpha = beta): N -> beta N, d -> sqrt(beta) d,
      n -> alpha n (rounded to integers), sa2 -> sa2/sqrt(beta), s2 -> (alpha/beta) s2;
    * the ensemble and dynamics: ``datasets``, ``inits``, ``seed``, ``steps``, ``burn_in`` (default
      steps/2), ``lr`` (preconditioned, dimensionless; stable for lr s2 < 2), ``record_every`` (the
      first record time; with ``log_times``, default true, 20 record times per decade follow), ``dtype``, ``n_test``, ``q_bins``, ``q_max``.

    Unknown keys and bad values raise :class:`~grokphase.errors.ParameterError` naming them.  The
    sims are returned in the order of ``widths``.
    """

    if not isinstance(spec, dict):
        raise ParameterError(f"an App. D experiment definition must be a table, got {type(spec).__name__}")
    unknown = sorted(set(spec) - _TOP_KEYS)
    if unknown:
        raise ParameterError(f"unknown top-level key(s) {', '.join(unknown)} in the App. D definition "
                             f"(allowed: {', '.join(sorted(_TOP_KEYS))})")
    model = spec.get("model", "teacher-student")
    if model != "teacher-student":
        raise ParameterError(f"App. D is the teacher-student model; got model = {model!r}")
    table = spec.get("appd")
    if not isinstance(table, dict):
        raise ParameterError("the App. D definition needs an [appd] table")
    unknown = sorted(set(table) - set(_MODEL_KEYS) - set(_RUN_KEYS))
    if unknown:
        raise ParameterError(f"unknown key(s) {', '.join(unknown)} in [appd] (allowed: "
                             f"{', '.join(_MODEL_KEYS + _RUN_KEYS)})")
    widths = table.get("widths", list(PAPER_WIDTHS))
    if not isinstance(widths, (list, tuple)) or not widths:
        raise ParameterError(f"[appd] widths must be a non-empty list of widths N, got {widths!r}")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ParameterError(f"[appd] widths must be finite numbers > 0, got {widths!r}")
    model_values = {k: _number(table, k, PAPER[k], positive=(k != "eps")) for k in PAPER}
    if model_values["eps"] == 0:
        raise ParameterError("[appd] eps must be nonzero (the cubic learned fraction divides by it)")
    beta = _number(table, "beta", 1.0)
    alpha = _number(table, "alpha", beta)
    steps = _number(table, "steps", 10000, integer=True)
    burn_in = _number(table, "burn_in", steps // 2, positive=False, integer=True)
    log_times = table.get("log_times", True)
    if not isinstance(log_times, bool):
        raise ParameterError(f"[appd] log_times must be true or false, got {log_times!r}")
    dtype = table.get("dtype", "float32")
    if not isinstance(dtype, str):
        raise ParameterError(f"[appd] dtype must be a string (float32 or float64), got {dtype!r}")
    run = {"datasets": _number(table, "datasets", 8, integer=True),
           "inits": _number(table, "inits", 1, integer=True),
           "seed": _number(table, "seed", 0, positive=False, integer=True),
           "steps": steps, "burn_in": burn_in, "lr": _number(table, "lr", 0.5),
           "record_every": _number(table, "record_every", 10, integer=True),
           "log_times": log_times, "dtype": dtype,
           "n_test": _number(table, "n_test", 3000, integer=True),
           "q_bins": _number(table, "q_bins", 240, integer=True),
           "q_max": _number(table, "q_max", 2.0)}
    if run["seed"] < 0:
        raise ParameterError(f"[appd] seed must be >= 0, got {run['seed']}")
    s2 = model_values.pop("s2")
    sims = []
    for w in widths:
        base = TeacherStudentParams(N=float(w), s2=s2, **model_values)
        sim = TeacherStudentSim.from_scaling(base, beta=beta, alpha=alpha, s2=[s2], **run)
        if sim.lr * sim.s2[0] >= 2.0:
            raise ParameterError(f"[appd] lr = {sim.lr:g} is unstable at s2 = {sim.s2[0]:g}: the preconditioned "
                                 f"Langevin chain needs lr * s2 < 2")
        sims.append(sim)
    if len({s.N for s in sims}) != len(sims):
        raise ParameterError(f"[appd] widths {list(widths)} give repeated N after scaling and rounding: "
                             f"{[s.N for s in sims]}")
    return sims


# ------------------------------------------------------------------------------------------------
# combining per-width results
# ------------------------------------------------------------------------------------------------


def _theory(sims_params: list[dict], q_line: np.ndarray) -> dict:
    """The finite-d theory at each width's simulated sizes: learned fractions, droplet fraction,
    phase, and -log p(q) on ``q_line`` (NaN where the solver fails, with the reason)."""

    W = len(sims_params)
    out = {k: np.full(W, np.nan) for k in ("linear_learned", "cubic_learned", "droplet_fraction", "phase",
                                            "q_barrier", "q_droplet", "u", "r")}
    out["minus_log_p"] = np.full((W, q_line.size), np.nan)
    out["status"] = ["ok"] * W
    for i, p in enumerate(sims_params):
        params = TeacherStudentParams(N=float(p["N"]), n=float(p["n"]), d=float(p["d"]), s2=float(p["s2"][0]),
                                      sa2=float(p["sa2"]), sw2=float(p["sw2"]), eps=float(p["eps"]))
        out["u"][i], out["r"][i] = float(params.u), float(params.r)
        try:
            # the same call as the simulation's droplet_thresholds (one point, density grid): its
            # compiled solver is reused instead of compiling one per grid size
            sol = solve_finite_d(params, density=True)
        except SolverError as err:
            out["status"][i] = str(err)
            continue
        for k in ("linear_learned", "cubic_learned", "droplet_fraction", "phase", "q_barrier", "q_droplet"):
            out[k][i] = float(np.asarray(getattr(sol, k)))
        out["minus_log_p"][i] = -np.asarray(log_density(sol, params, q_line), np.float64)
    return out


def combine(datasets: Sequence[xr.Dataset]) -> xr.Dataset:
    """One Dataset with a ``width`` dimension (coordinate: the simulated N) from the per-width
    results of :func:`~grokphase.sims.teacher_student.run_teacher_student` (one s2 each).

    The single s2 dimension is dropped (s2 becomes a scalar coordinate).  Widths are sorted from
    widest to narrowest.  Added: the run time of each width (``seconds``, ``network_steps_per_second``),
    the finite-d theory at each width's exact sizes (``theory_*``; -log p(q) on ``q_line``), and the
    attributes: the common parameters (``param_*``, ``parameters_json``), every width's full
    parameters (``width_parameters_json``), the seeds, and the provenance of this combination plus
    each width's own (``width_provenance_json``: git revision, creation time, command, backend).
    """

    datasets = list(datasets)
    if not datasets:
        raise ParameterError("combine needs at least one per-width result")
    params = []
    for k, ds in enumerate(datasets):
        if ds.attrs.get("grokphase_kind") != "sims.teacher_student":
            raise ParameterError(f"result {k} is not a teacher-student simulation "
                                 f"(grokphase_kind = {ds.attrs.get('grokphase_kind')!r})")
        if ds.sizes.get("s2") != 1:
            raise ParameterError(f"result {k} has {ds.sizes.get('s2')} s2 values; App. D runs one s2 per width")
        require_paper_model(ds, "App. D's grokking-in-time analysis")
        params.append(parameters_of(ds))
    varying = {"N"}
    common_keys = [k for k in params[0] if k not in varying]
    for k, p in enumerate(params[1:], start=1):
        diff = [key for key in common_keys if json.dumps(_jsonable(p.get(key))) != json.dumps(_jsonable(params[0][key]))]
        if diff:
            raise ParameterError(f"result {k} differs from result 0 in {', '.join(diff)}: App. D widths must share "
                                 "every parameter but N (combine results of one appd_sims call)")
    Ns = [int(p["N"]) for p in params]
    if len(set(Ns)) != len(Ns):
        raise ParameterError(f"repeated widths N = {Ns}")
    order = np.argsort(Ns)[::-1]
    datasets = [datasets[i] for i in order]
    params = [params[i] for i in order]
    Ns = [Ns[i] for i in order]

    keep = [name for name in datasets[0].data_vars if "s2" in datasets[0][name].dims or name in ("q_edges",)]
    parts = []
    for ds, N in zip(datasets, Ns):
        part = ds[keep].isel(s2=0)
        part = part.drop_vars("q_edges").expand_dims(width=[N])
        part["seconds"] = (("width",), [float(ds.attrs.get("seconds", np.nan))])
        part["network_steps_per_second"] = (("width",), [float(ds.attrs.get("network_steps_per_second", np.nan))])
        part["d_width"] = (("width",), [int(ds.attrs["d"])])
        part["n_width"] = (("width",), [int(ds.attrs["n"])])
        part.attrs = {}
        parts.append(part)
    out = xr.concat(parts, dim="width", combine_attrs="drop", coords="minimal", compat="override")
    out["q_edges"] = datasets[0]["q_edges"]
    out["width"].attrs["long_name"] = "hidden width N (simulated)"
    q_max = float(params[0]["q_max"])
    q_line = np.linspace(-q_max, q_max, 801)
    th = _theory(params, q_line)
    out = out.assign_coords(q_line=q_line)
    for k in ("linear_learned", "cubic_learned", "droplet_fraction", "phase", "q_barrier", "q_droplet", "u", "r"):
        out[f"theory_{k}"] = (("width",), th[k])
    out["theory_minus_log_p"] = (("width", "q_line"), th["minus_log_p"])
    out["theory_minus_log_p"].attrs["long_name"] = "finite-d theory's -log p(q) at the simulated sizes"

    common = {k: params[0][k] for k in common_keys}
    common["widths"] = Ns
    base_widths = [float(N) / float(params[0]["beta"]) for N in Ns]
    provenance = [{k: ds.attrs.get(k) for k in ("git_revision", "git_dirty", "created_utc", "command", "jax_backend",
                                                "grokphase_version")} for ds in datasets]
    extra = {"width_parameters_json": json.dumps(_jsonable(params)),
             "width_provenance_json": json.dumps(_jsonable(provenance)),
             "theory_status_json": json.dumps(th["status"]),
             "widths_beta1": np.asarray(base_widths), "d": int(params[0]["d"]), "n": int(params[0]["n"]),
             "sa2": float(params[0]["sa2"]), "s2_value": float(params[0]["s2"][0]),
             "record_times": "log" if params[0].get("log_times") else "linear",
             "total_seconds": float(np.nansum(out["seconds"].values))}
    return annotate(out, kind=KIND, parameters=common,
                    seeds={"seed": params[0]["seed"], "datasets": params[0]["datasets"], "inits": params[0]["inits"]},
                    extra=extra)


# ------------------------------------------------------------------------------------------------
# summary numbers
# ------------------------------------------------------------------------------------------------


def _check(ds: xr.Dataset) -> None:
    if ds.attrs.get("grokphase_kind") != KIND or "width" not in ds.dims:
        raise ParameterError(f"expected a combined App. D dataset (grokphase_kind = {KIND!r}, a width dimension); "
                             f"got kind {ds.attrs.get('grokphase_kind')!r}")


def _networks(ds: xr.Dataset, name: str, i: int) -> np.ndarray:
    """(networks, time) trajectories of width index i; networks ordered data set major."""
    v = np.asarray(ds[f"{name}_trajectory"].values[i], np.float64)         # (dataset, init, time)
    return v.reshape(-1, v.shape[-1])


def _mean_sem(values: np.ndarray, datasets: int, inits: int) -> tuple[float, float]:
    """Ensemble mean and its standard error over data sets (each the mean of its inits; over inits
    when there is one data set; NaN with a single network)."""
    v = np.asarray(values, np.float64).reshape(datasets, inits)
    return float(v.mean(axis=1).mean() if datasets >= 2 else v.mean()), float(grouped_sem(v, single=np.nan))


def crossing_time(times: np.ndarray, values: np.ndarray) -> float:
    """First record time at which ``values`` reaches the midpoint between its first and last value
    (from the side of the first value); NaN if the series is constant."""
    times, values = np.asarray(times), np.asarray(values, np.float64)
    first, last = values[0], values[-1]
    if not np.isfinite(first) or not np.isfinite(last) or first == last:
        return float("nan")
    mid = 0.5 * (first + last)
    reached = values <= mid if last < first else values >= mid
    return float(times[int(np.argmax(reached))])


def appd_summary(ds: xr.Dataset) -> dict:
    """JSON-able numbers of Figs. 4-6, per width (widest first):

    * ``final_*``: the last record time's ensemble mean and standard error (over data sets) of the
      train and test MSE and of the exact population projections (``linear_learned``,
      ``cubic_learned``) and the test-set ones (``*_test``);
    * ``initial_train_mse`` / ``initial_test_mse``: the same at the first record time;
    * ``t_half_train``, ``t_half_test``: the first record time at which the ensemble-mean train
      (test) MSE has covered half of its change from the first to the last record
      (:func:`crossing_time`), and their ratio ``grok_delay`` = t_half_test / t_half_train;
    * ``droplet_fraction`` (after burn-in, ± SEM) and the finite-d theory's learned fractions and
      droplet fraction at the same sizes.
    """
    _check(ds)
    D, I = int(ds.sizes["dataset"]), int(ds.sizes["init"])
    times = np.asarray(ds["time"].values)
    widths = []
    for i, N in enumerate(ds["width"].values):
        row: dict[str, Any] = {"N": int(N), "d": int(ds["d_width"].values[i]), "n": int(ds["n_width"].values[i]),
                               "u": float(ds["theory_u"].values[i]), "r": float(ds["theory_r"].values[i])}
        for name in ("train_mse", "test_mse", "linear_learned", "cubic_learned", "linear_learned_test",
                     "cubic_learned_test"):
            traj = _networks(ds, name, i)
            row[f"final_{name}"], row[f"final_{name}_sem"] = _mean_sem(traj[:, -1], D, I)
            if name.endswith("mse"):
                row[f"initial_{name}"] = float(traj[:, 0].mean())
        tr = _networks(ds, "train_mse", i).mean(axis=0)
        te = _networks(ds, "test_mse", i).mean(axis=0)
        row["t_half_train"] = crossing_time(times, tr)
        row["t_half_test"] = crossing_time(times, te)
        row["grok_delay"] = (row["t_half_test"] / row["t_half_train"]
                             if np.isfinite(row["t_half_train"]) and row["t_half_train"] > 0 else float("nan"))
        frac = np.asarray(ds["droplet_fraction_network"].values[i], np.float64).reshape(-1)
        row["droplet_fraction"], row["droplet_fraction_sem"] = _mean_sem(frac, D, I)
        for k in ("linear_learned", "cubic_learned", "droplet_fraction"):
            row[f"theory_{k}"] = float(ds[f"theory_{k}"].values[i])
        row["seconds"] = float(ds["seconds"].values[i])
        widths.append(row)

    return _jsonable({"kind": "appD", "s2": float(ds.attrs["s2_value"]), "steps": int(times[-1]),
                      "networks_per_width": D * I, "record_times": int(times.size),
                      "total_seconds": float(ds.attrs.get("total_seconds", np.nan)), "widths": widths})


def q_density_all_bins(ds: xr.Dataset, i: int, n_sub: int = 5):
    """-log p(q) of width index i over all neurons, networks and record times after burn-in (as
    :func:`grokphase.analysis.q_density`, App. C recipe), keeping every bin with counts: droplet
    bins are often empty in some sub-ensembles (few networks hold a droplet), and dropping them
    would hide the droplets.  Error bars (standard error over ``n_sub`` disjoint sub-ensembles of
    networks) are NaN where a sub-ensemble has no count.  Returns (q, minus_log_p, err)."""
    q = np.asarray(ds["q"].values)
    width = float(np.diff(np.asarray(ds["q_edges"].values)).mean())
    hist = np.asarray(ds["q_hist"].values[i], np.float64).reshape(-1, q.size)
    over = np.asarray(ds["q_overflow"].values[i], np.float64).reshape(-1)
    p = hist.sum(axis=0) / ((hist.sum() + over.sum()) * width)
    groups = np.array_split(np.arange(hist.shape[0]), min(n_sub, hist.shape[0]))
    with np.errstate(divide="ignore"):
        sub = np.asarray([-np.log(hist[g].sum(axis=0) / ((hist[g].sum() + over[g].sum()) * width)) for g in groups])
    keep = p > 0
    if len(groups) > 1:
        kept = sub[:, keep]
        finite = np.all(np.isfinite(kept), axis=0)
        err = np.full(kept.shape[1], np.nan)
        err[finite] = sem(kept[:, finite], axis=0)
    else:
        err = np.full(int(keep.sum()), np.nan)
    return q[keep], -np.log(p[keep]), err
