r"""Standard errors of ensemble averages: the one implementation every layer uses.

An ensemble value is the mean over independent units (data sets, seeds, inits); its standard error
is the sample standard deviation over the units divided by sqrt(units) (``ddof=1``).  Three shapes
of the question occur:

* :func:`sem`: units along one axis, sqrt(var_{ddof=1} / n);
* :func:`grouped_sem`: units nested as (group, member) on the last two axes, e.g. (data set, init):
  inits on one data set share its data and are not independent, so the error is taken over the data
  sets (each the mean of its members) when there are at least two, else over the members of the one
  group;
* :func:`ratio_mean_sem`: a pooled ratio sum(num) / sum(den) (a mean over a varying number of
  counted items per unit) with its jackknife standard error over the units.

With fewer than two units there is no error estimate: the functions return ``single`` (inf by
default: "unknown", which no tolerance accepts; callers that plot an error bar may ask for 0 or
NaN), never a silent ``ddof=1`` NaN with a RuntimeWarning.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def sem(values, axis: int = -1, *, single: float = math.inf):
    """Standard error of the mean of ``values`` along ``axis``: std(ddof=1) / sqrt(n).

    Returns an array with ``axis`` removed (a NumPy scalar for 1-D input); ``single`` where n < 2."""
    values = np.asarray(values)
    n = values.shape[axis]
    if n < 2:
        rest = tuple(size for i, size in enumerate(values.shape) if i != axis % values.ndim)
        return np.full(rest, single, dtype=np.float64)[()]
    return values.std(axis=axis, ddof=1) / np.sqrt(n)


def grouped_sem(values, *, single: float = math.inf) -> np.ndarray:
    """Standard error of the mean over the last two axes (group, member), e.g. (data set, init):
    over the groups (each the mean of its members) when there are >= 2 groups, else over the members
    of the single group, else ``single`` (one unit)."""
    values = np.asarray(values)
    D, I = values.shape[-2:]
    if D >= 2:
        per = values.mean(axis=-1)
        return per.std(axis=-1, ddof=1) / np.sqrt(D)
    if I >= 2:
        return values[..., 0, :].std(axis=-1, ddof=1) / np.sqrt(I)
    return np.full(values.shape[:-2], single)


def ratio_mean_sem(num, den) -> tuple[np.ndarray, np.ndarray]:
    """Pooled ratio sum(num)/sum(den) over the last two axes (group, member) and its jackknife
    standard error over the groups (each pooled over its members) when there are >= 2 groups, else
    over the members (inf with a single unit).

    Units without any count (den = 0) carry no weight, so a unit without counted items does not make
    the ensemble value undefined; NaN where no unit has a count, inf where fewer than two
    leave-one-out ratios are defined.  Jackknife: with R_{-j} the ratio without unit j and M units,
    sem = sqrt((M - 1)/M sum_j (R_{-j} - mean R_{-.})^2)."""
    num, den = np.asarray(num), np.asarray(den)
    D, I = num.shape[-2:]
    if D >= 2:
        nu, de = num.sum(axis=-1), den.sum(axis=-1)
    elif I >= 2:
        nu, de = num[..., 0, :], den[..., 0, :]
    else:
        tot = den.sum(axis=(-2, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, num.sum(axis=(-2, -1)) / tot, np.nan), np.full(tot.shape, np.inf)
    M = nu.shape[-1]
    NU, DE = nu.sum(axis=-1, keepdims=True), de.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN leave-one-out rows: sem = inf below
        full = np.where(DE[..., 0] > 0, NU[..., 0] / DE[..., 0], np.nan)
        loo = (NU - nu) / (DE - de)                                     # leave-one-out ratios
        loo = np.where(DE - de > 0, loo, np.nan)
        ok = np.sum(np.isfinite(loo), axis=-1)
        dev = np.nansum((loo - np.nanmean(np.where(np.isfinite(loo), loo, np.nan), axis=-1, keepdims=True)) ** 2,
                        axis=-1)
        sem_ = np.where(ok >= 2, np.sqrt((M - 1) / M * dev), np.inf)
    return full, sem_
