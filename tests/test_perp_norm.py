"""t = |w_perp|^2 as a second order parameter (THEORY.md §3b): the simulation's t accumulators, the
ratio estimator, and the droplet neurons' t at beta = 1/8 against the exact theory (issue 7).

The physics test runs a beta = 1/8 ensemble inside GMFL-I (sigma^2 = 0.14: N = 88, d = 53, n = 375;
8 networks, 6000 Langevin steps, ~40 s on 2 cores) and checks that droplet neurons have a smaller
mean t than bulk neurons by many standard errors, and that their mean t is near the exact theory's
(which the concentrated theory puts at sw2 = 0.5 for every neuron).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from grokphase.cli import main
from grokphase.io import load_dataset, save_dataset
from grokphase.analysis.perp_norm import theory_t_split
from grokphase.sims.teacher_student import TeacherStudentSim, _ratio_mean_sem, run_teacher_student
from grokphase.theory import teacher_student as ts

TINY = dict(beta=1 / 8, s2=(0.3,), datasets=2, inits=2, steps=60, burn_in=20, lr=0.05, record_every=10, n_test=200)


def test_ratio_estimator_closed_forms():
    rng = np.random.default_rng(0)
    den = np.full((1, 6, 3), 10.0)
    num = rng.normal(3.0, 1.0, size=(1, 6, 3)) * den
    mean, sem = _ratio_mean_sem(num, den)
    # equal denominators: the pooled ratio is the plain mean, the jackknife SE the usual SEM of the
    # per-dataset means
    per = (num / den).mean(axis=-1)[0]
    np.testing.assert_allclose(mean, per.mean(), rtol=1e-12)
    np.testing.assert_allclose(sem, per.std(ddof=1) / math.sqrt(per.size), rtol=1e-10)
    # a data set without any count carries no weight (not NaN)
    den2 = den.copy()
    den2[0, 0] = 0.0
    num2 = num.copy()
    num2[0, 0] = 0.0
    m2, s2 = _ratio_mean_sem(num2, den2)
    np.testing.assert_allclose(m2, per[1:].mean(), rtol=1e-12)
    assert np.isfinite(s2).all()
    # a single network: no standard error
    assert np.isinf(_ratio_mean_sem(num[:, :1, :1], den[:, :1, :1])[1]).all()


def test_t_accumulators_are_consistent():
    """Sum of t over all q bins (+ overflow) / neuron count = time-averaged |w|^2 - <q^2>, with <q^2>
    from the q histogram (binning error ~ width^2/12); the 2-D histogram holds every neuron once per
    record after burn-in, and its q marginal is the q histogram on the coarse grid."""
    sim = TeacherStudentSim.from_scaling(**TINY)
    ds = run_teacher_student(sim)
    q = ds["q"].values
    for s in range(ds.sizes["s2"]):
        for j in range(ds.sizes["dataset"]):
            for i in range(ds.sizes["init"]):
                h = ds["q_hist"].values[s, j, i]
                assert ds["q_overflow"].values[s, j, i] == 0
                mean_t = ds["t_sum_q"].values[s, j, i].sum() / h.sum()
                q2 = (h * q**2).sum() / h.sum()
                assert abs(mean_t - (ds["w_norm2_network"].values[s, j, i] - q2)) < 1e-3
                qt = ds["qt_hist"].values[s, j, i]
                assert qt.sum() + ds["qt_overflow"].values[s, j, i] == ds["count"].values[s, j, i] * sim.N
                coarse = h.reshape(sim.qt_q_bins, -1).sum(axis=1)
                assert np.abs(qt.sum(axis=1) - coarse).sum() <= 2 + 2 * ds["qt_overflow"].values[s, j, i]
    # every neuron is bulk at s2 = 0.3 (GFL, threshold 0.4 far out at this run length) or droplet
    assert np.all(np.isfinite(ds["t_bulk"].values)) and np.all(ds["t_bulk_sem"].values > 0)


@pytest.fixture(scope="module")
def gmfl_run(tmp_path_factory):
    sim = TeacherStudentSim.from_scaling(beta=1 / 8, s2=(0.14,), datasets=4, inits=2, steps=6000, burn_in=2000,
                                         lr=0.05, record_every=50)
    ds = run_teacher_student(sim)
    path = tmp_path_factory.mktemp("perp") / "b8.nc"
    save_dataset(ds, path)
    return ds, path


def test_droplets_have_smaller_t_near_the_exact_theory(gmfl_run):
    """beta = 1/8, sigma^2 = 0.14 (GMFL-I): droplet neurons' mean t is below the bulk's by > 5
    standard errors (the concentrated theory has both at sw2), and within 15 % of the exact
    finite-d theory's mean t of neurons beyond the same |q| threshold at the same sizes.

    (At n = 375 the simulated value is ~13 % above the theory; the equivalent-kernel control at
    4n, 4 sigma^2 (same u, r) lands within 1 % of it: the residual is finite-n error, see
    sims/perp_norm.toml.)"""
    ds, _ = gmfl_run
    t_d, e_d = float(ds["t_droplet"].values[0]), float(ds["t_droplet_sem"].values[0])
    t_b, e_b = float(ds["t_bulk"].values[0]), float(ds["t_bulk_sem"].values[0])
    assert t_b - t_d > 5 * math.hypot(e_d, e_b), (t_d, e_d, t_b, e_b)
    sim = TeacherStudentSim.from_scaling(beta=1 / 8, s2=(0.14,))
    p = sim.theory_params()
    sol = ts.solve_finite_d(p, density=True)
    assert float(sol.q_barrier[0]) > 0                      # the exact theory has droplets here
    thr = float(ds["droplet_threshold"].values[0])
    assert thr == pytest.approx(float(sol.q_barrier[0]))
    one = ts.TeacherStudentParams(N=p.N, n=p.n, d=p.d, s2=0.14, sa2=p.sa2, sw2=p.sw2, eps=p.eps)
    import jax

    split = theory_t_split(jax.tree_util.tree_map(lambda a: None if a is None else np.asarray(a)[0], sol), one, thr)
    # the split at the simulation's threshold is the theory's own droplet / bulk split
    assert split["t_droplet"] == pytest.approx(float(sol.t_droplet[0]), abs=0.005)
    assert split["t_bulk"] == pytest.approx(float(sol.t_bulk[0]), abs=0.002)
    assert abs(t_d / split["t_droplet"] - 1.0) < 0.15, (t_d, e_d, split)
    # bulk neurons sit near the prior value, as both theories say (4 SE + 1 % for the finite-n error)
    assert abs(t_b - split["t_bulk"]) < 4 * e_b + 0.01 * split["t_bulk"], (t_b, e_b, split)


@pytest.mark.slow
def test_compare_perp_norm_cli(gmfl_run, tmp_path, capsys):
    _, path = gmfl_run
    out, plot = tmp_path / "pn.nc", tmp_path / "pn.png"
    assert main(["compare", "perp-norm", "--sim", str(path), "--out", str(out), "--plot", str(plot), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (row,) = summary["points"]
    assert row["z_t_gap"] > 5 and abs(row["rel_t_droplet_exact"]) < 0.15
    assert row["concentrated_t_droplet"] == 0.5 and row["exact_t_droplet"] < 0.35
    assert summary["limit_s2_c_exact"] == pytest.approx(0.2171, abs=2e-3)
    assert summary["limit_s2_c_concentrated"] == pytest.approx(0.1787, abs=2e-3)
    cmp = load_dataset(out, "compare.perp_norm")
    assert cmp["sim_log_p_qt"].shape[-2:] == (60, 50) and plot.exists()
