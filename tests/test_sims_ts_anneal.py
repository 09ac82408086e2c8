"""Annealing ladders and ordered starts of the teacher-student simulations (issue 8): the exact
conditional readout, the droplet-saddle start (+-q*, |w_perp|^2 = t*), state carried between
temperatures, resumption, the CLI, bad input, the frozen-occupation theory branches, and one cheap
physics check (an ordered start below s2_c stays ordered, a prior start does not get there)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokphase.cli import main
from grokphase.errors import ParameterError
from grokphase.theory.teacher_student import solve_frozen_branch
from grokphase.sims.driver import prior_z, run_ensemble
from grokphase.sims.teacher_student import (TeacherStudentSim, build_ladder_members, build_members,
                                            conditional_readout, droplet_saddle, make_task, ordered_start,
                                            run_teacher_student)
from grokphase.theory import teacher_student as ts

TINY = dict(beta=1 / 64, datasets=2, inits=1, steps=30, burn_in=10, lr=0.05, record_every=10, n_test=100,
            dtype="float32")      # N = 11, d = 19, n = 47 (float32: the float64 erf step compiles ~1 min)


def tiny(**kw):
    return TeacherStudentSim.from_scaling(**{**TINY, **kw})


def test_conditional_readout_is_the_exact_conditional_posterior():
    """Given w the readout posterior is Bayesian linear regression on erf(x w): precision
    I + (c^2/s2) Phi^T Phi, mean Lambda^-1 (c/s2) Phi^T y; the draw's mean (xi = 0) and its linear
    map xi -> draw - mean (whose square is the covariance) are checked against NumPy/SciPy."""
    from scipy.special import erf

    rng = np.random.default_rng(1)
    d, N, n, c, s2 = 5, 4, 23, 0.3, 0.2
    w, x, y = rng.normal(size=(d, N)) / np.sqrt(d), rng.normal(size=(n, d)), rng.normal(size=n)
    phi = erf(x @ w)
    Lam = np.eye(N) + (c * c / s2) * phi.T @ phi
    mean = np.linalg.solve(Lam, (c / s2) * phi.T @ y)
    draw = jax.jit(conditional_readout)
    got0 = np.asarray(draw(w, x, y, c, s2, np.zeros(N)))
    np.testing.assert_allclose(got0, mean, rtol=1e-10, atol=1e-12)
    M = np.stack([np.asarray(draw(w, x, y, c, s2, np.eye(N)[j])) - mean for j in range(N)], axis=1)
    np.testing.assert_allclose(M @ M.T, np.linalg.inv(Lam), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("approximation", ["exact", "concentrated"])
def test_ordered_start_is_the_droplet_saddle(approximation):
    """The theory's number of droplet neurons sit at w.w* = +-q* (both signs) with |w_perp|^2 = t*
    (t* < sw2 in the exact theory, = sw2 in the concentrated one), the other neurons are their
    prior draws, and the readout is the conditional draw with the prior's unit draw as noise."""
    sim = TeacherStudentSim.from_scaling(beta=1 / 8, s2=(0.1,), datasets=2, inits=2, dtype="float64",
                                         start="ordered", ordered_droplets="theory", ordered_theory="limit",
                                         ordered_approximation=approximation)
    members, _ = build_members(sim)
    task = make_task(sim)
    z, n_drop, sad, idx = ordered_start(sim, members, task)
    prior = prior_z(task, members)
    q_star, t_star = float(sad.q_star[0]), float(sad.t_star[0])
    lim = ts.solve_limit(sim.theory_params(), approximation=approximation)
    assert q_star == pytest.approx(float(lim.q_star[0]), rel=1e-12) and q_star > 0.5
    if approximation == "exact":
        assert t_star == pytest.approx(float(lim.t_star[0]), rel=1e-12) and t_star < 0.6 * sim.sw2
    else:
        assert t_star == pytest.approx(sim.sw2, rel=1e-12)
    assert np.all(n_drop == max(1, round(sim.N * float(lim.droplet_fraction[0])))) and 1 < n_drop[0] < sim.N
    std_w, signs = np.sqrt(sim.sw2 / sim.d), []
    for j in range(len(members.data_keys)):
        hyp = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)[j]), members.hyper)
        data = task.make_data(jnp.asarray(members.data_keys[j]), hyp)
        ws = np.asarray(data["w_star"])
        w = std_w * z["w"][j]
        q = ws @ w
        t = np.sum(w * w, axis=0) - q * q
        k = n_drop[j]
        np.testing.assert_allclose(np.abs(q[:k]), q_star, rtol=1e-12)
        np.testing.assert_allclose(t[:k], t_star, rtol=1e-10)
        signs.extend(np.sign(q[:k]))
        np.testing.assert_allclose(z["w"][j][:, k:], prior["w"][j][:, k:], rtol=1e-14, atol=1e-15)
        a = conditional_readout(w, data["x"], data["y"], np.sqrt(sim.sa2_value / sim.N), 0.1, prior["a"][j])
        np.testing.assert_allclose(z["a"][j], np.asarray(a), rtol=1e-12)
    assert min(signs) == -1 and max(signs) == 1


def test_ordered_start_needs_a_droplet_saddle():
    sim = TeacherStudentSim.from_scaling(beta=1 / 8, s2=(0.3,), start="ordered", ordered_approximation="concentrated")
    with pytest.raises(ParameterError, match=r"no droplet saddle|has none at s2 = 0.3"):
        ordered_start(sim, build_members(sim)[0])
    # the limit's GFL branch above s2_c still has a metastable droplet minimum, but no droplets
    lim = dataclasses_replace(sim, ordered_theory="limit", ordered_droplets="theory")
    assert np.isfinite(droplet_saddle(lim, [0.3]).q_star[0])
    with pytest.raises(ParameterError, match="predicts 0 droplet neurons"):
        ordered_start(lim, build_members(lim)[0])


def dataclasses_replace(sim, **kw):
    import dataclasses

    return dataclasses.replace(sim, **kw)


def test_ladder_branches_carry_the_state():
    """anneal="both": the cooling branch's stage 0 (highest s2) is an ordinary run from the prior and
    its stage 1 continues from stage 0's end state (z) with stage-1 noise; the heating branch starts
    at the lowest s2 from the ordered start.  Recomputed by hand with run_ensemble; the Dataset must
    put every stage at its own s2."""
    sim = tiny(s2=(0.1, 0.14), anneal="both", ordered_theory="limit")
    ds = run_teacher_student(sim)
    assert list(ds["branch"].values) == ["cooling", "heating"] and list(ds["s2"].values) == [0.1, 0.14]
    task = make_task(sim)
    members, stages, _ = build_ladder_members(sim)
    K = sim.datasets * sim.inits
    sel = lambda tree, sl: jax.tree_util.tree_map(lambda a: np.asarray(a)[sl], tree)  # noqa: E731
    fold = lambda keys, s: np.asarray(jax.vmap(lambda k: jax.random.fold_in(k, s))(jnp.asarray(keys)))  # noqa: E731
    cool = sel(members, slice(0, K))
    out0 = run_ensemble(task, cool._replace(noise_keys=fold(cool.noise_keys, 0), hyper=sel(stages[0], slice(0, K))),
                        sim.schedule)
    out1 = run_ensemble(task, cool._replace(noise_keys=fold(cool.noise_keys, 1), hyper=sel(stages[1], slice(0, K))),
                        sim.schedule, initial_z=out0.z)
    got = ds["cubic_learned_trajectory"].sel(branch="cooling")
    np.testing.assert_allclose(got.sel(s2=0.14).values.reshape(K, -1), out0.records["cubic_learned"], rtol=1e-12)
    np.testing.assert_allclose(got.sel(s2=0.1).values.reshape(K, -1), out1.records["cubic_learned"], rtol=1e-12)
    fresh = run_ensemble(task, cool._replace(noise_keys=fold(cool.noise_keys, 1), hyper=sel(stages[1], slice(0, K))),
                         sim.schedule)
    assert not np.allclose(fresh.records["cubic_learned"], out1.records["cubic_learned"])   # the state was carried
    # heating: stage 0 at the lowest s2 from the ordered start, stage 1 from its end state
    heat = sel(members, slice(K, 2 * K))
    z0, n_drop, _, _ = ordered_start(sim, heat._replace(hyper=sel(stages[0], slice(K, 2 * K))), task)
    h0 = run_ensemble(task, heat._replace(noise_keys=fold(heat.noise_keys, 0), hyper=sel(stages[0], slice(K, 2 * K))),
                      sim.schedule, initial_z=z0)
    h1 = run_ensemble(task, heat._replace(noise_keys=fold(heat.noise_keys, 1), hyper=sel(stages[1], slice(K, 2 * K))),
                      sim.schedule, initial_z=h0.z)
    goth = ds["cubic_learned_trajectory"].sel(branch="heating")
    np.testing.assert_allclose(goth.sel(s2=0.1).values.reshape(K, -1), h0.records["cubic_learned"], rtol=1e-12)
    np.testing.assert_allclose(goth.sel(s2=0.14).values.reshape(K, -1), h1.records["cubic_learned"], rtol=1e-12)
    assert ds.attrs["heating_start"] == "ordered" and ds.attrs["heating_start_droplet_neurons"] == n_drop.mean()
    assert "cooling_start" not in ds.attrs


def test_ladder_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    sim = tiny(s2=(0.1, 0.14), anneal="down")
    full = run_teacher_student(sim)
    with pytest.raises(Exception, match="stopped after"):
        run_teacher_student(sim, checkpoint_dir=str(tmp_path), checkpoint_every=0.0, _stop_after_records=2)
    resumed = run_teacher_student(sim, checkpoint_dir=str(tmp_path), checkpoint_every=0.0)
    for name in ("cubic_learned_trajectory", "w_norm2_trajectory", "q_hist", "cubic_learned"):
        np.testing.assert_array_equal(resumed[name].values, full[name].values)


def test_cli_anneal_json(capsys, tmp_path):
    out = tmp_path / "a.nc"
    rc = main(["sim", "teacher-student", "--beta", "0.015625", "--s2", "0.1,0.14", "--datasets", "2", "--inits",
               "1", "--steps", "20", "--record-every", "10", "--lr", "0.05", "--anneal", "both", "--start", "auto",
               "--ordered-theory", "limit", "--ordered-droplets", "theory", "--no-progress", "--json",
               "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(p["branch"], p["s2"]) for p in summary["points"]] == [("cooling", 0.1), ("cooling", 0.14),
                                                                   ("heating", 0.1), ("heating", 0.14)]
    from grokphase.io import load_dataset

    ds = load_dataset(out, "sims.teacher_student")
    assert ds.attrs["param_anneal"] == "both" and ds.attrs["heating_start"] == "ordered"


@pytest.mark.parametrize("kwargs, needle", [
    (dict(anneal="down", optimizer="adam"), "needs --optimizer langevin"),
    (dict(anneal="down", s2=(0.1,)), "at least two distinct"),
    (dict(anneal="sideways"), "unknown anneal"),
    (dict(start="sideways"), "unknown start"),
    (dict(anneal="both", replica_exchange=True, s2=(0.1, 0.2)), "separate protocols"),
    (dict(start="ordered", replica_exchange=True, s2=(0.1, 0.2)), "starts every rung from the prior"),
    (dict(ordered_theory="exactish"), "unknown ordered_theory"),
])
def test_bad_anneal_input(kwargs, needle):
    with pytest.raises(ParameterError, match=needle):
        tiny(**{"s2": (0.1, 0.14), **kwargs})


def test_plain_runs_keep_their_parameter_hash():
    """The new options stay out of parameters() at their defaults (old result files stay reusable)."""
    keys = set(tiny(s2=(0.1,)).parameters())
    assert not keys & {"anneal", "start", "ordered_droplets", "ordered_theory", "ordered_approximation"}
    assert tiny(s2=(0.1, 0.2), anneal="up").parameters()["anneal"] == "up"


def test_frozen_branch_without_cut_is_the_equilibrium():
    """p = 0 with no cut is solve_finite_d; the droplet-free branch (bulk |q| < 0.4) learns less of the
    cubic part than the equilibrium below s2_c; a frozen fraction > 0 learns more than the GFL branch."""
    prm = ts.TeacherStudentParams(N=88.0, n=375.0, d=53.0, s2=np.array([0.1, 0.2]), sa2=0.03232488142567074,
                                  sw2=0.5, eps=-0.3)
    eq = ts.solve_finite_d(prm, approximation="concentrated")
    got = solve_frozen_branch(prm, 0.0, np.inf, approximation="concentrated")
    np.testing.assert_allclose(got.cubic_learned, eq.cubic_learned, rtol=1e-9)
    gfl = solve_frozen_branch(prm, 0.0, 0.4, approximation="concentrated")
    drop = solve_frozen_branch(prm, 0.08, 0.4, approximation="concentrated")
    assert gfl.cubic_learned[0] < 0.7 * float(eq.cubic_learned[0])
    assert drop.exists[0] and drop.cubic_learned[0] > 1.5 * gfl.cubic_learned[0]
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        solve_frozen_branch(prm, 1.5, 0.4)
