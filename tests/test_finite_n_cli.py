"""``grokphase theory finite-n`` and its Python API (:func:`grokphase.experiments.finite_n.run_finite_n`),
and the finite-n theory as the third curve of ``compare teacher-student`` (issue 22).

One tiny model (d = 8, n = 50, N = 40, two sigma^2, two data sets, a few MALA steps: seconds once
compiled) is solved by the CLI and by the API: the file holds the API's numbers bit for bit, each cell is
``solve_finite_n`` on the simulations' data set i with the sampler key of data set i, the means and
standard errors are those of the converged cells, the EK column is the exact (q, t) theory.  A run
interrupted after its first solve and resumed, or run on data set 0 and then on 0 and 1, equals the
uninterrupted run; a file of other parameters is refused naming them.  The retry rule is checked on a
scripted solver (which start, which tau0).  The comparison's z-scores are recomputed by hand."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest
import xarray as xr

from grokphase.cli import main
from grokphase.errors import ParameterError, ResultFileError
from grokphase.experiments import finite_n as efn
from grokphase.io import annotate, load_dataset, parameters_of, save_dataset
from grokphase.theory import finite_n as fn
from grokphase.theory.teacher_student import TeacherStudentParams, solve_finite_d

MODEL = dict(N=40.0, n=50.0, d=8.0, sa2=0.2)
S2 = (0.2, 0.3)
CFG = fn.FiniteNConfig(q_size=8, walkers=8, iterations=6, steps=4, blocks=2, block_steps=4)
CFG_ARGS = ["--q-size", "8", "--walkers", "8", "--iterations", "6", "--steps", "4", "--blocks", "2", "--block-steps", "4"]
ARGV = ["theory", "finite-n", "--N", "40", "--n", "50", "--d", "8", "--sa2", "0.2", "--s2", "0.2,0.3", *CFG_ARGS,
        "--no-progress"]
#: what changes from one run of the same cells to the next
TIMING = ("seconds",)


def _run(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as exc:           # argparse's own errors (types, ranges)
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def _params():
    return TeacherStudentParams(**MODEL, s2=np.asarray(S2))


def assert_same_cells(a: xr.Dataset, b: xr.Dataset, skip=TIMING):
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.variables:
        if name in skip:
            continue
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The CLI on data sets 0 and 1 (file and --json summary) and the API on the same cells."""
    tmp = tmp_path_factory.mktemp("finite_n")
    path = tmp / "fn.nc"
    rc = main([*ARGV, "--datasets", "0", "1", "--out", str(path), "--json"])
    assert rc == 0
    api = efn.run_finite_n(_params(), [0, 1], config=CFG)
    return load_dataset(path, efn.KIND), api, tmp


def test_cli_file_is_the_python_api_and_the_solver(cli_run):
    """The netCDF holds the API's numbers bit for bit; a cell is solve_finite_n (with the retry rule) on
    the sims' data set i (dataset_key(seed, i)) with the sampler key fold_in(PRNGKey(1), i); the means
    and SEs are over converged cells; the EK columns are solve_finite_d at the same point."""
    ds, api, _ = cli_run
    assert_same_cells(ds, api)
    assert ds["dataset"].values.tolist() == [0, 1] and np.allclose(ds["s2"].values, S2)
    assert bool(ds["solved"].all())
    # cell (s2 = 0.3, data set 1) from the solver itself (0.3 is solved first: no continuation start)
    x, y, w = fn.draw_dataset(fn.dataset_key(0, 1), 50, 8, -0.3)
    p = TeacherStudentParams(**MODEL, s2=0.3)
    sol, start, retried = efn.solve_with_retry(p, x, y, w, jax.random.fold_in(jax.random.PRNGKey(1), 1), CFG)
    cell = ds.sel(s2=0.3, dataset=1)
    assert float(cell["cubic_learned_dataset"]) == sol.cubic_learned
    assert float(cell["linear_learned_mc_error"]) == sol.linear_learned_sem
    assert float(cell["residual"]) == sol.residual and bool(cell["converged"]) == sol.converged
    assert int(cell["start"]) == start and bool(cell["retried"]) == retried
    np.testing.assert_array_equal(cell["tau"].values, sol.tau)
    # means and standard errors over converged data sets, by hand
    for j in range(2):
        ok = ds["converged"].values[j]
        for name in ("linear_learned", "cubic_learned", "droplet_mass"):
            v = ds[f"{name}_dataset"].values[j][ok]
            assert float(ds[name].values[j]) == pytest.approx(v.mean(), rel=1e-12)
            err = v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else np.nan
            np.testing.assert_allclose(ds[f"{name}_sem"].values[j], err, rtol=1e-12)
        assert int(ds["n_converged"].values[j]) == ok.sum()
        ek = solve_finite_d(TeacherStudentParams(**MODEL, s2=S2[j]))
        assert float(ds["ek_cubic_learned"].values[j]) == pytest.approx(1.0 - float(ek.c) / -0.3, rel=1e-12)
        assert float(ds["ek_linear_learned"].values[j]) == pytest.approx(1.0 - float(ek.b), rel=1e-12)
    # provenance
    attrs = ds.attrs
    assert attrs["grokphase_kind"] == "theory.teacher_student.finite_n"
    for key in ("grokphase_version", "git_revision", "git_dirty", "created_utc", "command", "data_sha256"):
        assert key in attrs, key
    params = parameters_of(ds)
    assert (params["N"], params["n"], params["d"], params["sa2"], params["eps"]) == (40.0, 50.0, 8.0, 0.2, -0.3)
    assert params["s2"] == list(S2) and params["seed"] == 0 and params["sampler_seed"] == 1
    assert params["config"]["walkers"] == 8 and params["config"]["block_steps"] == 4
    assert json.loads(attrs["seeds"]) == {"seed": 0, "sampler_seed": 1, "datasets": [0, 1]}


def test_json_summary_matches_the_file(cli_run, capsys):
    ds, _, tmp = cli_run
    rc, out, err = _run(capsys, *ARGV, "--datasets", "0", "1", "--out", str(tmp / "fn.nc"), "--json")   # a resume
    assert rc == 0
    summary = json.loads(out)
    assert [p["s2"] for p in summary["points"]] == list(S2)
    for j, p in enumerate(summary["points"]):
        assert p["cubic_learned"] == float(ds["cubic_learned"].values[j])
        assert p["n_solved"] == 2
    assert len(summary["datasets"]) == 4 and {r["start"] for r in summary["datasets"]} <= set(efn.STARTS.values())
    assert load_dataset(tmp / "fn.nc").attrs["created_utc"] >= ds.attrs["created_utc"]


class _StopAfter:
    """A progress bar that interrupts the run after ``k`` finished solves (as Ctrl-C would)."""

    def __init__(self, k):
        self.k = k

    def reset(self, total=None):
        pass

    def set_postfix_str(self, text):
        pass

    def update(self, n=1):
        self.k -= n
        if self.k == 0:
            raise KeyboardInterrupt


def test_resume_equals_the_uninterrupted_run(cli_run, tmp_path):
    """Interrupted after one solve, then resumed: the same file as the uninterrupted run (timings aside), and
    the solve that had finished is not redone.  Data set 0 first, then 0 and 1: the same again."""
    ds, api, _ = cli_run
    path = tmp_path / "r.nc"
    with pytest.raises(KeyboardInterrupt):
        efn.run_finite_n(_params(), [0, 1], config=CFG, out=path, progress=_StopAfter(1))
    part = load_dataset(path, efn.KIND)
    assert int(part["solved"].sum()) == 1 and bool(part["solved"].sel(s2=0.3, dataset=0))
    first = float(part["seconds"].sel(s2=0.3, dataset=0))
    resumed = efn.run_finite_n(_params(), [0, 1], config=CFG, out=path)
    assert_same_cells(resumed, api)
    assert float(resumed["seconds"].sel(s2=0.3, dataset=0)) == first           # kept, not solved again
    assert_same_cells(load_dataset(path, efn.KIND), api)
    # data set 0, then data sets 0 1, through the CLI
    path2 = tmp_path / "r2.nc"
    assert main([*ARGV, "--datasets", "0", "--out", str(path2)]) == 0
    assert load_dataset(path2)["dataset"].values.tolist() == [0]
    assert main([*ARGV, "--datasets", "0:2", "--out", str(path2)]) == 0
    assert_same_cells(load_dataset(path2, efn.KIND), ds)


@pytest.mark.parametrize("change, named", [(["--s2", "0.2,0.25"], "s2"), (["--walkers", "16"], "config"),
                                           (["--seed", "3"], "seed"), (["--no-retry"], "retry")])
def test_resume_refuses_other_parameters(cli_run, tmp_path, capsys, change, named):
    _, _, tmp = cli_run
    path = tmp_path / "x.nc"
    path.write_bytes((tmp / "fn.nc").read_bytes())
    before = path.read_bytes()
    argv = list(ARGV)
    if change[0] in argv:
        i = argv.index(change[0])
        argv[i:i + 2] = change
    else:
        argv += change
    rc, out, err = _run(capsys, *argv, "--datasets", "0", "--out", str(path))
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "other parameters" in err and f"{named}:" in err, err
    assert path.read_bytes() == before


@pytest.mark.parametrize("extra, needle", [
    (["--datasets", "-1"], "--datasets"), (["--datasets", "3", "3"], "data set 3 given twice"),
    (["--datasets", "2:1"], "--datasets"), (["--datasets", "x"], "--datasets"),
    (["--eps", "0"], "--eps must be nonzero"), (["--q-size", "2"], "--q-size must be >= 3"),
    (["--blocks", "1"], "--blocks must be >= 2"), (["--damping", "1.5"], "--damping must be in (0, 1]"),
    (["--target-accept", "1"], "--target-accept must be in (0, 1)"), (["--s2", "0.1,0.1"], "--s2"),
    (["--s2", "0.1,-1"], "--s2"), (["--beta", "0.01"], "--beta"), (["--walkers", "0"], "--walkers"),
    (["--out", "x.txt"], "--out"),
])
def test_bad_inputs_are_one_line_errors(capsys, tmp_path, monkeypatch, extra, needle):
    monkeypatch.chdir(tmp_path)
    argv = list(ARGV)
    for flag in extra[:1]:
        if flag in argv:
            i = argv.index(flag)
            del argv[i:i + 2]
    rc, out, err = _run(capsys, *argv, *extra)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("grokphase: error: ") and needle in err, err
    assert not list(tmp_path.iterdir())


def test_api_bad_inputs_raise():
    p = _params()
    with pytest.raises(ParameterError, match="given twice"):
        efn.run_finite_n(p, [1, 1], config=CFG)
    with pytest.raises(ParameterError, match="at least one"):
        efn.run_finite_n(p, [], config=CFG)
    with pytest.raises(ParameterError, match="data-set index"):
        efn.run_finite_n(p, [0.5], config=CFG)
    with pytest.raises(ParameterError, match="N must be one value"):
        efn.run_finite_n(p.replace(N=np.array([40.0, 80.0])), [0], config=CFG)
    with pytest.raises(ParameterError, match="n must be an integer"):
        efn.run_finite_n(p.replace(n=50.5), [0], config=CFG)
    with pytest.raises(ParameterError, match="seed"):
        efn.run_finite_n(p, [0], seed=-1, config=CFG)


# ------------------------------------------------------------------------------------------------
# the retry rule, on a scripted solver


def test_retry_rule_continues_from_the_nearest_larger_converged_s2(monkeypatch):
    """Three sigma^2 (solved from the largest down).  Script: 0.4 fails then converges on its retry (no
    larger converged s2: tau_EK/2, start half_ek); 0.3 converges at once; 0.2 fails, and its retry must
    start from 0.3's tau rescaled, tau0 = 0.3 tau_0.3 / 0.2 (continuation), with fresh keys and twice the
    iterations; the retry fails with a larger residual, so the first solve is kept (start ek, retried)."""
    calls = []
    ek_tau = np.linspace(1.0, 2.0, 50)
    script = {0.4: [(False, 5.0), (True, 0.1)], 0.3: [(True, 0.05)], 0.2: [(False, 3.0), (False, 7.0)]}

    def fake(params, x, y, w_star, key, config=CFG, tau0=None, verbose=False):
        s2 = round(float(params.s2), 6)
        conv, res = script[s2].pop(0)
        calls.append((s2, None if tau0 is None else np.asarray(tau0), config.iterations, np.asarray(key)))
        tau = np.full(50, 10.0 * s2 + len(calls))
        return fn.FiniteNSolution(0.5, 0.01, 0.1, 0.01, 0.1, 0.0, res, 0.6, conv, np.zeros(8), np.zeros(8), tau,
                                  np.zeros((1, 3)))

    monkeypatch.setattr(fn, "solve_finite_n", fake)
    monkeypatch.setattr(fn, "ek_tau", lambda p, s: ek_tau)
    ds = efn.run_finite_n(TeacherStudentParams(**MODEL, s2=np.array([0.2, 0.3, 0.4])), [0], config=CFG)
    assert [c[0] for c in calls] == [0.4, 0.4, 0.3, 0.2, 0.2]
    assert calls[0][1] is None and calls[0][2] == CFG.iterations
    np.testing.assert_allclose(calls[1][1], 0.5 * ek_tau)                          # half_ek
    assert calls[1][2] == efn.RETRY_ITERATIONS * CFG.iterations
    assert not np.array_equal(calls[1][3], calls[0][3])                            # fresh chains
    tau_03 = np.full(50, 10.0 * 0.3 + 3)                                           # 0.3 was the third call
    np.testing.assert_allclose(calls[4][1], tau_03 * 0.3 / 0.2, rtol=1e-12)        # continuation
    cell = lambda s2, v: ds[v].sel(s2=s2).values[0]  # noqa: E731
    assert [efn.STARTS[int(cell(s, "start"))] for s in (0.2, 0.3, 0.4)] == ["ek", "ek", "half_ek"]
    assert [bool(cell(s, "retried")) for s in (0.2, 0.3, 0.4)] == [True, False, True]
    assert [bool(cell(s, "converged")) for s in (0.2, 0.3, 0.4)] == [False, True, True]
    assert float(cell(0.2, "residual")) == 3.0                                     # the better of the two
    assert np.isnan(ds["cubic_learned"].sel(s2=0.2)) and int(ds["n_converged"].sel(s2=0.2)) == 0


# ------------------------------------------------------------------------------------------------
# compare teacher-student --finite-n


SIM = {"s2": [0.2, 0.25, 0.3], "linear_learned": [0.7, 0.65, 0.6], "linear_learned_sem": [0.02, 0.02, 0.03],
       "cubic_learned": [0.15, 0.13, 0.11], "cubic_learned_sem": [0.01, 0.01, 0.004]}


def _fake_sim(**change):
    """The part of a teacher-student simulation file the finite-n matching and z-scores read (sigma^2 = 0.2,
    0.25, 0.3; the finite-n runs have 0.2 and 0.3)."""
    model = {**MODEL, "sw2": 0.5, "eps": -0.3, **change}
    ds = xr.Dataset({k: ("s2", v) for k, v in SIM.items() if k != "s2"}, coords={"s2": SIM["s2"]})
    ds = annotate(ds, kind="sims.teacher_student", parameters={"sw2": model["sw2"], "eps": model["eps"], "seed": 0})
    ds.attrs.update({k: model[k] for k in ("N", "n", "d", "sa2")})
    return ds


def test_finite_n_z_scores_by_hand(cli_run):
    from grokphase.analysis import compare as cmp

    fin, _, _ = cli_run
    unknown = fin.copy(deep=True)
    unknown["cubic_learned_sem"].values[:] = np.nan            # one converged data set: no error estimate
    assert np.isnan(cmp.finite_n_for_sim(_fake_sim(), unknown)["z_finite_n_cubic"]).all()
    fin = fin.copy(deep=True)
    for name, sems in (("linear_learned_sem", [0.03, 0.05]), ("cubic_learned_sem", [0.002, 0.007])):
        fin[name].values[:] = sems                              # known errors (the tiny run's may be NaN)
    out = cmp.finite_n_for_sim(_fake_sim(), fin)
    for j, i in ((0, 0), (2, 1)):
        for short in ("cubic", "linear"):
            v, e = SIM[f"{short}_learned"], SIM[f"{short}_learned_sem"]
            m, se = float(fin[f"{short}_learned"].values[i]), float(fin[f"{short}_learned_sem"].values[i])
            assert out[f"finite_n_{short}_learned"][j] == m
            assert out[f"z_finite_n_{short}"][j] == pytest.approx((v[j] - m) / math.hypot(e[j], se), rel=1e-12)
    assert all(np.isnan(out[k][1]) for k in cmp.FINITE_N_VARS)                     # no finite-n s2 = 0.25
    assert out["finite_n_datasets"][0] == int(fin["n_converged"].values[0])


@pytest.mark.parametrize("param, value", [("N", 41.0), ("n", 60.0), ("d", 9.0), ("sa2", 0.25), ("eps", -0.2)])
def test_compare_refuses_a_finite_n_file_of_another_model(cli_run, tmp_path, capsys, param, value):
    """Through the CLI: a simulation differing in one parameter is refused, the message naming it."""
    _, _, tmp = cli_run
    sim = tmp_path / "sim.nc"
    save_dataset(_fake_sim(**{param: value}), sim)
    rc, out, err = _run(capsys, "compare", "teacher-student", "--sim", str(sim), "--finite-n", str(tmp / "fn.nc"))
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"does not describe the simulated model: {param} = " in err, err


def test_compare_refuses_two_files_for_one_simulation_and_foreign_files(cli_run):
    from grokphase.analysis import compare as cmp

    fin, _, _ = cli_run
    with pytest.raises(ResultFileError, match="second finite-n file"):
        cmp.match_finite_n([_fake_sim()], {"a.nc": fin, "b.nc": fin})
    with pytest.raises(ResultFileError, match="expected a `grokphase theory finite-n` result"):
        cmp.match_finite_n([_fake_sim()], {"a.nc": _fake_sim()})
    assert cmp.match_finite_n([_fake_sim(N=41.0), _fake_sim()], [fin]) == [None, fin]


def _stub_finite_d_theory(monkeypatch):
    """The comparison's finite-d theory (solve_finite_d, solve_transition: ~45 s of compilation at this size)
    replaced by constants: the finite-n column does not depend on it."""
    import types

    from grokphase.analysis import compare as cmp
    from grokphase.theory import teacher_student as ts

    def finite_d(params, approximation="exact", density=False, **_):
        shape = np.shape(params.s2)
        one = np.ones(shape)
        q = np.broadcast_to(np.linspace(-1.4, 1.4, 57), shape + (57,))
        return types.SimpleNamespace(b=0.5 * one, c=-0.03 * one, linear_learned=0.5 * one, cubic_learned=0.1 * one,
                                     q=q, log_p=-q**2)

    fake = types.SimpleNamespace(**{k: getattr(ts, k) for k in dir(ts) if not k.startswith("__")})
    fake.solve_finite_d = finite_d
    fake.solve_transition = lambda *a, **k: types.SimpleNamespace(value=0.15, found=True)
    monkeypatch.setattr(cmp, "ts", fake)


def test_compare_cli_adds_the_finite_n_curve(cli_run, tmp_path, capsys, monkeypatch):
    """A real (tiny) simulation of the same model: ``compare teacher-student --finite-n`` puts the finite-n
    means, errors and z-scores in the Dataset, the JSON rows and the table, and draws the figure; the
    z-scores are (sim - finite n)/sqrt(SEM_sim^2 + SEM_fin^2) recomputed from the two files."""
    from grokphase.cli.sims import finite_n_compare_lines
    from grokphase.sims.teacher_student import run_teacher_student
    from grokphase.sims.teacher_student.config import TeacherStudentSim

    _stub_finite_d_theory(monkeypatch)

    fin, _, _ = cli_run
    fin = fin.copy(deep=True)
    for name, sems in (("linear_learned_sem", [0.03, 0.05]), ("cubic_learned_sem", [0.002, 0.007])):
        fin[name].values[:] = sems               # known errors (a tiny run may have one converged data set)
    fin_path, sim_path = tmp_path / "fin.nc", tmp_path / "sim.nc"
    save_dataset(fin, fin_path)
    sim = run_teacher_student(TeacherStudentSim(N=40, n=50, d=8, s2=S2, sa2=0.2, datasets=2, inits=2, steps=40,
                                                burn_in=10, record_every=10, n_test=200))
    save_dataset(sim, sim_path)
    rc, out, err = _run(capsys, "compare", "teacher-student", "--sim", str(sim_path), "--finite-n", str(fin_path), "--json", "--out", str(tmp_path / "c.nc"), "--plot", str(tmp_path / "c.png"))
    assert rc == 0, err
    rows = json.loads(out)["points"]
    assert len(rows) == 2 and (tmp_path / "c.png").stat().st_size > 0
    cmp = load_dataset(tmp_path / "c.nc", "analysis.teacher_student.compare")
    for j, row in enumerate(rows):
        for short in ("linear", "cubic"):
            m, se = float(fin[f"{short}_learned"].values[j]), float(fin[f"{short}_learned_sem"].values[j])
            v, e = float(sim[f"{short}_learned"].values[j]), float(sim[f"{short}_learned_sem"].values[j])
            assert row[f"finite_n_{short}_learned"] == m and row[f"finite_n_{short}_learned_sem"] == se
            assert row[f"z_finite_n_{short}"] == pytest.approx((v - m) / math.hypot(e, se), rel=1e-12)
            assert float(cmp[f"z_finite_n_{short}"].values[0, j]) == row[f"z_finite_n_{short}"]
    assert int(cmp["finite_n_same_seed"].values[0]) == 1
    text = "\n".join(finite_n_compare_lines(rows))             # the table the command prints without --json
    assert f"{rows[1]['z_finite_n_cubic']:6.2f}" in text and f"{rows[0]['finite_n_linear_learned']:8.4f}" in text
