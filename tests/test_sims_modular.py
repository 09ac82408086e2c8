"""Modular-addition simulation building blocks: the fast forward pass, the Gamma penalty in the
Langevin potential, prior sampling at high temperature, and input validation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokphase.errors import ParameterError
from grokphase.sims import fourier
from grokphase.sims.modular import ModularSim, SquareNet, all_pairs, make_task, one_hot_forward, run_modular, targets


@pytest.mark.parametrize("P, scale", [(7, 1.0), (12, 0.01)])
def test_fast_forward_equals_one_hot_formulation(P, scale):
    net = SquareNet(N=5, P=P, scale=scale, dtype=jnp.float64)
    pairs = jnp.asarray(all_pairs(P))
    params = net.init(jax.random.PRNGKey(0), pairs[:1])["params"]
    np.testing.assert_allclose(net.apply({"params": params}, pairs), one_hot_forward(params, pairs, P, scale),
                               rtol=1e-12, atol=1e-12)


def test_targets_are_centred_one_hot():
    P = 5
    y = np.asarray(targets(jnp.asarray(all_pairs(P)), P, jnp.float64))
    assert np.allclose(y.sum(axis=1), 0.0)
    assert np.all(np.isclose(y.max(axis=1), 1 - 1 / P)) and y[2 * P + 4, (2 + 4) % P] == pytest.approx(1 - 1 / P)


def test_langevin_potential_includes_s2_gamma_by_fft():
    """The Langevin potential is L + s2 * Gamma[w] with Gamma from the FFT; its gradient equals
    autodiff of the literal direct sum of THEORY.md §4."""
    sim = ModularSim(P=7, N=3, gamma=0.3, s2=(0.4,), dtype="float64")
    task = make_task(sim)
    hyper = type("H", (), {"s2": jnp.asarray(0.4), "gamma": jnp.asarray(0.3)})()
    w = jax.random.normal(jax.random.PRNGKey(1), (14, 3), jnp.float64)
    theta = {"w": w, "a": jnp.zeros((3, 7))}
    direct = lambda ww: 0.4 * fourier.gamma_penalty_direct(ww, 0.3, axis=0)  # noqa: E731
    assert float(task.penalty(theta, hyper)) == pytest.approx(float(direct(w)), rel=1e-12)
    g_fft = jax.grad(lambda ww: task.penalty({"w": ww, "a": theta["a"]}, hyper))(w)
    np.testing.assert_allclose(g_fft, jax.grad(direct)(w), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("readout", ["gibbs", "langevin"])
def test_high_temperature_samples_the_prior(readout):
    """With s2 large the likelihood is negligible: the input layer's unit-variance variables must have
    variance 1/(1 - lr s2/2) (the exact discrete-time prior law of the Langevin step) within standard
    errors; the readout the same with readout="langevin", and exactly 1 (no discretisation bias) when
    it is drawn from its conditional posterior (readout="gibbs")."""
    sim = ModularSim(P=5, N=16, s2=(1e4,), lr=1e-4, seeds=8, steps=400, burn_in=200, record_every=200,
                     dtype="float64", readout=readout)
    ds = run_modular(sim)
    # a_norm2 and w_norm2 are per-neuron squared norms of theta: w has prior std 1 (2P entries),
    # a has prior std sqrt(sa2/N) (P entries)
    k = 1.0 / (1.0 - sim.lr * 1e4 / 2.0)
    k_a = 1.0 if readout == "gibbs" else k
    w2 = ds["w_norm2_trajectory"].values[0, :, -1]
    a2 = ds["a_norm2_trajectory"].values[0, :, -1] / (sim.sa2_value / sim.N)
    for values, dof, kk in ((w2, 2 * sim.P, k), (a2, sim.P, k_a)):
        expected = dof * kk
        se = math.sqrt(2 * dof * kk * kk / sim.N) / math.sqrt(values.size)   # chi^2 per neuron, N neurons
        assert abs(values.mean() - expected) < 5 * se, (values.mean(), expected, se)
    if readout == "gibbs":      # and the Gibbs law is distinguishable from the biased Langevin one
        se = math.sqrt(2 * sim.P / sim.N) / math.sqrt(a2.size)
        assert abs(a2.mean() - sim.P * k) > 5 * se


@pytest.mark.parametrize("kwargs, needle", [
    (dict(P=1), "P must be"), (dict(N=0), "N must be"), (dict(alpha=0.0), "alpha"), (dict(alpha=1.5), "alpha"),
    (dict(s2=(-0.1,)), "s2"), (dict(optimizer="rmsprop"), "optimizer"), (dict(parametrisation="x"), "parametrisation"),
])
def test_bad_input(kwargs, needle):
    with pytest.raises(ParameterError, match=needle):
        ModularSim(**kwargs)


def test_experiment_1_groks_in_time():
    """sims/modular_grok_quick.toml with its fixed seeds: train accuracy >= 0.99 by step 100 while
    the test accuracy is <= 0.1, test accuracy >= 0.95 by the end, and the neurons' Fourier spectra
    concentrate (mean IPR grows at least 4-fold from its Gaussian value 4/(P+1) = 0.067)."""
    import tomllib
    from pathlib import Path

    spec = tomllib.loads((Path(__file__).parent.parent / "sims" / "modular_grok_quick.toml").read_text())
    opts = {k: v for k, v in spec["sim"][0].items() if k not in ("name", "plot")}
    ds = run_modular(ModularSim(**opts))
    t = ds["time"].values
    train, test = ds["train_acc_trajectory"].values[0, 0], ds["test_acc_trajectory"].values[0, 0]
    at100 = int(np.flatnonzero(t == 100)[0])
    assert train[at100] >= 0.99 and test[at100] <= 0.1, (train[at100], test[at100])
    assert test[-1] >= 0.95
    ipr = ds["ipr_trajectory"].values[0, 0]
    assert ipr[0] == pytest.approx(fourier.ipr_gaussian_mean(opts["P"]), rel=0.1)
    assert ipr[-1] >= 4 * ipr[0]
    # generalisation comes long after memorisation
    assert float(ds["t_grok"].values[0, 0]) > float(ds["t_memorise"].values[0, 0])


def test_cli_alpha_list_and_errors(tmp_path, capsys):
    import json

    from grokphase.cli import main
    from grokphase.io import load_dataset

    out = tmp_path / "m.nc"
    assert main(["sim", "modular", "--P", "7", "--N", "4", "--alpha", "0.5,1", "--optimizer", "adamw",
                 "--lr", "0.01", "--steps", "20", "--record-every", "5", "--no-progress", "--out", str(out),
                 "--json"]) == 0
    pts = json.loads(capsys.readouterr().out)["points"]
    assert [p["alpha"] for p in pts] == [0.5, 1.0]
    for p in pts:
        assert 0 <= p["train_acc"] <= 1 and 0 <= p["test_acc"] <= 1 and math.isfinite(p["ipr"])
    ds = load_dataset(out, "sims.modular")
    assert ds.sizes["alpha"] == 2 and ds.sizes["neuron"] == 4
    # at alpha = 1 there is no held-out pair: the test set is the whole table
    full = ds.isel(alpha=1)
    np.testing.assert_allclose(full["test_acc_trajectory"].values, full["train_acc_trajectory"].values)
    for argv in (["--alpha", "0"], ["--alpha", "1.2"], ["--P", "1"], ["--N", "0"]):
        try:
            rc = main(["sim", "modular", "--steps", "5", *argv])
        except SystemExit as exc:
            rc = exc.code
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, (argv, err)


@pytest.mark.parametrize("P, scale", [(7, 1.0), (6, 0.05)])
def test_full_table_algebra_equals_direct_sums(P, scale):
    """The closed-form whole-table loss, its gradient, and the Gibbs readout's F^T F and F^T y equal
    the direct sums over the (P^2, N) hidden layer (float64, to rounding)."""
    from grokphase.sims.modular import full_table_gram, full_table_loss

    N = 5
    key_w, key_a = jax.random.split(jax.random.PRNGKey(P))
    w = jax.random.normal(key_w, (2 * P, N), jnp.float64)
    a = jax.random.normal(key_a, (N, P), jnp.float64)
    pairs = jnp.asarray(all_pairs(P))
    y = targets(pairs, P, jnp.float64)

    def direct(w, a):
        r = one_hot_forward({"w": w, "a": a}, pairs, P, scale) - y
        return 0.5 * jnp.sum(r * r)

    assert float(full_table_loss(w, a, scale)) == pytest.approx(float(direct(w, a)), rel=1e-12)
    g1 = jax.grad(full_table_loss, argnums=(0, 1))(w, a, scale)
    g2 = jax.grad(direct, argnums=(0, 1))(w, a)
    for x, ref in zip(g1, g2):
        np.testing.assert_allclose(x, ref, rtol=1e-10, atol=1e-10 * float(jnp.abs(ref).max()))
    F = (w[pairs[:, 0]] + w[P + pairs[:, 1]]) ** 2
    G, Fy = full_table_gram(w)
    np.testing.assert_allclose(G, F.T @ F, rtol=1e-11)
    np.testing.assert_allclose(Fy, F.T @ y, rtol=1e-10, atol=1e-10 * float(jnp.abs(F.T @ y).max()))


def test_full_table_algebra_gives_the_same_chain():
    """A Langevin run on the whole table with the closed-form sums follows the chain of the direct
    formulation (same keys; float64), so the speed-up changes nothing but the time."""
    sim = ModularSim(P=7, N=6, s2=(0.3,), sa2=1e-3, gamma=0.01, lr=0.02, seeds=2, steps=60, record_every=20,
                     dtype="float64")
    from grokphase.sims.driver import run_ensemble
    from grokphase.sims.modular import build_members

    members, _ = build_members(sim)
    fast = run_ensemble(make_task(sim), members, sim.schedule)
    slow = run_ensemble(make_task(sim, full_table_algebra=False), members, sim.schedule)
    for name in ("w", "a"):
        np.testing.assert_allclose(fast.z[name], slow.z[name], rtol=1e-8, atol=1e-10)
