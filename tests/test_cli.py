"""The command-line interface: JSON schema, saved files, plots, and one-line errors for bad input.

Values printed by the CLI are checked against the Python API called independently (a different
code path through the parameter handling), against THEORY.md's published transition range, and
against identities (linear_learned = 1 - b, ...)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from grokphase.cli import main
from grokphase.io import load_dataset
from grokphase.theory import gp
from grokphase.theory import teacher_student as ts


def run_json(capsys, *argv):
    assert main(list(argv) + ["--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "--json must print exactly one line"
    return json.loads(out)


def run_error(capsys, *argv):
    """Bad input: exit status 2 and exactly one line on stderr, nothing on stdout."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse-level errors
        rc = exc.code
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("grokphase: error:")
    assert "Traceback" not in captured.err
    return lines[0]


POINT_KEYS = {"s2", "u", "r", "b", "c", "linear_learned", "cubic_learned", "droplet_fraction", "phase",
              "free_energy", "status"}


def test_teacher_student_point_matches_api(capsys):
    out = run_json(capsys, "theory", "teacher-student", "--s2", "0.14")
    (pt,) = out["points"]
    assert POINT_KEYS <= set(pt)
    sol = ts.solve_finite_d(ts.TeacherStudentParams(N=700, n=3000, d=150, s2=0.14, sa2=8 / 700, sw2=0.5, eps=-0.3))
    assert pt["b"] == pytest.approx(float(sol.b), abs=1e-12)
    assert pt["c"] == pytest.approx(float(sol.c), abs=1e-12)
    assert pt["linear_learned"] == pytest.approx(1 - pt["b"], abs=1e-14)
    assert pt["cubic_learned"] == pytest.approx(1 - pt["c"] / -0.3, abs=1e-13)
    assert pt["u"] == pytest.approx(3000**2 * (8 / 700) / (0.14**2 * 150 * 700), rel=1e-13)
    assert pt["status"] == "converged"


def test_transition_json_in_published_range(capsys):
    out = run_json(capsys, "theory", "teacher-student", "--transition", "--approximation", "concentrated")
    # THEORY.md §3: sigma^2_c ~ 0.179, u_c ~ 30.7 for the one-variable reduction (paper: 0.18, 30.2)
    assert 0.175 <= out["s2_c"] <= 0.185
    assert 29.0 <= out["u_c"] <= 32.0


def test_limit_sweep_phases_switch_at_transition(capsys):
    out = run_json(capsys, "theory", "teacher-student", "--limit", "--transition", "--s2-sweep", "0.1:0.3:9")
    for pt in out["points"]:
        expected = "GMFL-I" if pt["s2"] < out["s2_c"] else "GFL"
        assert pt["phase"] == expected
        if expected == "GFL":
            assert pt["c"] == pytest.approx(-0.3, abs=1e-15)  # c = eps exactly on the GFL branch


def test_beta_scaling_and_saved_file(capsys, tmp_path):
    path = tmp_path / "ts.nc"
    out = run_json(capsys, "theory", "teacher-student", "--beta", "8", "--s2-sweep", "0.12:0.2:3",
                   "--out", str(path))
    ds = load_dataset(path, kind="theory.teacher_student.sweep")
    # provenance and parameters in the attributes
    for key in ("grokphase_version", "git_revision", "created_utc", "parameters_json", "param_N", "param_eps",
                "command", "jax_version"):
        assert key in ds.attrs, key
    assert json.loads(ds.attrs["parameters_json"])["betas"] == [8.0]
    # Table-1 scaling at beta = alpha = 8: N -> 8N, d -> sqrt(8) d, s2 unchanged
    assert float(ds["N_scaled"].sel(beta=8.0)) == pytest.approx(5600.0)
    assert float(ds["d_scaled"].sel(beta=8.0)) == pytest.approx(150 * math.sqrt(8))
    b_file = ds["b"].sel(beta=8.0).values
    assert np.allclose([p["b"] for p in out["points"]], b_file, rtol=0, atol=1e-15)
    assert [p["s2"] for p in out["points"]] == pytest.approx([0.12, 0.16, 0.2])


def test_plot_from_saved_result(capsys, tmp_path):
    path = tmp_path / "ts.nc"
    assert main(["theory", "teacher-student", "--s2-sweep", "0.1:0.3:4", "--betas", "1", "--density-s2",
                 "0.13,0.25", "--out", str(path)]) == 0
    capsys.readouterr()
    out = run_json(capsys, "plot", str(path), "--out", str(tmp_path / "fig.png"), "--pdf")
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    assert (tmp_path / "fig.pdf").exists()
    assert len(out["plots"]) == 2
    ds = load_dataset(path)
    # the stored log p(q) is a normalised density (trapezoid over the plotted window, which holds
    # essentially all the mass at d = 150: p(1.4)/p(0) < e^-20)
    q = ds["q"].values
    p = np.exp(ds["log_p"].sel(beta=1.0).values)
    mass = np.trapezoid(p, q, axis=-1)
    assert np.allclose(mass, 1.0, atol=1e-6)


def test_gp_json_matches_closed_forms(capsys):
    out = run_json(capsys, "theory", "gp-teacher-student", "--n-sweep", "100:1e8:7:log")
    eig = gp.rayleigh_quotients(150.0, 8 / 700, 0.5)
    assert out["lambda1"] == pytest.approx(float(eig.lambda1), rel=1e-14)
    assert out["n_half_cubic"] == pytest.approx(0.14 / out["lambda3"], rel=1e-13)
    for pt in out["points"]:
        assert pt["linear_learned"] == pytest.approx(out["lambda1"] / (out["lambda1"] + pt["s2"] / pt["n"]), rel=1e-13)
    assert len(out["points"]) == 7


def test_phase_diagram_boundary_matches_transition(capsys, tmp_path):
    path = tmp_path / "pd.nc"
    out = run_json(capsys, "theory", "phase-diagram", "teacher-student", "--x", "s2:0.05:0.4:6",
                   "--y", "N:400:1600:4", "--limit", "--out", str(path), "--plot", str(tmp_path / "pd.png"))
    assert out["shape"] == [4, 6]
    assert sum(out["phase_counts"].values()) == 24
    ds = load_dataset(path, kind="theory.teacher_student.phase_diagram")
    # independent path: sa2 = 8/N set by hand, transition along s2 by the API
    N = np.array([400.0, 800.0, 1200.0, 1600.0])
    tr = ts.solve_transition(ts.TeacherStudentParams(N=N, sa2=8 / N), along="s2", lo=0.05, hi=0.4)
    assert np.allclose(ds["boundary_x"].values, tr.value, rtol=1e-9, equal_nan=True)
    # the limit phase label agrees with the boundary: GMFL-I exactly left of s2_c
    for i, s2c in enumerate(tr.value):
        expected = np.where(ds["s2"].values < s2c, 1, 0)
        assert np.array_equal(ds["phase"].values[i], expected)
    assert (tmp_path / "pd.png").exists()


def test_phase_diagram_derived_axes(capsys, tmp_path):
    path = tmp_path / "pd.nc"
    run_json(capsys, "theory", "phase-diagram", "teacher-student", "--x", "u:5:80:5", "--y", "eps:-0.6:-0.1:3",
             "--limit", "--out", str(path))
    ds = load_dataset(path)
    # the u axis is realised exactly (through sa2, r untouched)
    assert np.allclose(ds["u_grid"].values, ds["u"].values[None, :], rtol=1e-12)
    assert np.allclose(ds["r"].values, 0.14 * 700 / 3000, rtol=1e-12)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["theory", "teacher-student", "--N", "-1"], "--N"),
        (["theory", "teacher-student", "--s2", "0"], "--s2"),
        (["theory", "teacher-student", "--sa2", "nan"], "--sa2"),
        (["theory", "teacher-student", "--eps", "inf"], "--eps"),
        (["theory", "teacher-student", "--d", "abc"], "--d"),
        (["theory", "teacher-student", "--s2-sweep", "0.1:0.2"], "--s2-sweep"),
        (["theory", "teacher-student", "--s2-sweep", "0.1:0.2:0"], "--s2-sweep"),
        (["theory", "teacher-student", "--s2-sweep", "a:0.2:3"], "--s2-sweep"),
        (["theory", "teacher-student", "--s2-sweep", "-0.1:0.2:3"], "--s2-sweep"),
        (["theory", "teacher-student", "--betas", "1,-2"], "--betas"),
        (["theory", "teacher-student", "--s2", "0.1", "--s2-sweep", "0.1:0.2:3"], "--s2"),
        (["theory", "gp-teacher-student", "--n-sweep", "10:1:x"], "--n-sweep"),
        (["theory", "phase-diagram", "teacher-student", "--x", "foo:1:2:3"], "--x"),
        (["theory", "phase-diagram", "teacher-student", "--x", "N:1:2:3", "--y", "N:1:3:3"], "different"),
        (["theory", "phase-diagram", "teacher-student", "--y", "N:100:3000:4:cubic"], "--y"),
    ],
)
def test_bad_input_one_line_error(capsys, argv, needle):
    line = run_error(capsys, *argv)
    assert needle in line


def test_corrupt_result_file(capsys, tmp_path):
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 10)
    line = run_error(capsys, "plot", str(bad), "--out", str(tmp_path / "x.png"))
    assert "corrupt" in line and "bad.nc" in line
    line = run_error(capsys, "plot", str(tmp_path / "missing.nc"), "--out", str(tmp_path / "x.png"))
    assert "does not exist" in line


def test_console_script_error_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "grokphase.cli", "theory", "teacher-student", "--n", "-5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "--n" in proc.stderr and "Traceback" not in proc.stderr
