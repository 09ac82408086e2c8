"""Convergence diagnostics of simulation results (issue 20, :mod:`grokphase.analysis.diagnostics`).

The chains are synthetic AR(1) processes x_{t+1} = phi x_t + sqrt(1 - phi^2) e_t (stationary variance 1),
whose integrated autocorrelation time tau_int = (1 + phi)/(1 - phi) and relaxation from a far start
(mean x_0 phi^t, relaxation time -1/log phi) are known exactly, laid out as a simulation result file
(dims s2, dataset, init, time; ``param_burn_in``).  R-hat and ESS are checked against ArviZ's own
functions on arrays cut from the same NumPy arrays by direct indexing (an independent path through the
data), tau_int and MSER against the AR(1) truth with tolerances from the spread over seeds.  No
simulation runs here (a tiny one costs 15-35 s of XLA compilation on this machine); the layout of real
``sim teacher-student`` / ``sim modular`` files is mirrored (dim names and order, attributes).
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
import xarray as xr
from scipy.signal import lfilter

from grokphase.analysis import diagnostics as dg
from grokphase.cli import main
from grokphase.errors import ResultFileError
from grokphase.io import annotate, save_dataset

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import arviz as az


def ar1(rng, shape, n, phi, x0=None):
    """AR(1) chains of unit stationary variance, shape (*shape, n); x0 None: a stationary start."""
    e = rng.normal(size=(*shape, n)) * math.sqrt(1 - phi * phi)
    start = rng.normal(size=shape) if x0 is None else np.broadcast_to(np.asarray(x0, float), shape)
    e[..., 0] = 0.0
    return lfilter([1.0], [1.0, -phi], e, axis=-1, zi=start[..., None])[0]


def result(trajs: dict, *, burn_in=0, spacing=1, s2=None, kind="sims.teacher_student", **params) -> xr.Dataset:
    """A teacher-student-shaped result: every trajectory (s2, dataset, init, time) [or with a degree axis
    before time], record steps spacing, 2 spacing, ..."""
    first = next(iter(trajs.values()))
    S, D, I, T = first.shape[0], first.shape[1], first.shape[2], first.shape[-1]
    coords = {"s2": np.linspace(0.1, 0.2, S) if s2 is None else np.asarray(s2), "dataset": np.arange(D),
              "init": np.arange(I), "time": spacing * np.arange(1, T + 1)}
    data = {}
    for name, v in trajs.items():
        if v.ndim == 5:
            coords["degree"] = np.array([1, 3])
            data[f"{name}_trajectory"] = (("s2", "dataset", "init", "degree", "time"), v)
        else:
            data[f"{name}_trajectory"] = (("s2", "dataset", "init", "time"), v)
    ds = xr.Dataset(data, coords=coords)
    return annotate(ds, kind=kind, parameters={"burn_in": burn_in, "optimizer": "langevin", "record_every": spacing,
                                               **params})


# ------------------------------------------------------------------------------------------------
# R-hat, ESS, MCSE, tau_int: ArviZ on the same arrays


def test_statistics_equal_arviz_on_the_same_arrays():
    """Every point's R-hat, bulk/tail ESS and MCSE equal az.rhat / az.ess / az.mcse on the (init, time >
    burn-in) slice of that s2 and data set cut by NumPy indexing, and tau_int = chains x draws /
    az.ess(method="mean") x record spacing; to 1e-12.  The chains have different phi per (s2, data set),
    so a transposed or pooled wiring gives other numbers."""
    rng = np.random.default_rng(1)
    S, D, I, T, spacing, burn_in = 2, 3, 4, 300, 5, 250          # 50 records burnt
    phis = np.array([[0.2, 0.5, 0.8], [0.9, 0.0, 0.6]])
    x = np.stack([np.stack([ar1(rng, (I,), T, phis[s, d]) + d for d in range(D)]) for s in range(S)])
    y = x ** 2 + rng.normal(size=x.shape)
    ds = result({"cubic_learned": x, "train_mse": y}, burn_in=burn_in, spacing=spacing)
    diag = dg.diagnose(ds)
    keep = np.arange(1, T + 1) * spacing > burn_in
    assert keep.sum() == 250 and diag.attrs["draws"] == 250 and diag.attrs["burn_in"] == burn_in
    assert list(diag["observable"].values) == ["cubic_learned", "train_mse"]
    for o, arr in enumerate((x, y)):
        for s in range(S):
            for d in range(D):
                c = arr[s, d][:, keep]
                got = {k: float(diag[k].values[o, s, d]) for k in ("rhat", "ess_bulk", "ess_tail", "mcse", "tau_int")}
                want = {"rhat": float(az.rhat(c)), "ess_bulk": float(az.ess(c, method="bulk")),
                        "ess_tail": float(az.ess(c, method="tail")), "mcse": float(az.mcse(c)),
                        "tau_int": c.size / float(az.ess(c, method="mean")) * spacing}
                for k in want:
                    assert got[k] == pytest.approx(want[k], rel=1e-12), (k, o, s, d)
                assert float(diag["mean"].values[o, s, d]) == pytest.approx(c.mean(), rel=1e-12)


def test_component_dimension_becomes_observables_without_duplicates():
    """learned_trajectory (degree 1, 3): degree 1 equals linear_learned and is skipped; degree 3 differs
    from every other trajectory and is kept as learned_degree3."""
    rng = np.random.default_rng(2)
    lin, cub = ar1(rng, (1, 2, 2), 40, 0.3), ar1(rng, (1, 2, 2), 40, 0.3)
    learned = np.stack([lin, cub + 1.0], axis=3)
    diag = dg.diagnose(result({"linear_learned": lin, "learned": learned}))
    assert list(diag["observable"].values) == ["linear_learned", "learned_degree3"]
    assert float(diag["mean"].values[1, 0, 0]) == pytest.approx(cub[0, 0].mean() + 1.0, rel=1e-12)


def test_tau_int_of_ar1_is_exact_within_its_spread():
    """AR(1), phi = 0.9: tau_int = (1 + phi)/(1 - phi) = 19 steps.  40 independent data sets x 4 chains x
    4000 records (seed 3); the mean estimate lies within 3 standard errors (the sample SD over the 40 data
    sets / sqrt 40, about 0.4) of 19.  The estimates' relative SD is about 0.1, as the asymptotic
    var(tau)/tau^2 = 2(2M+1)/N (Sokal 1997, window M of a few tau, N = 16000) predicts.  A factor-2
    error (e.g. the exponential time (1 + phi^2)/(1 - phi^2) = 9.5 or 2 tau) lies 20+ SEs away."""
    phi, true = 0.9, (1 + 0.9) / (1 - 0.9)
    rng = np.random.default_rng(3)
    x = ar1(rng, (1, 40, 4), 4000, phi)
    diag = dg.diagnose(result({"w_norm2": x}))
    tau = diag["tau_int"].values[0, 0]
    mean, se = tau.mean(), tau.std(ddof=1) / math.sqrt(tau.size)
    assert 0.05 < tau.std(ddof=1) / true < 0.2                    # the expected spread: the SE is honest
    assert abs(mean - true) < 3 * se, (mean, se)
    for wrong in ((1 + phi ** 2) / (1 - phi ** 2), 2 * true, true / 2):
        assert abs(mean - wrong) > 10 * se


def test_mser_cut_on_a_known_relaxation():
    """AR(1), phi = 0.9, started at 50 stationary SDs: the mean decays as 50 phi^t, relaxation time
    tau_r = -1/log(phi) = 9.5 steps; it falls to 1 SD at t* = tau_r log 50 = 37 and to 5 SD at
    tau_r log 10 = 22.  Over 30 seeds, every MSER-5 cut removes the part with a bias above 5 SD (>= 20, the
    batch grid), and the median cut lies within [t* - 2 tau_r, t* + 3 tau_r]; from a stationary start the
    median cut is 0.  A rule that never cuts, or always cuts at the limit, fails."""
    phi = 0.9
    tau_r = -1 / math.log(phi)
    t_star = tau_r * math.log(50)
    far = [dg.mser(ar1(np.random.default_rng(10 + s), (), 2000, phi, x0=50.0)) for s in range(30)]
    cuts = np.array([c for c, _ in far])
    assert not any(lim for _, lim in far)
    assert cuts.min() >= 20
    assert t_star - 2 * tau_r <= np.median(cuts) <= t_star + 3 * tau_r, sorted(cuts)
    still = np.array([dg.mser(ar1(np.random.default_rng(100 + s), (), 2000, phi))[0] for s in range(30)])
    assert np.median(still) == 0


def test_equilibration_compared_with_burn_in():
    """Through diagnose: the equilibration estimate is the step of the last record MSER-5 discards, the
    largest over a data set's inits; burn_in_short is set when it exceeds the burn-in used, and a run
    whose burn-in was too short is flagged through split-R-hat (the relaxing chain)."""
    phi, spacing = 0.9, 2
    rng = np.random.default_rng(4)
    x = np.stack([ar1(rng, (2,), 400, phi, x0=[50.0, 0.0]), ar1(rng, (2,), 400, phi)])[None]   # (1, 2, 2, 400)
    times = spacing * np.arange(1, 401)
    for burn_in in (10, 400):
        diag = dg.diagnose(result({"w_norm2": x}, burn_in=burn_in, spacing=spacing))
        cut0 = max(dg.mser(c)[0] for c in x[0, 0])
        assert diag["equilibration"].values[0, 0, 0] == times[cut0 - 1]
        assert bool(diag["burn_in_short"].values[0, 0, 0]) == (times[cut0 - 1] > burn_in)
    assert bool(dg.diagnose(result({"w_norm2": x}, burn_in=10, spacing=spacing))["burn_in_short"].values[0, 0, 0])


# ------------------------------------------------------------------------------------------------
# flags: per data set, never across


def test_unmixed_inits_flagged_but_quenched_disorder_is_not():
    """Data set 0: two inits stuck near -1 and +1 (AR(1) around them, never crossing): R-hat >> 1.01,
    flagged with the reason.  Data set 1: four well-mixed inits per data set, and the data sets' means
    differ by 5 (quenched disorder): R-hat < 1.01 and ESS > 400 at every point, none flagged -- while
    az.rhat over the chains of both data sets pooled is far above 1.01, so the per-data-set rule is what
    passes them."""
    rng = np.random.default_rng(5)
    stuck = ar1(rng, (2,), 2000, 0.5) * 0.1 + np.array([-1.0, 1.0])[:, None]
    mixed = ar1(rng, (2,), 2000, 0.5)
    diag = dg.diagnose(result({"cubic_learned": np.stack([stuck, mixed])[None]}))
    (pt,) = dg.flagged_points(diag)
    assert (pt.observable, pt.s2, pt.dataset) == ("cubic_learned", 0.1, 0)
    assert pt.reason.startswith("R-hat ") and "> 1.01" in pt.reason
    assert diag["rhat"].values[0, 0, 0] > 1.5

    quenched = ar1(rng, (1, 2, 4), 2000, 0.5) + np.array([0.0, 5.0])[None, :, None, None]
    diag = dg.diagnose(result({"cubic_learned": quenched, "test_mse": quenched ** 2}))
    assert dg.flagged_points(diag) == []
    assert np.all(diag["rhat"].values < 1.01) and np.all(diag["ess_bulk"].values > 400)
    assert float(az.rhat(quenched[0].reshape(8, 2000))) > 1.5


def test_thresholds_are_configurable_and_name_the_reason():
    """ESS of 4 x 60 iid records is about 240: flagged at --min-ess 400 ("bulk ESS ... < 400"), not at 100
    (with R-hat <= 1.1: at 240 draws the R-hat of iid chains scatters by about 0.01 around 1); a constant
    observable (an accuracy stuck at 1) is never flagged."""
    rng = np.random.default_rng(6)
    ds = result({"train_mse": rng.normal(size=(1, 1, 4, 60)), "train_acc": np.ones((1, 1, 4, 60))})
    diag = dg.diagnose(ds)
    (pt,) = dg.flagged_points(diag)
    assert pt.observable == "train_mse" and "bulk ESS" in pt.reason and "< 400" in pt.reason
    assert dg.flagged_points(dg.apply_thresholds(diag, rhat_max=1.1, min_ess=100)) == []
    assert bool(diag["constant"].values[1, 0, 0])
    with pytest.raises(ValueError, match="rhat_max"):
        dg.apply_thresholds(diag, rhat_max=1.0)


def test_attach_stores_named_variables_that_survive_a_save(tmp_path):
    rng = np.random.default_rng(7)
    ds = result({"w_norm2": rng.normal(size=(2, 2, 2, 40))})
    diag = dg.diagnose(ds)
    out = dg.attach_diagnostics(ds, diag)
    for k in ("rhat", "ess_bulk", "ess_tail", "tau_int", "mcse", "equilibration", "flagged", "reason"):
        var = out[f"diagnostics_{k}"]
        assert var.dims == ("diagnostics_observable", "s2", "dataset") and var.attrs["description"]
    assert out.attrs["diagnostics_rhat_max"] == 1.01 and out.attrs["diagnostics_burn_in"] == 0
    save_dataset(out, tmp_path / "r.nc")
    back = xr.open_dataset(tmp_path / "r.nc", engine="h5netcdf").load()
    np.testing.assert_array_equal(back["diagnostics_rhat"].values, diag["rhat"].values)
    # a result without data sets (modular, whole table): no dataset dim
    mod = result({"w_norm2": rng.normal(size=(1, 1, 3, 40))}, kind="sims.modular", alpha=1.0)
    mod = mod.isel(dataset=0, drop=True).rename({"init": "seed"})
    assert dg.attach_diagnostics(mod, dg.diagnose(mod))["diagnostics_rhat"].dims == ("diagnostics_observable", "s2")


# ------------------------------------------------------------------------------------------------
# CLI


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_diagnose_json_is_one_object_with_the_documented_keys(tmp_path, capsys):
    rng = np.random.default_rng(8)
    path = tmp_path / "sim.nc"
    x = ar1(rng, (2, 2, 3), 120, 0.5)
    save_dataset(result({"cubic_learned": x, "w_norm2": x + 1.0}, burn_in=20), path)
    rc, out, _ = _run(capsys, "diagnose", str(path), "--json", "--min-ess", "50", "--plot", str(tmp_path / "d.png"))
    assert rc == 0
    summary = json.loads(out)                                    # one JSON object, nothing else
    assert out.count("\n") == 1
    keys = {"s2", "dataset", "observable", "rhat", "ess_bulk", "ess_tail", "tau_int", "mcse", "equilibration",
            "burn_in", "flagged", "reason"}
    assert len(summary["points"]) == 2 * 2 * 2
    for pt in summary["points"]:
        assert keys <= set(pt) and pt["burn_in"] == 20
    assert summary["min_ess"] == 50 and (tmp_path / "d.png").stat().st_size > 0
    rc, out, _ = _run(capsys, "diagnose", str(path), "--all")
    assert rc == 0 and "cubic_learned" in out and "R-hat" in out


def test_cli_export_round_trips_through_arviz(tmp_path, capsys):
    """export --arviz: az.from_netcdf reads it, one variable per observable x s2 x data set with chains =
    inits and draws = records after the burn-in, and az.summary's r_hat equals diagnose's R-hat."""
    rng = np.random.default_rng(9)
    path, out_nc = tmp_path / "sim.nc", tmp_path / "out" / "az.nc"
    x = ar1(rng, (2, 2, 3), 100, 0.5)
    ds = result({"cubic_learned": x}, burn_in=30, s2=[0.14, 0.2])
    save_dataset(ds, path)
    rc, out, _ = _run(capsys, "export", str(path), "--arviz", str(out_nc), "--json")
    assert rc == 0 and json.loads(out)["variables"] == 4
    assert [p.name for p in out_nc.parent.iterdir()] == ["az.nc"]          # no temporary file left
    assert oct(os.stat(out_nc).st_mode & 0o777) == oct(0o666 & ~_umask())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.from_netcdf(out_nc)
        summary = az.summary(idata, kind="diagnostics")
    post = idata.posterior
    assert dict(post.sizes) == {"chain": 3, "draw": 70}
    assert list(post["draw"].values) == list(range(31, 101))
    name = "cubic_learned__s2_0.2__dataset_1"
    np.testing.assert_array_equal(post[name].values, x[1, 1][:, 30:])
    diag = dg.diagnose(ds)
    assert summary.loc[name, "r_hat"] == pytest.approx(float(diag["rhat"].values[0, 1, 1]), abs=0.006)  # 2 decimals
    assert post[name].attrs["observable"] == "cubic_learned" and post[name].attrs["dataset"] == "1"


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


@pytest.mark.parametrize("case, needle", [
    ("theory", "need a simulation result"),
    ("no_time", "no trajectories with a 'time' dimension"),
    ("one_init", "at least 2 chains"),
    ("few_records", "record(s) per chain after the burn-in"),
    ("optimizer", "samples no posterior"),
    ("log_times", "not equally spaced"),
    ("modular_split", "alpha < 1"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, case, needle):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(1, 1, 2, 40))
    if case == "theory":
        ds = result({"w_norm2": x}, kind="theory.teacher_student")
    elif case == "no_time":
        ds = annotate(xr.Dataset({"w_norm2": (("s2",), [1.0])}, coords={"s2": [0.1]}), kind="sims.teacher_student",
                      parameters={"burn_in": 0})
    elif case == "one_init":
        ds = result({"w_norm2": x[:, :, :1]})
    elif case == "few_records":
        ds = result({"w_norm2": x}, burn_in=35)
    elif case == "optimizer":
        ds = result({"w_norm2": x}).assign_attrs(param_optimizer="adam")
    elif case == "log_times":
        ds = result({"w_norm2": x}).assign_coords(time=np.round(np.geomspace(10, 10 ** 4, 40)).astype(int))
    else:
        ds = result({"w_norm2": x}, kind="sims.modular", alpha=0.5).isel(dataset=0, drop=True).rename({"init": "seed"})
    with pytest.raises(ResultFileError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        dg.diagnose(ds)
    path = tmp_path / "bad.nc"
    save_dataset(ds, path)
    for argv in (["diagnose", str(path)], ["export", str(path), "--arviz", str(tmp_path / "a.nc")]):
        rc, out, err = _run(capsys, *argv)
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith("grokphase: error: ") and needle in err
    assert not (tmp_path / "a.nc").exists()


# ------------------------------------------------------------------------------------------------
# compare: z-scores on unconverged chains are marked


def test_compare_marks_exactly_the_flagged_points():
    """A comparison's rows name an observable as unreliable exactly where diagnose flags it: at s2 = 0.1
    the cubic learned fraction's two inits of data set 1 are stuck apart (R-hat >> 1.01), everything
    else mixes (AR(1), phi = 0.5, 4 x 2000 records: bulk ESS ~ 2700 > 400).  Only (s2 = 0.1, z_cubic)
    is marked, with data set 1 and the R-hat reason; a one-init file gets a note and no marks."""
    from grokphase.analysis import compare as cmp_mod

    rng = np.random.default_rng(7)
    S, D, I, T = 2, 2, 4, 2000
    lin = ar1(rng, (S, D, I), T, 0.5)
    cub = ar1(rng, (S, D, I), T, 0.5)
    cub[0, 1, :2] += 3.0                              # s2 = 0.1, data set 1: two inits stuck 3 SD away
    ds = result({"linear_learned": lin, "cubic_learned": cub}, s2=[0.1, 0.2])
    extra = cmp_mod.diagnostics_extra([ds, ds.isel(init=[0])])
    fake = xr.Dataset(attrs=extra)
    flags = json.loads(extra["diagnostics_flags_json"])
    assert {(f["sim"], f["s2"], f["observable"], f["dataset"]) for f in flags} == {(0, 0.1, "cubic_learned", 1)}
    marked = cmp_mod.unreliable(fake, 0, 0.1, cmp_mod.TS_OBSERVABLES)
    assert list(marked) == ["z_cubic"] and marked["z_cubic"].startswith("data set 1: R-hat")
    assert cmp_mod.unreliable(fake, 0, 0.2, cmp_mod.TS_OBSERVABLES) == {}
    assert cmp_mod.diagnostics_note(fake, 0) == ""
    assert cmp_mod.diagnostics_note(fake, 1).startswith("diagnostics unavailable: R-hat needs at least 2 chains")
    row = cmp_mod._mark({}, fake, 1, 0.1, cmp_mod.TS_OBSERVABLES)
    assert row["unreliable"] == {} and "diagnostics" in row


def test_sim_summary_carries_the_worst_diagnostics_per_point():
    """``grokphase sim``'s summary (cli.sims._with_diagnostics): each s2 point gets, per observable, the
    largest R-hat and smallest bulk ESS over its data sets, equal to diagnose's own numbers; the flagged
    list names the stuck (s2 = 0.2, data set 0) chains; the Dataset gains the diagnostics variables; a
    one-init run says why it has none instead of failing."""
    from grokphase.cli.sims import _with_diagnostics

    rng = np.random.default_rng(3)
    x = ar1(rng, (2, 2, 3), 1500, 0.6)
    x[1, 0, 0] += 4.0                                  # s2 = 0.2, data set 0: one init stuck away
    ds = result({"cubic_learned": x}, s2=[0.1, 0.2])
    diag = dg.diagnose(ds)
    summary, lines = {"points": [{"s2": 0.1}, {"s2": 0.2}]}, []
    out = _with_diagnostics(ds, summary, lines)
    for i, pt in enumerate(summary["points"]):
        d = pt["diagnostics"]["cubic_learned"]
        assert d["rhat"] == pytest.approx(float(diag["rhat"].sel(observable="cubic_learned").isel(s2=i).max()), rel=1e-12)
        assert d["ess_bulk"] == pytest.approx(float(diag["ess_bulk"].sel(observable="cubic_learned").isel(s2=i).min()),
                                              rel=1e-12)
    assert [(f["s2"], f["dataset"]) for f in summary["diagnostics"]["flagged"]] == [(0.2, 0)]
    assert summary["points"][1]["diagnostics"]["cubic_learned"]["rhat"] > 1.5 > summary["points"][0]["diagnostics"][
        "cubic_learned"]["rhat"]
    assert "diagnostics_rhat" in out and any("1 flagged" in line for line in lines)
    summary1, lines1 = {"points": [{"s2": 0.1}]}, []
    same = _with_diagnostics(ds.isel(init=[0]), summary1, lines1)
    assert "unavailable" in summary1["diagnostics"] and "diagnostics_rhat" not in same
