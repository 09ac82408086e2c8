"""Metastability of the modular model's GFL -> GMFL-I transition (issue 8) in the regime of
``sims/modular_hysteresis.toml`` (P = 23, N = 256, gamma = 0.3, the network-normalised theory's
transition at s1 = 0.004).

At s2 = 0.85 s1 the theory's equilibrium is ordered (target component 0.16, about 3.4 droplet neurons
per mode), but a network started at the prior must nucleate a droplet over the supercooled barrier
P_eff Shat(w-^2) ~ 14 (in units of the action): with N (P - 1)/2 ~ 2.8e3 neuron-mode attempts per
relaxation time (~1/(lr s2) ~ 100 steps) the expected number of nucleations in 500 steps is
~2.8e3 * e^-14 * 5 ~ 0.01, so the prior start must stay at the GP level (target component ~0.003).
The ordered start (the theory's droplet count per mode at |w_k|^2 = Phi_+) must keep its droplets:
leaving one costs the pinned barrier P_eff Shat(w-^2) ~ 20 at the degenerate point.  Both states at
one s2 for 500 steps — the two branches of the hysteresis loop."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from grokphase.sims.modular import ModularSim, run_modular
from grokphase.theory import modular as mt

P, N, GAMMA, S1 = 23, 256, 0.3, 0.004
SA2 = S1 ** 2 * N * math.sqrt(GAMMA) / (math.sqrt(3) * P ** 2)      # puts gmfl1_s2 at S1 (network convention)
S2 = 0.85 * S1


def _sim(start):
    return ModularSim(P=P, N=N, s2=(S2,), sa2=SA2, gamma=GAMMA, optimizer="langevin", lr=3.0, seeds=1,
                      steps=500, burn_in=250, record_every=50, start=start, ordered_droplets="theory",
                      theory_convention="network")


@pytest.fixture(scope="module")
def theory():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prm = mt.ModularParams(N=N, P=P, s2=S2, sa2=SA2, gamma=GAMMA)
        tr = mt.transitions(prm, "network")
        fin = mt.solve(prm, "exact", convention="network", check=False)
        lim = mt.solve_limit(prm, "network")
    return tr, fin, lim


def test_regime_is_the_documented_one(theory):
    """The theory's numbers the metastability argument rests on: transition at S1, equilibrium ordered
    at 0.85 S1 (target component ~0.16) and a supercooled barrier of ~14."""
    tr, fin, lim = theory
    assert float(tr.gmfl1_s2) == pytest.approx(S1, rel=1e-9)
    assert 0.1 < float(np.asarray(fin.target_component)) < 0.25
    assert 12.0 < float(np.asarray(lim.barrier_supercooled)) < 16.0


def test_prior_start_supercools_and_ordered_start_stays_ordered(theory):
    _, fin, _ = theory
    eq = float(np.asarray(fin.target_component))
    cold = run_modular(_sim("prior"), progress=False)
    hot = run_modular(_sim("ordered"), progress=False)
    tc_cold = cold["target_component_mean_trajectory"].values[0]          # (seed, time)
    tc_hot = hot["target_component_mean_trajectory"].values[0]
    # the prior start never leaves the GP level (no droplet nucleated) although equilibrium is ordered
    assert np.all(tc_cold < 0.02), tc_cold
    assert float(cold["droplet_fraction"].values[0]) < 2.0 / N
    assert eq > 8 * tc_cold.max()
    # the ordered start keeps its droplets and a target component an order of magnitude above the
    # prior start's at every record
    drop = hot["droplet_fraction_trajectory"].values[0]
    assert np.all(drop >= 0.9 * drop[:, :1]), drop
    assert np.all(tc_hot > 10 * tc_cold.max()), (tc_hot, tc_cold)


def _fake(s2, tc, se, branch=None, replica=False):
    """A minimal modular result Dataset with what hysteresis_modular reads."""
    import xarray as xr

    s2 = np.asarray(s2, float)
    tc, se = np.asarray(tc, float), np.asarray(se, float)
    data = {"target_component_mean": (("s2",), tc), "target_component_mean_sem": (("s2",), se),
            "droplet_fraction": (("s2",), tc / 2), "droplet_fraction_sem": (("s2",), se / 2)}
    if replica:
        data["swap_acceptance_pooled"] = (("pair",), np.full(s2.size - 1, 0.3))
        data["round_trips"] = (("replica",), np.ones(s2.size, int))
    ds = xr.Dataset(data, coords={"s2": s2})
    if branch is not None:
        ds = xr.concat([ds, ds.assign(target_component_mean=ds["target_component_mean"] + branch)],
                       dim="branch").assign_coords(branch=["cooling", "heating"])
    ds.attrs.update(param_P=P, param_N=N, param_sa2=SA2, param_gamma=GAMMA)
    return ds


def test_hysteresis_analysis_loop_window_bracket_and_theory(theory):
    """The analysis on synthetic branches: the loop window is where heating - cooling exceeds 3
    combined SEs, a replica point between the branches is flagged as such and one outside as outside,
    the distances are to the finite-P exact theory solved at the same (N, P, sa2, gamma), and the
    summary carries the theory's transition and spinodals."""
    from grokphase.analysis.hysteresis import hysteresis_modular

    s2 = np.array([0.8, 0.85, 0.9, 1.05]) * S1
    gap = np.array([0.2, 0.15, 0.001, 0.0])                       # a loop at 0.8 and 0.85 s1 only
    anneal = _fake(s2, [0.005] * 4, [0.002] * 4, branch=gap)
    rep = _fake(s2, [0.1, 0.5, 0.005, 0.003], [0.002] * 4, replica=True)      # 0.85 s1: above heating
    h = hysteresis_modular({"cooling": anneal, "heating": anneal, "replica": rep})
    import json

    summ = json.loads(h.attrs["summary_json"])
    loop = summ["loop"]
    np.testing.assert_allclose(loop["window_s2"], s2[:2])
    np.testing.assert_allclose(loop["replica_between_s2"], s2[[0, 2, 3]])
    np.testing.assert_allclose(loop["replica_outside_s2"], s2[[1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eq = np.asarray(mt.solve(mt.ModularParams(N=N, P=P, s2=s2, sa2=SA2, gamma=GAMMA), "exact",
                                 convention="network", check=False).target_component)
    np.testing.assert_allclose(h["theory_target_component"].values, eq, rtol=1e-10)
    np.testing.assert_allclose(h["distance"].sel(protocol="replica").values, rep["target_component_mean"].values - eq)
    assert summ["gmfl1_s2"] == pytest.approx(S1)
    # the ordered branch's spinodal lies below the transition here: no superheated ordered state above s1
    assert summ["spinodal_s2"] < S1 < summ["supercooled_spinodal_s2"]
    # the text report of `grokphase run` carries the same window and each protocol's numbers
    from grokphase.cli.text import modular_hysteresis_lines

    text = modular_hysteresis_lines({"out": "h.nc", **summ})
    assert text[-1].endswith(str(loop["window_s2"]))
    assert any(line.strip().startswith("replica ") and "0.500±0.002" in line for line in text)


def test_hysteresis_analysis_rejects_unknown_protocol_and_mismatched_runs():
    from grokphase.errors import ParameterError
    from grokphase.analysis.hysteresis import hysteresis_modular

    s2 = np.array([0.8, 0.9]) * S1
    good = _fake(s2, [0.01, 0.01], [0.001, 0.001], replica=True)
    with pytest.raises(ParameterError, match="unknown protocol"):
        hysteresis_modular({"melting": good})
    other = good.copy()
    other.attrs["param_N"] = N + 1
    with pytest.raises(ParameterError, match="differ"):
        hysteresis_modular({"replica": good, "replica_ordered": other})


# --- superheating (sims/modular_superheating.toml's regime, smaller N) --------------------------------
# Above s1 a mode's droplets survive only while their saddle exists, u a^2 >= sqrt(gamma), i.e. below the
# marginal target component 1 - (sqrt(gamma)/u)^(1/2) (0.069 at s1, 0 at the supercooled spinodal
# 1.0746 s1).  One droplet neuron adds lambda_1/s2 = 4 sqrt(3) s1/sqrt(gamma) to its mode, so with
# s1 = 4e-4 (0.005 per droplet) about ten droplets per mode fit under the bound above s1, and a heated
# ordered network must stay ordered there — far above the equilibrium, which is at the GP level — and
# melt beyond the spinodal.
SH_S1, SH_N = 4e-4, 384
SH_SA2 = SH_S1 ** 2 * SH_N * math.sqrt(GAMMA) / (math.sqrt(3) * P ** 2)
SH_S2 = (0.95 * SH_S1, 1.02 * SH_S1, 1.12 * SH_S1)


def _sh_params(s2):
    return mt.ModularParams(N=SH_N, P=P, s2=np.asarray(s2, float), sa2=SH_SA2, gamma=GAMMA)


def test_marginal_bound_closed_form():
    """1 - (sqrt(gamma)/u)^(1/2): 1 - (sqrt(3)/2)^(1/2) at the transition, 0 at the supercooled spinodal
    (NaN beyond), and exactly where the droplet saddle of :func:`saddles` appears and disappears."""
    tr = mt.transitions(_sh_params(SH_S1), "network")
    s1, s_sc = float(tr.gmfl1_s2), float(tr.supercooled_spinodal_s2)
    assert s1 == pytest.approx(SH_S1, rel=1e-12)
    b = mt.marginal_target_component(_sh_params([s1, 0.5 * (s1 + s_sc), s_sc * (1 - 1e-12), 1.01 * s_sc]))
    assert b[0] == pytest.approx(1 - math.sqrt(math.sqrt(3) / 2), rel=1e-12)
    assert b[1] == pytest.approx(0.5 * b[0], rel=1e-9)                      # linear in s2
    assert abs(b[2]) < 1e-9 and np.isnan(b[3])
    s2 = np.array([0.7, 0.95, 1.03]) * s1
    prm = _sh_params(s2)
    bound = mt.marginal_target_component(prm)
    for delta, exists in ((-1e-6, True), (1e-6, False)):
        _, _, ex = mt.saddles(-(1 - bound) + delta, np.asarray(prm.u), GAMMA)   # a = -(1 - bound) + delta
        assert np.all(np.asarray(ex) == exists)


def test_heated_ordered_state_stays_ordered_above_the_transition():
    """Heating from the theory's droplet start at 0.95 s1: at 1.02 s1 the target component stays an
    order of magnitude above the finite-P equilibrium (0.0023, the GP level) at every record — ordered
    above the transition — and below the marginal bound (0.051); at 1.12 s1, past the spinodal, it melts
    to the equilibrium.  Measured (seed 0): 0.026-0.033 at 1.02 s1, 0.0004 at the end of 1.12 s1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eq = np.asarray(mt.solve(_sh_params(SH_S2), "exact", convention="network", check=False).target_component)
    bound = mt.marginal_target_component(_sh_params(SH_S2))
    sim = ModularSim(P=P, N=SH_N, s2=SH_S2, sa2=SH_SA2, gamma=GAMMA, optimizer="langevin", lr=30.0, seeds=1,
                     steps=400, burn_in=200, record_every=50, anneal="up", ordered_droplets="theory",
                     theory_convention="network")
    ds = run_modular(sim, progress=False)
    tc = ds["target_component_mean_trajectory"].values[0, :, 0]          # (s2, time) of the heating branch
    assert eq[1] < 0.005 and 0.04 < bound[1] < 0.06 and np.isnan(bound[2])
    assert np.all(tc[1] > 5 * eq[1]), (tc[1], eq[1])
    assert np.all(tc[1] < bound[1]), (tc[1], bound[1])
    assert float(ds["droplet_fraction"].values[0, 1]) > 11 * 2 / SH_N          # > 2 droplet neurons per mode
    assert tc[2, -1] < 2 * eq[2], (tc[2], eq[2])


def test_hysteresis_analysis_superheating_summary():
    """The superheating entry on synthetic branches (cooling at the equilibrium, heating above it by a
    known gap, SE 0.002): ordered above s1 exactly where the gap exceeds 3 SE of both comparisons,
    within the marginal bound unless a heating point is put above it, and in the text report."""
    import json

    from grokphase.cli.text import modular_hysteresis_lines
    from grokphase.analysis.hysteresis import hysteresis_modular

    s2 = np.array([0.9, 1.02, 1.04, 1.2]) * S1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eq = np.asarray(mt.solve(mt.ModularParams(N=N, P=P, s2=s2, sa2=SA2, gamma=GAMMA), "exact",
                                 convention="network", check=False).target_component)
    bound = mt.marginal_target_component(mt.ModularParams(N=N, P=P, s2=s2, sa2=SA2, gamma=GAMMA))
    gap = np.array([0.1, 0.03, 0.002, 0.0])
    h = hysteresis_modular({"cooling": (a := _fake(s2, eq, [0.002] * 4, branch=gap)), "heating": a})
    sh = json.loads(h.attrs["summary_json"])["superheating"]
    np.testing.assert_allclose(sh["s2"], s2[1:])
    np.testing.assert_allclose(sh["heating"], eq[1:] + gap[1:])
    np.testing.assert_allclose(sh["z_vs_equilibrium"], gap[1:] / 0.002)
    np.testing.assert_allclose(sh["ordered_s2"], s2[[1]])
    assert sh["max_ordered_s2_over_s1"] == pytest.approx(1.02)
    np.testing.assert_allclose(sh["marginal_bound"][:2], bound[1:3])
    assert sh["marginal_bound"][2] is None and sh["within_bound"]
    np.testing.assert_allclose(h["theory_marginal_target_component"].values[:3], bound[:3])
    text = modular_hysteresis_lines({"out": "h.nc", **json.loads(h.attrs["summary_json"])})
    assert any("superheating" in line and "up to 1.020 s1" in line and "bound: True" in line for line in text)
    # a heating point above the bound (at 1.04 s1) is flagged
    gap2 = gap.copy()
    gap2[2] = bound[2] - eq[2] + 0.01
    h2 = hysteresis_modular({"cooling": (b := _fake(s2, eq, [0.002] * 4, branch=gap2)), "heating": b})
    assert not json.loads(h2.attrs["summary_json"])["superheating"]["within_bound"]
    # and so is one still ordered beyond the supercooled spinodal (1.2 s1), where no droplet can survive
    gap3 = gap.copy()
    gap3[3] = 0.01
    h3 = hysteresis_modular({"cooling": (b := _fake(s2, eq, [0.002] * 4, branch=gap3)), "heating": b})
    assert not json.loads(h3.attrs["summary_json"])["superheating"]["within_bound"]
