"""The theory side of `grokphase free-energy --theory` (analysis/free_energy_theory.py): the mean-field
F(m) solved at a simulation's sizes, on the order parameter the simulation biased."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from grokphase.analysis.free_energy_theory import theory_profiles
from grokphase.errors import ResultFileError
from grokphase.theory import modular as md


def modular_attrs(**over):
    attrs = {"grokphase_kind": "sims.modular", "param_optimizer": "langevin", "param_parametrisation": "paper",
             "param_alpha": 1.0, "param_gamma": 0.01, "param_N": 64, "param_P": 23, "sa2": 4.37e-4,
             "umbrella": 1, "umbrella_order_parameter": "target_component"}
    attrs.update(over)
    return xr.Dataset(attrs=attrs)


def test_modular_profile_is_minimal_at_the_finite_p_solution_and_convex():
    """The constrained F(m) at the simulated sizes has its minimum where the unconstrained finite-P
    solver (md.solve, another code path) puts the target component, within one grid step, and is
    convex with curvature at least the data term Y/s2 (Y = P(P - 1)): the mean-field profile is one
    well (docs/free_energy.md)."""
    s2 = 0.15
    p = md.ModularParams(N=64, P=23, s2=s2, sa2=4.37e-4, gamma=0.01)
    m_solver = float(md.free_energy_profile(p, [0.0], convention="network").m_solver)
    grid = np.linspace(m_solver - 0.04, m_solver + 0.04, 41)
    out = theory_profiles(modular_attrs(), [s2], grid)
    m, F = out[s2]
    assert m.size == grid.size                                   # every point solved
    h = grid[1] - grid[0]
    assert abs(m[np.argmin(F)] - m_solver) <= h
    curvature = np.diff(F, 2) / h ** 2
    assert np.all(curvature >= 23 * 22 / s2 * (1 - 1e-6))


@pytest.mark.parametrize("attrs, message", [
    ({"param_parametrisation": "gromov"}, "paper parametrisation"),
    ({"param_alpha": 0.5}, "whole table"),
    ({"grokphase_kind": "analysis.free_energy"}, "no theory free-energy profile"),
])
def test_results_the_theory_does_not_describe_are_refused(attrs, message):
    with pytest.raises(ResultFileError, match=message):
        theory_profiles(modular_attrs(**attrs), [0.15], np.linspace(0, 0.1, 5))


def test_teacher_student_needs_a_learned_fraction_of_the_papers_degrees():
    ds = xr.Dataset(attrs={"grokphase_kind": "sims.teacher_student", "umbrella_order_parameter": "learned_2",
                           "parameters_json": "{}", "N": 88, "n": 375, "d": 53, "sa2": 8 / 88,
                           "param_sw2": 0.5, "param_eps": -0.3})
    with pytest.raises(ResultFileError, match="degrees 1 and 3"):
        theory_profiles(ds, [0.14], np.linspace(0, 0.3, 5))
    with pytest.raises(ResultFileError, match="learned-fraction"):
        theory_profiles(ds.assign_attrs(umbrella_order_parameter="target_component"), [0.14], [0.1])
