"""The teacher-student result Dataset: per-network time averages, ensemble means with standard errors,
q and (q, t) histograms, the droplet fraction at the theory's barrier, and the ensemble-mean
predictor's test error; plus the CLI's summary points."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from grokphase.errors import ParameterError
from grokphase.io import annotate
from grokphase.sims import protocols
from grokphase.sims.driver import Members, Task
from grokphase.sims.teacher_student.config import DEFAULT_DROPLET_THRESHOLD, DEGREE_RECORDS, TeacherStudentSim, TSHyper
from grokphase.stats import grouped_sem, ratio_mean_sem, sem
from grokphase.theory import single_index as si
from grokphase.theory import teacher_student as tst
from grokphase.theory.status import Status

#: the result kind of every teacher-student Dataset
KIND = "sims.teacher_student"


def droplet_thresholds(sim: TeacherStudentSim) -> tuple[np.ndarray, np.ndarray]:
    """Per s2: the |q| threshold of the droplet fraction and the finite-d theory's mass of p(q)
    beyond that same threshold (the theory value the simulated fraction estimates).

    The threshold is the theory's free-energy barrier where p(q) has one (then the theory's mass
    beyond it is its droplet fraction), else ``droplet_threshold`` or DEFAULT_DROPLET_THRESHOLD.

    The paper's model uses its own finite-d theory (:func:`grokphase.theory.teacher_student.solve_finite_d`);
    any other activation or target the single-index exact (q, t) theory
    (:func:`grokphase.theory.single_index.solve_finite_d`, basis = the target's degrees), whose
    ``q_barrier`` is the threshold and ``droplet_fraction`` the theory's mass.  It gives no density, so
    its mass beyond a threshold that is not its barrier (no barrier, or an explicit ``droplet_threshold``)
    is NaN, and so is every point where the theory does not converge.  For a target mixing odd and even
    degrees p(q) is not symmetric: the barrier is the right-hand one, the simulation counts |q| beyond it."""
    if not sim.paper_model:
        return _family_droplet_thresholds(sim)
    sol = tst.solve_finite_d(sim.theory_params(), density=True)
    qb = np.asarray(sol.q_barrier, dtype=np.float64)
    if sim.droplet_threshold is not None:
        thr = np.full(len(sim.s2), float(sim.droplet_threshold))
    else:
        thr = np.where(qb > 0, qb, DEFAULT_DROPLET_THRESHOLD)
    q = np.asarray(sol.q, np.float64)
    p = np.exp(np.asarray(sol.log_p, np.float64))
    q = np.broadcast_to(q, p.shape)
    mass = np.empty(len(sim.s2))
    for i in range(len(sim.s2)):
        qq = np.linspace(thr[i], q[i].max(), 4001)
        mass[i] = min(1.0, 2.0 * np.trapezoid(np.interp(qq, q[i], p[i]), qq))   # p(q) is symmetric
    return thr, mass


def single_index_params(sim: TeacherStudentSim, s2=None) -> si.SingleIndexParams:
    """The single-index theory's parameters at exactly the simulated (integer) sizes, one point per s2."""
    s2 = np.asarray(sim.s2 if s2 is None else s2, np.float64)
    return si.SingleIndexParams(N=float(sim.N), n=float(sim.n), d=float(sim.d), s2=s2, sa2=sim.sa2_value, sw2=sim.sw2)


def _family_droplet_thresholds(sim: TeacherStudentSim) -> tuple[np.ndarray, np.ndarray]:
    if sim.droplet_threshold is not None:          # the theory's mass beyond it needs p(q): not available
        return np.full(len(sim.s2), float(sim.droplet_threshold)), np.full(len(sim.s2), np.nan)
    sol = si.solve_finite_d(single_index_params(sim), sim.hermite_target, sim.activation, check=False)
    ok = np.asarray(sol.status) == Status.CONVERGED
    qb = np.where(ok, np.asarray(sol.q_barrier, np.float64), 0.0)
    thr = np.where(qb > 0, qb, DEFAULT_DROPLET_THRESHOLD)
    return thr, np.where(qb > 0, np.asarray(sol.droplet_fraction, np.float64), np.nan)


def build_dataset(sim: TeacherStudentSim, out, task: Task, members: Members) -> xr.Dataset:
    """Result Dataset with dims (s2, dataset, init, time, q): trajectories, time averages,
    q histograms, ensemble statistics with standard errors, and the run's parameters."""
    S, D, I = len(sim.s2), sim.datasets, sim.inits
    shape = (S, D, I)
    T = out.record_steps.size
    coords = {"s2": np.asarray(sim.s2), "dataset": np.arange(D), "init": np.arange(I),
              "time": out.record_steps.astype(np.int64), "degree": np.asarray(sim.degrees, np.int64)}
    edges = np.linspace(-sim.q_max, sim.q_max, sim.q_bins + 1)
    coords["q"] = 0.5 * (edges[1:] + edges[:-1])
    acc = out.accum
    count = np.asarray(acc["count"]).reshape(shape)
    if np.any(count <= 0):
        raise ParameterError("no record time after burn-in: lower burn_in or record more often")
    data_vars = {}
    for name in sim.scalar_records():
        data_vars[f"{name}_trajectory"] = (("s2", "dataset", "init", "time"),
                                           np.asarray(out.records[name], np.float64).reshape(shape + (T,)))
        avg = np.asarray(acc["sums"][name]).reshape(shape) / count
        data_vars[f"{name}_network"] = (("s2", "dataset", "init"), avg)
        data_vars[name] = (("s2",), avg.mean(axis=(1, 2)))
        data_vars[f"{name}_sem"] = (("s2",), grouped_sem(avg))
    K = len(sim.degrees)
    for name in DEGREE_RECORDS:          # per target degree (trajectories keep time as the last axis)
        traj = np.asarray(out.records[name], np.float64).reshape(shape + (T, K))
        data_vars[f"{name}_trajectory"] = (("s2", "dataset", "init", "degree", "time"), np.moveaxis(traj, -1, -2))
        avg = np.asarray(acc["sums"][name]).reshape(shape + (K,)) / count[..., None]
        data_vars[f"{name}_network"] = (("s2", "dataset", "init", "degree"), avg)
        data_vars[name] = (("s2", "degree"), avg.mean(axis=(1, 2)))
        data_vars[f"{name}_sem"] = (("s2", "degree"), grouped_sem(np.moveaxis(avg, -1, 1)))
    q_hist = np.asarray(acc["q_hist"]).reshape(shape + (sim.q_bins,))
    data_vars["q_hist"] = (("s2", "dataset", "init", "q"), q_hist)
    data_vars["q_overflow"] = (("s2", "dataset", "init"), np.asarray(acc["q_overflow"]).reshape(shape))
    # an umbrella run builds one part per (start, window) at the same sim: solve the theory once
    thr, theory_droplet = (np.array(v) for v in _umbrella_thresholds(sim)) if sim.umbrella else droplet_thresholds(sim)
    beyond = np.abs(coords["q"])[None, :] > thr[:, None]                       # (S, B)
    total = q_hist.sum(axis=-1) + data_vars["q_overflow"][1]
    frac = ((q_hist * beyond[:, None, None, :]).sum(axis=-1) + data_vars["q_overflow"][1]) / total
    data_vars["droplet_fraction_network"] = (("s2", "dataset", "init"), frac)
    data_vars["droplet_fraction"] = (("s2",), frac.mean(axis=(1, 2)))
    data_vars["droplet_fraction_sem"] = (("s2",), grouped_sem(frac))
    data_vars["droplet_threshold"] = (("s2",), thr)
    # t = |w_perp|^2 of the droplet (|q| beyond the same threshold, overflow included) and bulk neurons
    t_sum_q = np.asarray(acc["t_sum_q"]).reshape(shape + (sim.q_bins,))
    t_over = np.asarray(acc["t_overflow_sum"]).reshape(shape)
    data_vars["t_sum_q"] = (("s2", "dataset", "init", "q"), t_sum_q)
    data_vars["t_overflow_sum"] = (("s2", "dataset", "init"), t_over)
    bw = beyond[:, None, None, :]
    n_drop = (q_hist * bw).sum(axis=-1) + data_vars["q_overflow"][1]
    t_drop = (t_sum_q * bw).sum(axis=-1) + t_over
    n_bulk = (q_hist * ~bw).sum(axis=-1)
    t_bulk = (t_sum_q * ~bw).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        data_vars["t_droplet_network"] = (("s2", "dataset", "init"), np.where(n_drop > 0, t_drop / n_drop, np.nan))
        data_vars["t_bulk_network"] = (("s2", "dataset", "init"), np.where(n_bulk > 0, t_bulk / n_bulk, np.nan))
    for name, (nu, de) in {"t_droplet": (t_drop, n_drop), "t_bulk": (t_bulk, n_bulk)}.items():
        mean, err = ratio_mean_sem(nu, de)
        data_vars[name], data_vars[f"{name}_sem"] = (("s2",), mean), (("s2",), err)
    qt_edges = np.linspace(-sim.q_max, sim.q_max, sim.qt_q_bins + 1)
    t_edges = np.linspace(0.0, sim.t_max, sim.t_bins + 1)
    coords["qt_q"] = 0.5 * (qt_edges[1:] + qt_edges[:-1])
    coords["t"] = 0.5 * (t_edges[1:] + t_edges[:-1])
    data_vars["qt_hist"] = (("s2", "dataset", "init", "qt_q", "t"),
                            np.asarray(acc["qt_hist"]).reshape(shape + (sim.qt_q_bins, sim.t_bins)))
    data_vars["qt_overflow"] = (("s2", "dataset", "init"), np.asarray(acc["qt_overflow"]).reshape(shape))
    # ensemble-mean predictor per data set: time- and init-averaged test outputs
    f_test = np.asarray(acc["f_test"]).reshape(shape + (-1,)) / count[..., None]
    keys = np.asarray(members.data_keys)[: D * I: I]
    y_test = _test_targets(task, sim, keys)
    ens = f_test.mean(axis=2)                                                   # (S, D, n_test)
    ens_mse = np.mean((ens - y_test[None]) ** 2, axis=-1)                      # (S, D)
    data_vars["ensemble_test_mse_dataset"] = (("s2", "dataset"), ens_mse)
    data_vars["ensemble_test_mse"] = (("s2",), ens_mse.mean(axis=1))
    data_vars["ensemble_test_mse_sem"] = (("s2",), sem(ens_mse, axis=1))
    ds = xr.Dataset(data_vars, coords=coords)
    ds["q_edges"] = (("q_edge",), edges)
    ds["qt_q_edges"] = (("qt_q_edge",), qt_edges)
    ds["t_edges"] = (("t_edge",), t_edges)
    ds["t_droplet"].attrs["long_name"] = ("mean t = |w_perp|^2 of the neurons with |q| beyond droplet_threshold "
                                          "(pooled ratio; _sem: jackknife over data sets)")
    ds["t_bulk"].attrs["long_name"] = "mean t = |w_perp|^2 of the neurons with |q| inside droplet_threshold"
    ds["qt_hist"].attrs["long_name"] = "2-D histogram of (q, t = |w_perp|^2) over neurons and record times"
    ds["count"] = (("s2", "dataset", "init"), count)
    if "metropolis_acceptance" in out.records:      # MALA: the acceptance rate since step 0, at the last record
        acc_rate = np.asarray(out.records["metropolis_acceptance"], np.float64).reshape(shape + (T,))[..., -1]
        ds["metropolis_acceptance_network"] = (("s2", "dataset", "init"), acc_rate)
        ds["metropolis_acceptance"] = (("s2",), acc_rate.mean(axis=(1, 2)))
        ds["metropolis_acceptance"].attrs["long_name"] = ("MALA acceptance rate over the whole run (mean over "
                                                          "networks; _network: per network)")
    ds["theory_droplet_fraction"] = (("s2",), theory_droplet)
    ds["theory_droplet_fraction"].attrs["long_name"] = "finite-d theory's mass of p(q) beyond droplet_threshold"
    for name in ("linear_learned", "cubic_learned") if sim.paper_target else ():
        ds[name].attrs["long_name"] = f"{name.replace('_', ' ')} (exact population projection, time and ensemble mean)"
    ds["learned"].attrs["long_name"] = ("learned fraction <f, Hhat_k>/yhat_k per target degree (exact population "
                                        "projection, time and ensemble mean)")
    ds["learned_test"].attrs["long_name"] = "learned fraction per target degree on the test points, <f, He_k>/(k! c_k)"
    ds["learned_train"].attrs["long_name"] = "learned fraction per target degree on the training points"
    ds["droplet_threshold"].attrs["long_name"] = "|q| threshold: the finite-d theory's barrier, else 0.4"
    if not sim.paper_model:
        ds.attrs["activation"] = sim.activation_name
        ds.attrs["target"] = sim.hermite_target.spec
    return annotate_result(ds, sim)


@functools.lru_cache(maxsize=4)
def _umbrella_thresholds(sim: TeacherStudentSim) -> tuple[np.ndarray, np.ndarray]:
    return droplet_thresholds(sim)


def _test_targets(task: Task, sim: TeacherStudentSim, keys: np.ndarray, block: int = 16) -> np.ndarray:
    """The test targets of each data set, regenerated from its key in fixed blocks of data sets (so
    memory stays bounded by ``block`` data sets whatever the ensemble size)."""
    fn = _test_target_fn(task, sim.eps)
    out = []
    for start in range(0, keys.shape[0], block):
        part = keys[start:start + block]
        m = part.shape[0]
        if m < block:
            part = np.concatenate([part, np.repeat(part[-1:], block - m, axis=0)])
        out.append(np.asarray(fn(jnp.asarray(part)), np.float64)[:m])
    return np.concatenate(out)


@functools.lru_cache(maxsize=16)
def _test_target_fn(task: Task, eps: float):
    hyper = TSHyper(*(jnp.asarray(v, jnp.float64) for v in (1.0, 1.0, 1.0, eps, 1.0, 0.0)))
    return jax.jit(jax.vmap(lambda k: task.make_data(k, hyper)["y_test"]))



def annotate_result(ds: xr.Dataset, sim: TeacherStudentSim) -> xr.Dataset:
    """Attach the kind, the parameters of ``sim`` and its seeds and sizes (:func:`grokphase.io.annotate`)."""
    return annotate(ds, kind=KIND, parameters=sim.parameters(),
                    seeds={"seed": sim.seed, "datasets": sim.datasets, "inits": sim.inits},
                    extra={"N": sim.N, "n": sim.n, "d": sim.d, "sa2": sim.sa2_value,
                           "record_times": "log" if sim.log_times else "linear",
                           "matmul_precision": sim.matmul_precision})


def _summary_point(ds: xr.Dataset, i: int) -> dict:
    pt = {"s2": float(ds["s2"].values[i])}
    for name in ("linear_learned", "cubic_learned", "droplet_fraction"):
        if name in ds:                  # linear_/cubic_: the paper's target only
            pt[name] = float(ds[name].values[i])
            pt[f"{name}_sem"] = float(ds[f"{name}_sem"].values[i])
    if "learned" in ds:                 # per target degree (results written before issue 18 have none)
        degrees = [str(int(k)) for k in ds["degree"].values]
        pt["learned"] = dict(zip(degrees, map(float, ds["learned"].values[i])))
        pt["learned_sem"] = dict(zip(degrees, map(float, ds["learned_sem"].values[i])))
    if "metropolis_acceptance" in ds:
        pt["metropolis_acceptance"] = float(ds["metropolis_acceptance"].values[i])
    pt["train_mse"] = float(ds["train_mse"].values[i])
    pt["test_mse"] = float(ds["test_mse"].values[i])
    pt["ensemble_test_mse"] = float(ds["ensemble_test_mse"].values[i])
    return pt


def summary_points(ds: xr.Dataset) -> list[dict]:
    """The CLI's JSON points: per s2 the learned fractions (the paper's target: ``linear_learned``,
    ``cubic_learned``; every model: ``learned`` and ``learned_sem``, {"degree": value}), droplet
    fraction (with SEMs) and MSEs (and per branch of an annealing run: the point gains "branch")."""
    return protocols.summary_points(ds, _summary_point)
