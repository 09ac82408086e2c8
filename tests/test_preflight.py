"""Bad outputs are refused before any computation (issue 17, first part): every case exits with status
2 and one line on stderr that names the option, writes no file, and never reaches a solver or a
simulation (the computing functions are replaced by ones that fail the test if called)."""

from __future__ import annotations

import os
import stat

import pytest

import grokphase.cli.reproduce as cli_reproduce
import grokphase.cli.sims as cli_sims
import grokphase.cli.theory as cli_theory
from grokphase.cli import main


@pytest.fixture()
def no_compute(monkeypatch):
    """Any computation reached is a test failure: the pre-flight must come first."""
    def boom(*a, **k):
        raise AssertionError("a computation started before the outputs were checked")

    monkeypatch.setattr(cli_theory, "build_teacher_student_sweep", boom)
    monkeypatch.setattr(cli_theory, "build_modular_sweep", boom)
    monkeypatch.setattr(cli_sims.ts_model, "run", boom)
    monkeypatch.setattr(cli_sims, "run_experiment", boom)
    monkeypatch.setattr(cli_reproduce, "reproduce", boom)


def _cases(tmp):
    d = tmp / "adir"
    d.mkdir()
    f = tmp / "afile"
    f.write_text("x")
    ro = tmp / "readonly"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    ts = ["theory", "teacher-student", "--s2", "0.14"]
    sim = ["sim", "teacher-student", "--beta", "1/8", "--s2", "0.2", "--steps", "10", "--no-progress"]
    return [
        (ts + ["--out", str(d)], "--out"),                                  # a directory
        (ts + ["--out", str(f / "x.nc")], "is a file, not a directory"),    # parent is a file
        (ts + ["--out", str(tmp / "x.txt")], "--out"),                      # not netCDF
        (ts + ["--out", ""], "--out: empty path"),
        (ts + ["--out", "/proc/x.nc"], "cannot write"),                    # a file system that takes no file
        (ts + ["--plot", str(tmp / "x.xyz")], "--plot"),                   # unknown figure format
        (ts + ["--plot", str(tmp / "noext")], "--plot"),
        (ts + ["--plot", str(d)], "--plot"),
        (ts + ["--plot", str(f / "p.png")], "is a file, not a directory"),
        (sim + ["--checkpoint-dir", str(f)], "--checkpoint-dir"),           # a file, not a folder
        (sim + ["--out", str(f / "deep" / "x.nc")], "is a file, not a directory"),
        (["theory", "modular", "--out", str(tmp / "m.h5")], "--out"),
        (["plot", str(f), "--out", str(tmp / "x.nc")], "--out"),           # `plot --out` must be a figure
        (["reproduce", "fig1", "--scale", "tiny", "--out-dir", str(f)], "--out-dir"),
        (["reproduce", "fig1", "--scale", "tiny", "--cache-dir", str(f)], "--cache-dir"),
    ] + ([] if os.geteuid() == 0 else [(ts + ["--out", str(ro / "x.nc")], "cannot write")])


def test_bad_outputs_fail_before_any_computation(tmp_path, capsys, no_compute):
    cases = _cases(tmp_path)
    assert len(cases) >= 15
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for argv, needle in cases:
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, (argv, err)
        assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], (argv, err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before        # no partial or stray file


def test_good_outputs_pass_the_preflight(tmp_path, capsys):
    """A nested folder that does not exist yet is fine (it is created when the result is saved)."""
    out = tmp_path / "new" / "deeper" / "ts.nc"
    assert main(["theory", "teacher-student", "--s2", "0.14", "--beta", "8", "--out", str(out), "--json"]) == 0
    assert out.is_file()
    capsys.readouterr()


def test_os_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """An OSError raised while a command runs (a disk filling up, a folder removed) is exit 2, one line."""
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_theory, "build_teacher_student_sweep", full)
    assert main(["theory", "teacher-student", "--s2", "0.14"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0]


def test_z_scores_name_their_theory(monkeypatch, capsys):
    """Every printed z-score says which theory it is against (issue 17): `run`'s fig2 lines, the
    comparison's own record of it (new files) or its derivation from the attributes (older files), the
    reproduce fig2 summary and the modular table's legend."""
    import xarray as xr

    from grokphase.analysis.compare import z_against
    from grokphase.cli.reproduce import _lines
    from grokphase.cli.text import _modular_lines
    from grokphase.io import annotate

    point = {"beta": 1.0, "s2": 0.2, "sim_cubic_learned": 0.1, "sim_cubic_learned_sem": 0.01,
             "theory_cubic_learned": 0.3, "z_cubic": -20.0, "sim_linear_learned": 0.9, "sim_linear_learned_sem": 0.01,
             "theory_linear_learned": 0.9, "z_linear": 0.0}
    monkeypatch.setattr(cli_sims, "run_experiment", lambda *a, **k: {
        "simulations": ["a.nc"], "compare": "c.nc", "points": [point], "z_against": "exact finite-d theory"})
    args = cli_sims.argparse.Namespace(file="x.toml", devices=None, no_progress=True, only=None, json=False)
    assert cli_sims.cmd_run(args) == 0
    zlines = [line for line in capsys.readouterr().out.splitlines() if "z=" in line]
    assert zlines and all(line.count("z=") == line.count("vs exact finite-d theory") for line in zlines)

    ds = xr.Dataset()
    assert z_against(annotate(ds, kind="analysis.teacher_student.compare", parameters={"theory_file": False},
                              extra={"approximation": "concentrated"})) == "concentrated finite-d theory"
    assert "--theory file" in z_against(annotate(ds, kind="analysis.teacher_student.compare",
                                                 parameters={"theory_file": True}, extra={"approximation": "exact"}))
    fig2 = _lines("fig2", {"scale": "tiny", "figures": [], "seconds": 1.0, "points": [point],
                           "z_against": "exact finite-d theory"})
    assert "z=-20.00 vs exact finite-d theory" in fig2[1]
    legend = _modular_lines({"conventions": ["paper", "network"], "points": []})[0]
    assert "finite-P theory" in legend and "paper normalisation" in legend and "network normalisation" in legend
