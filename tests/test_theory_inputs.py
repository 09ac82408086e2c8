"""Theory inputs beyond the paper's: any sign of eps, and magnitudes float64 cannot carry.

- eps > 0 (finite d): the CLI's point equals :func:`solve_finite_d` called directly; solving it no
  longer runs into the scaling limit at a sigma^2 nobody asked for.
- eps > 0 (scaling limit): the GMFL-I branch (droplets trade linear for cubic, b - 2cx* < 0) is
  checked against finite-d solutions at growing beta, extrapolated to beta -> infinity (Aitken),
  and the transition the limit reports is where its own branches meet (pi1 -> 0, c -> eps).
- eps = 0: solves; the cubic learned fraction is undefined (NaN), never -inf.
- Extreme magnitudes: exit 2, one line naming the parameter and its allowed range, no traceback,
  no solver started, no numpy reprs in any message.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from grokphase.cli import main
from grokphase.cli import theory as cli_theory
from grokphase.errors import ParameterError
from grokphase.theory import gp
from grokphase.theory import modular as md
from grokphase.theory import teacher_student as ts
from grokphase.theory.modular import finite_p
from test_cli import run_error as cli_run_error


def run_json(capsys, *argv):
    assert main(list(argv) + ["--json", "--no-progress"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def run_error(capsys, *argv):
    """test_cli's check (exit 2, one ``grokphase: error:`` line, no traceback, empty stdout), and no
    NumPy repr in the message."""
    line = cli_run_error(capsys, *argv)
    assert "np.float64(" not in line and "array(" not in line, line
    return line


# ------------------------------------------------------------------------------------------------
# eps > 0 and eps = 0
# ------------------------------------------------------------------------------------------------


def test_eps_positive_finite_d_point_equals_direct_solve(capsys):
    out = run_json(capsys, "theory", "teacher-student", "--eps", "0.4", "--s2", "0.13")
    (pt,) = out["points"]
    sol = ts.solve_finite_d(ts.TeacherStudentParams(N=700, n=3000, d=150, s2=0.13, sa2=8 / 700, sw2=0.5, eps=0.4))
    assert pt["status"] == "converged"
    assert pt["b"] == pytest.approx(float(sol.b), abs=1e-12)
    assert pt["c"] == pytest.approx(float(sol.c), abs=1e-12)
    assert pt["cubic_learned"] == pytest.approx(1 - float(sol.c) / 0.4, abs=1e-12)


def _aitken(x):
    """Limit of a geometrically converging sequence x0, x1, x2 (Aitken's delta-squared)."""
    x0, x1, x2 = x
    return x2 - (x2 - x1) ** 2 / ((x2 - x1) - (x1 - x0))


def test_eps_positive_limit_branch_is_the_large_beta_limit_of_finite_d():
    """GMFL-I at eps = +0.4, s2 = 0.8 s2_c (concentrated approximation, where finite d is cheap):
    the finite-d b and c approach the limit monotonically as beta grows, and their Aitken
    extrapolation from beta = 16, 64, 256 lands on it (the raw beta = 256 values are still
    0.004-0.005 away; the extrapolation agrees to about 1e-3)."""
    base = ts.TeacherStudentParams(eps=0.4)
    tr = ts.solve_transition(base, along="s2", approximation="concentrated")
    assert tr.found
    s2 = 0.8 * float(tr.value)
    lim = ts.solve_limit(base.replace(s2=s2), approximation="concentrated")
    assert int(lim.phase) == ts.Phase.GMFL_I and float(lim.pi1) > 0
    assert float(lim.b) < float(lim.c) < 0.4            # droplets trade linear for cubic: b < c < eps
    betas = np.array([16.0, 64.0, 256.0])
    p = base.replace(s2=np.full(3, s2)).scaled(beta=betas)
    sol = ts.solve_finite_d(p, approximation="concentrated")
    for name in ("b", "c"):
        x, x_lim = np.asarray(getattr(sol, name)), float(getattr(lim, name))
        gaps = np.abs(x - x_lim)
        assert np.all(np.diff(gaps) < 0), (name, x, x_lim)
        assert _aitken(x) == pytest.approx(x_lim, abs=2e-3), (name, x, x_lim)


@pytest.mark.parametrize("approximation", ts.APPROXIMATIONS)
def test_eps_positive_transition_is_where_the_limit_branches_meet(approximation):
    """Just below the reported s2_c the limit is GMFL-I with a vanishing droplet weight and c -> eps,
    just above it GFL: the transition and the limit solver agree (no transition reported at a point
    the solver refuses)."""
    base = ts.TeacherStudentParams(eps=0.4)
    tr = ts.solve_transition(base, along="s2", approximation=approximation)
    assert tr.found
    s2_c = float(tr.value)
    lim = ts.solve_limit(base.replace(s2=s2_c * np.array([1 - 1e-4, 1 + 1e-4, 0.9, 0.5])),
                         approximation=approximation)
    assert list(lim.phase) == [ts.Phase.GMFL_I, ts.Phase.GFL, ts.Phase.GMFL_I, ts.Phase.GMFL_I]
    assert np.all(lim.status == ts.Status.CONVERGED)
    assert lim.pi1[0] < 0.05 and lim.c[0] == pytest.approx(0.4, abs=2e-3)
    assert np.all(np.diff(lim.pi1[[0, 2, 3]]) > 0)       # more droplets deeper in GMFL-I
    assert float(lim.q_star[0]) == pytest.approx(float(tr.q_star), rel=2e-2)


def test_eps_positive_limit_and_transition_cli(capsys):
    out = run_json(capsys, "theory", "teacher-student", "--limit", "--transition", "--eps", "0.4",
                   "--s2-sweep", "0.05:0.07:3", "--approximation", "concentrated")
    s2_c = out["s2_c"]
    assert 0.05 < s2_c < 0.07
    for pt in out["points"]:
        assert pt["status"] == "converged"
        assert pt["phase"] == ("GMFL-I" if pt["s2"] < s2_c else "GFL")


def test_eps_zero_solves_with_undefined_cubic_fraction(capsys):
    out = run_json(capsys, "theory", "teacher-student", "--eps", "0", "--s2", "0.13")
    (pt,) = out["points"]
    assert pt["status"] == "converged"
    assert pt["cubic_learned"] is None                  # NaN: nothing cubic to learn (not -inf)
    assert abs(pt["c"]) < 0.05                          # the network's own small H3 leak
    lim = ts.solve_limit(ts.TeacherStudentParams(eps=0.0, s2=np.array([0.05, 0.14])))
    assert np.all(lim.phase == ts.Phase.GFL) and np.all(lim.c == 0.0) and np.all(np.isnan(lim.cubic_learned))
    line = run_error(capsys, "theory", "teacher-student", "--eps", "0", "--transition", "--limit")
    assert "no GFL -> GMFL-I transition" in line


# ------------------------------------------------------------------------------------------------
# Extreme magnitudes
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_solver(monkeypatch):
    """Every theory solver raises if called: a rejection must come before any work."""
    def refuse(*_a, **_k):
        raise AssertionError("a solver was started")
    for mod, names in ((ts, ("solve_finite_d", "solve_limit", "solve_transition")), (md, ("solve", "solve_limit",
                                                                                        "transitions")),
                       (gp, ("solve_gp", "rayleigh_quotients"))):
        for name in names:
            monkeypatch.setattr(mod, name, refuse)


EXTREME = [
    # (argv, parameter named in the message)
    (["theory", "teacher-student", "--N", "1e300"], "N"),
    (["theory", "teacher-student", "--N", "1e-320"], "N"),
    (["theory", "teacher-student", "--n", "1e300"], "n"),
    (["theory", "teacher-student", "--n", "1e-200"], "n"),
    (["theory", "teacher-student", "--s2", "1e-300"], "s2"),
    (["theory", "teacher-student", "--s2", "1e300"], "s2"),
    (["theory", "teacher-student", "--sa2", "1e308"], "sa2"),
    (["theory", "teacher-student", "--sa2", "1e-320"], "sa2"),
    (["theory", "teacher-student", "--sw2", "1e-320"], "sw2"),
    (["theory", "teacher-student", "--d", "1e-320"], "d"),
    (["theory", "teacher-student", "--beta", "1e-320"], "beta"),
    (["theory", "teacher-student", "--s2-sweep", "1e-300:1e-299:3"], "s2"),
    (["theory", "teacher-student", "--limit", "--N", "1e300"], "N"),
    (["theory", "gp-teacher-student", "--N", "1e300"], "N"),
    (["theory", "phase-diagram", "teacher-student", "--x", "s2:1e-300:1e-299:3", "--y", "N:100:200:2"], "s2"),
    (["theory", "phase-diagram", "teacher-student", "--N", "1e300", "--x", "s2:0.1:0.2:2", "--y", "d:100:200:2"], "N"),
    (["theory", "teacher-student", "--beta", "1e300"], "beta"),      # n = 3000 beta: n^2 in u overflows
    (["theory", "modular", "--N", "1e300"], "N"),
    (["theory", "modular", "--P", "1e300"], "P"),
    (["theory", "modular", "--s2", "1e-300"], "s2"),
    (["theory", "modular", "--sa2", "1e-320"], "sa2"),
    (["theory", "modular", "--gamma", "1e-320"], "gamma"),
    (["theory", "modular", "--beta", "1e300"], "beta"),
    (["theory", "modular", "--s2-sweep", "1e-300:1e-299:3"], "s2"),
    (["theory", "phase-diagram", "modular", "--x", "s2:1e-300:1e-299:3", "--y", "N:500:600:2"], "s2"),
]


@pytest.mark.parametrize("argv,name", EXTREME, ids=[" ".join(a[1:]) for a, _ in EXTREME])
def test_extreme_magnitudes_rejected_before_any_solve(capsys, no_solver, argv, name):
    line = run_error(capsys, *argv)
    assert f"{name} " in line or f"--{name}" in line, line
    if name != "beta":
        assert "must lie in [" in line or "smallest normal float64" in line, line


def test_d_beyond_any_grid_is_refused_naming_d(capsys):
    """--beta 1e20 keeps every derived quantity in float64 but gives d = 1.5e12, whose prior (width
    sqrt(sw2/d)) no q-grid of at most MAX_GRID_SIZE nodes resolves: one line naming d and the limit."""
    line = run_error(capsys, "theory", "teacher-student", "--beta", "1e20", "--no-progress")
    assert "d = 1.5e+12 is too large for the finite-d solver" in line and "--limit" in line, line
    need = 0.4 * np.sqrt(ts.TeacherStudentParams().sw2 / 1.5e12)
    assert 1.0 / need > ts.MAX_GRID_SIZE                   # the grid spacing the solver would need


def test_magnitude_error_range_is_the_boundary():
    """The range printed for N is where u leaves float64: N just inside solves the magnitude check,
    N just outside fails it."""
    with pytest.raises(ParameterError) as err:
        ts.TeacherStudentParams(N=1e300)
    msg = str(err.value)
    hi = float(msg.rsplit(", ", 1)[1].rstrip("]"))
    ts.TeacherStudentParams(N=hi * 0.99)
    with pytest.raises(ParameterError):
        ts.TeacherStudentParams(N=hi * 1.02)
    # sa2 = 8/N: u = n^2 8/(s2^2 d N^2) reaches the smallest normal number at N = hi
    log10_u = np.log10(3000.0**2 * 8.0 / (0.14**2 * 150.0)) - 2 * np.log10(hi)
    assert log10_u == pytest.approx(np.log10(np.finfo(np.float64).tiny), abs=0.01)


def test_no_numpy_repr_in_parameter_errors():
    cases = [lambda: ts.TeacherStudentParams(s2=np.array([0.1, -1.0])),
             lambda: ts.TeacherStudentParams(s2=np.float64(1e-300)),
             lambda: ts.TeacherStudentParams(eps=np.float64("nan")),
             lambda: md.ModularParams(P=np.float64(2.0)),
             lambda: md.ModularParams(gamma=np.array([1e-4, 1e-320]))]
    for make in cases:
        with pytest.raises(ParameterError) as err:
            make()
        assert "np." not in str(err.value) and "array(" not in str(err.value), str(err.value)


# ------------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------------


class FakeBar:
    """The part of tqdm's API the solvers use."""

    def __init__(self):
        self.total, self.n, self.resets = None, 0, 0

    def reset(self, total=None):
        self.total, self.n, self.resets = total, 0, self.resets + 1

    def update(self, n=1):
        self.n += n

    def refresh(self):
        pass


def test_teacher_student_progress_counts_every_point_and_changes_nothing():
    p = ts.TeacherStudentParams(s2=np.linspace(0.08, 0.3, 5)[:, None], d=np.array([60.0, 150.0]))
    bar = FakeBar()
    bar.reset(total=p.shape[0] * p.shape[1])
    with_bar = ts.solve_finite_d(p, approximation="concentrated", progress=bar)
    plain_ = ts.solve_finite_d(p, approximation="concentrated")
    assert bar.n == bar.total >= 10                    # refinements raise the total and count again
    for name in ("b", "c", "free_energy", "status"):
        np.testing.assert_array_equal(getattr(with_bar, name), getattr(plain_, name))


def test_modular_exact_progress_blocks_are_bit_identical(monkeypatch):
    """With a bar the exact method runs in blocks (so the bar moves); every point is independent,
    so the numbers are the same bits as one call."""
    monkeypatch.setattr(finite_p, "PROGRESS_BLOCK", 8)
    monkeypatch.setattr(finite_p, "default_chunk", lambda: 4)
    p = md.ModularParams(s2=np.linspace(0.12, 0.28, 20))
    bar = FakeBar()
    blocks = md.solve(p, "exact", progress=bar)
    whole = md.solve(p, "exact")
    assert bar.n == 20
    for name in whole._fields:
        np.testing.assert_array_equal(getattr(blocks, name), getattr(whole, name))


def test_cli_progress_bar_on_stderr_and_off_with_no_progress(capsys, monkeypatch):
    """The bar is tqdm on stderr over the solver's points; --no-progress disables it."""
    seen = []
    real = cli_theory.tqdm

    def spy(*a, **k):
        bar = real(*a, **k)
        seen.append((k.get("disable"), k.get("file")))
        return bar
    monkeypatch.setattr(cli_theory, "tqdm", spy)
    assert main(["theory", "modular", "--s2", "0.2"]) == 0
    assert main(["theory", "modular", "--s2", "0.2", "--no-progress"]) == 0
    capsys.readouterr()
    assert seen == [(False, sys.stderr), (True, sys.stderr)]
