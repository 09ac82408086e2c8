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
