"""Modular simulations against the modular theory: the GFL target component decides between the
paper's and the network-consistent normalisation, and `compare modular` (API, CLI, experiment
files) reports both."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from grokphase.analysis import compare_modular, compare_modular_summary
from grokphase.sims.modular import ModularSim, run_modular
from grokphase.theory import modular as mt

ROOT = Path(__file__).resolve().parent.parent


P_, N_, SA2, S2, GAMMA, LR = 7, 256, 0.01, 20.0, 0.01, 0.002


@pytest.fixture(scope="module")
def gfl_run():
    """P = 7, N = 256 deep in GFL (s2 = 20, u = 1e-5): 8 networks, Gibbs readout, Rao-Blackwellised
    target component (the readout's conditional mean given w) recorded every 10 steps."""
    sim = ModularSim(P=P_, N=N_, s2=(S2,), sa2=SA2, gamma=GAMMA, optimizer="langevin", lr=LR, seeds=8,
                     steps=1500, burn_in=300, record_every=10, dtype="float64")
    return run_modular(sim)


def test_gfl_target_component_follows_the_network_normalisation(gfl_run):
    """In GFL the learned target component is lambda/(lambda + s2).  With the input weights at the
    prior (u ~ 1e-5) lambda is the NNGP eigenvalue 4 sa2 (eq. 21) times 1 - 12 gamma/P^2 (the sextic
    penalty) and k^2 for the Langevin step's discrete prior inflation k = 1/(1 - lr s2/2) of the
    input weights (the readout is drawn exactly).
    The simulation must agree within 3 standard errors over networks plus 1 % (the rank-N kernel's
    fitted degrees of freedom / N ~ 0.1 % and the readout's Occam factor ~ P lambda_00/(s2 N) ~ 0.3 %);
    the network-consistent theory gives the same value, and the paper's lambda = sa2 <Phi Psi>, P^2
    smaller, is off by more than 10 standard errors."""
    sim = float(gfl_run["target_component_mean"].values[0])
    sem = float(gfl_run["target_component_mean_sem"].values[0])
    k = 1.0 / (1.0 - LR * S2 / 2.0)
    gam = 1.0 - 12.0 * GAMMA / P_**2      # the sextic penalty's first-order effect on <Phi Psi> (tests/test_modular_theory.py)
    lam = 4 * SA2 * k * k * gam
    expected = lam / (lam + S2)
    assert abs(sim - expected) < 3 * sem + 0.01 * expected, (sim, sem, expected)
    params = mt.ModularParams(N=float(N_), P=float(P_), s2=S2, sa2=SA2, gamma=GAMMA)
    net = float(mt.solve(params, "exact", convention="network").target_component)
    paper = float(mt.solve(params, "exact", convention="paper").target_component)
    assert net == pytest.approx(4 * SA2 * gam / (4 * SA2 * gam + S2), rel=2e-4)
    assert abs(sim - paper) > 10 * sem, (sim, sem, paper)
    # the Rao-Blackwellised observable has the sampled one's mean and a smaller error
    raw, raw_sem = float(gfl_run["target_component"].values[0]), float(gfl_run["target_component_sem"].values[0])
    assert abs(raw - sim) < 4 * raw_sem and sem < raw_sem


def test_random_feature_reference():
    """The finite-width disordered reference: equal to a direct ridge solve for one draw, and to the
    NNGP value as N grows (rank-N corrections shrink like 1/N)."""
    from grokphase.analysis import nngp_target_component, random_feature_target_component
    from grokphase.sims.modular import all_pairs

    P, N, sa2, s2 = 5, 6, 0.05, np.array([0.3, 2.0])
    got, _ = random_feature_target_component(P, N, sa2, s2, draws=1, seed=4)
    rng = np.random.default_rng(4)
    w = rng.standard_normal((2 * P, N))
    pairs = all_pairs(P)
    F = (w[pairs[:, 0]] + w[P + pairs[:, 1]]) ** 2
    y = np.eye(P)[(pairs[:, 0] + pairs[:, 1]) % P] - 1.0 / P
    for j, v in enumerate(s2):
        f = F @ np.linalg.solve(F.T @ F + v * N / sa2 * np.eye(N), F.T @ y)
        assert got[j] == pytest.approx(np.sum(f * y) / np.sum(y * y), rel=1e-10)
    # rank-N correction: the fitted degrees of freedom sum_j l_j/(l_j + s2) of the NNGP spectrum
    # (eq. 21: (0,0), 2(P-1) one-sided and (P-1)^2 target-like modes) over N, relative
    P, sa2, s2 = 5, 0.01, 0.2
    lams = sa2 * np.array([4 * P * P + 4 * P + 4, 2 * P + 4, 4.0])
    dof = float(np.sum(np.array([1, 2 * (P - 1), (P - 1) ** 2]) * lams / (lams + s2)))
    ref = float(nngp_target_component(P, sa2, s2))
    for N in (20, 1600):
        m, se = random_feature_target_component(P, N, sa2, s2, draws=16)
        gap = (ref - m[0]) / ref
        if N == 20:
            assert gap * ref > 4 * se[0] and gap < 3 * dof / N      # a real, O(dof/N) deficit
        else:
            assert abs(m[0] - ref) < 4 * se[0] + 2 * dof / N * ref, (m, se, ref)


def test_compare_modular_uses_the_theory_at_the_simulated_sizes(gfl_run):
    cmp = compare_modular([gfl_run])
    pts = compare_modular_summary(cmp)["points"]
    assert len(pts) == 1 and pts[0]["branch"] == "independent" and pts[0]["P"] == P_
    assert pts[0]["sim_target_component"] == float(gfl_run["target_component_mean"].values[0])
    for conv in ("paper", "network"):
        ref = mt.solve(mt.ModularParams(N=float(N_), P=float(P_), s2=S2, sa2=SA2, gamma=GAMMA), "exact",
                       convention=conv)
        assert pts[0][f"theory_{conv}_target_component"] == pytest.approx(float(ref.target_component), rel=1e-10)
        z = (pts[0]["sim_target_component"] - float(ref.target_component)) / pts[0]["sim_target_component_sem"]
        assert pts[0][f"z_{conv}"] == pytest.approx(z, rel=1e-9)
    # the theory lines cover the simulated s2 and equal the point values there
    line = cmp["line_target_component"].sel(convention="network").values[0]
    assert cmp["s2_line"].min() < S2 < cmp["s2_line"].max()
    np.testing.assert_allclose(np.interp(S2, cmp["s2_line"].values, line), pts[0]["theory_network_target_component"],
                               rtol=1e-3)


def test_cli_compare_modular(gfl_run, tmp_path, capsys):
    from grokphase.cli import main
    from grokphase.io import load_dataset, save_dataset

    sim = tmp_path / "sim.nc"
    save_dataset(gfl_run, sim)
    assert main(["compare", "modular", "--sim", str(sim), "--plot", str(tmp_path / "c.png"),
                 "--out", str(tmp_path / "c.nc"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["conventions"] == ["paper", "network"] and len(out["points"]) == 1
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "c_diagnostics.png").stat().st_size > 0
    assert load_dataset(tmp_path / "c.nc", "analysis.modular.compare").sizes["point"] == 1
    # a run the theory does not describe is refused with one line
    ad = run_modular(ModularSim(P=5, N=4, optimizer="adamw", parametrisation="gromov", lr=0.01, steps=4,
                                record_every=2))
    save_dataset(ad, tmp_path / "ad.nc")
    assert main(["compare", "modular", "--sim", str(tmp_path / "ad.nc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Langevin" in err[0]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "sims").glob("modular_*.toml")))
def test_modular_experiment_files_are_valid(name):
    """Every modular experiment file (including the GPU one, which is not run here) builds valid
    simulations with known options."""
    from grokphase.experiments.files import entries
    from grokphase.experiments.models import modular as modular_model
    from grokphase.experiments.runner import check_file

    spec = tomllib.loads((ROOT / "sims" / name).read_text())
    assert spec["model"] == "modular"
    model, sims, common = check_file(name, spec)          # unknown keys and wrong types are errors
    assert model.name == "modular"
    for sim_name, opts in entries(name, sims, common, set(model.options) | {"name"}):
        for sim in modular_model.sims_from_options(opts, sim_name, strict=True):
            assert isinstance(sim, ModularSim)
