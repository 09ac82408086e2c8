"""A table of bad inputs across every command (issue 17): each row must end with exit status 2 and
exactly one line on stderr, ``grokphase: error: ...``, naming the problem (the row's needle), no
traceback, nothing on stdout, and no file created or left behind (the working folder is the test's
own folder, compared before and after).  Rows marked pre-flight must fail before any theory solve,
simulation, comparison, figure or experiment starts: those entry points are replaced by functions
that fail the test when called.

``main`` is called in-process, so the table runs in seconds."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import xarray as xr

import grokphase.cli as cli
import grokphase.cli.reproduce as cli_reproduce
import grokphase.cli.sims as cli_sims
import grokphase.cli.theory as cli_theory
import grokphase.sims.driver as driver
import grokphase.sims.protocols as protocols
from grokphase.cli import main
from grokphase.experiments.models import modular as modular_model
from grokphase.experiments.models import teacher_student as ts_model
from grokphase.io import annotate, save_dataset

THEORY_BUILDERS = ("build_teacher_student_sweep", "build_modular_sweep", "build_gp_learning_curve",
                   "build_modular_gp_curve", "build_teacher_student_phase_diagram", "build_modular_phase_diagram")
TS = ["theory", "teacher-student", "--s2", "0.14"]
SIM = ["sim", "teacher-student", "--beta", "1/8", "--s2", "0.2", "--steps", "10", "--no-progress"]
MOD = ["sim", "modular", "--P", "5", "--steps", "4", "--no-progress"]
TOML_TS = 'out_dir = "res"\n[[sim]]\nname = "a"\nbeta = 0.125\ns2 = [0.2]\nsteps = 10\n'
TOML_MOD = 'model = "modular"\nout_dir = "res"\n[[sim]]\nname = "m"\nP = 5\nsteps = 4\n'


def _boom(*a, **k):
    raise AssertionError("a computation started before the input was checked")


@pytest.fixture()
def no_compute(monkeypatch):
    """Every entry point that computes, compares, draws or runs an experiment fails the test."""
    for name in THEORY_BUILDERS:
        monkeypatch.setattr(cli_theory, name, _boom, raising=False)
    monkeypatch.setattr(ts_model, "run_teacher_student", _boom)
    monkeypatch.setattr(modular_model, "run_modular", _boom)
    monkeypatch.setattr(protocols, "run", _boom)
    monkeypatch.setattr(driver, "run_ensemble", _boom)
    monkeypatch.setattr(cli_sims, "run_experiment", _boom)
    monkeypatch.setattr(cli_sims, "compare_teacher_student", _boom)
    monkeypatch.setattr(modular_model, "compare_modular", _boom)
    monkeypatch.setattr(cli_reproduce, "reproduce", _boom)
    monkeypatch.setattr(cli, "plot_result", _boom)


def toml(text):
    """A row's argv builder for ``grokphase run`` on an experiment file with ``text``."""
    def build(t):
        (t / "exp.toml").write_text(text)
        return ["run", "exp.toml", "--no-progress"]
    return build


def lacking_variable(t):
    """A teacher-student theory sweep file with its cubic but not its linear learned fraction: plot
    fails while drawing."""
    ds = xr.Dataset({"cubic_learned": (("beta", "s2"), np.array([[0.1, 0.2]]))},
                    coords={"s2": [0.1, 0.2], "beta": [1.0]})
    save_dataset(annotate(ds, kind="theory.teacher_student.sweep", parameters={}), t / "partial.nc")
    return ["plot", "partial.nc", "--out", "p.png"]


def row(name, argv, needle, preflight=True, marks=()):
    """argv: a list (paths relative to the test's folder) or a builder ``argv(tmp_path)`` that may
    write the input files the row needs."""
    return pytest.param(argv, needle, preflight, id=name, marks=marks)


ROOT = os.geteuid() == 0
ROWS = [
    # outputs: kind, extension, writability (theory, sims, plot, reproduce)
    row("out-is-directory", TS + ["--out", "adir"], "is a directory"),
    row("out-parent-is-file", TS + ["--out", "afile/x.nc"], "is a file, not a directory"),
    row("out-read-only-dir", TS + ["--out", "readonly/x.nc"], "cannot write",
        marks=pytest.mark.skipif(ROOT, reason="root writes into read-only folders")),
    row("out-proc", TS + ["--out", "/proc/x.nc"], "cannot write"),
    row("out-empty", TS + ["--out", ""], "--out: empty path"),
    row("out-not-netcdf", TS + ["--out", "x.txt"], "ending in .nc"),
    row("plot-unknown-format", TS + ["--plot", "x.xyz"], "--plot x.xyz"),
    row("plot-no-extension", TS + ["--plot", "noext"], "--plot noext"),
    row("plot-is-directory", TS + ["--plot", "adir"], "is a directory"),
    row("plot-cmd-out-no-extension", ["plot", "afile", "--out", "figure"], "--out figure"),
    row("plot-cmd-out-netcdf", ["plot", "afile", "--out", "x.nc"], "--out x.nc"),
    row("sim-checkpoint-dir-is-file", SIM + ["--checkpoint-dir", "afile"], "--checkpoint-dir afile is a file"),
    row("sim-out-empty", SIM + ["--out", ""], "--out: empty path"),
    row("sim-out-txt", SIM + ["--out", "x.txt"], "ending in .nc"),
    row("modular-out-is-directory", MOD + ["--out", "adir"], "is a directory"),
    row("modular-theory-out-h5", ["theory", "modular", "--out", "m.h5"], "ending in .nc"),
    row("reproduce-out-dir-is-file", ["reproduce", "fig1", "--scale", "tiny", "--out-dir", "afile"], "--out-dir"),
    row("reproduce-cache-dir-is-file", ["reproduce", "fig1", "--scale", "tiny", "--cache-dir", "afile"], "--cache-dir"),
    row("reproduce-defs-missing", ["reproduce", "fig1", "--scale", "tiny", "--defs", "nowhere"], "--defs nowhere"),
    row("reproduce-unknown-figure", ["reproduce", "fig9"], "invalid choice"),
    # inapplicable or contradictory flags of the simulations
    row("ts-weight-decay-langevin", SIM + ["--weight-decay", "0.5"], "--weight-decay 0.5 has no effect"),
    row("ts-swap-every-no-replica", SIM + ["--swap-every", "5"], "--swap-every 5 has no effect"),
    row("ts-ordered-theory-no-ordered-start", SIM + ["--ordered-theory", "limit"], "--ordered-theory limit"),
    row("ts-ordered-droplets-cooling", SIM + ["--s2", "0.2,0.3", "--anneal", "down", "--ordered-droplets", "theory"],
        "--ordered-droplets theory has no effect"),
    row("ts-anneal-one-s2", SIM + ["--anneal", "down"], "at least two distinct s2"),
    row("ts-replica-with-sgd", SIM + ["--s2", "0.2,0.3", "--replica-exchange", "--optimizer", "sgd"],
        "needs optimizer langevin"),
    row("ts-steps-not-integer", SIM + ["--steps", "20.9"], "--steps"),
    row("ts-burn-in-beyond-steps", SIM + ["--burn-in", "50"], "burn_in"),
    row("ts-chunk-over-budget", SIM + ["--memory-gb", "1", "--ensemble-chunk", "100000"], "--ensemble-chunk 100000"),
    row("modular-weight-decay-langevin", MOD + ["--weight-decay", "0.5"], "--weight-decay 0.5 has no effect"),
    row("modular-gamma-adamw", MOD + ["--optimizer", "adamw", "--gamma", "0.1"], "--gamma 0.1 has no effect"),
    row("modular-readout-adamw", MOD + ["--optimizer", "adamw", "--readout", "langevin"], "--readout langevin"),
    row("modular-sa2-gromov", MOD + ["--parametrisation", "gromov", "--sa2", "0.1"], "--sa2 0.1 has no effect"),
    row("modular-swap-every-no-replica", MOD + ["--swap-every", "3"], "--swap-every 3 has no effect"),
    row("modular-alpha-above-one", MOD + ["--alpha", "1.5"], "(0, 1]"),
    # one network beyond the memory budget, trajectories beyond it
    row("ts-N-1e7", ["sim", "teacher-student", "--N", "1e7", "--s2", "0.2", "--steps", "2", "--no-progress"],
        "one network at N=10000000, n=3000, d=150"),
    row("ts-records-beyond-memory", SIM + ["--steps", "1000000000", "--record-every", "1"], "records ~"),
    row("modular-P-2000", ["sim", "modular", "--P", "2000", "--no-progress"], "one network at P=2000"),
    row("modular-memory-gb-tiny", MOD + ["--memory-gb", "1e-6"], "over --memory-gb 1e-06"),
    # theory: contradictory flags and sweeps too large to hold
    row("gp-modular-P-and-Ps", ["theory", "gp-modular", "--P", "7", "--Ps", "5,7"], "either --P or --Ps"),
    row("ts-s2-and-s2-sweep", TS + ["--s2-sweep", "0.1:0.2:3"], "either --s2 or --s2-sweep"),
    row("gp-ts-n-and-n-sweep", ["theory", "gp-teacher-student", "--n", "100", "--n-sweep", "10:100:3"],
        "either --n or --n-sweep"),
    row("ts-huge-s2-sweep", ["theory", "teacher-student", "--s2-sweep", "0.1:0.2:1000000000"], "1000000000 points"),
    row("modular-huge-s2-sweep", ["theory", "modular", "--s2-sweep", "0.1:0.2:1000000000"], "1000000000 points"),
    row("gp-ts-huge-n-sweep", ["theory", "gp-teacher-student", "--n-sweep", "1:1e9:200000:log"], "200000 points"),
    row("phase-diagram-huge-grid", ["theory", "phase-diagram", "teacher-student", "--x", "s2:0.1:0.2:1000",
                                    "--y", "N:100:200:1000"], "a grid of 1000000 points"),
    row("phase-diagram-axis-overrides-flag", ["theory", "phase-diagram", "teacher-student", "--s2", "0.2"],
        "--s2 is overridden by the --x axis"),
    row("phase-diagram-same-axis-twice", ["theory", "phase-diagram", "modular", "--x", "N:100:200:3",
                                          "--y", "N:300:400:3"], "both vary N"),
    row("ts-negative-s2", TS[:2] + ["--s2", "-1"], "--s2"),
    # magnitudes that make the model meaningless (refused by the theory layer's own checks; `--limit
    # --transition --eps 0.4` is no longer a bad input: the limit solves eps > 0)
    row("ts-N-1e300", ["theory", "teacher-student", "--N", "1e300", "--s2", "0.14"], "N", preflight=False),
    row("ts-s2-1e-300", ["theory", "teacher-student", "--s2", "1e-300"], "s2", preflight=False),
    row("sim-eps-zero", SIM + ["--eps", "0"], "eps must be finite and nonzero"),
    # experiment files
    row("toml-steps-string", toml('[common]\nsteps = "twenty"\n[[sim]]\nname = "a"\n'), "steps must be an integer"),
    row("toml-beta-list", toml(TOML_TS.replace("beta = 0.125", "beta = [1, 2]")), "beta must be a number"),
    row("toml-common-not-table", toml("common = 5\n" + TOML_TS), "[common] must be a table"),
    row("toml-steps-float", toml(TOML_TS.replace("steps = 10", "steps = 20.9")), "steps must be an integer"),
    row("toml-datasets-float", toml(TOML_TS + "datasets = 1.9\n"), "datasets must be an integer"),
    row("toml-inits-bool", toml(TOML_TS + "inits = true\n"), "inits must be an integer"),
    row("toml-unknown-key", toml(TOML_TS + "stepz = 3\n"), "stepz"),
    row("toml-syntax", toml("[[sim]\nsteps = 1\n"), "not valid TOML"),
    row("toml-unknown-model", toml('model = "nope"\n' + TOML_TS), "unknown model 'nope'"),
    row("toml-weight-decay-langevin", toml(TOML_TS + "weight_decay = 0.5\n"), "weight_decay 0.5 has no effect"),
    row("toml-swap-every-no-replica", toml(TOML_MOD + "swap_every = 4\n"), "swap_every 4 has no effect"),
    row("toml-N-beyond-memory", toml(TOML_TS + "N = 1e7\n"), "[[sim]] #1: one network at N="),
    row("toml-second-table-bad", toml(TOML_TS + '[[sim]]\nname = "b"\nsteps = -3\n'), "#2"),
    row("toml-out-dir-is-file", toml(TOML_TS.replace('out_dir = "res"', 'out_dir = "afile"')), "out_dir"),
    row("toml-plot-bad-format", toml(TOML_MOD + 'plot = "m.xyz"\n'), "plot m.xyz"),
    row("toml-compare-plot-bad-format", toml(TOML_TS + '[compare]\nplot = "c.xyz"\n'), "[compare]: plot c.xyz"),
    row("run-on-directory", ["run", "adir"], "is a directory"),
    row("run-missing-file", ["run", "nothere.toml"], "does not exist"),
    # inputs of compare and plot
    row("compare-missing-sim", ["compare", "teacher-student", "--sim", "missing.nc"], "missing.nc does not exist"),
    row("compare-missing-theory", ["compare", "teacher-student", "--sim", "afile", "--theory", "nope.nc"],
        "theory file nope.nc does not exist"),
    row("compare-modular-sim-is-dir", ["compare", "modular", "--sim", "adir"], "is a directory"),
    row("compare-perp-norm-missing", ["compare", "perp-norm", "--sim", "gone.nc"], "gone.nc does not exist"),
    row("plot-missing-result", ["plot", "missing.nc", "--out", "x.png"], "missing.nc does not exist"),
    row("plot-not-netcdf", ["plot", "afile", "--out", "x.png"], "afile", preflight=False),
    row("plot-lacking-variable", lacking_variable, "lacks the variable", preflight=False),
]


@pytest.fixture()
def world(tmp_path, monkeypatch):
    """The test's own working folder with a directory, a plain file and a read-only directory."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    ro.chmod(stat.S_IRWXU)


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("argv, needle, preflight", ROWS)
def test_bad_input(argv, needle, preflight, world, capsys, request):
    if preflight:
        request.getfixturevalue("no_compute")
    argv = argv(world) if callable(argv) else argv
    before = _listing(world)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:                       # argparse's own errors
        rc = exc.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("grokphase: error: "), (argv, err)
    assert "Traceback" not in err and out == "", (argv, out, err)
    assert needle in lines[0], (needle, lines[0])
    assert _listing(world) == before, "a partial or stray file was left"


def test_the_table_is_large_and_covers_every_command():
    assert len(ROWS) >= 40
    commands = set()
    for p in ROWS:
        argv = p.values[0]
        commands.add("run" if callable(argv) and argv is not lacking_variable else
                     "plot" if callable(argv) else argv[0])
    assert commands >= {"theory", "sim", "run", "reproduce", "plot", "compare"}


def test_common_defaults_may_serve_only_some_tables(world, capsys, no_compute):
    """A [common] option that applies to some [[sim]] tables only (the ordered-start rule of an
    annealing table, shared with a replica-exchange table) is a shared default, not an error; the same
    option written in the replica table itself is."""
    head = ('model = "modular"\nout_dir = "res"\n[common]\nP = 5\nsteps = 4\ngamma = 0.01\ns2 = [0.2, 0.3]\n'
            'ordered_droplets = "theory"\n[[sim]]\nname = "anneal"\nanneal = "both"\n'
            '[[sim]]\nname = "replica"\nreplica_exchange = true\n')
    (world / "ok.toml").write_text(head)
    with pytest.raises(AssertionError, match="before the input was checked"):   # passed the pre-flight
        main(["run", "ok.toml", "--no-progress"])
    (world / "bad.toml").write_text(head + 'ordered_droplets = "all"\n')
    assert main(["run", "bad.toml", "--no-progress"]) == 2
    assert "[[sim]] #2: ordered_droplets all has no effect" in capsys.readouterr().err


def test_applicability_is_checked_on_resolved_values():
    """The rule reads the resolved options: weight decay applies with adamw, not with Langevin; a flag
    left at false is never an error."""
    from grokphase.experiments.options import resolve
    schema = ts_model.OPTIONS
    resolve({"optimizer": "adamw", "weight_decay": 0.5}, schema, "t", given={"optimizer", "weight_decay"})
    resolve({"replica_exchange": False}, schema, "t", given={"replica_exchange"})
    with pytest.raises(Exception, match="weight_decay 0.5 has no effect"):
        resolve({"weight_decay": 0.5}, schema, "t", given={"weight_decay"})
    resolve({"weight_decay": 0.5}, schema, "t")          # no `given`: types only (a [common] table)


def test_memory_estimate_matches_the_sizes():
    """The estimate grows like the activations N x max(n, n_test) and the records count like the
    schedule's own record times."""
    from grokphase.sims.driver import Schedule
    from grokphase.sims.memory import record_count, teacher_student_bytes
    from grokphase.sims.teacher_student import TeacherStudentSim
    for steps, every in ((100, 10), (1000, 7), (5, 10), (1, 1)):
        assert record_count(steps, every, False) in (Schedule(steps, 0, every).record_steps().size,
                                                     Schedule(steps, 0, every).record_steps().size + 1)
    for steps, every in ((1000, 3), (5, 10), (10**6, 1)):         # log times: at most 20 per decade, + ends
        n = Schedule(steps, 0, every, True).record_steps().size
        assert n <= record_count(steps, every, True) <= 20 * np.log10(max(steps / min(every, steps), 1)) + 4
    a = teacher_student_bytes(TeacherStudentSim(N=1000, n=100, d=10, n_test=100))["device"]
    b = teacher_student_bytes(TeacherStudentSim(N=2000, n=100, d=10, n_test=100))["device"]
    assert 1.9 < b / a < 2.01
    assert a >= 4 * 6 * 100 * 1000                      # float32 activations alone
