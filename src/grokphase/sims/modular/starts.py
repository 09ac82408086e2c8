"""Ordered (droplet-saddle) starts of modular networks: the finite-P theory's droplet saddle at the
simulated parameters and the start built from it, with the readout drawn from its exact conditional."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from grokphase.errors import ParameterError
from grokphase.sims.driver import Members, Task
from grokphase.sims.modular.config import DTYPES, ModularSim
from grokphase.sims.modular.readout import gibbs_readout
from grokphase.sims.modular.task import all_pairs, make_task, targets
from grokphase.theory import modular as mt


def theory_phi_plus(sim: ModularSim) -> np.ndarray:
    """Phi_+ (the droplet saddle |w_k|^2) of the finite-P theory per s2 in ``sim.theory_convention``,
    for the droplet rule and the ordered start; NaN where the theory has no droplet saddle (then only
    the frequency-dominance part of the rule applies)."""
    if sim.gamma <= 0 or sim.parametrisation != "paper":
        return np.full(len(sim.s2), np.nan)
    sol = mt.solve(mt.ModularParams(N=float(sim.N), P=float(sim.P), s2=np.asarray(sim.s2), sa2=sim.sa2_value,
                                    gamma=sim.gamma), "saddle", convention=sim.theory_convention, check=False)
    phi = np.asarray(sol.phi_plus, dtype=np.float64)
    return np.where(phi > 0, phi, np.nan)


def theory_droplets_per_mode(sim: ModularSim, s2) -> np.ndarray:
    """N p: droplet neurons per mode of the finite-P theory (saddle method, ``sim.theory_convention``)
    at each s2 (0 where it has no droplet saddle)."""
    sol = mt.solve(mt.ModularParams(N=float(sim.N), P=float(sim.P), s2=np.asarray(s2, np.float64),
                                    sa2=sim.sa2_value, gamma=sim.gamma), "saddle",
                   convention=sim.theory_convention, check=False)
    return np.nan_to_num(sim.N * np.asarray(sol.droplet_fraction, np.float64))


@functools.partial(jax.jit, static_argnames=("P", "N"))
def _ordered_member(key, train_idx, s2, phi_plus, sa2, n_drop, *, P: int, N: int):
    """One network's unit-variance parameters at the theory's droplet saddle (float64); the first
    ``n_drop`` neurons are droplets (cosines), the others prior draws."""
    k_ph, k_u, k_v, k_a = jax.random.split(key, 4)
    k = 1 + jnp.arange(N) % ((P - 1) // 2)                       # frequencies 1..(P-1)/2 in turn
    phase = jax.random.uniform(k_ph, (2, N, 1), jnp.float64, 0.0, 2.0 * jnp.pi)
    arg = 2.0 * jnp.pi * k[:, None] * jnp.arange(P)[None, :] / P
    amp = 2.0 * jnp.sqrt(phi_plus) * (jnp.arange(N) < n_drop)[:, None]   # |w_k|^2 = A^2/4 = Phi_+
    u = amp * jnp.cos(arg + phase[0]) + jax.random.normal(k_u, (N, P), jnp.float64)
    v = amp * jnp.cos(arg + phase[1]) + jax.random.normal(k_v, (N, P), jnp.float64)
    w = jnp.concatenate([u.T, v.T], axis=0)                      # (2P, N); prior std 1: z_w = w
    pairs = jnp.asarray(all_pairs(P))[train_idx]
    xi = jax.random.normal(k_a, (N, P), jnp.float64)
    eps = jax.random.normal(jax.random.fold_in(k_a, 1), (pairs.shape[0], P), jnp.float64) if N > pairs.shape[0] else None
    z_a = gibbs_readout(w, pairs, targets(pairs, P, jnp.float64), jnp.sqrt(sa2 / N), s2, xi, eps)
    return {"a": z_a, "w": w}


def ordered_start(sim: ModularSim, members: Members, task: Task | None = None) -> dict:
    r"""Ordered (droplet) starting parameters for every member, in unit variables (leading member axis).

    Each neuron's input halves are cosines at one frequency k (k = 1..(P-1)/2 in turn over the
    neurons, so every frequency gets about N/((P-1)/2) neurons) with random phases and the theory's
    droplet amplitude |u_k|^2 = |v_k|^2 = Phi_+ (A = 2 sqrt(Phi_+), fourier.py's convention), plus the
    prior's unit Gaussian fluctuations.  Given the input weights the posterior of the readout is
    Gaussian (Bayesian linear regression on the features h^2 at the member's s2), and the readout is
    drawn from it exactly, so the start is the droplet saddle with its readout in equilibrium.
    Phi_+ is the member's ``hyper.phi_plus`` (the finite-P theory at its s2); NaN there is an error.
    ``sim.ordered_droplets``: "all" makes every neuron a droplet; "theory" only the theory's number of
    droplet neurons per mode at the member's s2 (N p in ``sim.theory_convention``, rounded, at least 1
    per mode), the rest prior draws — the droplet saddle of the mixed phase, whose eigenvalue is the
    self-consistent one (with every neuron a droplet the target eigenvalue overshoots and the droplets
    melt, as seen at P <= 23); "coldest" every member as a heating branch starts: the theory's droplet
    count and Phi_+ at the lowest s2 of ``sim.s2``, whatever the member's own s2 (its readout is still
    drawn at its own s2) — above the transition that state is superheated."""
    task = make_task(sim) if task is None else task
    hyper = members.hyper
    phi = np.asarray(hyper.phi_plus, dtype=np.float64)
    s2 = np.asarray(hyper.s2, dtype=np.float64)
    if sim.ordered_droplets == "coldest":
        cold = dataclasses.replace(sim, s2=(float(min(sim.s2)),), ordered_droplets="theory", anneal="none",
                                   replica_exchange=False)
        phi = np.full(s2.size, theory_phi_plus(cold)[0])
    if not np.all(np.isfinite(phi) & (phi > 0)):
        bad = float(s2[np.flatnonzero(~(np.isfinite(phi) & (phi > 0)))[0]])
        raise ParameterError(f"an ordered start needs the theory's droplet saddle, and at s2 = {bad:g} the "
                             "theory has none (u a^2 < sqrt(gamma)); start that branch at a lower s2")
    modes = (sim.P - 1) // 2
    if sim.ordered_droplets in ("theory", "coldest"):
        at = s2 if sim.ordered_droplets == "theory" else np.full(s2.size, min(sim.s2))
        per_mode = np.maximum(1, np.round(theory_droplets_per_mode(sim, at))).astype(int)
        n_drop = np.minimum(per_mode * modes, sim.N)
    else:
        n_drop = np.full(phi.size, sim.N)
    out = []
    for j in range(phi.size):
        hyp = jax.tree_util.tree_map(lambda a, j=j: jnp.asarray(np.asarray(a)[j]), hyper)
        data = task.make_data(jnp.asarray(members.data_keys[j]), hyp)
        key = jax.random.fold_in(jnp.asarray(members.init_keys[j]), 0x0D0)
        z = _ordered_member(key, data["train_idx"], s2[j], phi[j], float(np.asarray(hyper.sa2)[j]), int(n_drop[j]),
                            P=sim.P, N=sim.N)
        out.append(jax.tree_util.tree_map(np.asarray, z))
    dtype = DTYPES[sim.dtype]
    return {name: np.stack([o[name] for o in out]).astype(dtype) for name in ("w", "a")}

