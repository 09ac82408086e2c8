"""``grokphase theory single-index`` (issue 18): the single-index family's finite-d theory from the
command line.

Independent references: the paper's model's own command (``theory teacher-student --approximation
exact`` and ``theory gp-teacher-student --approximation exact``) for erf on He1 - 0.3 He3; for ReLU,
whose He3 overlap vanishes identically (checked here on the overlaps), the stationarity of F in v_3
(dF/dv_3 = yhat_3 - v_3) forces v_3 = yhat_3, learned fraction 0; with --kmax 3 an erf basis equals the
target's (erf couples odd degrees only), so the shift must be exactly 0.

Cost: three compiled solvers (erf on {1, 3}, the paper's model's, relu on {1, 3}) at beta = 1/8.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from grokphase.cli import main
from grokphase.cli import single_index as cli_single_index
from grokphase.io import load_dataset
from grokphase.theory.single_index import HermiteTarget, coupled_degrees, overlaps

SMALL = ["--beta", "1/8", "--s2", "0.14"]


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def erf_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("si") / "erf.nc"
    rc, out, _ = run(["theory", "single-index", "--activation", "erf", "--target", "1:1,3:-0.3", "--kmax", "3",
                      "--nngp", *SMALL, "--json", "--out", str(path)])
    assert rc == 0
    return json.loads(out), path


def test_erf_paper_target_equals_teacher_student(erf_run, paper_default):
    got, _ = erf_run
    assert paper_default["approximation"] == "exact"          # the default: --approximation exact
    want = paper_default["points"][0]
    pt = got["points"][0]
    assert got["degrees"] == [1, 3] and got["activation"] == "erf"
    assert pt["phase"] == want["phase"] and pt["status"] == want["status"] == "converged"
    for a, b in [(pt["learned"]["1"], want["linear_learned"]), (pt["learned"]["3"], want["cubic_learned"]),
                 (pt["free_energy"], want["free_energy"]), (pt["droplet_fraction"], want["droplet_fraction"]),
                 (pt["discrepancy"]["1"], want["b"]), (pt["discrepancy"]["3"], math.sqrt(6.0) * want["c"])]:
        assert abs(a - b) < 1e-10
    # --kmax 3: erf couples only odd degrees, so the enlarged basis is the target's and nothing moves
    assert coupled_degrees("erf", 3) == (1, 3)
    assert pt["basis_shift"] == {"1": 0.0, "3": 0.0}


def test_erf_nngp_eigenvalues_equal_gp_teacher_student(erf_run):
    got, _ = erf_run
    # the same model written out at beta = 1/8 (gp-teacher-student has no --beta): Table 1 by hand
    rc, out, _ = run(["theory", "gp-teacher-student", "--approximation", "exact", "--N", "87.5", "--n", "375",
                      "--d", str(150 / math.sqrt(8)), "--sa2", str(8 / 700 * math.sqrt(8)), "--s2", "0.14", "--json"])
    assert rc == 0
    want = json.loads(out)
    lam = got["nngp_eigenvalues"]
    assert abs(lam["1"] / want["lambda1"] - 1) < 1e-10 and abs(lam["3"] / want["lambda3"] - 1) < 1e-10
    gp = got["points"][0]["gp_learned"]
    assert abs(gp["3"] - want["points"][0]["cubic_learned"]) < 1e-10


def test_out_round_trips_with_parameters(erf_run):
    summary, path = erf_run
    ds = load_dataset(path, kind="theory.single_index.sweep")
    assert ds["learned"].dims == ("s2", "degree") and list(ds["degree"].values) == [1, 3]
    assert float(ds["learned"].sel(degree=3)[0]) == summary["points"][0]["learned"]["3"]
    params = json.loads(ds.attrs["parameters_json"])
    assert params["activation"] == "erf" and params["target"] == "1:1.0,3:-0.3" and params["degrees"] == [1, 3]
    assert params["beta"] == 0.125 and params["N"] == 700.0 and params["k_max"] == 3 and params["nngp"] is True
    assert ds.attrs["param_activation"] == "erf"


def test_relu_cannot_learn_he3():
    q = np.linspace(-1.5, 1.5, 31)
    assert np.max(np.abs(np.asarray(overlaps("relu", (3,), q, 0.5 + 0 * q)))) < 1e-15   # g_3 == 0 for relu
    assert np.max(np.abs(np.asarray(overlaps("relu", (1,), q, 0.5 + 0 * q)))) > 0.1
    # so F(v) = v.yhat - |v|^2/2 - r log z(v1) and dF/dv3 = 0 gives v3 = yhat3: learned 1 - v3/yhat3 = 0
    yhat3 = HermiteTarget.parse("1:1,3:-0.3").yhat((3,))[0]
    rc, out, _ = run(["theory", "single-index", "--activation", "relu", "--target", "1:1,3:-0.3", *SMALL, "--json"])
    assert rc == 0
    pt = json.loads(out)["points"][0]
    assert abs(pt["discrepancy"]["3"] - yhat3) < 1e-10
    assert abs(pt["learned"]["3"] - (1.0 - pt["discrepancy"]["3"] / yhat3)) < 1e-15
    assert abs(pt["learned"]["3"]) < 1e-10
    assert 0.05 < pt["learned"]["1"] < 1.0                 # the linear part is learned
    # the text form: a header and one line per point
    rc, text, _ = run(["theory", "single-index", "--activation", "relu", "--target", "1:1,3:-0.3", *SMALL])
    lines = text.strip().splitlines()
    assert rc == 0 and len(lines) == 3 and lines[2].split()[:2] == ["0.1400", pt["phase"]]


@pytest.mark.parametrize("argv, message", [
    (["--activation", "softplus"], "unknown activation 'softplus'"),
    (["--target", "1:1,3"], "must be degree:coefficient"),
    (["--target", "9:1"], "degree 9 is out of range"),
    (["--target", "1:x"], "is not a number"),
    (["--degrees", "3"], "miss the target's degree 1"),
    (["--degrees", "1,3,9"], "degree 9 is out of range"),
    (["--degrees", "1,a"], "--degrees '1,a'"),
    (["--kmax", "9"], "--kmax 9"),
    (["--degrees", "1,3", "--kmax", "5"], "not allowed with argument"),
    (["--s2", "0"], "must be a finite number > 0"),
    (["--s2", "-0.1"], "must be a finite number > 0"),
    (["--s2", "0.1", "--s2-sweep", "0.1:0.2:3"], "give either --s2 or --s2-sweep"),
    (["--s2-sweep", "0.1:0.2"], "--s2-sweep"),
    (["--out", "x.png"], "netCDF"),
    (["--beta", "1e300"], "--beta 1e+300 takes the scaled model out of range"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a computation started before the input was checked")

    monkeypatch.setattr(cli_single_index, "build_single_index_sweep", boom)
    try:
        rc = main(["theory", "single-index", *argv])
    except SystemExit as exc:          # argparse's own errors (types, exclusive flags)
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grokphase: error:") and message in lines[0], err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# the family on the teacher-student commands (--activation / --target / --degrees / --kmax)
# ------------------------------------------------------------------------------------------------

# the JSON point of `theory teacher-student` (finite d) before the family existed, plus "learned"
TS_POINT_KEYS = {"beta", "alpha", "s2", "u", "r", "b", "c", "linear_learned", "cubic_learned", "droplet_fraction",
                 "free_energy", "residual", "t_droplet", "t_bulk", "iterations", "phase", "status", "learned"}


def run_json(argv):
    rc, out, err = run(argv)
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def paper_default():
    return run_json(["theory", "teacher-student", *SMALL, "--json", "--no-progress"])


def test_paper_default_unchanged_and_learned_per_degree(paper_default):
    from grokphase.theory import teacher_student as ts
    assert set(paper_default) == {"approximation", "points"} and paper_default["approximation"] == "exact"
    (pt,) = paper_default["points"]
    assert set(pt) == TS_POINT_KEYS
    # the paper's solver called directly at the Table-1 point beta = 1/8 (N = 87.5, d = 150/sqrt 8, n = 375)
    eps = -0.3
    params = ts.TeacherStudentParams(N=700.0, n=3000.0, d=150.0, s2=0.14, sa2=8 / 700, sw2=0.5, eps=eps).scaled(beta=1 / 8)
    ref = ts.solve_finite_d(params)
    for key in ("b", "c", "linear_learned", "cubic_learned", "droplet_fraction", "free_energy"):
        assert abs(pt[key] - float(getattr(ref, key))) < 1e-12, key
    assert pt["phase"] == ts.Phase(int(ref.phase)).label and pt["status"] == "converged"
    assert pt["s2"] == float(params.s2) and pt["u"] == pytest.approx(float(params.u), rel=1e-14)
    # learned per degree: 1 - b for He1, 1 - c/eps for He3
    assert set(pt["learned"]) == {"1", "3"}
    assert abs(pt["learned"]["1"] - (1.0 - float(ref.b))) < 1e-12
    assert abs(pt["learned"]["3"] - (1.0 - float(ref.c) / eps)) < 1e-12


def test_erf_on_the_papers_target_is_the_papers_model(paper_default):
    # written out, in any order: the paper's code path, the same JSON
    same = run_json(["theory", "teacher-student", "--activation", "erf", "--target", "3:-0.3,1:1", *SMALL,
                     "--json", "--no-progress"])
    assert same == paper_default
    # --kmax 3 routes it through the family's solver (erf couples odd degrees only: basis {1, 3}); a
    # different code path, the same numbers to 1e-10
    fam = run_json(["theory", "teacher-student", "--activation", "erf", "--target", "1:1,3:-0.3", "--kmax", "3",
                    *SMALL, "--json", "--no-progress"])
    (want,) = paper_default["points"]
    (pt,) = fam["points"]
    assert fam["degrees"] == [1, 3] and fam["activation"] == "erf" and pt["basis_shift"] == {"1": 0.0, "3": 0.0}
    assert pt["phase"] == want["phase"] and pt["status"] == want["status"]
    for a, b in [(pt["learned"]["1"], want["learned"]["1"]), (pt["learned"]["3"], want["learned"]["3"]),
                 (pt["free_energy"], want["free_energy"]), (pt["droplet_fraction"], want["droplet_fraction"]),
                 (pt["discrepancy"]["1"], want["b"]), (pt["discrepancy"]["3"], math.sqrt(6.0) * want["c"]),
                 (pt["s2"], want["s2"]), (pt["u"], want["u"]), (pt["r"], want["r"])]:
        assert abs(a - b) < 1e-10


SWEEP = ["--s2-sweep", "0.1:0.3:3", "--beta", "1/8", "--json", "--no-progress"]


def test_tanh_sweep_is_a_batch_of_single_points():
    # a batch of several s2 (regression: tanh raised TracerArrayConversionError in a batch, 38576b7;
    # the overlaps are the same code in both approximations, the concentrated one compiles faster)
    tanh = ["theory", "teacher-student", "--activation", "tanh", "--target", "1:1,3:-0.3",
            "--approximation", "concentrated"]
    got = run_json([*tanh, *SWEEP])
    assert got["activation"] == "tanh" and got["degrees"] == [1, 3] and len(got["points"]) == 3
    yhat = {"1": 1.0, "3": -0.3 * math.sqrt(6.0)}                 # c_k sqrt(k!)
    for pt in got["points"]:
        assert pt["status"] == "converged" and set(pt["learned"]) == {"1", "3"}
        for k in ("1", "3"):
            assert abs(pt["learned"][k] - (1.0 - pt["discrepancy"][k] / yhat[k])) < 1e-14
    # vmap = loop: the middle point solved alone
    one = run_json([*tanh, "--s2", "0.2", "--beta", "1/8", "--json", "--no-progress"])["points"][0]
    mid = got["points"][1]
    for k in ("1", "3"):
        assert abs(one["learned"][k] - mid["learned"][k]) < 1e-12
    assert abs(one["free_energy"] - mid["free_energy"]) < 1e-12 and one["phase"] == mid["phase"]
    # more noise, less learned
    lin = [pt["learned"]["1"] for pt in got["points"]]
    assert lin[0] > lin[1] > lin[2] > 0.0


def test_relu_sweep_learns_no_he3():
    got = run_json(["theory", "teacher-student", "--activation", "relu", "--target", "1:1,3:-0.3", *SWEEP])
    assert got["activation"] == "relu" and len(got["points"]) == 3
    yhat3 = -0.3 * math.sqrt(6.0)
    for pt in got["points"]:
        # g_3 = 0 for relu, so dF/dv_3 = yhat_3 - v_3 = 0: nothing of He3 is learned, at every s2 of the batch
        assert pt["status"] == "converged"
        assert abs(pt["discrepancy"]["3"] - yhat3) < 1e-10 and abs(pt["learned"]["3"]) < 1e-10
        assert 0.0 < pt["learned"]["1"] < 1.0


def _arccos1_taylor(kmax: int) -> np.ndarray:
    """Taylor coefficients in rho of the order-1 arc-cosine kernel E[relu(u) relu(u')] =
    (sqrt(1 - rho^2) + (pi - arccos rho) rho)/(2 pi) (Cho & Saul), by Cauchy's integral on |rho| = 1/2
    (the trapezoid rule on the circle: error ~ 2^-M)."""
    M, R = 128, 0.5
    z = R * np.exp(2j * np.pi * np.arange(M) / M)
    f = (np.sqrt(1 - z * z) + (np.pi - np.arccos(z)) * z) / (2 * np.pi)
    return np.array([(np.mean(f * np.exp(-2j * np.pi * k * np.arange(M) / M)) / R**k).real for k in range(kmax + 1)])


def test_gp_relu_eigenvalues_are_the_arccosine_coefficients():
    degrees = [0, 1, 2, 3, 4, 6, 8]
    got = run_json(["theory", "gp-teacher-student", "--activation", "relu", "--target", "2:1,4:0.3",
                    "--degrees", ",".join(map(str, degrees)), "--n-sweep", "1e3:1e9:3:log", "--json"])
    assert got["degrees"] == degrees
    d, sw2, sa2, s2 = 150.0, 0.5, 8 / 700, 0.14
    a = _arccos1_taylor(8)
    assert abs(a[0] - 1 / (2 * math.pi)) < 1e-14 and abs(a[1] - 0.25) < 1e-14 and abs(a[3]) < 1e-14
    # lambda_k = sa2 E_prior[|w|^2 cos^2k(w, w*)] a_k, w ~ N(0, sw2/d I_d): |w|^2 ~ (sw2/d) chi^2_d and
    # cos^2 ~ Beta(1/2, (d - 1)/2) independent, E[B^k] = prod_{j<k} (1/2 + j)/(d/2 + j)
    for k in degrees:
        beta_moment = math.prod((0.5 + j) / (d / 2 + j) for j in range(k))
        want = sa2 * sw2 * beta_moment * a[k]
        lam = got["nngp_eigenvalues"][str(k)]
        assert (lam == 0.0) if k == 3 else abs(lam / want - 1.0) < 1e-10, (k, lam, want)
    # the EK learning curve per degree
    for pt in got["points"]:
        for k in degrees:
            lam = got["nngp_eigenvalues"][str(k)]
            assert abs(pt["learned"][str(k)] - lam / (lam + s2 / pt["n"])) < 1e-14
    assert [pt["n"] for pt in got["points"]] == pytest.approx([1e3, 1e6, 1e9], rel=1e-12)


def test_phase_diagram_relu_writes_the_family_attributes(tmp_path):
    path = tmp_path / "pd.nc"
    # (the concentrated approximation: half the compile time of the exact one, the same routing)
    relu = ["--activation", "relu", "--target", "2:1,4:0.3", "--approximation", "concentrated"]
    got = run_json(["theory", "phase-diagram", "teacher-student", *relu, "--x", "s2:0.1:0.3:3", "--y", "N:350:700:2",
                    "--beta", "1/8", "--json", "--no-progress", "--out", str(path), "--plot", str(tmp_path / "pd.png")])
    assert got["activation"] == "relu" and got["degrees"] == [2, 4] and got["shape"] == [2, 3]
    assert sum(got["phase_counts"].values()) == 6 and "bounded" in got["boundary_reason"]
    ds = load_dataset(path, kind="theory.single_index.phase_diagram")
    assert ds.attrs["activation"] == "relu" and ds.attrs["target"] == "2:1.0,4:0.3" and ds.attrs["degrees"] == "2,4"
    assert ds.attrs["approximation"] == "concentrated" and got["approximation"] == "concentrated"
    assert ds["learned"].dims == ("N", "s2", "degree") and np.isnan(ds["boundary_x"].values).all()
    # the row N = 700 against the sweep command at the same model (sa2 = 8/N, Table 1 at beta = 1/8)
    sweep = run_json(["theory", "teacher-student", *relu, "--N", "700", *SWEEP, "--plot", str(tmp_path / "sw.png")])["points"]
    # both drawn from the saved data (grokphase.plotting.single_index), PNG files of a real figure
    assert (tmp_path / "pd.png").stat().st_size > 10_000 and (tmp_path / "sw.png").stat().st_size > 10_000
    for j, pt in enumerate(sweep):
        assert pt["status"] == "converged"
        for k in (2, 4):
            assert abs(float(ds["learned"].sel(N=700.0, degree=k)[j]) - pt["learned"][str(k)]) < 1e-12
        assert ds["phase"].sel(N=700.0).values[j] == {"GFL": 0, "GMFL-I": 1, "GMFL-II": 2}[pt["phase"]]


FAMILY = ["--activation", "tanh", "--target", "1:1,3:-0.3"]


@pytest.mark.parametrize("argv, message", [
    (["theory", "teacher-student", *FAMILY, "--betas", "1/8,1"], "--betas is not available for the single-index"),
    (["theory", "teacher-student", *FAMILY, "--density-s2", "0.1,0.2"], "--density-s2 is not available"),
    (["theory", "teacher-student", *FAMILY, "--alpha", "2"], "--alpha is not available"),
    (["theory", "teacher-student", "--activation", "relu", "--limit"], "--limit: the scaling limit is not available"),
    (["theory", "teacher-student", "--activation", "relu", "--transition"], "--transition: the scaling limit"),
    (["theory", "phase-diagram", "teacher-student", "--activation", "relu", "--target", "2:1", "--limit",
      "--x", "s2:0.1:0.3:3", "--y", "N:350:700:3"], "scaling limit is not available for relu"),
    (["theory", "gp-teacher-student", *FAMILY, "--approximation", "concentrated"], "--approximation concentrated"),
    (["theory", "gp-teacher-student", *FAMILY, "--plot", "figures/x.png"], "--plot is not available"),
    (["theory", "teacher-student", "--eps", "0.2", "--target", "1:1,3:-0.3"], "give either --eps or --target"),
    (["theory", "teacher-student", "--activation", "sigmoid"], "unknown activation 'sigmoid'"),
    (["theory", "teacher-student", "--target", "1:1", "--degrees", "3"], "miss the target's degree 1"),
])
def test_family_refusals_exit_2_with_one_line(argv, message, capsys, monkeypatch):
    from grokphase.theory.single_index import results

    def boom(*a, **k):
        raise AssertionError("a computation started before the input was checked")

    for name in ("build_single_index_sweep", "build_single_index_gp_curve", "build_single_index_phase_diagram"):
        monkeypatch.setattr(cli_single_index, name, boom)
        monkeypatch.setattr(results, name, boom)
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grokphase: error:") and message in lines[0], err
    assert "Traceback" not in err
