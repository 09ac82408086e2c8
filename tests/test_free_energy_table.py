"""The ``[free_energy]`` table of an experiment file (issue 19): the same analysis as ``grokphase
free-energy`` (identical numbers), its files and its refusals, checked before any simulation runs.

The umbrella results are the synthetic ones of tests/test_free_energy.py (a double well sampled exactly
in every window, whose profile that file checks against quadrature); here only the table's plumbing is
under test, against the command's own analysis of the same file."""

from __future__ import annotations

import json

import numpy as np
import pytest

import grokphase  # noqa: F401
from grokphase.analysis.free_energy import free_energy_report
from grokphase.cli import main
from grokphase.cli.common import to_json
from grokphase.errors import ParameterError
from grokphase.experiments.free_energy_table import free_energy_table
from grokphase.experiments.registry import get_model
from grokphase.io import load_dataset, save_dataset

from test_free_energy import umbrella_dataset

OPTS = {"bins": 30, "bootstrap": 10}


@pytest.fixture(scope="module")
def runs():
    ds = umbrella_dataset()
    return {"u": ds, "v": umbrella_dataset(start=True), "plain": ds.assign_attrs(umbrella=0)}


def test_table_equals_the_command(runs, tmp_path, capsys):
    """A [free_energy] table on run "u" writes the same profile file, and its summary entry holds the same
    numbers, as ``grokphase free-energy u.nc --bins 30 --bootstrap 10`` (the command's JSON)."""
    summary = {}
    free_energy_table("f.toml", {"sim": "u", **OPTS, "plot": str(tmp_path / "fe.png")}, runs, tmp_path, summary)
    (entry,) = json.loads(to_json(summary))["free_energy"]       # as `grokphase run --json` prints it
    assert entry["sim"] == "u" and entry["out"] == str(tmp_path / "free_energy_u.nc")
    assert (tmp_path / "fe.png").stat().st_size > 10_000 and summary["plots"] == [str(tmp_path / "fe.png")]
    path = save_dataset(runs["u"], tmp_path / "u.nc")
    assert main(["free-energy", str(path), "--bins", "30", "--bootstrap", "10", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    for key in ("coexistence_s2", "coexistence_s2_sem", "barrier", "latent_heat", "overlap_min"):
        assert entry[key] == cli[key], key
    assert [p["F"] for p in entry["profiles"]] == [p["F"] for p in cli["profiles"]]
    saved = load_dataset(entry["out"], "analysis.free_energy")
    np.testing.assert_array_equal(saved["F"].values[0], np.array(cli["profiles"][0]["F"], dtype=float))


def test_default_is_every_umbrella_run_and_starts_are_checked(runs, tmp_path):
    """Without ``sim`` every umbrella run is analysed (the plain one is skipped), each to its own file; a run
    whose windows started twice carries the starts' agreement, as the command's JSON does."""
    summary = {}
    free_energy_table("f.toml", dict(OPTS), runs, tmp_path, summary)
    assert [e["sim"] for e in summary["free_energy"]] == ["u", "v"]
    assert all((tmp_path / f"free_energy_{n}.nc").exists() for n in ("u", "v"))
    two = summary["free_energy"][1]
    want, _, _ = free_energy_report(runs["v"], bins=30, n_bootstrap=10)
    assert two["start_agreement"] == want["start_agreement"] and "start_agreement" not in summary["free_energy"][0]


@pytest.mark.parametrize("table, match", [
    ({"sim": "plain"}, "no umbrella windows"),
    ({"sim": "w"}, "not a \\[\\[sim\\]\\] entry"),
    ({"bins": 2}, "bins must be an integer >= 3"),
    ({"bootstrap": 5.5}, "bootstrap must be an integer"),
    ({"s2": [0.1, -1]}, "s2 must be a list of numbers > 0"),
    ({"theory": "yes"}, "theory must be true or false"),
    ({"kappa": 3}, "unknown key\\(s\\) kappa"),
    ({"out": "x.nc"}, "out and plot name one file"),
])
def test_bad_tables_are_refused(runs, tmp_path, table, match):
    with pytest.raises(ParameterError, match=match):
        free_energy_table("f.toml", table, runs, tmp_path, {})


def test_both_models_register_the_table_and_run_checks_it_first(tmp_path, capsys, monkeypatch):
    """``grokphase run`` refuses a bad [free_energy] table with one line before any simulation starts."""
    for name in ("teacher-student", "modular"):
        assert get_model(name).tables["free_energy"] is free_energy_table
    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "f.toml"
    toml.write_text('model = "teacher-student"\n[[sim]]\nname = "a"\nN = 8\nd = 4\nn = 8\ns2 = [0.2]\nsteps = 10\n'
                    'umbrella_m0 = [0.0, 0.1]\numbrella_kappa = 100\n[free_energy]\nsim = "b"\n')
    assert main(["run", str(toml), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sim 'b' is not a [[sim]] entry" in err[0]
    assert not (tmp_path / "results").exists()                       # nothing ran
