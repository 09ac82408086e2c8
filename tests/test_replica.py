"""Replica exchange (parallel tempering) across a sigma^2 ladder: the swap rule against hand-computed
values, detailed balance on a Gaussian toy (every rung keeps its exact stationary law), a double well
with a barrier of ~20 temperatures (plain Langevin is stuck, replica exchange recovers the exact
occupation known by quadrature), round-trip bookkeeping, and exact resumption."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from grokphase.sims import replica as rx
from grokphase.sims.driver import Checkpointer, ChainState, Members, Schedule, Task, _Interrupt, run_ensemble
from grokphase.sims.langevin import langevin


class Hyper(NamedTuple):
    s2: Any
    lr: Any


def _toy_task(loss_fn, dim: int) -> Task:
    """x in R^dim, prior N(0, I) (prior_std 1), potential L(x): stationary law exp(-L/s2 - |x|^2/2)."""

    def make_data(key, hyper):
        return {"one": jnp.ones(())}

    def init(key, data, hyper):
        return {"x": jax.random.normal(key, (dim,), jnp.float64)}

    def prior_std(z, hyper):
        return {"x": jnp.asarray(1.0)}

    def loss(theta, data):
        return loss_fn(theta["x"])

    def make_tx(hyper):
        return langevin(hyper.lr, hyper.s2)

    def init_accum(theta, data, hyper):
        z = jnp.zeros((dim,), jnp.float64)
        return {"count": jnp.zeros(()), "x": z, "x2": z, "right": jnp.zeros(())}

    def observe(theta, data, hyper, accum, weight):
        x = theta["x"]
        right = (x[0] > 0).astype(jnp.float64)
        w = weight.astype(jnp.float64)
        accum = {"count": accum["count"] + w, "x": accum["x"] + w * x, "x2": accum["x2"] + w * x * x,
                 "right": accum["right"] + w * right}
        return {"x0": x[0]}, accum

    return Task(make_data, init, prior_std, loss, make_tx, init_accum, observe)


LAM, MEAN = 1.0, 1.0
GAUSS = _toy_task(lambda x: 0.5 * LAM * jnp.sum((x - MEAN) ** 2), dim=4)
H, TILT = 20.0, 0.4
WELL = _toy_task(lambda x: H * (x[0] ** 2 - 1.0) ** 2 + TILT * x[0], dim=1)


def _members(s2_ladder, n_sets, lr, seed=0):
    """Rung-major layout m = s * n_sets + c, one data key per ladder (shared by its rungs)."""
    R = len(s2_ladder)
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(seed), 3 * n_sets)).reshape(3, n_sets, 2)
    tile = lambda k: np.tile(k, (R, 1))  # noqa: E731
    s2 = np.repeat(np.asarray(s2_ladder, np.float64), n_sets)
    return Members(tile(keys[0]), tile(keys[1]), tile(keys[2]), Hyper(s2=s2, lr=np.full(s2.size, lr)))


# ---------------------------------------------------------------------------------------------
# the rule


def test_swap_rule_hand_values():
    """min(1, exp((1/s2_i - 1/s2_j)(L_i - L_j))) at hand-computed points."""
    # (1/0.2 - 1/0.25)(10 - 12) = (5 - 4)(-2) = -2
    assert float(rx.swap_log_ratio(10.0, 12.0, 0.2, 0.25)) == pytest.approx(-2.0, rel=1e-12)
    assert float(rx.swap_probability(10.0, 12.0, 0.2, 0.25)) == pytest.approx(math.exp(-2.0), rel=1e-12)
    # the colder rung holding the higher loss: always accepted
    assert float(rx.swap_log_ratio(12.0, 10.0, 0.2, 0.25)) == pytest.approx(2.0, rel=1e-12)
    assert float(rx.swap_probability(12.0, 10.0, 0.2, 0.25)) == 1.0
    # (1/0.5 - 1/2)(1 - 4) = 1.5 * (-3) = -4.5; symmetric in relabelling (i <-> j)
    assert float(rx.swap_log_ratio(1.0, 4.0, 0.5, 2.0)) == pytest.approx(-4.5, rel=1e-12)
    assert float(rx.swap_log_ratio(4.0, 1.0, 2.0, 0.5)) == pytest.approx(-4.5, rel=1e-12)
    assert float(rx.swap_probability(1e6, 0.0, 0.1, 0.2)) == 1.0          # no overflow
    np.testing.assert_array_equal(rx.partners(0, 5), [1, 0, 3, 2, 4])
    np.testing.assert_array_equal(rx.partners(1, 5), [0, 2, 1, 4, 3])


def test_engine_swap_decision_matches_the_rule():
    """The engine's swap round (log r from the full log densities) accepts a pair with the
    probability of the formula: two fixed states of the Gaussian toy with hand-computed losses,
    4000 independent ladders, binomial standard error; accepted pairs exchange their states."""
    C = 4000
    s2 = (0.5, 1.0)
    members = rx.rung_members(_members(s2, C, lr=0.01), 2)
    x_cold = np.full(4, MEAN + 1.0)        # L = 0.5 * 4 * 1 = 2
    x_hot = np.full(4, MEAN)               # L = 0
    z = {"x": np.concatenate([np.tile(x_cold, (C, 1)), np.tile(x_hot, (C, 1))])}
    # log r = (1/0.5 - 1/1)(L_cold - L_hot) = 1 * 2 = 2 -> accept always; reversed states: e^-2
    for zz, expect in ((z, 1.0), ({"x": z["x"][::-1].copy()}, math.exp(-2.0))):
        state = ChainState(jax.tree_util.tree_map(jnp.asarray, zz), (optax_empty := ()), jnp.zeros(2 * C, jnp.int32),
                           -jnp.ones(2 * C, jnp.int32), {})
        del optax_empty
        swap = rx._swap_function(GAUSS, 2, C, None)
        keys = jax.vmap(lambda k: jax.random.fold_in(k, rx.SWAP_STREAM))(jnp.asarray(members.noise_keys[:C]))
        partner = jnp.asarray(np.concatenate([np.arange(C) + C, np.arange(C)]), jnp.int32)
        data = {"one": jnp.ones(2 * C)}
        new, labels, acc, log_r = swap(state, data, jax.tree_util.tree_map(jnp.asarray, members.hyper),
                                       jnp.repeat(jnp.arange(2, dtype=jnp.int32), C), keys, partner, jnp.int32(0))
        np.testing.assert_allclose(np.asarray(log_r), math.log(expect) if expect < 1 else 2.0, rtol=1e-12)
        acc = np.asarray(acc)
        np.testing.assert_array_equal(acc[:C], acc[C:])             # a pair decides once
        rate = acc[:C].mean()
        se = math.sqrt(expect * (1 - expect) / C) + 1e-12
        assert abs(rate - expect) <= 4 * se + 1e-12, (rate, expect)
        x_new = np.asarray(new.z["x"])
        x_old = np.asarray(zz["x"])
        np.testing.assert_array_equal(x_new[:C][acc[:C]], x_old[C:][acc[:C]])
        np.testing.assert_array_equal(x_new[:C][~acc[:C]], x_old[:C][~acc[:C]])
        np.testing.assert_array_equal(np.asarray(labels)[:C], acc[:C].astype(int))


def test_log_density_ratio_is_the_formula_on_the_modular_task():
    """For the modular task (penalty s2 * Gamma, readout prior independent of s2) the engine's
    log-density ratio equals (1/s2_i - 1/s2_j)(L_i - L_j) with L = Task.loss."""
    from grokphase.sims.modular import ModularSim, build_members, make_task

    sim = ModularSim(P=7, N=6, s2=(0.1, 0.15), sa2=0.01, gamma=0.05, dtype="float64", seeds=1)
    task = make_task(sim)
    members, _ = build_members(sim)
    hyp = [jax.tree_util.tree_map(lambda a, j=j: jnp.asarray(np.asarray(a)[j]), members.hyper) for j in range(2)]
    data = task.make_data(jnp.asarray(members.data_keys[0]), hyp[0])
    zs = [task.init(jax.random.PRNGKey(k), data, hyp[0]) for k in (1, 2)]
    zs = [{"w": 1.3 * z["w"], "a": z["a"]} for z in zs]
    ld = lambda z, h: float(rx.log_density(task, z, data, h))  # noqa: E731
    log_r = ld(zs[1], hyp[0]) + ld(zs[0], hyp[1]) - ld(zs[0], hyp[0]) - ld(zs[1], hyp[1])
    L = [float(task.loss({"w": z["w"], "a": z["a"] * jnp.sqrt(sim.sa2_value / sim.N)}, data)) for z in zs]
    assert log_r == pytest.approx(float(rx.swap_log_ratio(L[0], L[1], 0.1, 0.15)), rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# the distributions


def test_gaussian_toy_every_rung_keeps_its_stationary_law():
    """Quadratic potential lam |x - m|^2/2 with the unit prior: at s2 the law is Gaussian with mean
    lam m/(lam + s2) and variance s2/(lam + s2) per coordinate (the discrete chain: the same mean,
    variance / (1 - eta (lam + s2)/2)).  Swaps every 2 steps, far faster than the relaxation
    (1/(eta (lam + s2)) >= 67 steps), so a wrong rule would move every rung's law; each rung's
    time-averaged mean and variance match within 4 standard errors (independent ladders)."""
    s2 = np.array([0.5, 1.0, 2.0, 4.0])
    C, lr = 32, 0.003
    members = _members(s2, C, lr)
    sched = Schedule(steps=12000, burn_in=1000, record_every=5)
    out = rx.run_replica_exchange(GAUSS, members, sched, len(s2), swap_every=2)
    rate = out.accepts.sum(axis=1) / out.attempts.sum(axis=1)
    assert np.all(rate > 0.2), rate
    cnt = np.asarray(out.accum["count"]).reshape(len(s2), C)[..., None]
    mean = np.asarray(out.accum["x"]).reshape(len(s2), C, -1) / cnt
    var = np.asarray(out.accum["x2"]).reshape(len(s2), C, -1) / cnt - mean**2
    for i, t in enumerate(s2):
        m_exact = LAM * MEAN / (LAM + t)
        v_exact = t / (LAM + t)
        v_chain = v_exact / (1 - lr * (LAM + t) / 2)
        m_per = mean[i].mean(axis=1)               # per ladder, averaged over the 4 coordinates
        v_per = var[i].mean(axis=1)
        se_m = m_per.std(ddof=1) / math.sqrt(C)
        se_v = v_per.std(ddof=1) / math.sqrt(C)
        assert abs(m_per.mean() - m_exact) < 4 * se_m, (t, m_per.mean(), m_exact, se_m)
        assert abs(v_per.mean() - v_chain) < 4 * se_v, (t, v_per.mean(), v_chain, se_v)
    trips = rx.round_trips(out.slot_replica)
    assert trips.sum() > 0


def _well_occupation(s2):
    """Exact probability of x > 0 under exp(-L(x)/s2 - x^2/2), L = H (x^2 - 1)^2 + TILT x (quadrature)."""
    def dens(x):
        return math.exp(-(H * (x * x - 1) ** 2 + TILT * x + TILT) / s2 - 0.5 * x * x)

    right = integrate.quad(dens, 0, 3, points=[1.0], epsabs=0, epsrel=1e-12)[0]
    left = integrate.quad(dens, -3, 0, points=[-1.0], epsabs=0, epsrel=1e-12)[0]
    return right / (left + right)


def test_double_well_plain_langevin_is_stuck_replica_exchange_recovers_the_occupation():
    """Barrier H/s2 = 20 at the coldest rung.  Plain Langevin started in the right well (the minority
    well: exact occupation ~0.3) never leaves it; replica exchange on a geometric ladder up to
    s2 = 20 (barrier ~1) recovers the exact occupation of the coldest rung within 4 standard errors
    (independent ladders), and its replicas make round trips."""
    s2 = np.geomspace(1.0, 20.0, 7)
    exact = _well_occupation(1.0)
    assert 0.2 < exact < 0.4
    C, lr = 24, 4e-4
    sched = Schedule(steps=40000, burn_in=4000, record_every=20)
    right = {"x": np.ones((len(s2) * C, 1))}

    plain = _members(s2[:1], C, lr, seed=1)
    out = run_ensemble(WELL, plain, sched, initial_z={"x": np.ones((C, 1))})
    occ_plain = np.asarray(out.accum["right"]) / np.asarray(out.accum["count"])
    assert np.all(occ_plain == 1.0), occ_plain         # stuck in the starting well
    assert np.all(np.asarray(out.records["x0"]) > 0)

    out = rx.run_replica_exchange(WELL, _members(s2, C, lr, seed=2), sched, len(s2), swap_every=10, initial_z=right)
    occ = (np.asarray(out.accum["right"]) / np.asarray(out.accum["count"])).reshape(len(s2), C)[0]
    se = occ.std(ddof=1) / math.sqrt(C)
    assert abs(occ.mean() - exact) < 4 * se, (occ.mean(), exact, se)
    assert se < 0.05
    report = rx.ladder_report(out.attempts, out.accepts, rx.round_trips(out.slot_replica), s2)
    assert report["ok"], report
    assert report["round_trips"] >= C


def test_round_trips_and_sparse_ladder_report():
    """Hand-made occupation histories: replica 0 goes 0 -> 2 -> 0 (one round trip) on a 3-rung
    ladder; a pair without accepted swaps is reported as a gap."""
    hist = np.array([[0, 1, 2], [1, 0, 2], [1, 2, 0], [2, 1, 0], [2, 0, 1], [0, 2, 1]])[:, :, None]
    pos = rx.replica_positions(hist)
    np.testing.assert_array_equal(pos[:, 0, 0], [0, 1, 2, 2, 1, 0])
    trips = rx.round_trips(hist)
    assert trips[0, 0] == 1
    rep = rx.ladder_report(np.array([[10], [10]]), np.array([[5], [0]]), trips, np.array([0.1, 0.2, 0.3]))
    assert not rep["ok"] and rep["sparse_pairs"][0]["s2_low"] == 0.2 and "sparse ladder" in rep["warning"]


def test_resumed_equals_uninterrupted(tmp_path):
    """Interrupt a replica-exchange run after a few records and resume from the checkpoint: records,
    final states, swap counts and the replica history equal the uninterrupted run's."""
    s2 = (0.5, 1.0, 2.0)
    sched = Schedule(steps=300, burn_in=100, record_every=50)
    members = _members(s2, 3, 0.01)
    ref = rx.run_replica_exchange(GAUSS, members, sched, 3, swap_every=7)
    ck = Checkpointer(str(tmp_path), {"test": 1}, every_seconds=1e9)
    with pytest.raises(_Interrupt):
        rx.run_replica_exchange(GAUSS, members, sched, 3, swap_every=7, checkpoint=ck, stop_after_records=3)
    got = rx.run_replica_exchange(GAUSS, members, sched, 3, swap_every=7, checkpoint=ck)
    np.testing.assert_array_equal(got.records["x0"], ref.records["x0"])
    np.testing.assert_array_equal(got.z["x"], ref.z["x"])
    np.testing.assert_array_equal(got.slot_replica, ref.slot_replica)
    np.testing.assert_array_equal(got.accepts, ref.accepts)
    np.testing.assert_array_equal(np.asarray(got.accum["x2"]), np.asarray(ref.accum["x2"]))


# ---------------------------------------------------------------------------------------------
# the modular model


def _modular_rx(**kw):
    from grokphase.sims.modular import ModularSim

    base = dict(P=5, N=4, s2=(0.3, 0.2, 0.25), sa2=0.01, gamma=0.05, lr=0.05, seeds=2, steps=60, burn_in=20,
                record_every=20, dtype="float64", replica_exchange=True, swap_every=5)
    base.update(kw)
    return ModularSim(**base)


def test_modular_replica_exchange_dataset_deterministic_and_resumable(tmp_path):
    """The modular replica-exchange run: s2 sorted, per-rung observables, swap statistics per pair
    and ladder, the replica trajectory a permutation at every round; equal to itself when re-run
    (seeds only) and when interrupted and resumed from its checkpoint."""
    from grokphase.sims.modular import run_modular

    sim = _modular_rx()
    ds = run_modular(sim)
    assert list(ds["s2"].values) == [0.2, 0.25, 0.3] and ds.attrs["protocol"] == "replica exchange"
    assert ds["swap_acceptance"].dims == ("pair", "seed") and ds.sizes["pair"] == 2
    assert np.all((ds["swap_acceptance"].values >= 0) & (ds["swap_acceptance"].values <= 1))
    occ = ds["replica_at_s2"].values                           # (round, s2, seed)
    assert occ.shape == (sim.steps // sim.swap_every + 1, 3, 2)
    assert np.all(np.sort(occ, axis=1) == np.arange(3)[None, :, None])
    np.testing.assert_array_equal(ds["swap_attempts"].values.sum(axis=0), [sim.steps // sim.swap_every] * 2)
    again = run_modular(sim)
    np.testing.assert_array_equal(again["target_component_mean_network"].values,
                                  ds["target_component_mean_network"].values)
    with pytest.raises(_Interrupt):
        run_modular(sim, checkpoint_dir=str(tmp_path), checkpoint_every=0.0, _stop_after_records=1)
    resumed = run_modular(sim, checkpoint_dir=str(tmp_path), checkpoint_every=0.0)
    for name in ("target_component_mean_network", "replica_at_s2", "swap_accepts", "w_norm2_trajectory"):
        np.testing.assert_array_equal(resumed[name].values, ds[name].values)


@pytest.mark.slow
def test_modular_replica_exchange_cli_and_errors(tmp_path, capsys):
    """``grokphase sim modular --replica-exchange`` reports the acceptance and round trips in its JSON;
    invalid combinations are rejected with the option named."""
    import json

    from grokphase.cli import main
    from grokphase.errors import ParameterError

    out = tmp_path / "rx.nc"
    rc = main(["sim", "modular", "--P", "5", "--N", "4", "--s2", "0.2,0.3", "--sa2", "0.01", "--gamma", "0.05",
               "--steps", "20", "--record-every", "10", "--replica-exchange", "--swap-every", "5", "--seeds", "2",
               "--no-progress", "--json", "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    rxs = summary["replica_exchange"]
    assert len(rxs["acceptance"]) == 1 and 0 <= rxs["acceptance"][0] <= 1 and "round_trips" in rxs
    with pytest.raises(ParameterError, match="anneal"):
        _modular_rx(anneal="down")
    with pytest.raises(ParameterError, match="two distinct"):
        _modular_rx(s2=(0.2,))
    with pytest.raises(ParameterError, match="langevin"):
        _modular_rx(optimizer="adamw", parametrisation="gromov")


@pytest.mark.slow
def test_teacher_student_replica_exchange_runs_and_records_swaps():
    """Teacher-student replica exchange: one ladder per (dataset, init), s2 sorted, swap statistics
    per pair and ladder, and the per-rung observables of the plain run."""
    from grokphase.sims.teacher_student import TeacherStudentSim, run_teacher_student

    sim = TeacherStudentSim(N=8, n=20, d=5, s2=(0.3, 0.2), datasets=1, inits=2, steps=40, burn_in=10,
                            record_every=10, n_test=50, replica_exchange=True, swap_every=5, dtype="float64")
    ds = run_teacher_student(sim)
    assert list(ds["s2"].values) == [0.2, 0.3] and ds.attrs["protocol"] == "replica exchange"
    assert ds["swap_acceptance"].dims == ("pair", "chain") and ds.sizes["chain"] == 2
    assert np.all(ds["swap_attempts"].values == 4)          # 2 rungs: pair (0, 1) in even rounds only
    assert np.all(np.isfinite(ds["linear_learned"].values))
