"""The single-index family against Langevin (issue 18): ``analysis.single_index.compare_family``, its
figure, the ``[single_index]`` table of experiment files and ``grokphase reproduce single-index``.

Checked against independent computations: the theory column is the single-index solver called here
directly; z is (sim - theory)/SE from the simulation file's own numbers; the equivalent-kernel (EK)
grouping rests on an invariant of the theory (n -> k n, s2 -> k s2 leaves u and r, hence every
learned fraction, unchanged), tested here on the solver itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from grokphase.analysis.single_index import compare_family, family_summary
from grokphase.errors import ParameterError, ResultFileError
from grokphase.experiments import reproduce as rp
from grokphase.io import load_dataset
from grokphase.theory import single_index as si

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``reproduce single-index --scale tiny`` once (tanh with its EK control, relu)."""
    tmp = tmp_path_factory.mktemp("single_index")
    before = dict(rp.COMPUTED)
    out = rp.reproduce(["single-index"], scale="tiny", out_dir=tmp / "fig", cache_dir=tmp / "cache", defs=REPO,
                       progress=False)["single-index"]
    return tmp, out, before


def _runs(tmp):
    return sorted((tmp / "cache").glob("sim_ts*.nc"))


def test_ek_invariance_of_the_theory():
    """u = n^2 sa2/(s2^2 d N) and r = s2 N/n are unchanged by n -> 4n, s2 -> 4 s2: the exact finite-d
    theory (which sees n and s2 only through them) gives the same learned fractions."""
    base = dict(N=22.0, d=27.0, sa2=8.0 / 700 * np.sqrt(32.0), sw2=0.5)
    a = si.solve_finite_d(si.SingleIndexParams(n=94.0, s2=np.array([0.1, 0.3]), **base), "1:1,3:-0.3", "tanh")
    b = si.solve_finite_d(si.SingleIndexParams(n=376.0, s2=np.array([0.4, 1.2]), **base), "1:1,3:-0.3", "tanh")
    np.testing.assert_allclose(np.asarray(a.learned), np.asarray(b.learned), rtol=0, atol=1e-10)
    c = si.solve_finite_d(si.SingleIndexParams(n=188.0, s2=np.array([0.1, 0.3]), **base), "1:1,3:-0.3", "tanh")
    assert np.max(np.abs(np.asarray(c.learned) - np.asarray(a.learned))) > 1e-3   # n alone does move it


def test_comparison_against_independent_theory(tiny):
    tmp, out, _ = tiny
    cmp = load_dataset(out["data"], "analysis.single_index.family")
    sims = [load_dataset(p) for p in _runs(tmp)]
    assert len(sims) == 3
    # every point's theory is the solver at that run's sizes, its z from the run's own numbers
    checked = 0
    for ds in sims:
        act = ds.attrs["activation"]
        target = ds.attrs["target"]
        params = si.SingleIndexParams(N=float(ds.attrs["N"]), n=float(ds.attrs["n"]), d=float(ds.attrs["d"]),
                                      s2=np.asarray(ds["s2"].values), sa2=float(ds.attrs["sa2"]), sw2=0.5)
        sol = si.solve_finite_d(params, target, act)
        degrees = list(si.get_target(target).degrees)
        sel = (cmp["point_activation"].values == act) & (cmp["point_n"].values == float(ds.attrs["n"]))
        for j in np.flatnonzero(sel):
            i = list(ds["s2"].values).index(cmp["point_s2"].values[j])
            k = int(cmp["point_degree"].values[j])
            th = float(np.asarray(sol.learned)[i, degrees.index(k)])
            assert cmp["point_theory"].values[j] == pytest.approx(th, abs=1e-12)
            sim = float(ds["learned"].sel(degree=k).values[i])
            sem = float(ds["learned_sem"].sel(degree=k).values[i])
            assert cmp["point_sim"].values[j] == sim
            assert cmp["point_z"].values[j] == pytest.approx((sim - th) / sem, rel=1e-12)
            checked += 1
    assert checked == cmp.sizes["point"] == 3 * 2 * 2


def test_ek_groups_and_equivalent_s2(tiny):
    _, out, _ = tiny
    cmp = load_dataset(out["data"], "analysis.single_index.family")
    groups = json.loads(cmp.attrs["groups_json"])
    assert [(g["activation"], len(g["runs"])) for g in groups] == [("tanh", 2), ("relu", 1)]
    tanh = cmp["point_group"].values == 0
    n, s2, s2_eq = (cmp[f"point_{k}"].values[tanh] for k in ("n", "s2", "s2_eq"))
    ref = n.min()
    np.testing.assert_allclose(s2_eq, s2 * ref / n, rtol=1e-15)
    # the EK run (4x n, 4x s2) sits at the plain run's s2 (n rounds to an integer, so within 1 %)
    np.testing.assert_allclose(np.sort(np.unique(np.round(s2_eq, 2))), [0.1, 0.3])
    # every theory curve point equals the solver at the group's reference n
    m = (cmp["curve_group"].values == 1) & (cmp["curve_degree"].values == 2)
    g = groups[1]
    s2c = cmp["curve_s2"].values[m]
    sol = si.solve_finite_d(si.SingleIndexParams(N=g["N"], n=g["n_ref"], d=g["d"], s2=s2c, sa2=g["sa2"], sw2=0.5),
                            "2:1,4:0.3", "relu")
    np.testing.assert_allclose(cmp["curve_theory"].values[m], np.asarray(sol.learned)[:, 0], rtol=0, atol=1e-12)
    summary = family_summary(cmp)
    assert summary["groups"][0]["largest_n"] == float(n.max())


def test_extrapolation_in_inverse_n(tiny):
    from grokphase.analysis.single_index import extrapolate_inverse_n
    # exact on a line; two points: a = (n2 y2 - n1 y1)/(n2 - n1), SE propagated by hand
    n, se = np.array([375.0, 1500.0]), np.array([0.015, 0.007])
    y = 0.25 - 30.0 / n
    a, sa = extrapolate_inverse_n(n, y, se)
    assert a == pytest.approx(0.25, abs=1e-13)
    assert sa == pytest.approx(np.hypot(n[1] * se[1], n[0] * se[0]) / (n[1] - n[0]), rel=1e-12)
    # three points with scatter: the intercept's SE matches the spread of refits to resampled data
    rng = np.random.default_rng(0)
    n3, se3 = np.array([375.0, 1500.0, 3000.0]), np.array([0.02, 0.01, 0.008])
    fits = [extrapolate_inverse_n(n3, 0.25 - 30.0 / n3 + se3 * rng.standard_normal(3), se3)[0] for _ in range(4000)]
    assert np.std(fits) == pytest.approx(extrapolate_inverse_n(n3, 0 * n3, se3)[1], rel=0.05)   # 4000 draws: ~1 %
    assert np.mean(fits) == pytest.approx(0.25, abs=4 * np.std(fits) / np.sqrt(4000))
    # the tiny tanh group: plain and EK runs at the same equivalent s2 give one extrapolation per (s2, degree)
    _, out, _ = tiny
    cmp = load_dataset(out["data"], "analysis.single_index.family")
    ex = cmp["extrap_group"].values == 0
    assert ex.sum() == 4 and np.all(cmp["extrap_runs"].values[ex] == 2)
    assert not np.any(cmp["extrap_group"].values == 1)          # relu: one n only, nothing to extrapolate
    j = np.flatnonzero(ex)[0]
    pts = (cmp["point_group"].values == 0) & (cmp["point_degree"].values == cmp["extrap_degree"].values[j]) & \
        (np.abs(cmp["point_s2_eq"].values / cmp["extrap_s2"].values[j] - 1) < 0.01)
    a, sa = extrapolate_inverse_n(cmp["point_n"].values[pts], cmp["point_sim"].values[pts], cmp["point_sim_sem"].values[pts])
    assert cmp["extrap_value"].values[j] == pytest.approx(a, rel=1e-12)
    assert cmp["extrap_z"].values[j] == pytest.approx((a - cmp["extrap_theory"].values[j]) / sa, rel=1e-12)


def test_figure_and_cache(tiny):
    tmp, out, before = tiny
    assert [Path(f).suffix for f in out["figures"]] == [".png", ".pdf"]
    assert all(Path(f).stat().st_size > 10_000 for f in out["figures"])
    assert rp.COMPUTED["sim_ts"] - before.get("sim_ts", 0) == 3
    again = dict(rp.COMPUTED)
    rp.reproduce(["single-index"], scale="tiny", out_dir=tmp / "fig", cache_dir=tmp / "cache", defs=REPO,
                 progress=False)
    assert dict(rp.COMPUTED) == again          # everything loaded from the cache


def test_bad_inputs(tiny, tmp_path):
    tmp, out, _ = tiny
    with pytest.raises(ResultFileError, match="at least one"):
        compare_family([])
    cmp = load_dataset(out["data"])
    with pytest.raises(ResultFileError, match="teacher-student simulation"):
        compare_family([cmp])
    old = load_dataset(_runs(tmp)[0]).drop_vars(["learned", "learned_sem"])
    with pytest.raises(ResultFileError, match="per-degree 'learned'"):
        compare_family([old])
    from grokphase.experiments.models.teacher_student import single_index_table
    with pytest.raises(ParameterError, match="unknown keys plott"):
        single_index_table("x.toml", {"plott": "a.png"}, {}, tmp_path, {})


def test_paper_only_analyses_refuse_the_family(tiny):
    """perp_norm, hysteresis and App. D compare with the paper's (erf, He1 + eps He3) theory: a tanh run
    on the same target is refused with one message naming its activation, not compared wrongly."""
    from grokphase.analysis import appd
    from grokphase.analysis.hysteresis import hysteresis_teacher_student
    from grokphase.analysis.perp_norm import compare_perp_norm
    tmp, _, _ = tiny
    ds = next(d for d in map(load_dataset, _runs(tmp)) if d.attrs["activation"] == "tanh")
    for call in (lambda: compare_perp_norm([ds]), lambda: hysteresis_teacher_student({"cooling": ds}),
                 lambda: appd.combine([ds.isel(s2=[0])])):
        with pytest.raises(ResultFileError, match="activation 'tanh'"):
            call()


def test_refinement_stops_at_the_node_cap(monkeypatch):
    """ReLU near its boundary at beta = 1 keeps failing the truncation check (its neuron law grows with
    |w| without bound): refinement stops at MAX_FAMILY_NODES with the status kept, not at a 35 GB
    allocation; with check=True the error names the point and the reason."""
    from grokphase.errors import SolverError
    from grokphase.theory.single_index import finite_d
    from grokphase.theory.status import Status
    monkeypatch.setattr(finite_d, "MAX_FAMILY_NODES", 1)          # no refinement at all
    p = si.SingleIndexParams(s2=np.array([0.18]))
    sol = si.solve_finite_d(p, "2:1,4:0.3", "relu", check=False)
    assert int(sol.status[0]) in (Status.TRUNCATED, Status.UNRESOLVED)
    with pytest.raises(SolverError, match="s2=0.18.*(truncated|unresolved)"):
        si.solve_finite_d(p, "2:1,4:0.3", "relu")
