"""The experiment definitions ship inside the package (issue 17, installable anywhere).

``theory/reproduce.toml`` and every ``sims/**/*.toml`` are reachable through ``importlib.resources``
with the checkout's bytes (one copy: ``grokphase/definitions/`` links to the top-level folders), the
pyproject package-data globs match exactly those files (so the wheel carries them), a checkout the
user stands in wins over the shipped copy, ``grokphase run NAME`` resolves a shipped experiment by
name, and an unknown name is one line (exit 2) that lists the names there are.  The wheel itself is
built, installed outside the checkout and run by ``tests/wheel_smoke.sh``.
"""

from __future__ import annotations

import glob
import importlib.resources
import tomllib
from pathlib import Path

import pytest

import grokphase.experiments.reproduce as rp
from grokphase.cli import main
from grokphase.errors import ParameterError
from grokphase.experiments import files

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "grokphase"


def _checkout_definitions() -> set[str]:
    """Every definition file of the checkout, relative to its root (written from the folders, not the code)."""
    sims = {p.relative_to(REPO).as_posix() for p in (REPO / "sims").rglob("*.toml")}
    return sims | {"theory/reproduce.toml"}


def test_every_definition_is_package_data_with_the_checkout_bytes():
    expected = _checkout_definitions()
    assert len(expected) >= 20 and "sims/tiny/fig2.toml" in expected
    shipped = importlib.resources.files("grokphase") / "definitions"
    for rel in sorted(expected):
        assert (shipped / rel).read_bytes() == (REPO / rel).read_bytes(), rel
    # one copy, not two: the package folder links to the checkout's top-level folders
    for name in ("sims", "theory"):
        link = PACKAGE / "definitions" / name
        assert link.is_symlink() and link.resolve() == (REPO / name).resolve()
    # every shipped name is one of the checkout's experiment files, and every one of them is shipped
    names = files.experiment_names([files.shipped_root()])
    assert {f"sims/{n}.toml" for n in names} == {r for r in expected if r.startswith("sims/")}


def test_package_data_globs_select_exactly_the_definitions():
    """What setuptools copies into the wheel: the pyproject globs, expanded under src/grokphase as
    its build_py does (glob with recursive=True, files only)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    matched = set()
    for pattern in config["package-data"]["grokphase"]:
        matched |= {Path(p).relative_to(PACKAGE / "definitions").as_posix()
                    for p in glob.glob(str(PACKAGE / pattern), recursive=True) if Path(p).is_file()}
    assert matched == _checkout_definitions()


def test_lookup_order_checkout_first_then_package(tmp_path, monkeypatch):
    shipped = files.shipped_root()
    assert shipped is not None
    monkeypatch.chdir(tmp_path)                      # outside any checkout: the package's copy
    assert files.checkout_root() is None
    assert files.definitions_root() == shipped
    assert files.find_experiment("tiny/fig2") == shipped / "sims" / "tiny" / "fig2.toml"
    assert files.load_toml("fig2_quick") == files.load_toml(REPO / "sims" / "fig2_quick.toml")

    ck = tmp_path / "checkout"                       # a checkout whose tiny/fig2 the user edited
    (ck / "theory").mkdir(parents=True)
    (ck / "sims" / "tiny").mkdir(parents=True)
    (ck / "theory" / "reproduce.toml").write_text("[fig1]\n")
    (ck / "sims" / "tiny" / "fig2.toml").write_text('model = "teacher-student"\n# edited\n')
    (ck / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(ck / "deep" / "er")
    assert files.checkout_root() == ck.resolve()
    assert files.definitions_root() == ck.resolve()
    assert files.find_experiment("tiny/fig2") == ck.resolve() / "sims" / "tiny" / "fig2.toml"
    assert files.find_experiment("fig2_quick") == shipped / "sims" / "fig2_quick.toml"   # not in the checkout
    assert files.definition_roots() == [ck.resolve(), shipped]

    monkeypatch.chdir(REPO)                          # this checkout and the package: the same files, listed once
    assert files.definition_roots() == [REPO]
    assert files.find_experiment("tiny/fig2") == REPO / "sims" / "tiny" / "fig2.toml"


def test_paths_keep_their_meaning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "fig2_quick"                  # a file of that name wins over the shipped experiment
    local.write_text("x = 1\n")
    assert files.find_experiment("fig2_quick") == Path("fig2_quick")
    assert files.find_experiment("missing.toml") == Path("missing.toml")    # a .toml is a path, never a name
    assert files.find_experiment(str(tmp_path)) == tmp_path                 # a folder: load_toml says so
    with pytest.raises(ParameterError, match="is a directory"):
        files.load_toml(tmp_path)
    with pytest.raises(ParameterError, match="does not exist"):
        files.load_toml("missing.toml")
    with pytest.raises(ParameterError, match="unknown experiment '../sims/fig2_quick'"):
        files.find_experiment("../sims/fig2_quick")                          # names stay inside sims/


def test_no_definitions_anywhere_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files, "shipped_root", lambda: None)
    with pytest.raises(ParameterError, match="cannot find theory/reproduce.toml"):
        files.definitions_root()
    with pytest.raises(ParameterError, match=r"one of: \(none"):
        files.find_experiment("fig2_quick")


def test_reproduce_outside_a_checkout_reads_the_shipped_definitions(tmp_path, monkeypatch):
    seen = []

    def fake_one(ctx, name):
        seen.append((ctx.defs_root, ctx.config(name)))
        return {"name": name}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rp, "reproduce_one", fake_one)
    rp.reproduce(["fig2"], scale="tiny", out_dir=tmp_path / "figs", progress=False)
    assert seen == [(files.shipped_root(), {"sims": "sims/tiny/fig2.toml"})]
    assert (tmp_path / "results" / "reproduce" / "tiny" / "summary_fig2.json").is_file()


def test_run_unknown_name_lists_the_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "fig2_quik"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("grokphase: error: unknown experiment 'fig2_quik'")
    for name in files.experiment_names():
        assert name in err
    assert "tiny/fig2" in err and "fig2_quick" in err
    assert list(tmp_path.iterdir()) == []


def test_run_by_name_runs_that_file(tmp_path, monkeypatch, capsys):
    """`grokphase run NAME` hands the runner the named file of the checkout the user is in (here a bad
    one, so that it stops at the check, before any simulation)."""
    (tmp_path / "theory").mkdir()
    (tmp_path / "sims").mkdir()
    (tmp_path / "theory" / "reproduce.toml").write_text("[fig1]\n")
    (tmp_path / "sims" / "mine.toml").write_text('model = "teacher-student"\n[[sim]]\nname = "a"\nbogus = 1\n')
    monkeypatch.chdir(tmp_path)
    assert main(["run", "mine"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "bogus" in err
