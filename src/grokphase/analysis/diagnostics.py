r"""Convergence diagnostics of saved simulation results (issue 20): is every σ² point in equilibrium and
sampled enough?

A simulation result (``sims.teacher_student``, ``sims.modular``) records per-network trajectories
``<observable>_trajectory`` with a ``time`` dimension (steps).  For every observable, σ² point and
**data set** this module computes, with ArviZ, on the records after the run's burn-in
(``param_burn_in``: records at steps <= burn-in are dropped, as the run's own averages do):

* **split-R̂** (rank-normalised, folded; Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021,
  *Bayesian Analysis* 16, 667, ``az.rhat(method="rank")``) across the **inits of one data set**.  The
  inits of a data set sample the same posterior; different data sets are quenched disorder (each its
  own posterior, with its own mean), so an R̂ across data sets would flag a perfectly mixed ensemble
  whose data sets simply differ (issue 20: two inits agree to 0.003 while the two data sets differ by
  0.03).  R̂ is therefore never computed across data sets;
* **bulk and tail ESS** (same paper; ``az.ess(method="bulk" | "tail")``), in records;
* the **integrated autocorrelation time** ``tau_int = 1 + 2 sum_t rho_t`` (Sokal 1997, Eq. 2.19), from
  ArviZ's classic (not rank-normalised) ESS with Geyer's initial monotone sequence estimator:
  ``tau_int = (chains x draws) / ESS_mean``, reported in steps (x the record spacing; the spacing is its
  resolution: records further apart than the correlation time give ``tau_int`` about one spacing);
* the **Monte Carlo standard error** of the post-burn-in mean of the data set's chains
  (``az.mcse(method="mean")``);
* an automatic **equilibration estimate** by the marginal standard error rule on batch means of 5
  records, **MSER-5** (White 1997, *Simulation* 69, 323; White, Cobb & Spratt 2000, *Proc. Winter
  Simulation Conf.*; Franklin & White 2008 for the batch size): the truncation ``d`` minimising
  ``sum_{i>d}(X_i - mean_{>d} X)^2 / (n - d)^2`` over ``d <= n/2``, computed per chain on *all* records
  (burn-in included) and the largest over the data set's inits, in steps, next to the burn-in used.

A point (observable, σ², data set) is **flagged** when R̂ > ``rhat_max`` (default 1.01), or its bulk or
tail ESS is below ``min_ess`` (default 400, i.e. 100 per chain for four chains: Vehtari et al.'s
recommendation), or R̂ is not finite.  An observable constant over every chain (an accuracy stuck at 1)
carries no information and is not flagged.  The MSER estimate is reported (``burn_in_short`` when it
exceeds the burn-in) but does not flag a point by itself: on a stationary chain MSER's cut is noisy,
while a chain still relaxing after the burn-in shows up in split-R̂.

**Layout.**  The chains of one posterior are the ``init`` dimension (teacher-student; data sets along
``dataset``) or the ``seed`` dimension (modular on the whole table, ``alpha = 1``: every seed samples
the same posterior; with ``alpha < 1`` every seed has its own data split, hence one chain per posterior,
and R̂ is refused).  Every other dimension shared by the trajectories (``s2``, and ``branch``,
``start``, ``window``, ``alpha`` where present) is a point dimension; a dimension only some
trajectories have (``degree`` of ``learned_trajectory``) is folded into the observable's name
(``learned_degree3``), skipped where it repeats another observable exactly (``linear_learned``).

Entry points: :func:`diagnose` (the diagnostics Dataset), :func:`apply_thresholds`,
:func:`flagged_points`, :func:`diagnostics_points` (JSON rows), :func:`attach_diagnostics` (store them in
a result Dataset), :func:`to_inference_data` / :func:`write_inference_data` (ArviZ export).
"""

from __future__ import annotations

import contextlib
import io as _io
import math
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from grokphase.errors import ParameterError, ResultFileError

#: default thresholds (Vehtari et al. 2021: R̂ < 1.01, bulk and tail ESS > 100 per chain, 4 chains)
DEFAULT_RHAT = 1.01
DEFAULT_MIN_ESS = 400.0
#: batch size of MSER-5 (records)
MSER_BATCH = 5
#: fewest records per chain after the burn-in: split-R̂ halves each chain, ESS needs a few lags
MIN_DRAWS = 8

#: the statistics of :func:`diagnose`, with the attrs that explain them (also used by attach_diagnostics)
STATISTICS = {
    "rhat": "rank-normalised split-R-hat across the inits (chains) of one data set, records after burn-in "
            "(Vehtari et al. 2021; az.rhat); never across data sets (quenched disorder)",
    "ess_bulk": "bulk effective sample size of the data set's chains after burn-in (az.ess, method bulk), records",
    "ess_tail": "tail effective sample size (5% and 95% quantiles; az.ess, method tail), records",
    "tau_int": "integrated autocorrelation time 1 + 2 sum rho_t in steps: chains x draws / classic ESS "
               "(Geyer initial monotone sequence) x record spacing",
    "mcse": "Monte Carlo standard error of the post-burn-in mean of the data set's chains (az.mcse, method mean)",
    "mean": "post-burn-in mean over the data set's chains",
    "equilibration": "MSER-5 equilibration estimate in steps (White 1997): records at steps <= this are "
                     "transient; largest over the data set's inits, computed on all records",
    "equilibration_at_limit": "the MSER-5 cut reached its search limit (half the records): not equilibrated "
                              "within the run",
    "burn_in_short": "the MSER-5 equilibration estimate exceeds the burn-in the run used",
}


class Layout(NamedTuple):
    """Where the chains of one posterior and the data sets are in a result's trajectories.

    chain_dim: the dimension of chains sharing one posterior (``init`` or ``seed``).  dataset_dim: the
    dimension of different posteriors (``dataset``) or None (one posterior per point).  point_dims:
    the other dimensions shared by every trajectory (``s2`` first).  burn_in: steps.  spacing: steps
    between records.  times: the record steps."""

    chain_dim: str
    dataset_dim: str | None
    point_dims: tuple[str, ...]
    burn_in: int
    spacing: int
    times: np.ndarray


@contextlib.contextmanager
def _quiet():
    """ArviZ's import-time FutureWarning and its small-sample warnings go nowhere (``--json`` prints one
    object on stdout; stderr stays for grokphase's own messages)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(_io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _arviz():
    with _quiet():
        import arviz
    return arviz


# ------------------------------------------------------------------------------------------------
# layout and observables


def _trajectory_names(ds: xr.Dataset) -> list[str]:
    return [str(k) for k, v in ds.data_vars.items() if str(k).endswith("_trajectory") and "time" in v.dims
            and v.dtype.kind in "fiu"]


def layout(ds: xr.Dataset, burn_in: int | None = None) -> Layout:
    """The :class:`Layout` of a simulation result, or a :class:`ResultFileError` / :class:`ParameterError`
    naming what makes it unfit: not a simulation result, no trajectory with a ``time`` dimension, not a
    Langevin run, unequally spaced records, fewer than 2 chains per posterior, too few records after
    the burn-in."""
    kind = str(ds.attrs.get("grokphase_kind", ""))
    if not kind.startswith("sims."):
        raise ResultFileError(f"diagnostics need a simulation result (sims.teacher_student or sims.modular), "
                              f"got {kind or 'a file without grokphase_kind'!r}")
    names = _trajectory_names(ds)
    if not names:
        raise ResultFileError("the result has no trajectories with a 'time' dimension (<observable>_trajectory): "
                              "nothing to diagnose")
    optimizer = str(ds.attrs.get("param_optimizer", "langevin"))
    if optimizer != "langevin":
        raise ResultFileError(f"the run used --optimizer {optimizer}: it samples no posterior, so R-hat and ESS "
                              "have no meaning (diagnose Langevin runs)")
    dims = set(ds[names[0]].dims)
    for n in names[1:]:
        dims &= set(ds[n].dims)
    if "s2" not in dims:
        raise ResultFileError("the trajectories have no 's2' dimension: not a simulation result")
    if "init" in dims:
        chain_dim, dataset_dim = "init", ("dataset" if "dataset" in dims else None)
    elif "seed" in dims:
        alphas = np.atleast_1d(ds["alpha"].values if "alpha" in ds.coords else ds.attrs.get("param_alpha", 1.0))
        if np.any(np.asarray(alphas, dtype=float) < 1.0) or "seed" in str(ds.attrs.get("umbrella_system_dims", "")):
            raise ResultFileError("every seed of this run has its own data split (alpha < 1): one chain per "
                                  "posterior, and R-hat needs at least 2 chains of the same posterior (run with "
                                  "alpha = 1, the whole table)")
        chain_dim, dataset_dim = "seed", None
    else:
        raise ResultFileError("the trajectories have neither an 'init' nor a 'seed' dimension: no chains to compare")
    if ds.sizes[chain_dim] < 2:
        raise ResultFileError(f"R-hat needs at least 2 chains of one posterior; the run has {ds.sizes[chain_dim]} "
                              f"{chain_dim} (rerun with --{'inits' if chain_dim == 'init' else 'seeds'} 2 or more)")
    if burn_in is None:
        burn_in = int(ds.attrs.get("param_burn_in", 0))
    elif not (isinstance(burn_in, (int, np.integer)) and burn_in >= 0):
        raise ParameterError(f"burn_in must be an integer >= 0 (steps), got {burn_in!r}")
    times = np.asarray(ds["time"].values, dtype=np.int64)
    kept = times[times > burn_in]
    if kept.size < MIN_DRAWS:
        raise ResultFileError(f"only {kept.size} record(s) per chain after the burn-in of {burn_in} steps; R-hat and "
                              f"ESS need at least {MIN_DRAWS} (record more often or run longer)")
    steps = np.diff(times)
    if np.any(steps != steps[0]):
        raise ResultFileError("the records are not equally spaced in time (--log-times?): autocorrelation times "
                              "need a constant record spacing")
    point_dims = ("s2",) + tuple(sorted(dims - {"s2", chain_dim, "time"} - ({dataset_dim} if dataset_dim else set())))
    return Layout(chain_dim, dataset_dim, point_dims, int(burn_in), int(steps[0]), times)


def observables(ds: xr.Dataset, lay: Layout | None = None) -> dict[str, xr.DataArray]:
    """Every observable trajectory as a DataArray with dims (*point_dims, [dataset_dim], chain_dim,
    time), named without ``_trajectory``; a variable with a dimension of its own (``degree``) gives
    one observable per value (``learned_degree3``), skipped where it equals an earlier one exactly."""
    lay = lay or layout(ds)
    lead = (*lay.point_dims, *((lay.dataset_dim,) if lay.dataset_dim else ()), lay.chain_dim, "time")
    out: dict[str, xr.DataArray] = {}
    for name in _trajectory_names(ds):
        da = ds[name]
        base = name[: -len("_trajectory")]
        extra = [d for d in da.dims if d not in lead]
        if not extra:
            parts = {base: da}
        elif len(extra) == 1:
            e = extra[0]
            vals = da[e].values if e in da.coords else np.arange(da.sizes[e])
            parts = {f"{base}_{e}{v}": da.isel({e: i}, drop=True) for i, v in enumerate(vals)}
        else:
            continue                      # a per-neuron or spectral record: not a scalar observable
        for key, arr in parts.items():
            arr = arr.transpose(*lead).astype(np.float64)
            if any(np.array_equal(arr.values, o.values, equal_nan=True) for o in out.values()):
                continue
            out[key] = arr
    return out


# ------------------------------------------------------------------------------------------------
# statistics of one (chain, draw) array


def mser(x: np.ndarray, batch: int = MSER_BATCH) -> tuple[int, bool]:
    """MSER-``batch`` truncation of one chain ``x`` (records): the number of leading records to discard,
    and whether the cut sits at the search limit (half the batches).  Batch means ``b_1..b_n`` of
    ``batch`` records; ``d* = argmin_{d <= n/2} sum_{i>d} (b_i - mean_{i>d} b)^2 / (n - d)^2`` (White
    1997; White, Cobb & Spratt 2000); returns ``d* x batch`` records."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size // batch
    if n < 2:
        return 0, False
    b = x[: n * batch].reshape(n, batch).mean(axis=1)
    s1 = np.cumsum(b[::-1])[::-1]                # sum_{i >= d} b_i
    s2 = np.cumsum((b * b)[::-1])[::-1]
    m = n - np.arange(n)                         # records kept after cutting d
    stat = (s2 - s1 * s1 / m) / (m * m)
    limit = n // 2
    d = int(np.argmin(stat[: limit + 1]))
    return d * batch, d == limit


def chain_statistics(x: np.ndarray) -> dict[str, float]:
    """R̂, bulk / tail / classic ESS, MCSE and mean of a (chain, draw) array with ArviZ, and
    ``tau_records = chains x draws / ESS_classic`` (the integrated autocorrelation time in records)."""
    az = _arviz()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < MIN_DRAWS:
        raise ParameterError(f"chain_statistics needs a (chain >= 2, draw >= {MIN_DRAWS}) array, got shape {x.shape}")
    with _quiet():
        out = {"rhat": float(az.rhat(x, method="rank")), "ess_bulk": float(az.ess(x, method="bulk")),
               "ess_tail": float(az.ess(x, method="tail")), "ess_mean": float(az.ess(x, method="mean")),
               "mcse": float(az.mcse(x, method="mean")), "mean": float(np.mean(x))}
    ess = out["ess_mean"]
    out["tau_records"] = x.size / ess if math.isfinite(ess) and ess > 0 else math.nan
    return out


# ------------------------------------------------------------------------------------------------
# the diagnostics Dataset


def diagnose(ds: xr.Dataset, *, burn_in: int | None = None, rhat_max: float = DEFAULT_RHAT,
             min_ess: float = DEFAULT_MIN_ESS) -> xr.Dataset:
    """Diagnostics of every observable, σ² point and data set of a simulation result ``ds`` (module
    docstring), as a Dataset with dims (``observable``, *point dims* (``s2`` first), ``dataset``) and the
    variables of :data:`STATISTICS` plus ``flagged`` and ``reason`` (:func:`apply_thresholds` at
    ``rhat_max`` and ``min_ess``).  ``burn_in`` (steps) overrides the run's ``param_burn_in``.  A run
    without a data-set dimension (modular, whole table) gets ``dataset = [0]``."""
    lay = layout(ds, burn_in)
    obs = observables(ds, lay)
    keep = lay.times > lay.burn_in
    first = next(iter(obs.values()))
    point_shape = tuple(first.sizes[d] for d in lay.point_dims)
    n_sets = first.sizes[lay.dataset_dim] if lay.dataset_dim else 1
    names = list(obs)
    shape = (len(names), *point_shape, n_sets)
    stats = {k: np.full(shape, np.nan) for k in ("rhat", "ess_bulk", "ess_tail", "tau_int", "mcse", "mean",
                                                 "equilibration")}
    at_limit = np.zeros(shape, dtype=bool)
    constant = np.zeros(shape, dtype=bool)
    for o, name in enumerate(names):
        arr = obs[name].values
        if not lay.dataset_dim:
            arr = arr[..., None, :, :]                       # one data set
        for idx in np.ndindex(*point_shape, n_sets):
            full = arr[idx]                                  # (chain, time)
            x = full[:, keep]
            at = (o, *idx)
            cuts = [mser(c) for c in full] if np.all(np.isfinite(full)) else [(full.shape[1], True)]
            cut = max(c for c, _ in cuts)
            stats["equilibration"][at] = 0 if cut == 0 else lay.times[min(cut, lay.times.size) - 1]
            at_limit[at] = any(lim for _, lim in cuts)
            if np.all(np.isfinite(x)) and np.ptp(x) == 0:
                constant[at] = True
                stats["mean"][at], stats["mcse"][at] = float(x.flat[0]), 0.0
                continue
            if not np.all(np.isfinite(x)):
                continue                                     # NaN statistics: flagged as not finite
            s = chain_statistics(x)
            for k in ("rhat", "ess_bulk", "ess_tail", "mcse", "mean"):
                stats[k][at] = s[k]
            stats["tau_int"][at] = s["tau_records"] * lay.spacing
    dims = ("observable", *lay.point_dims, "dataset")
    coords: dict[str, Any] = {"observable": np.array(names, dtype=object)}
    for d in lay.point_dims:
        coords[d] = first[d].values if d in first.coords else np.arange(first.sizes[d])
    coords["dataset"] = (first[lay.dataset_dim].values if lay.dataset_dim and lay.dataset_dim in first.coords
                         else np.arange(n_sets))
    out = xr.Dataset({k: (dims, v, {"description": STATISTICS[k]}) for k, v in stats.items()}, coords=coords)
    out["equilibration_at_limit"] = (dims, at_limit, {"description": STATISTICS["equilibration_at_limit"]})
    out["burn_in_short"] = (dims, stats["equilibration"] > lay.burn_in, {"description": STATISTICS["burn_in_short"]})
    out["constant"] = (dims, constant, {"description": "the observable takes one value in every chain after burn-in"})
    for k in ("tau_int", "equilibration"):
        out[k].attrs["units"] = "steps"
    for k in ("ess_bulk", "ess_tail"):
        out[k].attrs["units"] = "records"
    out.attrs.update(burn_in=lay.burn_in, record_spacing=lay.spacing, chain_dim=lay.chain_dim,
                     dataset_dim=lay.dataset_dim or "none", chains=int(first.sizes[lay.chain_dim]),
                     draws=int(keep.sum()), mser_batch=MSER_BATCH,
                     method="ArviZ rank-normalised split-R-hat, bulk/tail ESS, MCSE (Vehtari et al. 2021); "
                            "tau_int from the classic ESS; MSER-5 (White 1997)")
    return apply_thresholds(out, rhat_max=rhat_max, min_ess=min_ess)


def apply_thresholds(diag: xr.Dataset, *, rhat_max: float = DEFAULT_RHAT,
                     min_ess: float = DEFAULT_MIN_ESS) -> xr.Dataset:
    """``diag`` with ``flagged`` (bool) and ``reason`` (text, "" when not flagged) at these thresholds: R̂ >
    ``rhat_max``, bulk or tail ESS < ``min_ess``, or R̂ not finite on a non-constant observable."""
    if not (math.isfinite(rhat_max) and rhat_max > 1.0):
        raise ParameterError(f"rhat_max must be a finite number > 1, got {rhat_max!r}")
    if not (math.isfinite(min_ess) and min_ess > 0):
        raise ParameterError(f"min_ess must be a finite number > 0, got {min_ess!r}")
    rhat, bulk, tail = (diag[k].values for k in ("rhat", "ess_bulk", "ess_tail"))
    constant = diag["constant"].values
    reasons = np.full(rhat.shape, "", dtype=object)
    flagged = np.zeros(rhat.shape, dtype=bool)
    for idx in np.ndindex(*rhat.shape):
        if constant[idx]:
            continue
        why = []
        if not math.isfinite(rhat[idx]):
            why.append("R-hat not finite (non-finite values or chains frozen at different values)")
        elif rhat[idx] > rhat_max:
            why.append(f"R-hat {rhat[idx]:.3f} > {rhat_max:g}")
        if math.isfinite(bulk[idx]) and bulk[idx] < min_ess:
            why.append(f"bulk ESS {bulk[idx]:.0f} < {min_ess:g}")
        if math.isfinite(tail[idx]) and tail[idx] < min_ess:
            why.append(f"tail ESS {tail[idx]:.0f} < {min_ess:g}")
        flagged[idx] = bool(why)
        reasons[idx] = "; ".join(why)
    out = diag.copy()
    dims = diag["rhat"].dims
    out["flagged"] = (dims, flagged, {"description": f"R-hat > {rhat_max:g}, bulk or tail ESS < {min_ess:g}, or "
                                                     "R-hat not finite"})
    out["reason"] = (dims, reasons.astype(str), {"description": "why the point is flagged (empty: not flagged)"})
    out.attrs.update(rhat_max=float(rhat_max), min_ess=float(min_ess))
    return out


class FlaggedPoint(NamedTuple):
    """A point that fails the thresholds: observable, σ², data set, the other point coordinates
    (``where``: branch, start, window, alpha where present) and the reason as text."""

    observable: str
    s2: float
    dataset: int
    reason: str
    where: dict


def _rows(diag: xr.Dataset):
    dims = diag["rhat"].dims
    for idx in np.ndindex(*diag["rhat"].shape):
        coords = {d: diag[d].values[i] for d, i in zip(dims, idx)}
        yield idx, coords


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def flagged_points(diag: xr.Dataset) -> list[FlaggedPoint]:
    """Every flagged (observable, σ², data set) of a :func:`diagnose` result, with its reason."""
    out = []
    for idx, c in _rows(diag):
        if diag["flagged"].values[idx]:
            where = {d: _plain(v) for d, v in c.items() if d not in ("observable", "s2", "dataset")}
            out.append(FlaggedPoint(str(c["observable"]), float(c["s2"]), int(c["dataset"]),
                                    str(diag["reason"].values[idx]), where))
    return out


def _num(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def diagnostics_points(diag: xr.Dataset) -> list[dict]:
    """The JSON rows of ``grokphase diagnose --json``: one dict per (observable, point, data set) with
    ``s2, dataset, observable, rhat, ess_bulk, ess_tail, tau_int, mcse, equilibration, burn_in, flagged,
    reason`` (and ``mean``, ``burn_in_short``, ``equilibration_at_limit``, and branch / start / window /
    alpha where present); non-finite numbers are None."""
    out = []
    burn_in = int(diag.attrs["burn_in"])
    for idx, c in _rows(diag):
        row = {"s2": float(c["s2"]), "dataset": int(c["dataset"]), "observable": str(c["observable"])}
        row.update({d: _plain(v) for d, v in c.items() if d not in row})
        for k in ("rhat", "ess_bulk", "ess_tail", "tau_int", "mcse", "mean", "equilibration"):
            row[k] = _num(diag[k].values[idx])
        row.update(burn_in=burn_in, flagged=bool(diag["flagged"].values[idx]), reason=str(diag["reason"].values[idx]),
                   burn_in_short=bool(diag["burn_in_short"].values[idx]),
                   equilibration_at_limit=bool(diag["equilibration_at_limit"].values[idx]))
        out.append(row)
    return out


#: the prefix of the diagnostics stored in a result Dataset by :func:`attach_diagnostics`
PREFIX = "diagnostics_"


def attach_diagnostics(ds: xr.Dataset, diag: xr.Dataset) -> xr.Dataset:
    """``ds`` with the diagnostics stored as ``diagnostics_<statistic>`` (dims ``diagnostics_observable``,
    the point dims and ``dataset``; a run without data sets, modular on the whole table, has no
    ``dataset`` dim there), each with a ``description`` attribute, and the file attributes
    ``diagnostics_rhat_max``, ``diagnostics_min_ess``, ``diagnostics_burn_in`` and ``diagnostics_flagged``
    (the number of flagged points).  Earlier ``diagnostics_*`` variables are replaced."""
    d = diag
    if d.attrs.get("dataset_dim") == "none":
        d = d.isel(dataset=0, drop=True)
    d = d.rename({"observable": PREFIX + "observable"})
    out = ds.drop_vars([k for k in ds.variables if str(k).startswith(PREFIX)])
    for k, v in d.data_vars.items():
        var = v.copy()
        if var.dtype == bool:
            var = var.astype(np.int8)                         # netCDF has no boolean type
            var.attrs["description"] = v.attrs.get("description", "") + " (1 = yes)"
        out[PREFIX + str(k)] = var
    out = out.assign_coords({PREFIX + "observable": d[PREFIX + "observable"].values.astype(str)})
    out.attrs.update({PREFIX + "rhat_max": float(diag.attrs["rhat_max"]),
                      PREFIX + "min_ess": float(diag.attrs["min_ess"]),
                      PREFIX + "burn_in": int(diag.attrs["burn_in"]),
                      PREFIX + "flagged": int(np.sum(diag["flagged"].values)),
                      PREFIX + "method": str(diag.attrs["method"])})
    return out


# ------------------------------------------------------------------------------------------------
# ArviZ export


def _label(value) -> str:
    value = _plain(value)
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def to_inference_data(ds: xr.Dataset, *, burn_in: int | None = None, source: str | None = None):
    """An ``arviz.InferenceData`` of a simulation result: one ``posterior`` variable per observable, σ²
    point and data set (named ``<observable>__s2_<s2>__dataset_<k>``, plus ``__<dim>_<value>`` for
    branch / start / window / alpha), dims (``chain`` = the inits of that data set, ``draw`` = the
    records after the burn-in, coordinate = their step); so ``az.summary`` / ``az.plot_trace`` treat
    each data set as its own posterior, never pooling data sets.  Each variable's attrs give its
    observable, s2, data set and the burn-in."""
    az = _arviz()
    lay = layout(ds, burn_in)
    keep = lay.times > lay.burn_in
    variables, attrs = {}, {}
    for name, arr in observables(ds, lay).items():
        if not lay.dataset_dim:
            arr = arr.expand_dims(dataset=[0], axis=len(lay.point_dims))
        other = lay.point_dims + ("dataset" if not lay.dataset_dim else lay.dataset_dim,)
        for idx in np.ndindex(*(arr.sizes[d] for d in other)):
            sub = arr.isel(dict(zip(other, idx)))
            c = {d: (sub[d].values if d in sub.coords else idx[i]) for i, d in enumerate(other)}
            key = f"{name}__s2_{_label(c['s2'])}__dataset_{_label(c[other[-1]])}"
            key += "".join(f"__{d}_{_label(c[d])}" for d in lay.point_dims[1:])
            variables[key] = np.asarray(sub.values, dtype=np.float64)[:, keep]
            attrs[key] = {"observable": name, **{("dataset" if d == other[-1] else d): _label(c[d]) for d in other}}
    draws = lay.times[keep]
    meta = {"source": source or "none", "source_kind": str(ds.attrs.get("grokphase_kind")), "burn_in": lay.burn_in,
            "record_spacing": lay.spacing, "chain_dim": lay.chain_dim,
            "note": "one variable per observable, s2 and data set; chains = the inits of that data set; draw = "
                    "step of the record (after burn-in)"}
    with _quiet():
        idata = az.from_dict(posterior=variables, coords={"draw": draws}, attrs=meta)
    idata.posterior.attrs.update(meta)
    for key, a in attrs.items():
        idata.posterior[key].attrs.update({**a, "burn_in": lay.burn_in})
    return idata


def write_inference_data(idata, path: str | os.PathLike) -> Path:
    """Write ``idata`` (``to_netcdf``) atomically, like :func:`grokphase.io.save_dataset`: a temporary
    file in the target directory, mode ``0o666`` less the umask, fsync, rename."""
    from grokphase.io import atomic_path, provenance, writes_files
    path = Path(path)
    if not writes_files():              # multi-process runs: process 0 writes
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = {k: str(v) for k, v in provenance().items()}
    idata.attrs.update(prov)
    for group in idata.groups():
        getattr(idata, group).attrs.update(prov)
    with atomic_path(path) as tmp, _quiet():
        idata.to_netcdf(tmp, engine="h5netcdf")
    return path
