"""App. D (time-dependent grokking, Figs. 4-6): experiment definitions -> per-width simulations ->
combined Dataset -> summary numbers and figures (grokphase.appd)."""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from grokphase.analysis import appd
from grokphase.plotting import appd as appd_plots
from grokphase.errors import ParameterError

ROOT = Path(__file__).resolve().parents[1]


def _spec(name: str) -> dict:
    with open(ROOT / "sims" / name, "rb") as fh:
        return tomllib.load(fh)


# ------------------------------------------------------------------------------------------------
# definitions -> sims


@pytest.mark.parametrize("name", ["appD_quick.toml", "appD_paper.toml", "tiny/appD.toml"])
def test_sims_follow_table1_scaling(name):
    spec = _spec(name)
    t = spec["appd"]
    beta, alpha = t["beta"], t.get("alpha", t["beta"])
    sims = appd.appd_sims(spec)
    assert [s.N for s in sims] == [int(round(w * beta)) for w in t["widths"]]
    for s, w in zip(sims, t["widths"]):
        assert s.d == int(round(t["d"] * math.sqrt(beta)))
        assert s.n == int(round(t["n"] * alpha))
        assert s.sa2_value == pytest.approx(t["sa2"] / math.sqrt(beta), rel=1e-12)
        assert s.s2 == pytest.approx((t["s2"] * alpha / beta,), rel=1e-12)
        assert (s.sw2, s.eps, s.seed) == (t["sw2"], t["eps"], t.get("seed", 0))
        # the invariants u = n^2 sa2 / (s2^2 d N) and r = s2 N / n of the paper's width w (up to rounding)
        u0 = t["n"] ** 2 * t["sa2"] / (t["s2"] ** 2 * t["d"] * w)
        u = s.n ** 2 * s.sa2_value / (s.s2[0] ** 2 * s.d * s.N)
        assert u == pytest.approx(u0, rel=0.04)
        assert s.s2[0] * s.N / s.n == pytest.approx(t["s2"] * w / t["n"], rel=0.04)


def test_paper_definition_is_app_d():
    t = _spec("appD_paper.toml")["appd"]
    assert (t["n"], t["d"], t["eps"], t["s2"], t["sa2"], t["sw2"]) == (600, 150, -1.2, 0.05, 0.011, 0.5)
    assert t["widths"] == [2800, 1400, 700] and t["beta"] == 1.0 and t["alpha"] == 1.0
    assert t["datasets"] * t.get("inits", 1) == 50 and t["steps"] == 7_000_000


@pytest.mark.parametrize("change, match", [
    ({"appd.bogus": 1}, "bogus"),
    ({"extra_table": {}}, "extra_table"),
    ({"model": "modular"}, "teacher-student"),
    ({"appd.widths": []}, "widths"),
    ({"appd.widths": [700, -1]}, "widths"),
    ({"appd.widths": [700, 701]}, "repeated N"),
    ({"appd.lr": 25.0}, "lr"),
    ({"appd.beta": -0.5}, "beta"),
    ({"appd.steps": 10.5}, "steps"),
    ({"appd.log_times": "yes"}, "log_times"),
    ({"appd.eps": 0.0}, "eps"),
    ({"appd.burn_in": 400}, "burn_in"),
    ({"appd.s2": float("nan")}, "s2"),
    ({"appd.datasets": 0}, "datasets"),
])
def test_bad_definitions_are_named(change, match):
    spec = copy.deepcopy(_spec("tiny/appD.toml"))
    for key, value in change.items():
        if key.startswith("appd."):
            spec["appd"][key[5:]] = value
        else:
            spec[key] = value
    if change.get("appd.widths") == [700, 701]:
        spec["appd"]["beta"] = spec["appd"]["alpha"] = 0.001     # 0.7 and 0.701 both round to N = 1
    with pytest.raises(ParameterError, match=match):
        appd.appd_sims(spec)


def test_missing_appd_table():
    with pytest.raises(ParameterError, match=r"\[appd\]"):
        appd.appd_sims({"model": "teacher-student"})


# ------------------------------------------------------------------------------------------------
# tiny end-to-end run


@pytest.fixture(scope="module")
def tiny():
    from grokphase.sims.teacher_student import run_teacher_student

    spec = _spec("tiny/appD.toml")
    spec["appd"]["widths"] = [2800, 700]       # two widths keep the suite's compile time down
    sims = appd.appd_sims(spec)
    results = [run_teacher_student(s) for s in sims]
    return sims, results, appd.combine(results[::-1])        # order of the inputs must not matter


def test_combined_dataset(tiny):
    sims, results, ds = tiny
    assert ds.attrs["grokphase_kind"] == appd.KIND
    assert list(ds["width"].values) == sorted((s.N for s in sims), reverse=True)
    T = results[0].sizes["time"]
    assert ds["train_mse_trajectory"].dims == ("width", "dataset", "init", "time")
    assert ds["train_mse_trajectory"].shape == (len(sims), sims[0].datasets, sims[0].inits, T)
    assert ds["q_hist"].shape == (len(sims), sims[0].datasets, sims[0].inits, sims[0].q_bins)
    assert "s2" not in ds.dims and float(ds["s2"]) == pytest.approx(sims[0].s2[0])
    # every width's records are carried over unchanged
    for s, r in zip(sims, results):
        np.testing.assert_array_equal(ds["test_mse_trajectory"].sel(width=s.N).values, r["test_mse_trajectory"].values[0])
        np.testing.assert_array_equal(ds["q_hist"].sel(width=s.N).values, r["q_hist"].values[0])
    # parameters, seeds, provenance
    params = json.loads(ds.attrs["parameters_json"])
    assert params["widths"] == [int(v) for v in ds["width"].values]
    assert (params["d"], params["n"], params["sa2"]) == (sims[0].d, sims[0].n, pytest.approx(sims[0].sa2_value))
    assert ds.attrs["param_beta"] == sims[0].beta and ds.attrs["param_alpha"] == pytest.approx(sims[0].alpha)
    per_width = json.loads(ds.attrs["width_parameters_json"])
    assert [p["N"] for p in per_width] == list(ds["width"].values)
    assert json.loads(ds.attrs["seeds"]) == {"seed": 0, "datasets": sims[0].datasets, "inits": sims[0].inits}
    for key in ("git_revision", "created_utc", "jax_version"):
        assert key in ds.attrs
    assert len(json.loads(ds.attrs["width_provenance_json"])) == len(sims)
    # the theory at each width's exact sizes: u = n^2 sa2/(s2^2 d N), finite densities
    for i, s in enumerate(sorted(sims, key=lambda s: -s.N)):
        u = s.n ** 2 * s.sa2_value / (s.s2[0] ** 2 * s.d * s.N)
        assert float(ds["theory_u"].values[i]) == pytest.approx(u, rel=1e-10)
    assert np.all(np.isfinite(ds["theory_minus_log_p"].values))
    assert np.all(np.diff(ds["theory_u"].values) > 0)       # narrower -> larger u


def test_summary_equals_recomputation(tiny):
    sims, _, ds = tiny
    summ = appd.appd_summary(ds)
    json.dumps(summ, allow_nan=False)                          # strict JSON
    times = ds["time"].values
    assert summ["steps"] == sims[0].steps and summ["networks_per_width"] == sims[0].datasets * sims[0].inits
    for i, row in enumerate(summ["widths"]):
        assert row["N"] == int(ds["width"].values[i])
        for name in ("train_mse", "test_mse", "cubic_learned", "linear_learned", "cubic_learned_test"):
            final = ds[f"{name}_trajectory"].values[i, :, :, -1]       # (dataset, init)
            per_ds = final.mean(axis=1)
            assert row[f"final_{name}"] == pytest.approx(per_ds.mean(), rel=1e-12)
            assert row[f"final_{name}_sem"] == pytest.approx(per_ds.std(ddof=1) / math.sqrt(per_ds.size), rel=1e-10)
        for name in ("train_mse", "test_mse"):
            mean = ds[f"{name}_trajectory"].values[i].mean(axis=(0, 1))
            mid = 0.5 * (mean[0] + mean[-1])
            hit = [t for t, m in zip(times, mean) if (m <= mid if mean[-1] < mean[0] else m >= mid)]
            key = "t_half_train" if name == "train_mse" else "t_half_test"
            assert row[key] == hit[0]
        assert row["grok_delay"] == pytest.approx(row["t_half_test"] / row["t_half_train"])
        frac = ds["droplet_fraction_network"].values[i].mean(axis=1)
        assert row["droplet_fraction"] == pytest.approx(frac.mean(), rel=1e-12)


def test_crossing_time_by_hand():
    t = np.array([1, 2, 4, 8, 16])
    assert appd.crossing_time(t, [10.0, 9.0, 7.0, 2.0, 1.0]) == 8      # mid 5.5 first reached at t = 8
    assert appd.crossing_time(t, [1.0, 1.0, 2.0, 3.0, 3.0]) == 4       # rising series
    assert math.isnan(appd.crossing_time(t, [2.0] * 5))


def test_saved_and_reloaded(tiny, tmp_path):
    from grokphase.io import load_dataset, save_dataset

    _, _, ds = tiny
    path = save_dataset(ds, tmp_path / "appD.nc")
    back = load_dataset(path, appd.KIND)
    assert appd.appd_summary(back) == appd.appd_summary(ds)


def test_figures_written(tiny, tmp_path):
    _, _, ds = tiny
    for plot, name in ((appd_plots.plot_fig4, "fig4"), (appd_plots.plot_fig5, "fig5"), (appd_plots.plot_fig6, "fig6")):
        files = plot(ds, tmp_path / f"{name}.png")
        assert [f.suffix for f in files] == [".png", ".pdf"]
        assert all(f.exists() and f.stat().st_size > 1000 for f in files)


def test_combine_rejects_mismatched_runs(tiny):
    sims, results, ds = tiny
    with pytest.raises(ParameterError, match="at least one"):
        appd.combine([])
    with pytest.raises(ParameterError, match="repeated widths"):
        appd.combine([results[0], results[0]])
    other = results[1].copy()
    other.attrs = dict(other.attrs)
    params = json.loads(other.attrs["parameters_json"])
    params["d"] = params["d"] + 1
    other.attrs["parameters_json"] = json.dumps(params)
    with pytest.raises(ParameterError, match="differs from result 0 in d"):
        appd.combine([results[0], other])
    with pytest.raises(ParameterError, match="not a teacher-student"):
        appd.combine([ds])
    with pytest.raises(ParameterError, match="combined App. D"):
        appd.appd_summary(results[0])
