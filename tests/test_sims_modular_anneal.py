"""Annealing ladders and ordered starts of the modular simulations: the exact Gibbs draw of the
readout, the droplet-saddle start, state carried between temperatures, and resumption."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokphase.errors import ParameterError
from grokphase.sims import fourier
from grokphase.sims.driver import run_ensemble
from grokphase.sims.modular import (ModularSim, build_ladder_members, build_members, gibbs_readout, make_task,
                                    ordered_start, run_modular)


@pytest.mark.parametrize("N, n, seed", [(4, 17, 3), (23, 9, 5)])
def test_gibbs_readout_is_the_exact_conditional_posterior(N, n, seed):
    """Given w, the readout posterior is Bayesian linear regression on the features h^2: precision
    I + (c^2/s2) F^T F, mean Lambda^-1 (c/s2) F^T y per output.  The draw's mean (xi = eps = 0) and its
    linear map (xi, eps) -> draw - mean (whose square is the covariance) are checked against NumPy's
    N x N algebra, for N <= n (primal form; eps unused) and for N > n, where the draw is the dual form
    z = xi + c F^T K^-1 (y - c F xi - sqrt(s2) eps), K = c^2 F F^T + s2 I (a wrong sign or a missing
    sqrt(s2) there fails the covariance)."""
    rng = np.random.default_rng(seed)
    P, c, s2 = 5, 0.3, 0.2
    w = rng.normal(size=(2 * P, N))
    pairs = np.stack([rng.integers(0, P, n), rng.integers(0, P, n)], axis=1)
    y = rng.normal(size=(n, P))
    F = (w[pairs[:, 0]] + w[P + pairs[:, 1]]) ** 2
    Lam = np.eye(N) + (c * c / s2) * F.T @ F
    mean = np.linalg.solve(Lam, (c / s2) * F.T @ y)
    args = (jnp.asarray(w), jnp.asarray(pairs), jnp.asarray(y), c, s2)
    draw = jax.jit(gibbs_readout)
    zN, zn = jnp.zeros((N, P)), jnp.zeros((n, P))
    np.testing.assert_allclose(np.asarray(draw(*args, zN, zn)), mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(draw(*args, zN, None)), mean, rtol=1e-10, atol=1e-12)
    cols = [np.asarray(draw(*args, zN.at[j, 2].set(1.0), zn))[:, 2] for j in range(N)]
    cols += [np.asarray(draw(*args, zN, zn.at[k, 2].set(1.0)))[:, 2] for k in range(n)]
    M = np.stack(cols, axis=1) - mean[:, 2:3]
    np.testing.assert_allclose(M @ M.T, np.linalg.inv(Lam), rtol=1e-9, atol=1e-12)


def _theory_sim(**kw):
    base = dict(P=11, N=8, alpha=1.0, s2=(0.1, 0.14), sa2=4e-4 * (23 / 11) ** 2, gamma=0.01, optimizer="langevin",
                lr=0.01, seeds=2, steps=40, burn_in=20, record_every=10, dtype="float64")
    base.update(kw)
    return ModularSim(**base)


def test_ordered_start_is_the_droplet_saddle():
    """Every neuron of the ordered start is a cosine at one frequency (1..(P-1)/2 in turn) on both
    input halves with |u_k|^2 = |v_k|^2 = Phi_+ up to the prior's unit fluctuations (the mode
    amplitude of unit Gaussian noise is 1/P per k), so the droplet rule counts every neuron."""
    sim = _theory_sim(P=23, N=33, s2=(0.1,), start="ordered", seeds=1)
    members, _ = build_members(sim)
    z = ordered_start(sim, members)
    phi = float(members.hyper.phi_plus[0])
    assert np.isfinite(phi) and phi > 1.0
    w = z["w"][0]
    u, v = w[: sim.P].T, w[sim.P:].T                                 # (N, P)
    K = (sim.P - 1) // 2
    expect_k = 1 + np.arange(sim.N) % K
    for half in (u, v):
        np.testing.assert_array_equal(np.asarray(fourier.dominant_frequency(half)), expect_k)
        amp = np.asarray(fourier.mode_power(half, jnp.asarray(expect_k)))           # single mode |u_k|^2
        # |A/2 e^{i phi} + eta|^2 with E|eta|^2 = 1/P: mean Phi_+ + 1/P, sd ~ sqrt(2 Phi_+/P)
        assert abs(amp.mean() - phi - 1 / sim.P) < 4 * np.sqrt(2 * phi / sim.P / sim.N), (amp.mean(), phi)
    assert np.all(np.asarray(fourier.droplet_mask(u, v, phi)))


def test_ordered_start_needs_a_droplet_saddle():
    sim = _theory_sim(s2=(2.0,), start="ordered")                    # GFL, u a^2 < sqrt(gamma): no saddle
    with pytest.raises(ParameterError, match="s2 = 2"):
        run_modular(sim)


def test_ladder_branches_carry_the_state():
    """anneal="both": the cooling branch's first stage (highest s2) is an ordinary run from the prior,
    and its second stage continues from the first's end state with stage-1 noise; the heating
    branch starts from the ordered saddle at the lowest s2.  Each is recomputed here by hand with
    run_ensemble, and the Dataset must put every stage at its s2."""
    sim = _theory_sim(anneal="both")
    ds = run_modular(sim)
    assert list(ds["branch"].values) == ["cooling", "heating"] and list(ds["s2"].values) == [0.1, 0.14]
    task = make_task(sim)
    members, stages, _ = build_ladder_members(sim)
    K = sim.seeds
    sel = lambda tree, sl: jax.tree_util.tree_map(lambda a: np.asarray(a)[sl], tree)  # noqa: E731
    fold = lambda keys, s: np.asarray(jax.vmap(lambda k: jax.random.fold_in(k, s))(jnp.asarray(keys)))  # noqa: E731
    # cooling: s2 = 0.14 (stage 0, prior), then 0.1 (stage 1, carried)
    cool = sel(members, slice(0, K))
    m0 = cool._replace(noise_keys=fold(cool.noise_keys, 0), hyper=sel(stages[0], slice(0, K)))
    out0 = run_ensemble(task, m0, sim.schedule)
    m1 = cool._replace(noise_keys=fold(cool.noise_keys, 1), hyper=sel(stages[1], slice(0, K)))
    out1 = run_ensemble(task, m1, sim.schedule, initial_z=out0.z)
    got = ds["target_component_trajectory"].sel(branch="cooling")
    np.testing.assert_allclose(got.sel(s2=0.14).values, out0.records["target_component"], rtol=1e-12)
    np.testing.assert_allclose(got.sel(s2=0.1).values, out1.records["target_component"], rtol=1e-12)
    # heating: the first stage is at the lowest s2 and starts ordered (a large target component)
    heat = ds["target_component_trajectory"].sel(branch="heating", s2=0.1).values
    assert np.all(heat[:, 0] > 5 * np.abs(got.sel(s2=0.14).values[:, 0]).max())
    # a run from the prior at 0.14 is not what stage 1 of cooling (0.1) gives: the state was carried
    assert not np.allclose(out1.records["target_component"], out0.records["target_component"])


def test_ladder_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    sim = _theory_sim(anneal="down", steps=30, record_every=10, burn_in=10)
    full = run_modular(sim)
    with pytest.raises(Exception, match="stopped after"):
        run_modular(sim, checkpoint_dir=str(tmp_path), checkpoint_every=0.0, _stop_after_records=2)
    resumed = run_modular(sim, checkpoint_dir=str(tmp_path), checkpoint_every=0.0)
    for name in ("target_component_trajectory", "w_norm2_trajectory", "target_component"):
        np.testing.assert_array_equal(resumed[name].values, full[name].values)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(anneal="down", optimizer="adamw"), "needs --optimizer langevin"),
    (dict(anneal="down", s2=(0.1,)), "at least two distinct"),
    (dict(anneal="sideways"), "unknown anneal"),
    (dict(start="ordered", gamma=0.0), "gamma > 0"),
    (dict(readout="exact"), "unknown readout"),
])
def test_bad_anneal_input(kwargs, needle):
    with pytest.raises(ParameterError, match=needle):
        _theory_sim(**kwargs)


def test_dataclass_replace_keeps_validation():
    with pytest.raises(ParameterError):
        dataclasses.replace(_theory_sim(), start="sideways")



def test_ordered_start_coldest_copies_the_heating_start_to_every_s2():
    """ordered_droplets = "coldest": every member starts as a heating branch does — the theory's droplet
    count per mode and Phi_+ at the lowest s2 — even at an s2 beyond the supercooled spinodal, where the
    theory has no droplet saddle (there "theory" must refuse)."""
    import math

    P, N, gamma, s1 = 23, 384, 0.3, 4e-4
    sa2 = s1 ** 2 * N * math.sqrt(gamma) / (math.sqrt(3) * P ** 2)
    base = dict(P=P, N=N, s2=(0.9 * s1, 1.1 * s1), sa2=sa2, gamma=gamma, optimizer="langevin", lr=30.0, seeds=1,
                steps=10, record_every=10, start="ordered", theory_convention="network")
    sim = ModularSim(**base, ordered_droplets="coldest")
    members, _ = build_members(sim)
    assert np.isnan(np.asarray(members.hyper.phi_plus)[1])                  # no saddle at 1.1 s1
    z = ordered_start(sim, members)
    from grokphase.sims.modular import theory_droplets_per_mode, theory_phi_plus

    cold = ModularSim(**{**base, "s2": (0.9 * s1,)}, ordered_droplets="theory")
    phi = float(theory_phi_plus(cold)[0])
    n_drop = 11 * int(round(float(theory_droplets_per_mode(cold, [0.9 * s1])[0])))
    assert 200 < n_drop < 320                                  # ~22 per mode (saddle method) over 11 modes
    for j in range(2):
        w = z["w"][j]
        u, v = w[:P].T, w[P:].T
        mask = np.asarray(fourier.droplet_mask(u, v, phi))
        # the droplet rule (power at Phi_+ within 50 %) misses a few droplets to the prior noise (1/P per mode)
        assert mask[:n_drop].mean() > 0.95 and mask[n_drop:].mean() < 0.01, (j, mask[:n_drop].mean(), mask[n_drop:].mean())
    with pytest.raises(ParameterError, match="s2 = 0.00044"):
        ordered_start(dataclasses.replace(sim, ordered_droplets="theory"), members)
