"""Free energy along an order parameter from umbrella sampling + MBAR (issue 19, THEORY.md §7).

The samples are exact: independent draws from each window's biased density by inverse CDF on a fine grid
(no Markov chain), so the truth is known by quadrature on the same grid.  The model is a one-dimensional
double well, m = x, "L" = V(x) = H (y^2 - 1)^2 - b x with y = x for x <= 0 and y = x/A for x > 0, sampled
at inverse temperature 1/s2: the ordered basin (x ~ A) is narrower and, with the tilt b, lower in energy,
so it wins at small s2 and loses at large s2 -- a first-order coexistence whose s2, barrier and latent
heat are known exactly.  Every comparison is in standard errors of the estimate, and the tests also check
that the same criterion rejects a wrong truth (another s2), so the tolerance has power.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import xarray as xr
from scipy.optimize import brentq

from grokphase.analysis import free_energy as fe
from grokphase.cli import main
from grokphase.errors import ParameterError
from grokphase.io import annotate, load_dataset, save_dataset, to_json

X = np.linspace(-2.5, 2.5, 50001)
DX = X[1] - X[0]
H, A, B = 1.2, 0.5, 0.2
SPECTATORS = 40
S2_SIM = (0.38, 0.5)
M0 = np.linspace(-1.3, 0.6, 9)
KAPPA = 6.0
EDGES = np.linspace(-1.8, 0.9, 37)


def V(x, b=B):
    y = np.where(x > 0, x / A, x)
    return H * (y * y - 1.0) ** 2 - b * x


def draw(rng, s2, m0, kappa, size, b=B, u=None):
    """Exact draws from p(x) ∝ exp(-V/s2 - kappa/2 (x - m0)^2) by inverse CDF (``u``: given uniforms)."""
    lp = -V(X, b) / s2 - 0.5 * kappa * (X - m0) ** 2
    c = np.cumsum(np.exp(lp - lp.max()))
    c /= c[-1]
    return np.interp(rng.random(size) if u is None else u, c, X)


def density(s2, b=B):
    lp = -V(X, b) / s2
    p = np.exp(lp - lp.max())
    return p / (p.sum() * DX)


def exact_F(s2, edges=EDGES, b=B):
    """-log of the bin-averaged density (the estimand of a histogram profile)."""
    p = density(s2, b)
    idx = np.searchsorted(edges, X, side="right") - 1
    ok = (idx >= 0) & (idx < edges.size - 1)
    mass = np.bincount(idx[ok], weights=p[ok] * DX, minlength=edges.size - 1)
    return -np.log(mass / np.diff(edges))


def exact_dF(s2, split, b=B):
    p = density(s2, b)
    up = X > split
    return -math.log(p[up].sum()) + math.log(p[~up].sum())


def exact_latent(s2, split, b=B):
    p, v = density(s2, b), V(X, b)
    up = X > split
    return (p[up] * v[up]).sum() / p[up].sum() - (p[~up] * v[~up]).sum() / p[~up].sum()


def exact_coexistence(split, b=B):
    return brentq(lambda s: exact_dF(s, split, b), 0.2, 1.0, xtol=1e-12)


def spectator_energy(rng, s2, shape):
    """The energy of SPECTATORS independent Gaussian coordinates (1/2 sum y_i^2 with y_i ~ N(0, s2)):
    s2 chi^2_SPECTATORS / 2.  They leave F(m) unchanged but make L extensive, as in a network, so that
    the energy distributions of distant s2 stop overlapping."""
    return s2 * rng.chisquare(SPECTATORS, size=shape) / 2


def exact_L(s2, b=B):
    return float(np.sum(density(s2, b) * V(X, b)) * DX) + SPECTATORS * s2 / 2


def trajectories(seed, s2=S2_SIM, m0=M0, kappa=KAPPA, chains=2, T=250, b=B):
    """(L, m) of shape (K, chains, T) for the states s2 x windows, and the states (s2_k, m0_k, kappa_k)."""
    rng = np.random.default_rng(seed)
    s2_k, m0_k = np.repeat(s2, len(m0)), np.tile(m0, len(s2))
    kappa_k = np.full(s2_k.size, float(kappa))
    m = np.stack([draw(rng, s, c, kappa, (chains, T), b) for s, c in zip(s2_k, m0_k)])
    L = V(m, b) + spectator_energy(rng, s2_k[:, None, None], m.shape)
    return L, m, s2_k, m0_k, kappa_k


def profile_z(profile, truth):
    """z-scores of a profile (-log of the normalised density) against a truth on the same bins."""
    ok = np.isfinite(profile.F) & np.isfinite(profile.F_sem) & (profile.F_sem > 0) & np.isfinite(truth)
    return (profile.F[ok] - truth[ok]) / profile.F_sem[ok]


@pytest.fixture(scope="module")
def double_well():
    """Two simulated s2 (0.38, 0.5) x 9 windows x 2 chains x 250 independent draws, analysed at 0.38,
    0.44 (reweighted between the two) and 0.5 with the coexistence search."""
    L, m, s2_k, m0_k, kappa_k = trajectories(seed=1)
    samples = fe.decorrelate(L, m, s2_k, m0_k, kappa_k, subsample=False)       # independent draws
    result = fe.free_energy([samples], s2=[0.38, 0.44, 0.5], bins=EDGES, n_bootstrap=40, seed=3)
    return samples, result


# ------------------------------------------------------------------------------------------------
# profiles, reweighting and coexistence against quadrature


def test_profiles_are_recovered_within_their_standard_errors(double_well):
    """F(m) = -log p(m) at the three s2 against -log of the exact bin-averaged density, in z-scores pooled
    over the profiles' ~90 bins: a chi-square per bin (mean z^2) and the fraction within 2 SE.  Neighbouring
    bins (and the three s2) share window free energies, so their errors are correlated and both statistics
    scatter more than for independent bins: over 13 other seeds mean z^2 was 0.5-2.1 and the fraction
    0.88-0.99 (per-bin rms z over 24 seeds: 0.8-1.3); the truth at 1.1 s2 gave mean z^2 1.5-3.4 and at 1.25 s2
    5.9-8.5, which this test rejects."""
    _, result = double_well
    z = np.concatenate([profile_z(p, exact_F(p.s2)) for p in result.profiles])
    assert z.size >= 80
    assert np.mean(z**2) < 2.5 and np.mean(np.abs(z) < 2) >= 0.8, np.round(z, 2)
    wrong = np.concatenate([profile_z(p, exact_F(p.s2 * 1.25)) for p in result.profiles])
    assert np.mean(wrong**2) > 4 and np.mean(np.abs(wrong) < 2) < 0.65, np.round(wrong, 2)
    for p in result.profiles:
        assert np.nanmedian(p.F_sem) < 0.15              # errors small enough for the test to mean something
        assert p.wells == 2 and p.minima_m[0] < p.saddle_m < p.minima_m[1]
        assert abs(np.sum(np.exp(-p.F[np.isfinite(p.F)]) * np.diff(EDGES)[np.isfinite(p.F)]) - 1) < 1e-3  # normalised


def test_reweighting_between_two_temperatures_matches_quadrature(double_well):
    """s2 = 0.44 was not simulated: its <L> and basin free-energy difference come from reweighting the
    samples at 0.38 and 0.5; both within 3 SE of quadrature, at every target."""
    _, result = double_well
    for p in result.profiles:
        truth_L = exact_L(p.s2)
        assert abs(p.L_mean - truth_L) < 3 * p.L_mean_sem, (p.s2, p.L_mean, truth_L, p.L_mean_sem)
        truth_dF = exact_dF(p.s2, p.saddle_m)
        assert abs(p.delta_F - truth_dF) < 3 * p.delta_F_sem, (p.s2, p.delta_F, truth_dF, p.delta_F_sem)
        assert p.delta_F_sem < 0.08 and p.ess > 500, (p.delta_F_sem, p.ess)
    lo, mid, hi = result.profiles
    assert abs(exact_dF(0.38, mid.saddle_m) - exact_dF(0.5, mid.saddle_m)) > 3 * mid.delta_F_sem   # resolved
    assert abs(exact_L(0.38) - hi.L_mean) > 4 * hi.L_mean_sem


def test_pymbar_fes_gives_the_same_profile(double_well):
    """The profile's MBAR weights against pymbar's own FES histogram (another code path), same bins."""
    samples, result = double_well
    pymbar = fe._pymbar()
    u_kn = fe.reduced_potentials(samples.L, samples.m, samples.s2, samples.m0, samples.kappa)
    with fe._quiet():
        fes = pymbar.FES(u_kn, samples.N_k)
        fes.generate_fes(samples.L / 0.44, samples.m, fes_type="histogram",
                         histogram_parameters={"bin_edges": EDGES})
        p = result.profiles[1]
        ok = np.isfinite(p.F)
        out = fes.get_fes(result.m[ok], reference_point="from-lowest", uncertainty_method="analytical")
    assert np.allclose(np.asarray(out["f_i"]), p.F[ok] - p.F[ok].min(), atol=1e-7)


def test_bootstrap_solver_matches_pymbar(double_well):
    """The Newton solver of the bootstrap replicates against pymbar's MBAR on the full data, from f = 0."""
    samples, _ = double_well
    u_kn = fe.reduced_potentials(samples.L, samples.m, samples.s2, samples.m0, samples.kappa)
    fit = fe.solve_mbar(samples)
    f = fe.solve_free_energies(u_kn, samples.N_k, np.zeros(samples.N_k.size))
    assert f is not None and np.max(np.abs(f - fit.f_k)) < 1e-8
    assert np.ptp(fit.f_k) > 1.0                     # the states' free energies are far from all equal


def test_windows_that_do_not_overlap_are_refused():
    """kappa = 300: each window a narrow slice, neighbours 0.24 apart barely overlap."""
    L, m, s2_k, m0_k, kappa_k = trajectories(seed=2, kappa=300.0)
    samples = fe.decorrelate(L, m, s2_k, m0_k, kappa_k, subsample=False)
    with pytest.raises(fe.ReweightingError, match="overlap only"):
        fe.free_energy([samples], bins=EDGES, n_bootstrap=10)


def test_a_target_far_from_the_simulations_is_refused(double_well):
    samples, result = double_well
    with pytest.raises(fe.ReweightingError, match="effective sample size"):
        fe.free_energy([samples], s2=[0.12], bins=EDGES, n_bootstrap=10)
    assert issubclass(fe.ReweightingError, ParameterError)
    (lo, hi), = result.systems[0].trusted_s2
    assert lo <= S2_SIM[0] and hi >= S2_SIM[1] and lo > 0.12


def test_coexistence_barrier_and_latent_heat_against_quadrature(double_well):
    _, result = double_well
    sys0 = result.systems[0]
    assert result.wells == 2 and result.reason is None and sys0.bootstrap_failures <= 4
    truth = exact_coexistence(sys0.split_m)
    z = (result.coexistence_s2 - truth) / result.coexistence_s2_sem
    assert abs(z) < 3, (result.coexistence_s2, truth, result.coexistence_s2_sem)
    assert result.coexistence_s2_sem < 0.12 * truth
    latent = exact_latent(truth, sys0.split_m)
    assert abs(result.latent_heat - latent) < 3 * result.latent_heat_sem, (result.latent_heat, latent)
    assert result.latent_heat < 0 and abs(latent) > 5 * result.latent_heat_sem   # ordered: lower energy
    F = exact_F(truth)
    i_dis, i_ord = (int(np.argmin(np.abs(result.m - x))) for x in sys0.minima_m)
    barrier = F[i_dis:i_ord + 1].max() - F.min()
    assert abs(result.barrier - barrier) < 3 * result.barrier_sem, (result.barrier, barrier, result.barrier_sem)
    assert 1.5 < barrier < 5 and result.barrier_sem < 0.25 * barrier
    d = result.to_dict()
    assert {"coexistence_s2", "coexistence_s2_sem", "barrier", "barrier_sem", "latent_heat", "latent_heat_sem",
            "overlap_min", "profiles"} <= set(d)
    assert {"s2", "m", "F", "F_sem"} <= set(d["profiles"][0])
    assert d["overlap_min"] == result.overlap_min > fe.MIN_OVERLAP


# ------------------------------------------------------------------------------------------------
# decorrelation, systems, single wells


def test_correlated_chains_are_decorrelated():
    """AR(1) chains (rho = 0.9, a Gaussian copula: every record is an exact draw, consecutive ones
    correlated; g = (1 + rho)/(1 - rho) = 19 for the Gaussian) at one s2: the recorded statistical
    inefficiencies are near 19, and the profile and basin difference are recovered within the SEs of the
    decorrelated samples."""
    from scipy.special import ndtr
    rho, T, C, s2 = 0.9, 2400, 2, 0.44
    rng = np.random.default_rng(11)
    z = np.empty((M0.size, C, T))
    z[..., 0] = rng.standard_normal((M0.size, C))
    for t in range(1, T):
        z[..., t] = rho * z[..., t - 1] + math.sqrt(1 - rho * rho) * rng.standard_normal((M0.size, C))
    m = np.stack([draw(rng, s2, c, KAPPA, None, u=ndtr(z[j])) for j, c in enumerate(M0)])
    L = V(m) + spectator_energy(rng, s2, m.shape)
    result = fe.free_energy_from_arrays(L[None], m[None], np.full(M0.size, s2), M0, np.full(M0.size, KAPPA),
                                        bins=EDGES, n_bootstrap=40, coexistence=False)
    g = result.systems[0].g
    assert 10 < np.median(g) < 25, g
    (p,) = result.profiles
    zs = profile_z(p, exact_F(s2))
    assert np.mean(np.abs(zs) < 2) >= 0.85 and np.max(np.abs(zs)) < 4.0, np.round(zs, 2)
    assert abs(p.delta_F - exact_dF(s2, p.saddle_m)) < 3 * p.delta_F_sem
    assert result.to_dict()["statistical_inefficiency"]["max"] == pytest.approx(float(g.max()))


def test_systems_are_analysed_separately_and_averaged():
    """Two systems with different tilts (different coexistence s2): the result is the mean of the two
    separate analyses (a pooled MBAR would not be), its SE their spread / sqrt(2)."""
    samples = []
    for seed, b in ((21, B), (25, 0.26)):
        L, m, s2_k, m0_k, kappa_k = trajectories(seed, b=b)
        samples.append(fe.decorrelate(L, m, s2_k, m0_k, kappa_k, subsample=False))
    kw = dict(s2=[0.44], bins=EDGES, n_bootstrap=12)
    both = fe.free_energy(samples, **kw)
    one = [fe.free_energy([s], **kw) for s in samples]
    for key in ("coexistence_s2", "barrier", "latent_heat"):
        vals = np.array([getattr(r, key) for r in one])
        assert np.all(np.isfinite(vals))
        assert getattr(both, key) == pytest.approx(vals.mean(), rel=1e-12)
        assert getattr(both, key + "_sem") == pytest.approx(abs(vals[1] - vals[0]) / 2, rel=1e-10)
    truths = [exact_coexistence(r.systems[0].split_m, b) for r, b in zip(one, (B, 0.26))]
    assert truths[1] - truths[0] > 0.08                     # two different systems, each analysis finds its own
    shift = (one[1].coexistence_s2 - one[0].coexistence_s2) - (truths[1] - truths[0])
    assert abs(shift) < 3 * math.hypot(one[0].coexistence_s2_sem, one[1].coexistence_s2_sem)
    diff = both.profiles[0].F - np.mean([r.profiles[0].F for r in one], axis=0)
    ok = np.isfinite(diff)
    assert ok.sum() > 25 and np.max(np.abs(diff[ok])) < 1e-12          # the mean of the systems' -log p
    assert both.to_dict()["n_systems"] == 2 and "spread over 2 systems" in both.sem_method


def test_a_single_well_reports_one_well_and_no_coexistence():
    single = lambda x, b=0.0: 1.5 * (x + 0.3) ** 2 + 0.2 * x ** 4      # noqa: E731
    rng = np.random.default_rng(31)
    s2_k, m0_k = np.repeat(S2_SIM, M0.size), np.tile(M0, 2)
    m = np.empty((s2_k.size, 2, 250))
    for k, (s, c) in enumerate(zip(s2_k, m0_k)):
        lp = -single(X) / s - 0.5 * KAPPA * (X - c) ** 2
        cdf = np.cumsum(np.exp(lp - lp.max()))
        m[k] = np.interp(rng.random((2, 250)), cdf / cdf[-1], X)
    samples = fe.decorrelate(single(m), m, s2_k, m0_k, np.full(s2_k.size, KAPPA), subsample=False)
    result = fe.free_energy([samples], bins=EDGES, n_bootstrap=20)
    assert result.wells == 1 and all(p.wells == 1 for p in result.profiles)
    assert math.isnan(result.coexistence_s2) and math.isnan(result.barrier)
    assert isinstance(result.reason, str) and "single well" in result.reason
    d = json.loads(to_json(result.to_dict()))
    assert d["coexistence_s2"] is None and d["wells"] == 1


def test_find_wells():
    m = np.linspace(-2, 2, 41)
    F = (m**2 - 1) ** 2 * 3
    w = fe.find_wells(F, np.full(m.size, 0.1))
    assert w.wells == 2 and m[w.minima[0]] == pytest.approx(-1) and m[w.minima[1]] == pytest.approx(1)
    assert m[w.saddle] == pytest.approx(0, abs=1e-12)
    assert fe.find_wells(F, np.full(m.size, 2.0)).wells == 1         # depth 3 < 3 x sqrt(2) x 2
    noisy = 0.5 * m**2 + np.random.default_rng(0).normal(0, 0.05, m.size)
    one = fe.find_wells(noisy, np.full(m.size, 0.05))
    assert one.wells == 1 and one.reason


# ------------------------------------------------------------------------------------------------
# the result Dataset, the CLI, the figure


def umbrella_dataset(seed=41, T=160, burn=40, start=False, shift=0.0):
    """A small umbrella result in the engine's format: dims (s2, window, seed[, start], time)."""
    L, m, s2_k, m0_k, kappa_k = trajectories(seed, chains=2 * (2 if start else 1), T=T)
    shape = (len(S2_SIM), M0.size) + ((2, 2) if start else (2,)) + (T,)
    L, m = L.reshape(shape), m.reshape(shape)
    if shift:
        m[:, 4, :, 1] += shift                     # the "ordered" start of window 4 sits elsewhere
    times = np.arange(1, T + 1) * 10
    m[..., times <= burn] = 50.0                 # garbage inside the burn-in: must be dropped
    dims = ("s2", "window", "seed") + (("start",) if start else ()) + ("time",)
    coords = {"s2": list(S2_SIM), "window": np.arange(M0.size), "seed": [0, 1], "time": times,
              "window_m0": ("window", M0), "window_kappa": ("window", np.full(M0.size, KAPPA))}
    if start:
        coords["start"] = ["prior", "ordered"]
    ds = xr.Dataset({"order_parameter_trajectory": (dims, m), "potential_trajectory": (dims, L)}, coords=coords)
    return annotate(ds, kind="sims.modular", parameters={"burn_in": burn, "umbrella": True},
                    extra={"umbrella": 1, "umbrella_order_parameter": "x", "umbrella_system_dims": ""})


@pytest.fixture(scope="module")
def umbrella():
    """A small umbrella result in the engine's format and its analysis (30 bins, 10 replicates)."""
    ds = umbrella_dataset()
    return ds, fe.free_energy_from_dataset(ds, bins=30, n_bootstrap=10)


def test_dataset_adapter_equals_the_array_entry_point(umbrella):
    ds, via_ds = umbrella
    arr = fe.umbrella_arrays(ds)
    assert arr.L.shape == (1, 2 * M0.size, 2, 156) and arr.system_labels == ("all",)
    assert np.all(arr.m < 10)                                             # burn-in dropped
    via_arrays = fe.free_energy_from_arrays(arr.L, arr.m, arr.s2_k, arr.m0_k, arr.kappa_k, bins=30, n_bootstrap=10)
    for a, b in zip(via_ds.profiles, via_arrays.profiles):
        assert np.array_equal(a.F, b.F, equal_nan=True) and a.s2 == b.s2
    assert via_ds.coexistence_s2 == via_arrays.coexistence_s2
    assert via_ds.order_parameter == "x" and np.all(via_ds.systems[0].g >= 1)
    two = ds.rename(seed="dataset").expand_dims(init=[0], axis=3).assign_attrs(umbrella_system_dims="dataset")
    arr2 = fe.umbrella_arrays(two)                       # teacher-student layout: one system per data set
    assert arr2.L.shape == (2, 2 * M0.size, 1, 156) and arr2.system_labels == ("0", "1")
    assert arr2.unit_dims == ("init",) and arr2.system_dims == ("dataset",)
    assert np.array_equal(arr2.m[1, M0.size + 3, 0], ds["order_parameter_trajectory"].values[1, 3, 1, 4:])
    with pytest.raises(fe.ResultFileError, match="not an umbrella"):
        fe.free_energy_from_dataset(ds.assign_attrs(umbrella=0))
    with pytest.raises(fe.ResultFileError, match="potential_trajectory"):
        fe.free_energy_from_dataset(ds.drop_vars("potential_trajectory"))


def test_start_agreement_flags_the_window_that_remembers_its_start():
    agree = fe.start_agreement(umbrella_dataset(start=True))
    assert agree.starts == ("prior", "ordered") and agree.z.shape == (2, M0.size) and not agree.disagree
    shifted = fe.start_agreement(umbrella_dataset(start=True, shift=0.3))
    assert {(d["s2"], d["window"]) for d in shifted.disagree} == {(0.38, 4), (0.5, 4)}
    assert shifted.to_dict()["max_abs_z"] > 3


def test_cli_json_out_and_plot(umbrella, tmp_path, capsys):
    ds, lib = umbrella
    path = save_dataset(ds, tmp_path / "umbrella.nc")
    out, png = tmp_path / "profile.nc", tmp_path / "profile.png"
    assert main(["free-energy", str(path), "--bootstrap", "10", "--bins", "30", "--json", "--out", str(out),
                 "--plot", str(png)]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and captured.err == ""
    d = json.loads(captured.out)
    assert {"coexistence_s2", "coexistence_s2_sem", "barrier", "barrier_sem", "latent_heat", "latent_heat_sem",
            "overlap_min", "profiles"} <= set(d)
    assert [p["s2"] for p in d["profiles"]] == list(S2_SIM) and len(d["profiles"][0]["m"]) == 30
    assert d["coexistence_s2"] == pytest.approx(lib.coexistence_s2, rel=1e-12)
    saved = load_dataset(out, "analysis.free_energy")
    assert saved.attrs["coexistence_s2"] == pytest.approx(d["coexistence_s2"], rel=1e-12)
    assert np.allclose(saved["F"].values[0], np.array(d["profiles"][0]["F"], dtype=float), equal_nan=True)
    assert png.stat().st_size > 10_000
    from grokphase.plotting.free_energy import plot_free_energy
    theory = {S2_SIM[0]: (X[::50], V(X[::50]) / S2_SIM[0]),
              0.44: (X[::50], V(X[::50]) / 0.44)}
    (fig,) = plot_free_energy(saved, tmp_path / "theory.png", theory=theory)
    assert fig.stat().st_size > 10_000


def test_cli_bad_input_exits_2_with_one_line(umbrella, tmp_path, capsys):
    ds, _ = umbrella
    plain = save_dataset(ds.assign_attrs(umbrella=0), tmp_path / "plain.nc")
    umbrella = save_dataset(ds, tmp_path / "umbrella.nc")
    for argv, match in (([str(plain)], "not an umbrella-sampling result"),
                        ([str(umbrella), "--s2", "0.1"], "effective sample size")):
        assert main(["free-energy", *argv, "--bootstrap", "10", "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("grokphase: error:") and match in lines[0], captured.err


def test_pymbar_is_imported_and_used_quietly(capfd, monkeypatch):
    """pymbar's import banners and log warnings reach neither stdout nor stderr (file descriptors
    included): a fresh import of pymbar, then its timeseries module (whose import logs a long warning);
    the MBAR solves of the CLI test run under the same guard and leave stderr empty."""
    for name in [k for k in sys.modules if k == "pymbar" or k.startswith("pymbar.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(fe, "_PYMBAR", None)
    capfd.readouterr()
    rng = np.random.default_rng(0)
    samples = fe.decorrelate(rng.normal(size=(2, 1, 200)), rng.normal(size=(2, 1, 200)), [1.0, 1.0], [0.0, 0.5],
                             [1.0, 1.0])
    assert samples.g.shape == (2, 1) and fe._PYMBAR is not None and "pymbar" in sys.modules
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == "", captured


# ------------------------------------------------------------------------------------------------
# several umbrella coordinates: the bias summed over them, F along one (the marginal of the others)
#
# The toy is a correlated two-dimensional Gaussian, "L" = U(x, y) = 1/2 z^T A z at s2 = 1 (z = (x, y)), so
# every window's biased density is Gaussian with precision A + diag(kappa) and is sampled exactly; the
# unbiased marginals are N(0, (A^-1)_cc).  The coupling makes a bias on y move x, so an analysis that
# dropped the y part of the bias from the reduced potentials gets the x marginal wrong (checked).

A2 = np.array([[2.0, -1.6], [-1.6, 2.0]])
KAPPA2 = np.array([3.0, 3.0])


def gaussian_2d(seed, x0=np.linspace(-4, 4, 9), y0=np.linspace(-4, 4, 7), T=160, chains=1, shift=None):
    """(L, m) of shape (K, chains, T[, 2]) on the product grid x0 x y0 (x slowest) and the states."""
    rng = np.random.default_rng(seed)
    m0 = np.stack([g.ravel() for g in np.meshgrid(x0, y0, indexing="ij")], axis=1)
    kappa = np.broadcast_to(KAPPA2, m0.shape).copy()
    m = np.empty((m0.shape[0], chains, T, 2))
    for k, (c, kap) in enumerate(zip(m0, kappa)):
        prec = A2 + np.diag(kap)
        cov = np.linalg.inv(prec)
        m[k] = rng.multivariate_normal(cov @ (kap * c), cov, size=(chains, T))
    L = 0.5 * np.einsum("...i,ij,...j->...", m, A2, m)
    return L, m, np.ones(m0.shape[0]), m0, kappa


def exact_marginal_F(c, edges):
    sd = math.sqrt(np.linalg.inv(A2)[c, c])
    from scipy.stats import norm
    mass = np.diff(norm.cdf(edges / sd))
    return -np.log(mass / np.diff(edges))


@pytest.fixture(scope="module")
def gaussian_2d_samples():
    return gaussian_2d(seed=1, T=100)


@pytest.mark.parametrize("axis", [0, 1])
def test_two_coordinate_mbar_recovers_the_marginal(gaussian_2d_samples, axis):
    """63 windows on a 9 x 7 product grid, 100 exact draws each: F along x (axis 0) and along y (axis 1)
    against the exact Gaussian marginal, pooled z-scores over 30 bins (the statistics of the
    one-dimensional double well above).  The bins share window free energies, so their errors are
    correlated and the statistics scatter: over seeds 1-8 mean z^2 was 0.5-3.7 and the fraction within
    2 SE 0.67-1.0 (this seed: 0.9 and 1.0 on both axes).  The same samples analysed with only the profiled
    coordinate's bias (the other's dropped from u_kn, as an implementation that ignored the second
    coordinate would) gave mean z^2 = 90-136 over the same seeds: the thresholds separate the two by a
    factor of 8."""
    L, m, s2_k, m0_k, kappa_k = gaussian_2d_samples
    edges = np.linspace(-3.0, 3.0, 31)
    truth = exact_marginal_F(axis, edges)
    samples = fe.decorrelate(L, m, s2_k, m0_k, kappa_k, subsample=False, axis=axis)
    assert samples.m.shape == (63 * 100, 2) and samples.axis == axis
    result = fe.free_energy([samples], bins=edges, n_bootstrap=20, seed=1, coexistence=False)
    z = profile_z(result.profiles[0], truth)
    assert z.size >= 28
    assert np.mean(z**2) < 4 and np.mean(np.abs(z) < 2) >= 0.65, np.round(z, 2)
    assert result.overlap_min > fe.MIN_OVERLAP
    one = fe.decorrelate(L, m[..., axis], s2_k, m0_k[:, axis], kappa_k[:, axis], subsample=False)
    wrong = profile_z(fe.free_energy([one], bins=edges, n_bootstrap=20, seed=1, coexistence=False,
                                     min_overlap=0.0).profiles[0], truth)
    assert np.mean(wrong**2) > 30, np.round(wrong, 2)


def test_reduced_potentials_sum_over_coordinates_and_grid_neighbours():
    rng = np.random.default_rng(0)
    L, m = rng.normal(size=5), rng.normal(size=(5, 2))
    s2, m0, kappa = np.array([1.0, 2.0]), rng.normal(size=(2, 2)), np.array([[1.0, 3.0], [0.5, 0.0]])
    u = fe.reduced_potentials(L, m, s2, m0, kappa)
    for k in range(2):
        one = [fe.reduced_potentials(L if c == 0 else 0 * L, m[:, c], s2[k:k + 1], m0[k:k + 1, c], kappa[k:k + 1, c])
               for c in range(2)]
        assert np.allclose(u[k], one[0][0] + one[1][0], rtol=1e-14)
    # the product grid 3 x 2 (x slowest): neighbours along x at fixed y and along y at fixed x
    grid = np.array([[x, y] for x in (0.0, 1.0, 2.0) for y in (5.0, 6.0)])
    pairs = set(fe.neighbour_pairs(np.ones(6), grid))
    assert pairs == {(0, 2), (2, 4), (1, 3), (3, 5), (0, 1), (2, 3), (4, 5)}


def umbrella_dataset_2d(seed=43, T=80, burn=20, shift=0.0):
    """A two-coordinate umbrella result in the engine's layout: dims (s2, start, window, seed, coordinate,
    time), window_m0 and window_kappa (window, coordinate), from the Gaussian toy on a 5 x 4 grid."""
    x0, y0 = np.linspace(-2, 2, 5), np.linspace(-1.5, 1.5, 4)
    L, m, _, m0, kappa = gaussian_2d(seed, x0, y0, T=T, chains=4)
    J = m0.shape[0]
    L = L.reshape(1, J, 2, 2, T).transpose(0, 2, 1, 3, 4)          # (s2, start, window, seed, time)
    m = m.reshape(1, J, 2, 2, T, 2).transpose(0, 2, 1, 3, 5, 4)    # (s2, start, window, seed, coordinate, time)
    if shift:
        m[:, 1, 9, :, 1] += shift                 # the "ordered" start of window 9 sits elsewhere in y only
    times = np.arange(1, T + 1) * 10
    m[..., times <= burn] = 50.0
    dims = ("s2", "start", "window", "seed", "coordinate", "time")
    coords = {"s2": [1.0], "start": ["prior", "ordered"], "window": np.arange(J), "seed": [0, 1], "time": times,
              "coordinate": ["x", "y"], "window_m0": (("window", "coordinate"), m0),
              "window_kappa": (("window", "coordinate"), kappa)}
    ds = xr.Dataset({"order_parameter_trajectory": (dims, m),
                     "potential_trajectory": (tuple(d for d in dims if d != "coordinate"), L)}, coords=coords)
    return annotate(ds, kind="sims.modular", parameters={"burn_in": burn, "umbrella": True},
                    extra={"umbrella": 1, "umbrella_order_parameter": "x", "umbrella_system_dims": "",
                           "umbrella_coordinates": "x y"})


def test_two_coordinate_dataset_adapter_start_check_and_cli(tmp_path, capsys):
    """The engine's two-coordinate layout: umbrella_arrays keeps the coordinate axis last, the profile along
    either coordinate equals the array entry point's, every coordinate is checked for hidden hysteresis
    (a shift of one start in y alone is found in that window and coordinate only), and the CLI takes
    --coordinate (unknown names refused in one line)."""
    ds = umbrella_dataset_2d()
    arr = fe.umbrella_arrays(ds)
    assert arr.m.shape == (1, 20, 4, 78, 2) and arr.m0_k.shape == (20, 2) and arr.coordinates == ("x", "y")
    assert np.all(arr.m < 10)
    assert np.array_equal(arr.m[0, 9, 2, :, 1], ds["order_parameter_trajectory"].values[0, 1, 9, 0, 1, 2:])
    via_ds = fe.free_energy_from_dataset(ds, bins=20, n_bootstrap=10, coordinate="y", coexistence=False)
    via_arrays = fe.free_energy_from_arrays(arr.L, arr.m, arr.s2_k, arr.m0_k, arr.kappa_k, bins=20, n_bootstrap=10,
                                            axis=1, coexistence=False)
    assert np.array_equal(via_ds.profiles[0].F, via_arrays.profiles[0].F, equal_nan=True)
    assert via_ds.order_parameter == "y"
    assert fe.free_energy_from_dataset(ds, bins=20, n_bootstrap=10, coexistence=False).order_parameter == "x"
    agree = fe.start_agreements(ds)
    assert agree["coordinate"] == "x y" and agree["windows"] == 20 and set(agree["by_coordinate"]) == {"x", "y"}
    assert agree["windows_agree"] >= 19           # 40 comparisons at |z| <= 3: a false alarm at most
    shifted = fe.start_agreements(umbrella_dataset_2d(shift=0.5))
    assert (9, "y") in {(d["window"], d["coordinate"]) for d in shifted["disagree"]}
    assert all(d["window"] != 9 for d in shifted["disagree"] if d["coordinate"] == "x")
    path = save_dataset(ds, tmp_path / "two.nc")
    assert main(["free-energy", str(path), "--coordinate", "y", "--bootstrap", "10", "--bins", "20", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["coordinate"] == "y" and d["order_parameter"] == "y" and d["start_agreement"]["coordinate"] == "x y"
    assert main(["free-energy", str(path), "--coordinate", "z", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown coordinate 'z'" in err[0]
