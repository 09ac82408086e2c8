"""CLI of the modular-addition theory: JSON schema, closed-form transitions, saved files, errors.

Values are checked against THEORY.md §4 closed forms computed here and against the Python API."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from grokphase.cli import main
from grokphase.io import load_dataset
from grokphase.theory import modular as md

from test_cli import run_error, run_json

POINT_KEYS = {"s2", "u", "a", "target_component", "droplet_fraction", "phase", "status"}


def _gmfl1(N=1000.0, P=401.0, sa2=0.002 / 1000, gamma=1e-4):
    # u * 1^2 = 2 sqrt(gamma/3) with u = 2 sa2 P^2/(N s2^2)
    return math.sqrt(2 * sa2 * P**2 / (N * 2 * math.sqrt(gamma / 3)))


def test_transitions_and_points(capsys):
    out = run_json(capsys, "theory", "modular", "--s2-sweep", "0.12:0.28:9", "--transitions")
    assert out["gmfl1_s2"] == pytest.approx(_gmfl1(), rel=1e-14)
    assert out["gmfl2_s2"] == pytest.approx(_gmfl1() - 3 * (0.002 / 1000) / 1e-4, rel=1e-14)
    for pt in out["points"]:
        assert POINT_KEYS <= set(pt)
        assert pt["target_component"] == pytest.approx(1 + pt["a"], abs=1e-15)
        assert pt["u"] == pytest.approx(2 * (0.002 / 1000) * 401**2 / (1000 * pt["s2"] ** 2), rel=1e-13)
        if pt["s2"] > out["gmfl1_s2"]:
            assert pt["phase"] == "GFL" and pt["a"] == -1.0  # saddle method: lambda = 0 exactly
        elif pt["s2"] > out["gmfl2_s2"] + 0.01:
            assert pt["phase"] == "GMFL-I"
            # pinned degeneracy u a^2 = 2 sqrt(gamma/3), to the O(log P / P) accuracy of P = 401
            assert pt["u"] * pt["a"] ** 2 == pytest.approx(2 * math.sqrt(1e-4 / 3), rel=0.03)
        elif pt["s2"] < out["gmfl2_s2"] - 0.01:
            assert pt["phase"] == "GMFL-II" and pt["droplet_fraction"] > 0.99


def test_exact_method_matches_api_and_saddle(capsys, tmp_path):
    path = tmp_path / "m.nc"
    out = run_json(capsys, "theory", "modular", "--s2", "0.2", "--method", "exact", "--out", str(path))
    (pt,) = out["points"]
    sol = md.solve(md.ModularParams(s2=0.2), "exact")
    assert pt["a"] == pytest.approx(float(sol.a), abs=1e-14)
    saddle = md.solve(md.ModularParams(s2=0.2), "saddle")
    assert abs(pt["a"] - float(saddle.a)) < 1e-3  # the two methods differ at O(1/P)
    ds = load_dataset(path, kind="theory.modular.sweep")
    assert json.loads(ds.attrs["parameters_json"])["method"] == "exact"
    assert ds.attrs["param_P"] == 401.0


def test_fig3_plot_and_replot(capsys, tmp_path):
    path = tmp_path / "fig3.nc"
    assert main(["theory", "modular", "--s2-sweep", "0.1:0.3:21", "--plot", str(tmp_path / "fig3.png"),
                 "--out", str(path)]) == 0
    capsys.readouterr()
    assert (tmp_path / "fig3.png").stat().st_size > 10_000
    out = run_json(capsys, "plot", str(path), "--out", str(tmp_path / "again.png"))
    assert out["plots"] == [str(tmp_path / "again.png")]
    ds = load_dataset(path)
    # panel (a): in GMFL-I the degeneracy is pinned, so Shat has a second zero at sqrt(3/gamma)
    for v, a in zip(ds["density_s2"].values, ds["density_a"].values):
        if float(ds.attrs["gmfl2_s2"]) + 0.01 < v < float(ds.attrs["gmfl1_s2"]):
            u = 2 * (0.002 / 1000) * 401**2 / (1000 * v**2)
            phi = math.sqrt(3 / 1e-4)
            assert float(md.reduced_action(phi, a, u, 1e-4)) == pytest.approx(0.0, abs=0.02 * phi)


def test_phase_diagram_modular(capsys, tmp_path):
    out = run_json(capsys, "theory", "phase-diagram", "modular", "--x", "s2:0.1:0.3:5", "--y", "N:600:1800:3",
                   "--out", str(tmp_path / "pd.nc"), "--plot", str(tmp_path / "pd.png"))
    assert out["shape"] == [3, 5]
    ds = load_dataset(tmp_path / "pd.nc", kind="theory.modular.phase_diagram")
    # sa2 follows 0.002/N: the limit phase is GFL exactly where s2 > gmfl1(N)
    for i, N in enumerate(ds["N"].values):
        s1 = _gmfl1(N=N, sa2=0.002 / N)
        assert np.array_equal(ds["limit_phase"].values[i] == 0, ds["s2"].values > s1)


def test_gp_modular_needs_order_P2(capsys):
    out = run_json(capsys, "theory", "gp-modular", "--Ps", "11,23", "--sa2", "1e-3", "--s2", "0.1")
    # EK with eigenvalue 4 sa2/P^2 on the target: n_half = s2 P^2/(4 sa2)
    assert out["n_half"] == pytest.approx([0.1 * 11**2 / 4e-3, 0.1 * 23**2 / 4e-3], rel=1e-13)
    assert out["multiplicities"][0] == [1, 20, 100]


@pytest.mark.parametrize("argv, needle", [
    (["theory", "modular", "--P", "2"], "P"),
    (["theory", "modular", "--gamma", "0"], "--gamma"),
    (["theory", "modular", "--method", "magic"], "--method"),
    (["theory", "modular", "--s2-sweep", "0.1:0.3"], "--s2-sweep"),
    (["theory", "phase-diagram", "modular", "--x", "eps:1:2:3"], "--x"),
])
def test_bad_input(capsys, argv, needle):
    assert needle in run_error(capsys, *argv)


def test_composite_P_warns(capsys):
    with pytest.warns(UserWarning, match="not prime"):
        run_json(capsys, "theory", "modular", "--P", "51", "--s2", "0.2")


# ------------------------------------------------------------------------------------------------
# --convention network (grokphase.theory.modular: mode-pair weight e^{-2 S_k}, lambda = 4 P^2 sa2 <Phi Psi>)
# ------------------------------------------------------------------------------------------------


def test_convention_default_is_paper_and_recorded(capsys, tmp_path):
    out = run_json(capsys, "theory", "modular", "--s2", "0.2", "--out", str(tmp_path / "p.nc"))
    assert out["convention"] == "paper"
    ds = load_dataset(tmp_path / "p.nc", kind="theory.modular.sweep")
    assert ds.attrs["convention"] == "paper" and json.loads(ds.attrs["parameters_json"])["convention"] == "paper"


def test_network_convention_transitions_points_and_file(capsys, tmp_path):
    """Closed forms with kappa = 4 P^2 (THEORY.md §4 with sa2 -> kappa sa2 where it enters through lambda):
    gmfl1 as in the paper convention, gmfl2 = gmfl1 - 3 kappa sa2/gamma (< 0 at Fig. 3: GMFL-II is never
    reached), spinodal sqrt(u s2^2/sqrt(gamma)) - kappa sa2/gamma.  Points: GMFL-I has the same pinned
    u a^2 = x0 (O(log P/P)), the droplet fraction is kappa = 4 P^2 times smaller than the paper's
    p = s2 gamma (1/|a| - 1)/(3 sa2) (checked against it at 3%, the finite-P accuracy of the pinned a), and
    beyond the supercooled spinodal the saddle method gives the NNGP learned fraction 4 sa2/(4 sa2 + s2)."""
    path = tmp_path / "net.nc"
    out = run_json(capsys, "theory", "modular", "--s2-sweep", "0.12:0.28:9", "--transitions", "--convention",
                   "network", "--out", str(path))
    sa2, P, g = 0.002 / 1000, 401.0, 1e-4
    kappa = 4 * P**2
    assert out["convention"] == "network" and out["method"] == "saddle"
    assert out["gmfl1_s2"] == pytest.approx(_gmfl1(), rel=1e-14)
    assert out["gmfl2_s2"] == pytest.approx(_gmfl1() - 3 * kappa * sa2 / g, rel=1e-14) and out["gmfl2_s2"] < 0
    C = 2 * sa2 * P**2 / 1000
    assert out["spinodal_s2"] == pytest.approx(math.sqrt(C / math.sqrt(g)) - kappa * sa2 / g, rel=1e-14)
    for pt in out["points"]:
        if pt["s2"] < out["gmfl1_s2"] - 0.01:
            assert pt["limit_phase"] == "GMFL-I"
            assert pt["u"] * pt["a"] ** 2 == pytest.approx(2 * math.sqrt(g / 3), rel=0.03)
            p_paper = pt["s2"] * g * (1 / abs(pt["a"]) - 1) / (3 * sa2)
            assert pt["droplet_fraction"] == pytest.approx(p_paper / kappa, rel=0.03)
        elif pt["s2"] > 0.2537:          # beyond the supercooled spinodal: no droplet saddle
            assert pt["target_component"] == pytest.approx(4 * sa2 / (4 * sa2 + pt["s2"]), rel=1e-9)
    ds = load_dataset(path, kind="theory.modular.sweep")
    assert ds.attrs["convention"] == "network"
    assert json.loads(ds.attrs["parameters_json"])["convention"] == "network"
    assert float(ds.attrs["gmfl2_s2"]) == pytest.approx(out["gmfl2_s2"], rel=1e-14)


def test_network_convention_exact_matches_api(capsys):
    out = run_json(capsys, "theory", "modular", "--s2", "0.2", "--method", "exact", "--convention", "network",
                   "--P", "23", "--N", "64", "--sa2", "4e-4", "--gamma", "0.01")
    (pt,) = out["points"]
    sol = md.solve(md.ModularParams(N=64.0, P=23.0, s2=0.2, sa2=4e-4, gamma=0.01), "exact", convention="network")
    assert pt["a"] == pytest.approx(float(sol.a), abs=1e-14)
    assert pt["lam"] == pytest.approx(float(sol.lam), rel=1e-12)
    paper = md.solve(md.ModularParams(N=64.0, P=23.0, s2=0.2, sa2=4e-4, gamma=0.01), "exact")
    assert pt["droplet_fraction"] < 1e-2 * float(paper.droplet_fraction)


def test_network_convention_plot_and_beta(capsys, tmp_path):
    """--plot with the network convention; --beta uses that convention's invariant family, so the saved
    transition temperatures (beta = 1 units) do not depend on beta (rtol 1e-12)."""
    path = tmp_path / "fig3net.nc"
    assert main(["theory", "modular", "--convention", "network", "--s2-sweep", "0.1:0.3:11", "--plot",
                 str(tmp_path / "net.png"), "--out", str(path)]) == 0
    capsys.readouterr()
    assert (tmp_path / "net.png").stat().st_size > 10_000
    one = run_json(capsys, "theory", "modular", "--convention", "network", "--transitions")
    two = run_json(capsys, "theory", "modular", "--convention", "network", "--transitions", "--beta", "2")
    for k in ("gmfl1_s2", "gmfl2_s2", "spinodal_s2", "supercooled_spinodal_s2"):
        assert two[k] == pytest.approx(one[k], rel=1e-12)
    assert two["points"][0]["a"] == pytest.approx(one["points"][0]["a"], abs=1e-4)     # same limit, O(1/P)


def test_network_phase_diagram(capsys, tmp_path):
    out = run_json(capsys, "theory", "phase-diagram", "modular", "--convention", "network", "--x", "s2:0.1:0.3:5",
                   "--y", "N:600:1800:3", "--out", str(tmp_path / "pd.nc"), "--plot", str(tmp_path / "pd.png"))
    assert out["convention"] == "network" and out["shape"] == [3, 5]
    ds = load_dataset(tmp_path / "pd.nc", kind="theory.modular.phase_diagram")
    assert ds.attrs["convention"] == "network"
    # gmfl1 is convention-independent; GMFL-II is unreachable here (kappa sa2 = 4 P^2 0.002/N >> gamma^1.5/N)
    for i, N in enumerate(ds["N"].values):
        assert np.array_equal(ds["limit_phase"].values[i] == 0, ds["s2"].values > _gmfl1(N=N, sa2=0.002 / N))
    assert not np.any(ds["limit_phase"].values == 2)


@pytest.mark.parametrize("argv", [["theory", "modular", "--convention", "Network"],
                                  ["theory", "phase-diagram", "modular", "--convention", "nets"]])
def test_bad_convention(capsys, argv):
    assert "--convention" in run_error(capsys, *argv)
