"""Ordered (droplet-saddle) starts of teacher-student networks (issue 8): the theory's droplet saddle
at the simulated sizes, the exact conditional readout draw, and the start itself."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokphase.errors import ParameterError
from grokphase.sims import special
from grokphase.sims.driver import Members, Task, prior_z
from grokphase.sims.teacher_student.config import DTYPES, TeacherStudentSim
from grokphase.sims.teacher_student.task import make_task
from grokphase.theory import teacher_student as tst

class DropletSaddle(NamedTuple):
    """The theory's droplet saddle per s2: overlap q* = |w.w*| of a droplet neuron, its
    t* = |w_perp|^2, and the droplet fraction (NaN / 0 where the theory has no droplet saddle)."""

    q_star: np.ndarray
    t_star: np.ndarray
    fraction: np.ndarray


def droplet_saddle(sim: TeacherStudentSim, s2) -> DropletSaddle:
    """Droplet saddle of the theory chosen by ``sim.ordered_theory`` / ``sim.ordered_approximation`` at
    the simulated (N, n, d, sa2, sw2, eps) and each ``s2``.

    * "finite-d" (default): :func:`~grokphase.theory.teacher_student.solve_finite_d` at exactly these
      sizes: q* = the minimum of the (t-marginal) action S(q) beyond its barrier (``q_droplet``),
      t* = the mean |w_perp|^2 of the neurons beyond the barrier (``t_droplet``; sw2 in the
      concentrated approximation), fraction = the mass beyond the barrier.  No saddle where S(q) has
      no barrier (at small d that happens already somewhat below the scaling limit's s2_c).
    * "limit": the scaling limit (:func:`~grokphase.theory.teacher_student.solve_limit`): q*, t* of the
      droplet saddle of Shat(q, t) (below s2_c: the GMFL-I saddle, above it: the metastable droplet
      minimum of the GFL branch while it exists) and fraction = pi1/d (0 above s2_c)."""
    s2 = np.atleast_1d(np.asarray(s2, np.float64))
    prm = dataclasses.replace(sim.theory_params(), s2=s2)
    appr = sim.ordered_approximation
    if sim.ordered_theory == "finite-d":
        sol = tst.solve_finite_d(prm, approximation=appr)
        has = (np.asarray(sol.q_barrier) > 0) & (np.asarray(sol.q_droplet) > 0)
        q, t, f = sol.q_droplet, sol.t_droplet, sol.droplet_fraction
    else:
        sol = tst.solve_limit(prm, approximation=appr, check=False)
        has = np.asarray(sol.q_star) > 0
        q, t, f = sol.q_star, sol.t_star, sol.droplet_fraction
    nan = lambda a: np.where(has, np.asarray(a, np.float64), np.nan)  # noqa: E731
    return DropletSaddle(nan(q), nan(t), np.where(has, np.asarray(f, np.float64), 0.0))


def conditional_readout(w, x, y, c, s2, xi):
    r"""Exact draw of the readout's unit variables z_a from p(z_a | w) (one network, float64).

    With a = c z_a (c = sqrt(sa2/N), the prior std) and features Phi = erf(x w) (n, N), the output
    f = c Phi z_a is linear in z_a, so given the input layer the readout posterior
    exp(-|f - y|^2/(2 s2) - |z_a|^2/2) is Gaussian: precision Lambda = I + (c^2/s2) Phi^T Phi, mean
    Lambda^{-1} (c/s2) Phi^T y.  Returns mean + chol(Lambda)^{-T} xi for a standard normal xi."""
    w, x, y, xi = (jnp.asarray(v, jnp.float64) for v in (w, x, y, xi))
    phi = special.erf(x @ w)
    N = phi.shape[1]
    Lam = jnp.eye(N) + (c * c / s2) * phi.T @ phi
    chol = jnp.linalg.cholesky(Lam)
    mean = jax.scipy.linalg.cho_solve((chol, True), (c / s2) * phi.T @ y)
    return mean + jax.scipy.linalg.solve_triangular(chol.T, xi, lower=False)


def _ordered_member(z_prior, w_star, x, y, key, q_star, t_star, n_drop, s2, sw2, sa2, d, N):
    """One network's ordered start: neurons 0..n_drop-1 at overlap w.w* = +-q* (random signs) with
    |w_perp|^2 = t* exactly, along the direction of their prior draw's component perpendicular to
    w*; the other neurons keep their prior draws; the readout is the exact conditional draw
    (:func:`conditional_readout`) with the prior's unit draw as its noise."""
    std_w = math.sqrt(sw2 / d)
    zw = jnp.asarray(z_prior["w"], jnp.float64)
    ws = jnp.asarray(w_star, jnp.float64)
    w = std_w * zw                                              # physical prior draw (d, N)
    perp = w - jnp.outer(ws, ws @ w)
    perp = perp / jnp.linalg.norm(perp, axis=0, keepdims=True)
    sign = jnp.where(jax.random.bernoulli(key, 0.5, (N,)), 1.0, -1.0)
    w_drop = ws[:, None] * (sign * q_star)[None, :] + jnp.sqrt(t_star) * perp
    w = jnp.where((jnp.arange(N) < n_drop)[None, :], w_drop, w)
    za = conditional_readout(w, x, y, math.sqrt(sa2 / N), s2, z_prior["a"])
    return {"w": w / std_w, "a": za}


def ordered_start(sim: TeacherStudentSim, members: Members,
                  task: Task | None = None) -> tuple[dict, np.ndarray, DropletSaddle, np.ndarray]:
    r"""Unit-variance parameters of the ordered (droplet-saddle) start of every member (THEORY.md §3,
    §3b), for the member's own data set and s2.

    ``sim.ordered_droplets``: "all" puts every neuron at the saddle, "theory" the theory's number
    round(N x droplet fraction) (at least 1), the rest stay prior draws.  A droplet neuron is
    w = +-q* w* + sqrt(t*) e_perp with a random sign and a random unit e_perp perpendicular to w*
    (the direction of its prior draw's perpendicular part), q* and t* from :func:`droplet_saddle`
    (the exact approximation's t* below sw2, the concentrated one's t* = sw2).  Since p(q) is
    symmetric and flipping (w_i, a_i) -> (-w_i, -a_i) leaves f unchanged, the sign carries no
    physics once the readout matches it.

    Readout: the exact conditional posterior draw given the input layer (:func:`conditional_readout`).
    The mean-field theory integrates the readout out at fixed input weights, so this is the readout
    the saddle describes; a prior draw of a would start the network from f ~ 0 (all learned fractions
    near zero) and let the fast readout relax first, while the conditional draw starts the network
    already at the saddle's function.  The engine samples unit variables z (theta = prior std x z,
    :mod:`grokphase.sims.models`): the input layer is returned as w / sqrt(sw2/d), the readout as z_a.

    Returns (z, droplet neurons per member, the :class:`DropletSaddle` at the distinct s2 values,
    the index of each member's s2 among them).  Raises ParameterError where the theory has no
    droplet saddle at a member's s2 (or, with ordered_droplets = "theory", predicts fewer than half
    a droplet neuron)."""
    task = make_task(sim) if task is None else task
    s2 = np.asarray(members.hyper.s2, np.float64)
    values = np.unique(s2)
    sad = droplet_saddle(sim, values)
    where = f"the {sim.ordered_theory} theory ({sim.ordered_approximation})"
    for v, q, f in zip(values, sad.q_star, sad.fraction):
        if not np.isfinite(q):
            raise ParameterError(f"an ordered start needs the theory's droplet saddle, and {where} has none at "
                                 f"s2 = {v:g} (N = {sim.N}, d = {sim.d}, n = {sim.n}); start that branch at a lower "
                                 "s2, or use ordered_theory = 'limit'")
        if sim.ordered_droplets == "theory" and sim.N * f < 0.5:
            raise ParameterError(f"ordered_droplets = 'theory': {where} predicts {sim.N * f:.2g} droplet neurons at "
                                 f"s2 = {v:g}; use ordered_droplets = 'all' or a lower s2")
    idx = np.searchsorted(values, s2)
    if sim.ordered_droplets == "theory":
        n_drop = np.clip(np.round(sim.N * sad.fraction[idx]), 1, sim.N).astype(int)
    else:
        n_drop = np.full(s2.size, sim.N)
    prior = prior_z(task, members)
    one = jax.jit(_ordered_member, static_argnames=("sw2", "sa2", "d", "N"))
    out = []
    for j in range(s2.size):
        hyp = jax.tree_util.tree_map(lambda a, j=j: jnp.asarray(np.asarray(a)[j]), members.hyper)
        data = task.make_data(jnp.asarray(members.data_keys[j]), hyp)
        key = jax.random.fold_in(jnp.asarray(members.init_keys[j]), 0x0D0)
        zj = jax.tree_util.tree_map(lambda a, j=j: a[j], prior)
        z = one(zj, data["w_star"], data["x"], data["y"], key, float(sad.q_star[idx[j]]), float(sad.t_star[idx[j]]),
                int(n_drop[j]), float(s2[j]), sw2=float(sim.sw2), sa2=float(sim.sa2_value), d=sim.d, N=sim.N)
        out.append(jax.tree_util.tree_map(np.asarray, z))
    dtype = DTYPES[sim.dtype]
    return {name: np.stack([o[name] for o in out]).astype(dtype) for name in ("w", "a")}, n_drop, sad, idx
