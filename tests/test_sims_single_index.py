"""Simulations of the single-index family (issue 18, THEORY.md §6): any activation, any Hermite target.

Checks, each against something independent of the code under test: the exact population projections
<f, Hhat_k> of random small networks against Monte Carlo over x ~ N(0, I) (tolerance from the sample's
standard error) and against the theory's overlaps; the teacher's Hermite functions against NumPy's
hermite_e and their orthonormality by Monte Carlo; a ReLU network's He3 projection identically zero
(THEORY.md §6: M_3 = 0) with its test-set estimate consistent with zero; the paper's model unchanged
(the same run whether activation/target are left at their defaults or given explicitly, its parameters'
hash unchanged, and the numbers the code gave before issue 18); the CLI and TOML options and bad input.
About 70 s on 2 cores (three compiled tiny runs dominate).
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial import hermite_e

from grokphase.analysis.compare import SINGLE_INDEX_THEORY, compare_teacher_student
from grokphase.cli import main
from grokphase.errors import ParameterError
from grokphase.experiments.models import teacher_student as ts_model
from grokphase.io import load_dataset
from grokphase.sims.teacher_student import (TeacherStudentSim, family_projections, hermite_he, hermite_teacher,
                                            neuron_overlaps, population_projections, run_teacher_student,
                                            summary_points)
from grokphase.theory import single_index as si

TINY = dict(beta=1 / 8, s2=(0.3,), datasets=2, inits=2, steps=40, burn_in=10, lr=0.05, record_every=10, n_test=200)
#: small sizes for the runs whose statistics matter more than the paper's shapes
SMALL = dict(N=24, n=60, d=12, s2=(0.3,), datasets=8, inits=1, steps=30, burn_in=10, lr=0.05, record_every=10,
             n_test=400)


def _network(seed, d=8, N=5, scale=0.6):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    w = jax.random.normal(k1, (d, N), jnp.float64) * scale
    a = jax.random.normal(k2, (N,), jnp.float64)
    w_star = jax.random.normal(k3, (d,), jnp.float64)
    return w, a, w_star / jnp.linalg.norm(w_star)


@pytest.mark.parametrize("activation", ["erf", "relu", "tanh", "gelu", "silu", jnp.sin])
def test_projections_match_monte_carlo(activation):
    """<f, Hhat_k> = sum_i a_i g_k(q_i, |w_i|^2) equals the sample mean of f(x) He_k(w*.x)/sqrt(k!) over
    x ~ N(0, I) for k = 0..5, within 5 standard errors of a 4e5-point sample (a JAX callable, sin, too)."""
    degrees = (0, 1, 2, 3, 4, 5)
    w, a, w_star = _network(11)
    exact = np.asarray(family_projections(w, a, w_star, activation, degrees))
    M = 400_000
    x = jax.random.normal(jax.random.PRNGKey(5), (M, w.shape[0]), jnp.float64)
    f = np.asarray(si.get_activation(activation)(x @ w) @ a)
    s = np.asarray(x @ w_star)
    for j, k in enumerate(degrees):
        sample = f * hermite_e.hermeval(s, np.eye(k + 1)[k]) / math.sqrt(math.factorial(k))
        se = sample.std() / math.sqrt(M)
        assert abs(exact[j] - sample.mean()) < 5 * se, (activation, k, exact[j], sample.mean(), se)


@pytest.mark.parametrize("activation", ["erf", "relu", "tanh", "gelu", "silu"])
def test_neuron_overlaps_equal_the_theory(activation):
    """The simulations' per-neuron overlaps (closed forms for erf and relu, Gauss-Legendre otherwise)
    equal grokphase.theory.single_index.overlaps (closed forms and its own quadrature) at t = V - q^2,
    for every degree 0..8; the quadrature is converged (64 vs 128 nodes per half line)."""
    rng = np.random.default_rng(0)
    V = rng.uniform(0.05, 3.0, 50)
    q = rng.uniform(-1.0, 1.0, 50) * np.sqrt(V)
    degrees = tuple(range(9))
    mine = np.asarray(neuron_overlaps(activation, degrees, q, V))
    for quadrature in (False, True):
        theirs = np.asarray(si.overlaps(activation, degrees, q, V - q * q, quadrature=quadrature))
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)
    fine = np.asarray(neuron_overlaps(activation, degrees, q, V, nodes=128))
    np.testing.assert_allclose(mine, fine, rtol=0, atol=1e-13)


def test_projections_traceable_and_float32_accurate():
    """jit(vmap(...)) gives the eager values; float32 weights give the float64 projections to float32
    resolution (the projections are evaluated in float64 whatever the network's dtype)."""
    nets = [_network(s) for s in range(4)]
    w, a, w_star = (jnp.stack(x) for x in zip(*nets))
    for activation in ("tanh", "relu", "erf"):
        fn = jax.jit(jax.vmap(lambda w, a, ws: family_projections(w, a, ws, activation, (1, 2, 3))))
        batched = np.asarray(fn(w, a, w_star))
        eager = np.stack([np.asarray(family_projections(*n, activation, (1, 2, 3))) for n in nets])
        np.testing.assert_allclose(batched, eager, rtol=1e-12, atol=1e-14)
        f32 = np.asarray(fn(w.astype(jnp.float32), a.astype(jnp.float32), w_star.astype(jnp.float32)))
        scale = np.sum(np.abs(np.asarray(a)), axis=1, keepdims=True)
        assert np.max(np.abs(f32 - eager) / scale) < 2e-6
    # erf, degrees (1, 3): the paper model's own closed form
    p1, p3 = population_projections(*nets[0])
    np.testing.assert_allclose(np.asarray(family_projections(*nets[0], "erf", (1, 3))), [p1, p3], rtol=1e-13)


def test_relu_cannot_express_he3():
    """ReLU's odd Hermite moments beyond k = 1 vanish (M_k = He_{k-2}(0)/sqrt(2 pi) = 0 for odd k >= 3), so
    a ReLU network's He3 and He5 population projections are exactly zero for any weights, while its He1,
    He2 and He4 ones are not."""
    for seed in range(3):
        p = np.asarray(family_projections(*_network(seed), "relu", (1, 2, 3, 4, 5)))
        assert p[2] == 0.0 and p[4] == 0.0
        assert np.all(np.abs(p[[0, 1, 3]]) > 1e-6)


def test_hermite_teacher_and_orthonormality():
    """hermite_he is NumPy's hermite_e; Hhat_k = He_k/sqrt(k!) are orthonormal under N(0, 1) (Monte Carlo,
    every pair j, k <= 8 within 5 standard errors); the teacher is sum_k c_k He_k(w*.x)."""
    s = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (1_000_000,), jnp.float64))
    He = np.asarray(hermite_he(8, jnp.asarray(s)))
    for k in range(9):
        np.testing.assert_allclose(He[:, k], hermite_e.hermeval(s, np.eye(9)[k]), rtol=1e-10, atol=1e-10)
    H = He / np.sqrt([math.factorial(k) for k in range(9)])
    for j in range(9):
        for k in range(j, 9):
            prod = H[:, j] * H[:, k]
            se = prod.std() / math.sqrt(s.size)
            assert abs(prod.mean() - (j == k)) <= 5 * se + 1e-12, (j, k, prod.mean(), se)   # He_0^2 = 1: se = 0
    x = jax.random.normal(jax.random.PRNGKey(2), (50, 6), jnp.float64)
    w_star = jnp.ones(6) / math.sqrt(6.0)
    y = np.asarray(hermite_teacher(x, w_star, (0, 2, 5), (0.5, 1.0, -0.2)))
    z = np.asarray(x @ w_star)
    np.testing.assert_allclose(y, hermite_e.hermeval(z, [0.5, 0, 1.0, 0, 0, -0.2]), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# configuration and the paper's model


def test_options_normalise_and_keep_the_paper_hash():
    """activation/target are left out of parameters() at their defaults; the paper's target written as a
    spec is the same run as eps; a general target is stored as its normalised spec (degrees sorted)."""
    base = TeacherStudentSim.from_scaling(**TINY)
    assert "activation" not in base.parameters() and "target" not in base.parameters()
    same = TeacherStudentSim.from_scaling(**TINY, activation="erf", target="1:1,3:-0.3")
    assert same.parameters() == base.parameters() and same.paper_model
    other = TeacherStudentSim.from_scaling(**TINY, target="1:1, 3:-0.5")
    assert other.target is None and other.eps == -0.5 and other.paper_model
    fam = TeacherStudentSim.from_scaling(**TINY, activation="relu", target=" 4:0.3,2:1")
    p = fam.parameters()
    assert p["activation"] == "relu" and p["target"] == "2:1.0,4:0.3" and fam.degrees == (2, 4)
    assert TeacherStudentSim.from_scaling(**TINY, activation="relu", target="2:1.0,4:0.3").parameters() == p
    assert TeacherStudentSim.from_scaling(**TINY, activation="tanh").degrees == (1, 3)
    mine = TeacherStudentSim.from_scaling(**TINY, activation=jnp.sin)     # Python: any JAX callable
    assert mine.parameters()["activation"] == "sin" and not mine.paper_model


@pytest.fixture(scope="module")
def paper_run():
    return run_teacher_student(TeacherStudentSim.from_scaling(**TINY))


def test_paper_model_unchanged(paper_run):
    """The paper's model, with the options at their defaults or given explicitly, is the same run bit for
    bit; its learned variables are the linear/cubic ones stacked (degree = [1, 3]); and its numbers are
    those of the code before issue 18 (float32: the platform may move the last bits)."""
    explicit = run_teacher_student(TeacherStudentSim.from_scaling(**TINY, activation="erf", target="1:1,3:-0.3"))
    for name in paper_run.data_vars:
        np.testing.assert_array_equal(paper_run[name].values, explicit[name].values, err_msg=name)
    assert explicit.attrs["parameters_json"] == paper_run.attrs["parameters_json"]
    assert paper_run["degree"].values.tolist() == [1, 3]
    for suffix in ("", "_sem", "_network", "_trajectory"):
        for k, old in ((1, "linear"), (3, "cubic")):
            np.testing.assert_array_equal(paper_run[f"learned{suffix}"].sel(degree=k).values,
                                          paper_run[f"{old}_learned{suffix}"].values, err_msg=suffix)
    (pt,) = summary_points(paper_run)
    assert pt["learned"] == {"1": pt["linear_learned"], "3": pt["cubic_learned"]}
    # grokphase at commit 797c15d (before issue 18), this exact configuration, float32 on CPU
    before = {"linear_learned": 0.1815406096478303, "cubic_learned": 0.004912246183569853,
              "train_mse": 1.1757472107807794, "test_mse": 1.17039459447066, "ensemble_test_mse": 1.157348417803673}
    for key, value in before.items():
        assert math.isclose(pt[key], value, rel_tol=1e-4), (key, pt[key], value)


# ---------------------------------------------------------------------------------------------------
# other activations and targets: runs, CLI, comparison


def test_relu_network_he3_zero_in_a_run():
    """A ReLU ensemble on the paper's target: the He3 population projection is exactly zero at every
    record, and its test-set estimate (independent test sets per data set) is consistent with zero."""
    # an explicit droplet threshold: no theory solve (its compilation would dominate this test)
    ds = run_teacher_student(TeacherStudentSim(**SMALL, activation="relu", droplet_threshold=0.4))
    assert np.isnan(ds["theory_droplet_fraction"].values).all()
    assert np.all(ds["cubic_learned_trajectory"].values == 0.0)
    assert np.all(ds["learned_trajectory"].sel(degree=3).values == 0.0)
    assert np.all(np.abs(ds["linear_learned_trajectory"].values) > 0)
    est, se = float(ds["cubic_learned_test"].values[0]), float(ds["cubic_learned_test_sem"].values[0])
    assert se > 0 and abs(est) < 5 * se, (est, se)       # t with 7 degrees of freedom: P(|t| > 5) < 0.2 %


def test_tanh_cli_json_and_compare(tmp_path, capsys):
    """`grokphase sim teacher-student --activation tanh --target ...` prints "learned" per target degree;
    `compare teacher-student` compares each degree with the single-index exact finite-d theory."""
    out = tmp_path / "tanh.nc"
    argv = ["sim", "teacher-student", "--activation", "tanh", "--target", "1:1,5:0.2", "--N", "48", "--n", "120",
            "--d", "16", "--s2", "0.3", "--datasets", "2", "--inits", "1", "--steps", "30", "--burn-in", "10",
            "--record-every", "10", "--lr", "0.05", "--no-progress", "--json", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["activation"] == "tanh" and summary["target"] == "1:1.0,5:0.2"
    (pt,) = summary["points"]
    assert set(pt["learned"]) == {"1", "5"} and set(pt["learned_sem"]) == {"1", "5"}
    assert "linear_learned" not in pt and 0.0 < pt["learned"]["1"] < 1.0
    ds = load_dataset(out, "sims.teacher_student")
    assert ds.attrs["param_activation"] == "tanh" and ds["degree"].values.tolist() == [1, 5]
    assert main(["compare", "teacher-student", "--sim", str(out), "--json"]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert cmp["z_against"] == SINGLE_INDEX_THEORY and cmp["degrees"] == [1, 5]
    (row,) = cmp["points"]
    # the theory at the simulated sizes (N = 48, n = 120, d = 16, sa2 = 8/N)
    theory = si.solve_finite_d(si.SingleIndexParams(N=48.0, n=120.0, d=16.0, s2=0.3, sa2=8.0 / 48.0, sw2=0.5),
                               "1:1,5:0.2", "tanh")
    for j, k in enumerate(("1", "5")):
        assert math.isclose(row["theory_learned"][k], float(np.asarray(theory.learned)[j]), rel_tol=1e-9)
        z = (row["sim_learned"][k] - row["theory_learned"][k]) / row["sim_learned_sem"][k]
        assert math.isclose(row["z_learned"][k], z, rel_tol=1e-9)
        assert row["sim_learned"][k] == pt["learned"][k]
    with pytest.raises(Exception, match="do not mix"):
        compare_teacher_student([ds, _paper_like(ds)])


def _paper_like(ds):
    """The same file marked as the paper's model (for the mixed-files error)."""
    other = ds.copy()
    other.attrs = {k: v for k, v in ds.attrs.items() if k not in ("param_activation", "param_target")}
    return other


# ---------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("kwargs, needle", [
    ({"activation": "softplus"}, "unknown activation 'softplus'"),
    ({"target": "2:1,x:3"}, "target degree 'x'"),
    ({"target": "2:1,9:0.1"}, "degree 9 is out of range"),
    ({"target": "2:1,4:0"}, "coefficient of He4 is 0"),
    ({"target": "2:1", "eps": -0.5}, "either eps"),
    ({"target": "2:1", "start": "ordered"}, "ordered .*start needs the paper's model"),
    ({"activation": "relu", "anneal": "up"}, "ordered .*start needs the paper's model"),
])
def test_bad_family_options(kwargs, needle):
    with pytest.raises(ParameterError, match=needle):
        TeacherStudentSim(**{**SMALL, "s2": (0.2, 0.3), **kwargs})


@pytest.mark.parametrize("argv, needle", [
    (["--activation", "swish"], "unknown activation 'swish'"),
    (["--target", "2:one"], "coefficient 'one' of He2"),
])
def test_bad_cli_options_are_one_line_errors(argv, needle, capsys):
    assert main(["sim", "teacher-student", "--beta", "0.125", "--steps", "10", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_toml_options_are_checked_before_work():
    with pytest.raises(ParameterError, match="activation must be a string"):
        ts_model.check({"activation": 3}, "file.toml: [[sim]] #1")
    with pytest.raises(ParameterError, match="unknown activation 'foo'"):
        ts_model.check({"activation": "foo", "beta": 0.125}, "file.toml: [[sim]] #1")
    sim = ts_model.sim_from_options({"activation": "gelu", "target": "2:1,4:0.3", "beta": 0.125})
    assert sim.activation == "gelu" and sim.target == "2:1.0,4:0.3"
