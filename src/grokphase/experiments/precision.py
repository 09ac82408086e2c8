"""The bias of reduced-precision matmuls on a simulation's stationary statistics (issue 21).

:func:`precision_bias` compares teacher-student runs that differ only in ``dtype`` and
``matmul_precision`` (``sims/precision_bias.toml``) against a reference run: per statistic, the mean over
data sets of (run - reference) and its standard error.  Runs of the same dtype with the same seed share
data sets, initialisations and Langevin noise, so their difference is *paired* per data set (the SE is
that of the per-data-set differences, without the data-set-to-data-set spread); runs of another dtype draw
other normals from the same keys and are compared as independent ensembles (SE from both ensembles'
spreads, added in quadrature).

``python -m grokphase.experiments.precision DIR [--out FILE.nc]`` reads the result files of DIR (one per
``[[sim]]`` table) and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping

import numpy as np
import xarray as xr

from grokphase.errors import ParameterError
from grokphase.io import load_dataset, save_dataset

#: the per-network statistics compared (time averages after burn-in), and the q moments from the histogram
STATISTICS = ("linear_learned", "cubic_learned", "droplet_fraction", "w_norm2")
Q_MOMENTS = ("q_mean", "q2_mean")


def per_dataset(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Each statistic per data set (mean over s2 = the first, and over initialisations): the learned
    fractions, the droplet fraction, mean |w|^2, and the mean q and q^2 over all neurons from the
    accumulated q histogram (bin centres; the bin width 2 q_max/q_bins = 0.0125 shifts q^2 by
    width^2/12 = 1.3e-5 in every run alike)."""
    out = {name: ds[f"{name}_network"].isel(s2=0).mean("init").values for name in STATISTICS}
    edges = ds["q_edges"].values
    centres = 0.5 * (edges[1:] + edges[:-1])
    hist = ds["q_hist"].isel(s2=0).sum("init").values                       # (dataset, q)
    total = hist.sum(axis=-1)
    out["q_mean"] = hist @ centres / total
    out["q2_mean"] = hist @ centres**2 / total
    return out


def _paired(ds: xr.Dataset, ref: xr.Dataset) -> bool:
    """Same data, initialisations and noise: same seed, sizes, ensemble and dtype."""
    keys = ("seed", "N", "n", "d", "datasets", "inits", "dtype", "steps", "burn_in", "lr", "s2")
    a, b = (json.loads(x.attrs["parameters_json"]) for x in (ds, ref))
    return all(a.get(k) == b.get(k) for k in keys)


def _compare(cur: dict, ref: dict, paired: bool, stats) -> tuple[np.ndarray, np.ndarray]:
    """mean(cur - ref) per statistic and its SE: paired (SE of the per-data-set differences) or independent
    (the two ensembles' SEs in quadrature)."""
    diff, sem = [], []
    for s in stats:
        x, r = cur[s], ref[s]
        if paired:
            d = x - r
            diff.append(d.mean())
            sem.append(d.std(ddof=1) / np.sqrt(len(d)))
        else:
            diff.append(x.mean() - r.mean())
            sem.append(np.hypot(x.std(ddof=1) / np.sqrt(len(x)), r.std(ddof=1) / np.sqrt(len(r))))
    return np.array(diff), np.array(sem)


def precision_bias(runs: Mapping[str, xr.Dataset], reference: str) -> xr.Dataset:
    """Differences of every run's statistics from ``runs[reference]`` and from the exact run of its own dtype,
    with standard errors.

    Returns a Dataset with dimensions ``run`` (the names of ``runs``) and ``statistic``: ``value`` and
    ``value_sem`` (mean over data sets, SE over data sets); ``diff`` = mean(run - reference) with ``diff_sem``
    (paired when the runs share data and noise: SE of the per-data-set differences; otherwise the two SEs in
    quadrature) and ``z`` = diff/diff_sem; ``rounding_diff``, ``rounding_diff_sem``, ``rounding_z``: the same
    against the run of the same dtype with matmul_precision = highest (paired: the effect of the rounding
    alone; NaN where there is no such run); per run ``paired`` (with the reference), ``dtype`` and
    ``matmul_precision``."""
    if reference not in runs:
        raise ParameterError(f"reference run {reference!r} not among {sorted(runs)}")
    names = list(runs)
    stats = STATISTICS + Q_MOMENTS
    params = {n: json.loads(runs[n].attrs["parameters_json"]) for n in names}
    dtype = {n: params[n].get("dtype", "float32") for n in names}
    policy = {n: runs[n].attrs.get("matmul_precision", params[n].get("matmul_precision", "highest")) for n in names}
    table = {n: per_dataset(runs[n]) for n in names}
    nan = np.full(len(stats), np.nan)
    value, value_sem, diff, diff_sem, rdiff, rdiff_sem, paired = [], [], [], [], [], [], []
    for name in names:
        cur = table[name]
        value.append([cur[s].mean() for s in stats])
        value_sem.append([cur[s].std(ddof=1) / np.sqrt(len(cur[s])) for s in stats])
        pair = _paired(runs[name], runs[reference])
        d, e = _compare(cur, table[reference], pair, stats)
        diff.append(d)
        diff_sem.append(e)
        paired.append(pair)
        base = [n for n in names if dtype[n] == dtype[name] and policy[n] == "highest"
                and _paired(runs[n], runs[name])]
        d, e = _compare(cur, table[base[0]], True, stats) if base else (nan, nan)
        rdiff.append(d)
        rdiff_sem.append(e)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.array(diff) / np.array(diff_sem)
        rz = np.array(rdiff) / np.array(rdiff_sem)
    dims = ("run", "statistic")
    out = xr.Dataset(
        {"value": (dims, np.array(value)), "value_sem": (dims, np.array(value_sem)),
         "diff": (dims, np.array(diff)), "diff_sem": (dims, np.array(diff_sem)), "z": (dims, z),
         "rounding_diff": (dims, np.array(rdiff)), "rounding_diff_sem": (dims, np.array(rdiff_sem)),
         "rounding_z": (dims, rz), "paired": ("run", np.array(paired)),
         "dtype": ("run", np.array([dtype[n] for n in names])),
         "matmul_precision": ("run", np.array([policy[n] for n in names]))},
        coords={"run": names, "statistic": list(stats)})
    out.attrs.update({"grokphase_kind": "experiments.precision_bias", "reference": reference,
                      "datasets": int(len(table[reference][stats[0]])),
                      "description": "stationary statistics of runs differing in dtype and matmul_precision: minus "
                                     "the reference run's (paired per data set within a dtype, independent "
                                     "ensembles across dtypes) and minus the exact run of the same dtype (paired)"})
    return out


def load_runs(directory: str | Path) -> dict[str, xr.Dataset]:
    """The teacher-student result files of ``directory`` (one per [[sim]] table), by file stem."""
    files = sorted(Path(directory).glob("*.nc"))
    runs = {f.stem: load_dataset(f) for f in files}
    runs = {k: v for k, v in runs.items() if v.attrs.get("grokphase_kind") == "sims.teacher_student"}
    if not runs:
        raise ParameterError(f"{directory}: no teacher-student result files")
    return runs


def table_lines(bias: xr.Dataset) -> list[str]:
    """One line per run and statistic: value, difference from the reference with its SE and z."""
    lines = [f"reference: {bias.attrs['reference']}"]
    for run in bias["run"].values:
        r = bias.sel(run=run)
        kind = "paired" if bool(r["paired"]) else "indep."
        for s in bias["statistic"].values:
            v = r.sel(statistic=s)
            lines.append(f"{run:13s} {s:16s} {float(v['value']):.5f} +- {float(v['value_sem']):.5f}  "
                         f"vs ref {float(v['diff']):+.2e} +- {float(v['diff_sem']):.1e} (z {float(v['z']):+.2f}, "
                         f"{kind})  rounding {float(v['rounding_diff']):+.2e} +- {float(v['rounding_diff_sem']):.1e} "
                         f"(z {float(v['rounding_z']):+.2f})")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m grokphase.experiments.precision",
                                description="bias of reduced-precision matmuls against a reference run")
    p.add_argument("directory")
    p.add_argument("--reference", default="float64")
    p.add_argument("--out", default=None, metavar="FILE.nc")
    args = p.parse_args(argv)
    bias = precision_bias(load_runs(args.directory), args.reference)
    print("\n".join(table_lines(bias)))
    if args.out:
        save_dataset(bias, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
