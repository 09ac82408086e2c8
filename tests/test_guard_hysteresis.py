"""Guards for the hysteresis analysis's loop criterion (issue 16, mutation check).

A hysteresis loop is seen where the heating branch lies above the cooling branch by more than 3
combined standard errors, z = (heating - cooling)/sqrt(SE_h^2 + SE_c^2) > 3 (two independent
estimates; |z| > 3 happens by chance with probability 0.0013 per point if the branches coincide).
Synthetic branches set z exactly: 2 SE apart (chance-level, must NOT open the window) and 4 SE apart
(must open it), at a few s2 values, for both models' analyses.  The theory the analyses also solve is
not what is checked here (other tests compare it); sizes are kept small to make it cheap.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr

import grokphase  # noqa: F401  (float64)
from grokphase.analysis.hysteresis import hysteresis_modular, hysteresis_teacher_student

# z = gap / sqrt(se_c^2 + se_h^2) with se_c = 0.003, se_h = 0.004, so sqrt(...) = 0.005 exactly
SE_C, SE_H, SE = 0.003, 0.004, 0.005
Z = np.array([4.0, 2.0, 0.5, 2.9, 3.2])            # opens at the 1st and 5th point only
OPEN = Z > 3.0


def _branches(s2, value, name, extra, attrs, cooling_value=None):
    """An annealing result with a branch dimension: heating = cooling + Z * SE."""
    s2 = np.asarray(s2, float)
    base = np.full(s2.size, value) if cooling_value is None else np.asarray(cooling_value, float)
    parts = []
    for se, shift in ((SE_C, 0.0), (SE_H, 1.0)):
        data = {name: (("s2",), base + shift * Z * SE), f"{name}_sem": (("s2",), np.full(s2.size, se))}
        for k, v in extra.items():
            data[k] = (("s2",), np.full(s2.size, v))
        parts.append(xr.Dataset(data, coords={"s2": s2}))
    ds = xr.concat(parts, dim="branch").assign_coords(branch=["cooling", "heating"])
    ds.attrs.update(attrs)
    return ds


def test_modular_loop_window_opens_at_three_combined_standard_errors():
    P, N, gamma, s1 = 7, 32, 0.3, 0.05
    sa2 = s1**2 * N * math.sqrt(gamma) / (math.sqrt(3) * P**2)
    s2 = np.array([0.8, 0.85, 0.9, 0.95, 1.05]) * s1
    ds = _branches(s2, 0.1, "target_component_mean",
                   {"droplet_fraction": 0.01, "droplet_fraction_sem": 0.001},
                   {"param_P": P, "param_N": N, "param_sa2": sa2, "param_gamma": gamma})
    h = hysteresis_modular({"cooling": ds, "heating": ds}, n_theory=3)
    loop = json.loads(h.attrs["summary_json"])["loop"]
    np.testing.assert_allclose(loop["z"], Z, rtol=1e-9)
    np.testing.assert_allclose(loop["window_s2"], s2[OPEN], rtol=1e-12)


def test_teacher_student_loop_opens_at_three_combined_standard_errors():
    s2 = np.array([0.1, 0.12, 0.14, 0.16, 0.18])
    attrs = {"N": 40, "n": 60, "d": 12, "sa2": 0.2, "param_sw2": 0.5, "param_eps": -0.3}
    extra = {"linear_learned": 0.5, "linear_learned_sem": 0.01, "droplet_fraction": 0.02,
             "droplet_fraction_sem": 0.005, "t_droplet": 0.3, "t_droplet_sem": 0.01,
             "theory_droplet_fraction": 0.01}
    ds = _branches(s2, 0.2, "cubic_learned", extra, attrs)
    h = hysteresis_teacher_student({"cooling": ds, "heating": ds}, approximation="concentrated", n_theory=3)
    loop = json.loads(h.attrs["summary_json"])["loop"]
    np.testing.assert_allclose(loop["z"], Z, rtol=1e-9)
    assert loop["loop_seen"] is True
    np.testing.assert_allclose(loop["s2_open"], s2[OPEN], rtol=1e-12)
    # no point beyond 3 SE: no loop
    closed = _branches(s2, 0.2, "cubic_learned", extra, attrs)
    closed = closed.assign(cubic_learned=closed["cubic_learned"].where(closed["branch"] == "cooling",
                                                                       closed["cubic_learned"].sel(branch="cooling")
                                                                       + 2.0 * SE))
    h2 = hysteresis_teacher_student({"cooling": closed, "heating": closed}, approximation="concentrated", n_theory=3)
    loop2 = json.loads(h2.attrs["summary_json"])["loop"]
    np.testing.assert_allclose(loop2["z"], 2.0, rtol=1e-9)
    assert loop2["loop_seen"] is False and loop2["s2_open"] == []
