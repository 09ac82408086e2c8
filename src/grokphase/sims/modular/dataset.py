"""The modular result Dataset: trajectories, spectra, per-network averages with standard errors, IPR
and phase histograms, times to memorise and to grok; plus the CLI's summary points."""

from __future__ import annotations

import numpy as np
import xarray as xr

from grokphase.io import annotate
from grokphase.sims import protocols
from grokphase.sims.driver import Members
from grokphase.sims.modular.config import SCALAR_RECORDS, ModularSim
from grokphase.stats import sem

#: the result kind of every modular Dataset
KIND = "sims.modular"


def first_crossing(times: np.ndarray, values: np.ndarray, level: float) -> np.ndarray:
    """First record time with value >= level along the last axis; -1 where never reached."""
    hit = values >= level
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), times[first], -1)


def build_dataset(sim: ModularSim, out, members: Members) -> xr.Dataset:
    """Dims (s2, seed, time, neuron, freq, ipr_bin, phase_bin).  ``members`` supplies the hyperparameters
    (``phi_plus``: the theory's droplet saddle per network)."""
    S, K = len(sim.s2), sim.seeds
    T = out.record_steps.size
    times = out.record_steps.astype(np.int64)
    coords = {"s2": np.asarray(sim.s2), "seed": np.arange(K), "time": times, "neuron": np.arange(sim.N),
              "freq": np.arange(sim.P // 2 + 1),
              "ipr_bin": (np.arange(sim.ipr_bins) + 0.5) / sim.ipr_bins,
              "phase_bin": -np.pi + (np.arange(36) + 0.5) * 2 * np.pi / 36}
    rec = out.records
    data = {}
    for name in SCALAR_RECORDS:
        data[f"{name}_trajectory"] = (("s2", "seed", "time"), np.asarray(rec[name]).reshape(S, K, T))
    for name in ("spectrum_u", "spectrum_v", "spectrum_a"):
        arr = np.asarray(rec[name]).reshape(S, K, T, sim.N, -1)
        data[name] = (("s2", "seed", "time", "neuron", "freq"), arr.astype(np.float32))
    data["frequency"] = (("s2", "seed", "time", "neuron"), np.asarray(rec["frequency"]).reshape(S, K, T, sim.N))
    count = np.asarray(out.accum["count"]).reshape(S, K)
    has_avg = bool(np.all(count > 0))
    for name in SCALAR_RECORDS:
        if has_avg and sim.optimizer == "langevin":     # equilibrium: time average after burn-in
            avg = np.asarray(out.accum["sums"][name]).reshape(S, K) / count
        else:
            avg = data[f"{name}_trajectory"][1][..., -1]
        data[f"{name}_network"] = (("s2", "seed"), avg)
        data[name] = (("s2",), avg.mean(axis=1))
        data[f"{name}_sem"] = (("s2",), sem(avg, axis=1))
    data["ipr_hist"] = (("s2", "seed", "ipr_bin"), np.asarray(out.accum["ipr_hist"]).reshape(S, K, -1))
    data["phase_hist"] = (("s2", "seed", "phase_bin"), np.asarray(out.accum["phase_hist"]).reshape(S, K, -1))
    tr = data["train_acc_trajectory"][1]
    te = data["test_acc_trajectory"][1]
    data["t_memorise"] = (("s2", "seed"), first_crossing(times, tr, 0.99))
    data["t_grok"] = (("s2", "seed"), first_crossing(times, te, 0.95))
    data["theory_phi_plus"] = (("s2",), np.asarray(members.hyper.phi_plus).reshape(S, K)[:, 0])
    ds = xr.Dataset(data, coords=coords)
    ds["t_grok"].attrs["long_name"] = "first record step with test accuracy >= 0.95 (-1: never)"
    ds["t_memorise"].attrs["long_name"] = "first record step with train accuracy >= 0.99 (-1: never)"
    ds["count"] = (("s2", "seed"), count)
    if "metropolis_acceptance" in rec:              # MALA: the acceptance rate since step 0, at the last record
        acc_rate = np.asarray(rec["metropolis_acceptance"], np.float64).reshape(S, K, T)[..., -1]
        ds["metropolis_acceptance_network"] = (("s2", "seed"), acc_rate)
        ds["metropolis_acceptance"] = (("s2",), acc_rate.mean(axis=1))
        ds["metropolis_acceptance"].attrs["long_name"] = ("MALA acceptance rate over the whole run (mean over "
                                                          "networks; _network: per network)")
    return annotate(ds, kind=KIND, parameters=sim.parameters(),
                    seeds={"seed": sim.seed, "seeds": sim.seeds},
                    extra={"sa2": sim.sa2_value, "n_train": sim.n_train, "matmul_precision": sim.matmul_precision,
                           "averages": "time average after burn-in" if has_avg and sim.optimizer == "langevin"
                           else "final record"})



def _summary_point(ds: xr.Dataset, i: int) -> dict:
    pt = {"s2": float(ds["s2"].values[i]), "alpha": float(ds.attrs["param_alpha"])}
    for name in ("train_acc", "test_acc", "target_component", "droplet_fraction", "ipr"):
        pt[name] = float(ds[name].values[i])
    pt["target_component_sem"] = float(ds["target_component_sem"].values[i])
    pt["target_component_mean"] = float(ds["target_component_mean"].values[i])
    pt["target_component_mean_sem"] = float(ds["target_component_mean_sem"].values[i])
    pt["droplet_fraction_sem"] = float(ds["droplet_fraction_sem"].values[i])
    if "metropolis_acceptance" in ds:
        pt["metropolis_acceptance"] = float(ds["metropolis_acceptance"].values[i])
    tm, tg = ds["t_memorise"].values[i], ds["t_grok"].values[i]
    pt["t_memorise"] = float(np.median(tm)) if np.all(tm >= 0) else None
    pt["t_grok"] = float(np.median(tg)) if np.all(tg >= 0) else None
    return pt


def summary_points(ds: xr.Dataset) -> list[dict]:
    """JSON points, one per s2 (and per branch of an annealing run: the point gains "branch")."""
    return protocols.summary_points(ds, _summary_point)
