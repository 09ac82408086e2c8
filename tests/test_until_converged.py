"""Run until converged (issue 20): a run extended block by block through its checkpoints until every
point meets the R̂ / ESS targets, or max_steps.

The chains are tiny teacher-student networks (N=16, d=8, n=64, four inits of one data set) started
at the prior with a burn-in of 100 steps, far shorter than their relaxation (the MSER-5 estimate of
the first block exceeds it, split-R̂ flags the drift).  Must show: the first block is flagged; the loop
stops with rule "converged" once the targets hold; its answer is bit for bit that of one run of the
final length (the blocks resumed each other: one segment per block), and agrees within the Monte
Carlo standard errors with a run four times longer whose burn-in is the whole converged run.
~1.5 min on one core (three compilations: the sizes with n_test = 64 and the command line's n_test).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from grokphase.analysis.converge import Targets, convergence_summary, until_converged
from grokphase.analysis.diagnostics import diagnose, flagged_points
from grokphase.cli import main
from grokphase.errors import ParameterError, ResultFileError
from grokphase.experiments.runner import run_experiment
from grokphase.io import load_dataset
from grokphase.sims.checkpoint import CheckpointAheadError
from grokphase.sims.teacher_student import TeacherStudentSim, run_teacher_student

SIM = dict(N=16, n=64, d=8, s2=(0.3,), datasets=1, inits=4, steps=1000, burn_in=100, lr=0.05, record_every=5,
           n_test=64)
#: the targets of the tests: the default R-hat, an ESS reachable in seconds
TARGETS = dict(steps=1000, record_every=5, block_steps=1000, max_steps=40000, min_ess=100)
#: the same run on the command line (n_test is not an option there: its default)
ARGS = ["--N", "16", "--n", "64", "--d", "8", "--s2", "0.3", "--datasets", "1", "--inits", "4", "--steps", "1000",
        "--burn-in", "100", "--lr", "0.05", "--record-every", "5"]


def sim(**kw) -> TeacherStudentSim:
    return TeacherStudentSim(**{**SIM, **kw})


def block_runner(base: TeacherStudentSim, calls: list):
    def run(steps, burn_in, folder):
        calls.append(steps)
        s = dataclasses.replace(base, steps=steps, **({} if burn_in is None else {"burn_in": burn_in}))
        return run_teacher_student(s, checkpoint_dir=folder)

    return run


def data(ds) -> dict:
    """The simulation's own variables (not the diagnostics attached to it)."""
    return {k: ds[k].values for k in ds.data_vars if not str(k).startswith("diagnostics_")}


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    calls: list = []
    ds = until_converged(block_runner(sim(), calls), Targets(**TARGETS), checkpoint_dir=str(folder))
    return ds, str(folder), calls


def test_far_from_equilibrium_start_is_flagged():
    first = run_teacher_student(sim())
    diag = diagnose(first, min_ess=TARGETS["min_ess"])
    flagged = flagged_points(diag)
    assert any("R-hat" in p.reason for p in flagged), [p.reason for p in flagged]
    assert bool(diag["burn_in_short"].values.any())          # MSER: relaxing well past the burn-in of 100


def test_stops_when_the_targets_hold(converged):
    ds, _, calls = converged
    history = json.loads(ds.attrs["until_converged_history"])
    steps_run = int(ds.attrs["steps_run"])
    assert ds.attrs["stopping_rule"] == "converged"
    assert 1000 < steps_run < TARGETS["max_steps"] and steps_run == int(ds.attrs["param_steps"])
    assert calls == list(range(1000, steps_run + 1, 1000))             # one run per block, in order
    assert [h["steps"] for h in history] == calls
    assert all(h["flagged"] > 0 for h in history[:-1]) and history[-1]["flagged"] == 0
    assert int(ds.attrs["until_converged_blocks"]) == len(calls)
    assert int(ds.attrs["diagnostics_flagged"]) == 0
    assert float(ds.attrs["diagnostics_min_ess"]) == TARGETS["min_ess"]          # the targets' thresholds
    assert np.all(ds["diagnostics_rhat"].values <= 1.01)
    assert np.all(ds["diagnostics_ess_bulk"].values >= TARGETS["min_ess"])
    assert int(ds.attrs["param_burn_in"]) == 100
    summary = convergence_summary(ds)
    assert summary["stopping_rule"] == "converged" and summary["blocks"] == len(calls)


def test_equals_one_run_of_the_final_length_bit_for_bit(converged):
    ds, _, calls = converged
    single = run_teacher_student(sim(steps=int(ds.attrs["steps_run"])))
    mine, ref = data(ds), data(single)
    assert set(mine) == set(ref)
    for name, value in ref.items():
        np.testing.assert_array_equal(mine[name], value, err_msg=name)
    # every block resumed the previous one's checkpoint (a block that restarted from step 0 would give
    # the same numbers, but one segment)
    assert ds.attrs["resumed"] == 1 and ds.attrs["segments"] == len(calls)


def test_agrees_with_a_long_run_within_mcse(converged):
    ds, _, _ = converged
    T = int(ds.attrs["steps_run"])
    long = run_teacher_student(sim(steps=4 * T, burn_in=T))
    a, b = diagnose(ds, min_ess=100), diagnose(long, min_ess=100)
    z = (a["mean"] - b["mean"]) / np.sqrt(a["mcse"] ** 2 + b["mcse"] ** 2)
    assert np.all(np.isfinite(z.values))
    assert float(np.max(np.abs(z.values))) < 4.0, dict(zip(a["observable"].values, z.values.ravel().round(2)))
    # the blocks bought precision: every MCSE below the first block's (whose means agree only within
    # their wide, unreliable errors)
    first = diagnose(run_teacher_student(sim()), min_ess=100)
    assert np.all(a["mcse"].values < first["mcse"].values)


def test_a_rerun_continues_from_the_furthest_checkpoint(converged):
    ds, folder, _ = converged
    calls: list = []
    again = until_converged(block_runner(sim(), calls), Targets(**TARGETS), checkpoint_dir=folder)
    T = int(ds.attrs["steps_run"])
    assert calls == [1000, T]              # the first block meets the finished checkpoint and jumps there
    assert again.attrs["stopping_rule"] == "converged" and int(again.attrs["steps_run"]) == T
    for name, value in data(ds).items():
        np.testing.assert_array_equal(data(again)[name], value, err_msg=name)


def test_max_steps_stops_with_points_flagged():
    calls: list = []
    ds = until_converged(block_runner(sim(), calls), Targets(**{**TARGETS, "block_steps": 600, "max_steps": 2000}))
    assert calls == [1000, 1600, 2000]           # the last block cut at max_steps; a temporary checkpoint folder
    assert ds.attrs["stopping_rule"] == "max_steps" and int(ds.attrs["steps_run"]) == 2000
    assert int(ds.attrs["diagnostics_flagged"]) > 0 and int(ds.attrs["until_converged_blocks"]) == 3
    assert ds.attrs["segments"] == 3


def test_checkpoints_of_a_longer_run_are_refused_and_misaligned_records_reported(converged, tmp_path):
    ds, folder, _ = converged
    T = int(ds.attrs["steps_run"])
    with pytest.raises(CheckpointAheadError, match=rf"has reached step {T}, past this run's 500 steps"):
        run_teacher_student(sim(steps=500), checkpoint_dir=folder)
    run_teacher_student(sim(steps=1003), checkpoint_dir=str(tmp_path))           # last record at 1003
    with pytest.raises(ResultFileError, match="not the first records of this run"):
        run_teacher_student(sim(steps=2000), checkpoint_dir=str(tmp_path))
    # a run of log-spaced records keeps its total steps in its checkpoint identity: no sharing
    logged = sim(steps=200, log_times=True, record_every=10)
    run_teacher_student(logged, checkpoint_dir=str(tmp_path / "log"))
    longer = run_teacher_student(dataclasses.replace(logged, steps=400), checkpoint_dir=str(tmp_path / "log"))
    assert longer.attrs["resumed"] == 0


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_json_and_result_file(capsys, tmp_path):
    out = tmp_path / "results" / "uc.nc"
    args = [a for a in ARGS if a not in ("--burn-in", "100")]          # the default burn-in, steps // 4
    rc, text, err = run_cli(capsys, "sim", "teacher-student", *args, "--until-converged", "--block-steps", "1000",
                            "--max-steps", "2000", "--min-ess", "100", "--no-progress", "--json", "--out", str(out))
    assert rc == 0, err
    summary = json.loads(text)
    uc = summary["until_converged"]
    assert uc["stopping_rule"] == "max_steps" and uc["steps_run"] == 2000 and uc["blocks"] == 2
    assert [h["steps"] for h in uc["history"]] == [1000, 2000] and uc["flagged"] > 0
    assert uc["min_ess"] == 100 and summary["diagnostics"]["min_ess"] == 100      # the same thresholds
    assert len(summary["diagnostics"]["flagged"]) == uc["flagged"]
    saved = load_dataset(out, "sims.teacher_student")
    assert saved.attrs["stopping_rule"] == "max_steps" and int(saved.attrs["param_steps"]) == 2000
    # the first block's default burn-in (1000 // 4) is kept, so the second block extended the first
    assert int(saved.attrs["param_burn_in"]) == 250 and saved.attrs["segments"] == 2


def test_modular_cli_extends_and_equals_one_run(capsys, tmp_path):
    base = ["sim", "modular", "--P", "5", "--N", "8", "--s2", "0.1", "--seeds", "2", "--record-every", "5",
            "--no-progress", "--json"]
    rc, text, err = run_cli(capsys, *base, "--steps", "200", "--until-converged", "--max-steps", "400",
                            "--out", str(tmp_path / "uc.nc"))
    assert rc == 0, err
    uc = json.loads(text)["until_converged"]
    assert uc["stopping_rule"] == "max_steps" and uc["steps_run"] == 400 and uc["blocks"] == 2
    rc, _, err = run_cli(capsys, *base, "--steps", "400", "--out", str(tmp_path / "one.nc"))
    assert rc == 0, err
    a, b = (load_dataset(tmp_path / f, "sims.modular") for f in ("uc.nc", "one.nc"))
    assert a.attrs["segments"] == 2 and b.attrs["segments"] == 1
    for name, value in data(b).items():
        np.testing.assert_array_equal(data(a)[name], value, err_msg=name)


def test_experiment_file_key_and_reuse(tmp_path, capsys):
    toml = tmp_path / "uc.toml"
    toml.write_text(f'out_dir = "{tmp_path / "results"}"\n[[sim]]\nname = "uc"\nN = 16\nn = 64\nd = 8\ns2 = [0.3]\n'
                    "datasets = 1\ninits = 4\nsteps = 1000\nburn_in = 100\nlr = 0.05\nrecord_every = 5\n"
                    "until_converged = true\nmax_steps = 2000\nmin_ess = 100\n")
    summary = run_experiment(str(toml), progress=False)
    ds = load_dataset(summary["simulations"][0], "sims.teacher_student")
    assert ds.attrs["stopping_rule"] == "max_steps" and int(ds.attrs["steps_run"]) == 2000
    status = summary["diagnostics"][summary["simulations"][0]]
    assert "flagged (R-hat > 1.01 or ESS < 100" in status and "stopped by max_steps after 2000 steps" in status
    assert summary["until_converged"][summary["simulations"][0]]["stopping_rule"] == "max_steps"
    again = run_experiment(str(toml), progress=False)          # reused, not run again
    assert "reusing" in capsys.readouterr().err
    assert again["simulations"] == summary["simulations"]
    # other targets: not the saved result; the loop continues from the checkpoints the first one left
    toml.write_text(toml.read_text().replace("max_steps = 2000", "max_steps = 3000"))
    summary = run_experiment(str(toml), progress=False)
    ds = load_dataset(summary["simulations"][0], "sims.teacher_student")
    assert int(ds.attrs["steps_run"]) == 3000 and ds.attrs["resumed"] == 1
    assert [h["steps"] for h in json.loads(ds.attrs["until_converged_history"])] == [2000, 3000]


@pytest.mark.parametrize("extra, message", [
    (["--block-steps", "500"], "--block-steps set the targets of a run until converged: give --until-converged"),
    (["--until-converged", "--log-times"], "log-spaced record times"),
    (["--until-converged", "--max-steps", "500"], "max_steps must be an integer >= steps (1000), got 500"),
    (["--until-converged", "--block-steps", "7"], "block_steps (7) must be a multiple of record_every (5)"),
    (["--until-converged", "--rhat", "1.0"], "rhat must be a finite number > 1"),
    (["--until-converged", "--inits", "1"], "R-hat needs at least 2 chains"),
    (["--until-converged", "--anneal", "down", "--s2", "0.3,0.4"], "annealing ladder"),
    (["--until-converged", "--optimizer", "adam"], "samples no posterior"),
])
def test_bad_command_lines(capsys, extra, message):
    rc, _, err = run_cli(capsys, "sim", "teacher-student", *ARGS, *extra, "--no-progress")
    assert rc == 2 and message in err, err
    assert err.count("\n") == 1                                   # one line


def test_bad_experiment_keys(tmp_path):
    base = ("[[sim]]\nN = 16\nn = 64\nd = 8\ns2 = [0.3]\ninits = 2\nsteps = 1000\nrecord_every = 5\n")
    for extra, message in [("until_converged = 'yes'\n", "until_converged must be true or false"),
                           ("until_converged = true\nblock_steps = 0\n", "block_steps must be a positive integer"),
                           ("until_converged = true\nmax_steps = 1000.5\n", "max_steps must be an integer"),
                           ("min_ess = 50\n", "min_ess set the targets of a run until converged"),
                           ("until_converged = true\nreplica_exchange = true\n", "replica exchange")]:
        path = tmp_path / "bad.toml"
        path.write_text(base + extra)
        with pytest.raises(ParameterError, match=message):
            run_experiment(str(path), progress=False)


def test_targets_schedule_and_validation():
    assert Targets(steps=1000, record_every=10).schedule() == list(range(1000, 10001, 1000))   # defaults
    assert Targets(steps=100, record_every=10, block_steps=300, max_steps=500).schedule() == [100, 400, 500]
    assert Targets(steps=100, record_every=10, max_steps=100).schedule() == [100]
    for kw, message in [({"block_steps": 0}, "block_steps must be a positive integer"),
                        ({"max_steps": 50}, "max_steps must be an integer >= steps"),
                        ({"max_steps": 205}, r"max_steps \(205\) must be a multiple of record_every"),
                        ({"min_ess": 0}, "min_ess must be a finite number > 0"),
                        ({"rhat": float("nan")}, "rhat must be a finite number > 1")]:
        with pytest.raises(ParameterError, match=message):
            Targets(steps=100, record_every=10, **kw)
