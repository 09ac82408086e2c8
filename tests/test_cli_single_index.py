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


def test_erf_paper_target_equals_teacher_student(erf_run):
    got, _ = erf_run
    rc, out, _ = run(["theory", "teacher-student", "--approximation", "exact", *SMALL, "--json", "--no-progress"])
    assert rc == 0
    want = json.loads(out)["points"][0]
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
