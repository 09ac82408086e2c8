"""Benchmark: the modular-addition Langevin engine against PyTorch eager and the one-hot JAX formulation.

Issue 5: network-steps/s at P = 97, N = 500, the full P^2 table, float32, against a PyTorch eager
implementation of the same full-batch step (default threads and one thread) and against the
one-hot-matmul JAX formulation; target >= 2x PyTorch with default threads.

Follows /work/shared/BENCHMARKING.md and mirrors ``bench_sims_ts.py`` (whose helpers it imports):
threads pinned before JAX is imported, compilation excluded (the first call of each implementation
compiles and is reported on its own), interleaved rounds (order alternating) with the median/min/max
of the per-round time ratios, process CPU seconds per wall second and the load average next to every
figure, peak RSS, answer checks (the run fails without writing results if any implementation
disagrees), JSON lines appended to ``benchmarks/results/sims_modular.jsonl``.

What is timed: K Langevin steps of an ensemble of M networks, the engine's
``advance_v(state, data, hyper, noise_keys, K)`` from ``driver._make_functions(task,
driver.default_group(n_devices, task))`` (the inner loop of ``run_ensemble`` between record times,
without observations or host transfers), sim = ModularSim(P=97, N=500, alpha=1, s2=(0.2,), gamma=1e-4,
sa2 = 0.002/N (paper default), optimizer="langevin", lr=0.02, readout="langevin", seeds=M).  Every
implementation runs the same chain in the engine's unit variables (theta = prior_std z; prior std 1
for w, sqrt(sa2/N) for a):  z <- z - lr (dU/dz + s2 z) + sqrt(2 lr s2) xi,
U = 1/2 sum_table (f - y)^2 + s2 Gamma[w].

Work count.  The direct formulations (engine_direct, onehot, torch) are credited 6 P^3 N FLOP per
network-step = 2.74 GFLOP: the forward product (h^2)(P^2, N) x a(N, P) and the two backward products
(h^2)^T r (dL/da) and r a^T (dL/dh^2), 2 P^2 N P each.  Not counted: the O(P^2 N) element-wise work,
the gather/scatter (or broadcast/sum) between w and h, and the FFTs of Gamma (O(P log P N)).  The
one-hot formulation also executes X w and X^T dL/dh (8 P^3 N more); it is credited with the same
6 P^3 N.  The engine's closed form (``modular.full_table_loss``) never forms the (P^2, N) layer; its
own count is 18 N^2 P + 24 N P^2 = 0.549 GFLOP per network-step (FLOP_CLOSED_PER_NET_STEP: the forward
has three (N, P) x (P, N) Gram products a a^T, u^T u, v^T v (2 N^2 P each) and four (P, N) x (N, P)-sized
products (u^2) a, (v^2) a, u^T A, v^T B (2 N P^2 each); reverse-mode autodiff adds two products of the
same size per product; the FFT convolution u_i * v_i, Gamma's FFTs and the O(N^2 + N P) element-wise
work are not counted), 5.0x fewer than 6 P^3 N.  Every record reports network-steps/s, "equivalent"
GFLOP/s on the 6 P^3 N basis (``gflops``, ``pct_roofline_f32``: the same work unit for every
implementation, so equivalent GFLOP/s are proportional to network-steps/s) and, for the closed form,
its own GFLOP/s (``gflops_own``, ``pct_roofline_f32_own``).

Implementations:

  engine         grokphase.sims.modular as run_ensemble uses it: ``make_task(sim)`` (SquareNet; on the
                 whole table with N < P^2 the closed-form loss ``full_table_loss``, O(N^2 P); checked
                 at set-up), Flax + Optax
                 Langevin, autodiff, Gamma by FFT; ``driver.default_group(1, task)`` = Task.cpu_group
                 = 1 (lax.map over single networks) on one CPU device, one vmap sharded over the
                 member axis on 2 devices.
  engine_direct  the same with ``make_task(sim, full_table_algebra=False)``: the direct gather
                 formulation h = w[n] + w[P + m] over the (P^2, N) hidden layer (the engine before
                 commit 425bcee; with group 1 it is the earlier run's ``engine_tuned`` without its
                 dense-DFT Gamma, which was measured to do nothing), same grouping/sharding.
  onehot         pure JAX: f = ((X w)^2) a with the explicit one-hot X (P^2, 2P)
                 (``modular.one_hot_forward``), Gamma by ``fourier.gamma_penalty``, autodiff,
                 jit(vmap(fori_loop)), the engine's noise streams (so its z must follow the engine's).
  torch_1thread  benchmarks/torch_baseline_modular.py: eager, batched over the ensemble, broadcast
                 h[n, m] = u_n + v_m, torch.bmm, hand-written backward, Gamma by torch.fft (the direct
                 formulation); torch.set_num_threads(1).
  torch_default  the same with torch.set_num_threads(os.cpu_count()) (torch's default when
                 OMP_NUM_THREADS is unset; benchenv sets it to 1).
  roofline       jnp.dot of two 2048 x 2048 float32 matrices, timed in every round.

Settings (as bench_sims_ts.py): the main process with ``--pin-cpu`` (recommended) runs everything on
one core (engine, engine_direct, onehot, torch_1thread, one-core roofline); the ``--worker devices``
subprocess uses both cores: engine and engine_direct on 1 host device (XLA's intra-op threads use
both cores) and on 2 host devices (member axis sharded as run_ensemble does), torch with its default
threads (os.cpu_count() = torch.get_num_threads() without OMP_NUM_THREADS; the effective count is
recorded), and the dot on 1 and 2 devices.  Without --pin-cpu the main process also times
torch_default.

Answer checks (any failure: exit without writing): (1) the gradient dU/dz at the common start, each
implementation against the engine's own (``task.loss + task.penalty`` through ``scale_params``,
autodiff; the closed form): max |g - g_engine| / max |g_engine| per leaf <= 1e-4 (float32), and every
float32 gradient, the engine's included, against the float64 one-hot gradient (recorded; the float32
rounding level), and torch's hand-written Gamma gradient against jax.grad(fourier.gamma_penalty) on
w scaled so that Gamma dominates; (1b) the closed form's cancellation where the loss is small: at the
theory's ordered (droplet) start at s2 = 0.002 (loss ~1e2, against ~4.7e3 at the prior start, while
the closed form's two big sums stay ~P^2/2 each) the float32 closed-form and direct gradients against
the float64 direct gradient, same tolerance 1e-4; (2) one step from the same state with the engine's
noise: max |drift - engine's| <= 2e-5 (z is O(1)); (3) after the timed steps: ensemble means of the
train MSE, <z_w^2> and <z_a^2> within 5 standard errors of the engine's, and the one-hot and
engine_direct z (same noise) within 1e-3 of the engine's everywhere; (4) the 1- and 2-device engine
and engine_direct runs give the same z as the 1-device engine.

Usage: python benchmarks/bench_sims_modular.py --pin-cpu [--pairs 7] [--quick] [--M 4] [--block-s 0.6]
       [--impls engine,engine_direct,onehot,torch_1thread] [--skip-devices] [--out FILE] [--no-write]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# First: bench_sims_ts imports benchenv (thread variables, --pin-cpu) before numpy/jax load and, for
# ``--worker devices``, resets the affinity to all cores and configures 2 host devices.
import bench_sims_ts as bst  # noqa: E402
import benchenv  # noqa: E402
from benchenv import PINNED, THREAD_ENV, peak_rss_mb, stats, versions  # noqa: E402

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from grokphase.sims import driver, fourier, langevin, modular  # noqa: E402
from grokphase.sims.models import scale_params  # noqa: E402
from grokphase.sims.modular import ModularSim, all_pairs, build_members, make_task, one_hot_forward  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "sims_modular.jsonl"
PROVENANCE = {Path(m.__file__).name: benchenv.SolverProvenance(m.__file__)
              for m in (driver, modular, fourier, langevin)}

P, N = 97, 500
LR, S2, GAMMA = 0.02, 0.2, 1e-4
FLOP_PER_NET_STEP = 6.0 * P ** 3 * N                            # the direct formulations (equivalent basis)
FLOP_CLOSED_PER_NET_STEP = 18.0 * N ** 2 * P + 24.0 * N * P ** 2  # full_table_loss + its autodiff (own count)
CLOSED_FORM = {"engine", "engine_1dev", "engine_2dev"}       # the implementations that run the closed form
ORDERED_S2 = 0.002                                              # the cancellation check's state (1b)
GRAD_RTOL, DRIFT_ATOL, SHARED_Z_ATOL, STATS_SIGMAS = 1e-4, 2e-5, 1e-3, 5.0
ROOF_N = 2048
log = bst.log
#: the readout a takes the same Langevin step as w (newer sources also offer an exact Gibbs draw of a,
#: readout="gibbs"; that is a different, costlier step and not what the issue compares)
READOUT = {"readout": "langevin"} if "readout" in {f.name for f in dataclasses.fields(ModularSim)} else {}


class Setup:
    """The engine's sim, data and initial state for M networks (shared by every implementation)."""

    def __init__(self, M, n_devices=1, lr=LR):
        self.M, self.dtype_name, self.dtype = M, "float32", jnp.float32
        self.sim = ModularSim(P=P, N=N, alpha=1.0, s2=(S2,), gamma=GAMMA, optimizer="langevin", lr=lr, seeds=M,
                              dtype="float32", **READOUT)
        self.task = make_task(self.sim)                                   # the default: closed form on the table
        self.task_direct = make_task(self.sim, full_table_algebra=False)  # the direct gather formulation
        # make_task caches its Tasks: the default is the closed form here (alpha = 1 and, since 054d1a2, N < P^2)
        assert self.task is make_task(self.sim, full_table_algebra=True), "make_task(sim) is not the closed form"
        members, _ = build_members(self.sim)
        self.group = driver.default_group(n_devices, self.task)
        self.group_direct = driver.default_group(n_devices, self.task_direct)
        self.fns = driver._make_functions(self.task, self.group)
        self.fns_direct = driver._make_functions(self.task_direct, self.group_direct)
        init_v, data_v, _, _ = self.fns
        self.hyper = jax.tree_util.tree_map(jnp.asarray, members.hyper)
        self.dk, self.ik, self.nk = (jnp.asarray(k) for k in members[:3])
        self.data = data_v(self.dk, self.hyper)
        self.z0 = {k: np.asarray(v) for k, v in init_v(self.dk, self.ik, self.hyper).z.items()}
        h = members.hyper
        self.hp_np = (np.sqrt(h.sa2 / N), np.asarray(h.lr), np.asarray(h.s2), np.asarray(h.gamma))  # std_a, lr, s2, gamma
        self.pairs = jnp.asarray(all_pairs(P))
        self.y_np = np.asarray(modular.targets(all_pairs(P), P, jnp.float64))

    def engine_state(self):
        return self.fns[0](self.dk, self.ik, self.hyper)

    def hp(self, dtype=jnp.float32):
        return tuple(jnp.asarray(v, dtype) for v in self.hp_np)

    def engine_noise(self, step):
        """The engine's standard normals at ``step``: (xi_w, xi_a) per member."""
        def one(key):
            k = jax.random.fold_in(key, step)
            return (jax.random.normal(jax.random.fold_in(k, bst.NOISE_ID_W), (2 * P, N), self.dtype),
                    jax.random.normal(jax.random.fold_in(k, bst.NOISE_ID_A), (N, P), self.dtype))
        return tuple(np.asarray(v) for v in jax.vmap(one)(self.nk))

    def torch_ensemble(self, seed=0, dtype="float32"):
        import torch_baseline_modular as tm

        return tm.TorchModularEnsemble(P, self.z0["w"], self.z0["a"], *self.hp_np, dtype=dtype, seed=seed)

    def observables(self, zw, za):
        """Per member: train MSE over the full table, mean z_w^2, mean z_a^2 (float64, host)."""
        zw, za = np.asarray(zw, np.float64), np.asarray(za, np.float64)
        mse = np.empty(self.M)
        for m in range(self.M):
            h = (zw[m, :P, None, :] + zw[m, None, P:, :]).reshape(P * P, N)
            f = (h * h) @ (self.hp_np[0][m] * za[m])
            mse[m] = np.mean((f - self.y_np) ** 2)
        return dict(train_mse=mse, zw2=np.mean(zw ** 2, axis=(1, 2)), za2=np.mean(za ** 2, axis=(1, 2)))


# ==================================================================================================
# the one-hot JAX formulation and the engine's gradient


def _onehot_potential(z, pairs, y, hp):
    std_a, _, s2, gamma = hp
    f = one_hot_forward({"w": z["w"], "a": std_a * z["a"]}, pairs, P)       # ((X w)^2) a, X one-hot (P^2, 2P)
    r = f - y
    return 0.5 * jnp.sum(r * r) + s2 * fourier.gamma_penalty(z["w"], gamma, axis=0)


@functools.lru_cache(maxsize=1)
def make_onehot():
    """jit(vmap(fori_loop)) advance((z, step), pairs, y, hp, noise_keys, n_steps) with the engine's noise."""
    def chain(state, pairs, y, hp, key, n_steps):
        z, step0 = state
        _, lr, s2, _ = hp
        scale = jnp.sqrt(2.0 * lr * s2)

        def body(i, z):
            g = jax.grad(_onehot_potential)(z, pairs, y, hp)
            k = jax.random.fold_in(key, step0 + i)
            ids = {"a": bst.NOISE_ID_A, "w": bst.NOISE_ID_W}
            return {n: z[n] + ((-lr) * (g[n] + s2 * z[n])
                               + scale * jax.random.normal(jax.random.fold_in(k, ids[n]), z[n].shape, z[n].dtype))
                    for n in z}

        return jax.lax.fori_loop(0, n_steps, body, z), step0 + n_steps

    return jax.jit(jax.vmap(chain, in_axes=(0, None, None, 0, 0, None)), donate_argnums=0)


def engine_grad_fn(task):
    """The engine's (U, dU/dz) per member, built exactly as driver._member_step builds its potential."""
    def potential(z, data, hyper):
        theta = scale_params(z, task.prior_std(z, hyper))
        return task.loss(theta, data) + task.penalty(theta, hyper)

    return jax.jit(jax.vmap(jax.value_and_grad(potential)))


# ==================================================================================================
# answer checks


def _rel(g, ref):
    return float(max(np.abs(np.asarray(g[k], np.float64) - ref[k]).max() / np.abs(ref[k]).max() for k in ref))


def gradient_check(cfg: Setup, which):
    """max |g - g_ref| / max |g_ref| per leaf, max over leaves, against the engine (and the float64 one-hot)."""
    import torch

    import torch_baseline_modular as tm

    z0 = {k: jnp.asarray(v) for k, v in cfg.z0.items()}
    _, g_eng = engine_grad_fn(cfg.task)(z0, cfg.data, cfg.hyper)
    g_eng = {k: np.asarray(v, np.float64) for k, v in g_eng.items()}
    grad_oh = jax.jit(jax.vmap(jax.grad(_onehot_potential), in_axes=(0, None, None, 0)))
    y32, y64 = jnp.asarray(cfg.y_np, jnp.float32), jnp.asarray(cfg.y_np)
    g64 = grad_oh({k: jnp.asarray(v, jnp.float64) for k, v in cfg.z0.items()}, cfg.pairs, y64, cfg.hp(jnp.float64))
    g64 = {k: np.asarray(v) for k, v in g64.items()}
    grads = {"engine": g_eng}
    if "engine_direct" in which:
        grads["engine_direct"] = engine_grad_fn(cfg.task_direct)(z0, cfg.data, cfg.hyper)[1]
    if "onehot" in which:
        grads["onehot"] = grad_oh(z0, cfg.pairs, y32, cfg.hp())
    if any(n.startswith("torch") for n in which):
        torch.set_num_threads(1)
        with torch.inference_mode():
            _, gw, ga = cfg.torch_ensemble().grads()
        grads["torch"] = {"w": gw.numpy(), "a": ga.numpy()}
    out = {name: dict(vs_engine=_rel(g, g_eng), vs_float64=_rel(g, g64)) for name, g in grads.items()}
    # Gamma's gradient alone, where it dominates (at the start it is ~1e-4 of dL/dw): w scaled by 10
    w = 10.0 * cfg.z0["w"]
    gam = np.asarray(cfg.hp_np[3])
    ref = jax.vmap(jax.grad(lambda ww, g: fourier.gamma_penalty(ww, g, axis=0)))(jnp.asarray(w), jnp.asarray(gam, jnp.float32))
    tg = tm.gamma_grad(torch.as_tensor(w), torch.as_tensor(gam, dtype=torch.float32)).numpy()
    out["torch_gamma_grad"] = dict(vs_engine=_rel({"w": tg}, {"w": np.asarray(ref, np.float64)}))
    return out


def ordered_gradient_check(M=2, s2=ORDERED_S2):
    """(1b) The closed form's cancellation where the loss is small: at the ordered (droplet) start at
    ``s2`` the float32 closed-form and float32 direct gradients of U = L + s2 Gamma against the
    float64 direct one (max |g - g_ref| / max |g_ref| per leaf, max over leaves), and the losses."""
    out, grads, losses = {}, {}, {}
    for dt in ("float64", "float32"):
        sim = ModularSim(P=P, N=N, alpha=1.0, s2=(s2,), gamma=GAMMA, optimizer="langevin", lr=LR, seeds=M,
                         dtype=dt, **READOUT)
        members, _ = build_members(sim)
        hyper = jax.tree_util.tree_map(jnp.asarray, members.hyper)
        for form, ft in (("direct", False), ("closed", True)):
            if dt == "float64" and form == "closed":
                continue
            task = make_task(sim, full_table_algebra=ft)
            data = driver._make_functions(task, 1)[1](jnp.asarray(members[0]), hyper)
            z = {k: jnp.asarray(v, dt) for k, v in modular.ordered_start(sim, members, task).items()}
            loss = jax.jit(jax.vmap(lambda z, d, h, task=task: task.loss(scale_params(z, task.prior_std(z, h)), d)))
            losses[(form, dt)] = np.asarray(loss(z, data, hyper), np.float64)
            g = engine_grad_fn(task)(z, data, hyper)[1]
            grads[(form, dt)] = {k: np.asarray(v, np.float64) for k, v in g.items()}
    ref, lref = grads[("direct", "float64")], losses[("direct", "float64")]
    for form in ("closed", "direct"):
        g = grads[(form, "float32")]
        out[form] = dict(grad_rel_err_vs_float64=_rel(g, ref),
                         grad_rel_err_per_leaf={k: float(np.abs(g[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in ref},
                         loss_abs_err=float(np.abs(losses[(form, "float32")] - lref).max()))
    out["s2"], out["loss_float64"] = s2, [float(v) for v in lref]
    return out


def drift_check(cfg: Setup, which):
    """One step from z0 with the engine's noise: max |drift - engine's drift| (absolute; z is O(1))."""
    import torch

    _, _, advance_v, _ = cfg.fns
    xi_w, xi_a = cfg.engine_noise(0)
    scale = np.sqrt(2.0 * cfg.hp_np[1] * cfg.hp_np[2]).astype(np.float32)[:, None, None]
    first = {}
    t0 = time.perf_counter()
    s = jax.block_until_ready(advance_v(cfg.engine_state(), cfg.data, cfg.hyper, cfg.nk, jnp.int32(1)))
    first["engine"] = time.perf_counter() - t0
    ref_w, ref_a = np.asarray(s.z["w"]) - scale * xi_w, np.asarray(s.z["a"]) - scale * xi_a

    def err(w, a):
        return float(max(np.abs((w - scale * xi_w) - ref_w).max(), np.abs((a - scale * xi_a) - ref_a).max()))

    out = {}
    if "engine_direct" in which:
        t0 = time.perf_counter()
        st = jax.block_until_ready(cfg.fns_direct[2](cfg.engine_state(), cfg.data, cfg.hyper, cfg.nk, jnp.int32(1)))
        first["engine_direct"] = time.perf_counter() - t0
        out["engine_direct"] = err(np.asarray(st.z["w"]), np.asarray(st.z["a"]))
    if "onehot" in which:
        t0 = time.perf_counter()
        z1, _ = jax.block_until_ready(make_onehot()(
            ({k: jnp.asarray(v) for k, v in cfg.z0.items()}, jnp.zeros((cfg.M,), jnp.int32)), cfg.pairs,
            jnp.asarray(cfg.y_np, jnp.float32), cfg.hp(), cfg.nk, jnp.int32(1)))
        first["onehot"] = time.perf_counter() - t0
        out["onehot"] = err(np.asarray(z1["w"]), np.asarray(z1["a"]))
    if any(n.startswith("torch") for n in which):
        torch.set_num_threads(1)
        ens = cfg.torch_ensemble()
        with torch.inference_mode():
            ens.step(noise=(xi_w, xi_a))
        out["torch"] = err(*ens.state())
    return out, first


def run_checks(cfg: Setup, which):
    grads = gradient_check(cfg, which)
    log("  gradient check, max|g - g_engine|/max|g_engine| (vs float64 one-hot): " + ", ".join(
        f"{k} {v['vs_engine']:.1e}" + (f" ({v['vs_float64']:.1e})" if "vs_float64" in v else "")
        for k, v in grads.items()) + f"; tol {GRAD_RTOL:g}")
    ordered = ordered_gradient_check()
    log(f"  ordered start at s2 = {ORDERED_S2:g} (loss {min(ordered['loss_float64']):.0f}-{max(ordered['loss_float64']):.0f}): "
        "float32 gradient vs float64 direct: " + ", ".join(
            f"{f} {ordered[f]['grad_rel_err_vs_float64']:.1e} (a {ordered[f]['grad_rel_err_per_leaf']['a']:.1e}, "
            f"w {ordered[f]['grad_rel_err_per_leaf']['w']:.1e}; |dL| {ordered[f]['loss_abs_err']:.1e})"
            for f in ("closed", "direct")) + f"; tol {GRAD_RTOL:g}")
    drifts, first = drift_check(cfg, which)
    log("  one-step drift, max|drift - engine's|: " + ", ".join(f"{k} {v:.1e}" for k, v in drifts.items())
        + f"; tol {DRIFT_ATOL:g}")
    bad = {k: v["vs_engine"] for k, v in grads.items() if not v["vs_engine"] <= GRAD_RTOL}
    bad.update({k: v for k, v in drifts.items() if not v <= DRIFT_ATOL})
    bad.update({f"ordered_{f}": ordered[f]["grad_rel_err_vs_float64"] for f in ("closed", "direct")
                if not ordered[f]["grad_rel_err_vs_float64"] <= GRAD_RTOL})
    if bad:
        raise SystemExit(f"ANSWER CHECK FAILED: {bad}")
    return grads, drifts, first, ordered


# ==================================================================================================
# implementations and timing


def build_impls(cfg: Setup, which):
    import torch

    impls = []
    if "engine" in which:
        _, _, advance_v, _ = cfg.fns
        box = {"s": cfg.engine_state()}

        def run(K, box=box, advance_v=advance_v):
            box["s"] = advance_v(box["s"], cfg.data, cfg.hyper, cfg.nk, jnp.int32(K))
            jax.block_until_ready(box["s"])

        impls.append(bst.Impl("engine", run, lambda box=box: (box["s"].z["w"], box["s"].z["a"]), "xla 1 core"))
    if "engine_direct" in which:
        adv = cfg.fns_direct[2]
        box = {"s": cfg.engine_state()}

        def run(K, box=box, adv=adv):
            box["s"] = adv(box["s"], cfg.data, cfg.hyper, cfg.nk, jnp.int32(K))
            jax.block_until_ready(box["s"])

        impls.append(bst.Impl("engine_direct", run, lambda box=box: (box["s"].z["w"], box["s"].z["a"]), "xla 1 core"))
    if "onehot" in which:
        adv, y, hp = make_onehot(), jnp.asarray(cfg.y_np, jnp.float32), cfg.hp()
        box = {"s": ({k: jnp.asarray(v) for k, v in cfg.z0.items()}, jnp.zeros((cfg.M,), jnp.int32))}

        def run(K, box=box, adv=adv, y=y, hp=hp):
            box["s"] = adv(box["s"], cfg.pairs, y, hp, cfg.nk, jnp.int32(K))
            jax.block_until_ready(box["s"])

        impls.append(bst.Impl("onehot", run, lambda box=box: (box["s"][0]["w"], box["s"][0]["a"]), "xla 1 core"))
    for name, nthr in (("torch_default", os.cpu_count()), ("torch_1thread", 1)):
        if name in which:
            ens = cfg.torch_ensemble(seed=1 + len(impls))

            def run(K, ens=ens, nthr=nthr):
                torch.set_num_threads(nthr)
                ens.advance(K)

            impls.append(bst.Impl(name, run, lambda ens=ens: ens.state(), f"torch {nthr} thread(s)"))
    return impls


def make_dot():
    a = jax.random.normal(jax.random.PRNGKey(0), (ROOF_N, ROOF_N), jnp.float32)
    f = jax.jit(lambda u: u @ u)
    f(a).block_until_ready()
    return lambda: f(a).block_until_ready()


def interleave(runs, M, K, pairs, extra=(), tag=""):
    """1 warm-up + ``pairs`` rounds; every run once per round (order reversed every other round), then
    the ``extra`` (name, fn) blocks.  Returns {name: [(wall, cpu, load1), ...]}."""
    names = list(runs)
    rows = {k: [] for k in names + [k for k, _ in extra]}
    for r in range(pairs + 1):
        for k in (names if r % 2 == 0 else names[::-1]):
            res = bst.time_block(lambda: runs[k](K))
            if r:
                rows[k].append(res)
        for k, f in extra:
            res = bst.time_block(f)
            if r:
                rows[k].append(res)
        if r:
            log(f"  {tag}round {r}: " + ", ".join(f"{k} {M * K / rows[k][-1][0]:.1f}" for k in names)
                + " net-steps/s" + "".join(f", {k} {2 * ROOF_N ** 3 * (2 if k.endswith('2dev') else 1) / rows[k][-1][0] / 1e9:.0f} GF/s"
                          for k, _ in extra)
                + f"; load {os.getloadavg()[0]:.2f}")
    return rows


def first_calls(runs):
    """Compile / warm up every run (1 step) and bring all to step 3; returns (first-call seconds, engine 1-step s)."""
    names = list(runs)
    compile_s = {}
    for k in names:
        t0 = time.perf_counter()
        runs[k](1)
        compile_s[k] = time.perf_counter() - t0
    t1 = min(bst.time_block(lambda: runs[names[0]](1))[0] for _ in range(2))
    for k in names[1:]:
        runs[k](1), runs[k](1)
    return compile_s, t1


def records(rows, M, K, refs, compile_s, threads, roof_key, workload):
    """One JSON record per implementation (+ the roofline rows) from interleaved ``rows``; for every
    reference r in ``refs``: ``{r}_speedup`` = per-round (this block's time / r's), > 1: r is faster."""
    wrefs = {r: np.array([x[0] for x in rows[r]]) for r in refs if r in rows}
    roof = {k: 2.0 * ROOF_N ** 3 * (2 if k.endswith("2dev") else 1) / np.array([x[0] for x in v]) / 1e9
            for k, v in rows.items() if k.startswith("dot")}
    out = []
    for k, v in rows.items():
        w, c = np.array([x[0] for x in v]), np.array([x[1] for x in v])
        rec = dict(workload=workload, implementation=k, P=P, N=N, M=M, dtype="float32", lr=LR, s2=S2, gamma=GAMMA,
                   rounds=len(w), block_s=stats(w), cpu_per_wall=stats(c / w), load1=stats([x[2] for x in v]))
        if k.startswith("dot"):
            rec.update(gflops_f32=stats(roof[k]), size=ROOF_N, threads=threads.get(k, "xla"))
        else:
            nsps = M * K / w
            gf = nsps * FLOP_PER_NET_STEP / 1e9
            rec.update(threads=threads[k], steps_per_block=K, net_steps_per_s=stats(nsps), gflops=stats(gf),
                       flop_per_net_step=FLOP_PER_NET_STEP,
                       gflops_basis="equivalent: 6 P^3 N per network-step (the direct formulation's matmuls)",
                       formulation="closed form (full_table_loss)" if k in CLOSED_FORM else "direct",
                       compile_or_first_call_s=compile_s[k],
                       pct_roofline_f32=stats(100.0 * gf / roof[roof_key]))
            if k in CLOSED_FORM:
                own = nsps * FLOP_CLOSED_PER_NET_STEP / 1e9
                rec.update(flop_per_net_step_own=FLOP_CLOSED_PER_NET_STEP, gflops_own=stats(own),
                           pct_roofline_f32_own=stats(100.0 * own / roof[roof_key]),
                           flop_own_basis="18 N^2 P + 24 N P^2: full_table_loss's products and their autodiff")
            for r, wref in wrefs.items():
                if k != r:
                    rec[f"{r}_speedup"] = stats(w / wref)
        out.append(rec)
    return out


def bench_main(cfg: Setup, which, pairs, block_s):
    log(f"\n== P={P}, N={N}, M={cfg.M}, float32, lr={LR}, s2={S2}, gamma={GAMMA} (engine group {cfg.group})")
    load_start = os.getloadavg()
    grads, drifts, compile_s, ordered = run_checks(cfg, which)     # compile_s: first call (compile + 1 step) of the JAX ones
    impls = build_impls(cfg, which)
    runs = {im.name: im.run for im in impls}
    first_s, t1 = first_calls(runs)
    compile_s = {k: compile_s.get(k, v) for k, v in first_s.items()}
    K = int(max(1, min(100, round(block_s / t1))))
    log("  first call (compile + 1 step): " + ", ".join(f"{k} {v:.2f}s" for k, v in compile_s.items())
        + f"; engine 1 step {t1 * 1e3:.0f} ms -> K = {K} steps per block")
    rows = interleave(runs, cfg.M, K, pairs, extra=[("dot_1core", make_dot())])
    finals = {im.name: tuple(np.asarray(v) for v in im.z()) for im in impls}
    ok, report = bst.stats_agree(cfg, finals, STATS_SIGMAS)
    shared = {n: float(max(np.abs(finals[n][i] - finals["engine"][i]).max() for i in (0, 1)))
              for n in finals if n in ("onehot", "engine_direct")}
    log("  statistics after the timed steps (|z| vs engine): " + "; ".join(
        f"{n}: " + ", ".join(f"{k} {v['z_vs_engine']:.1f}" for k, v in rep.items())
        for n, rep in report.items() if n != "engine")
        + "".join(f"; {n} max|z - z_engine| {v:.1e} (same noise, tol {SHARED_Z_ATOL:g})" for n, v in shared.items()))
    if not ok or any(not v <= SHARED_Z_ATOL for v in shared.values()):
        raise SystemExit("STATISTICS CHECK FAILED after the timed steps")
    threads = {im.name: im.threads for im in impls}
    threads["dot_1core"] = "xla 1 core"
    recs = records(rows, cfg.M, K, ["engine", "engine_direct"], compile_s, threads, "dot_1core", "advance")
    total_steps = 3 + K * (pairs + 1)
    for rec in recs:
        rec.update(total_steps=total_steps, load_start=load_start, load_end=os.getloadavg(),
                   peak_rss_mb_process=peak_rss_mb(), engine_group=cfg.group, engine_direct_group=cfg.group_direct)
        name = rec["implementation"]
        if name in report:
            rec["statistics"] = report[name]
        if name in grads:
            rec["grad_rel_err"] = grads[name]
        if name.startswith("torch"):
            rec["grad_rel_err"] = grads["torch"]
            rec["gamma_grad_rel_err"] = grads["torch_gamma_grad"]["vs_engine"]
            rec["one_step_max_abs_err"] = drifts["torch"]
        if name in drifts:
            rec["one_step_max_abs_err"] = drifts[name]
        if name in shared:
            rec["max_abs_dz_vs_engine_same_noise"] = shared[name]
        if name in ("engine", "engine_direct"):
            rec["ordered_start_grad_check"] = ordered
    summarise(recs, ["engine", "engine_direct"])
    return recs


def summarise(recs, refs):
    for r in recs:
        if "net_steps_per_s" in r:
            v, c = r["net_steps_per_s"], r["cpu_per_wall"]
            sps = [(ref, r[f"{ref}_speedup"]) for ref in refs if f"{ref}_speedup" in r]
            own = (f" (own count {r['gflops_own']['median']:.1f} GF/s = {r['pct_roofline_f32_own']['median']:.0f}%)"
                   if "gflops_own" in r else "")
            log(f"  {r['implementation']:17s} {v['median']:6.2f} net-steps/s [{v['min']:.2f}, {v['max']:.2f}], "
                f"{r['gflops']['median']:5.1f} equiv GF/s = {r['pct_roofline_f32']['median']:3.0f}% roofline{own}, CPU/wall "
                f"{c['median']:.2f}" + "".join(f"; {ref} speed-up {sp['median']:.2f} [{sp['min']:.2f}, {sp['max']:.2f}]"
                                               for ref, sp in sps))
        else:
            log(f"  {r['implementation']:17s} {r['gflops_f32']['median']:6.1f} GF/s, CPU/wall {r['cpu_per_wall']['median']:.2f}")


# ==================================================================================================
# both cores (subprocess)


def worker_devices(M, pairs, block_s):
    """Both cores: the engine on 1 host device (grouped, as run_ensemble), on 2 (sharded, one vmap),
    engine_direct on 1 and 2 devices, torch with its default threads, the dot on 1 and 2 devices; interleaved."""
    import torch
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devs = jax.devices()
    assert len(devs) == 2, devs
    sh = NamedSharding(Mesh(np.asarray(devs), ("member",)), PartitionSpec("member"))
    cfg, cfg2 = Setup(M, 1), Setup(M, 2)      # groups: default_group(1, task) = 1; default_group(2, task) = None
    boxes = {}
    for name, c, fns, put in (("engine_1dev", cfg, cfg.fns, lambda t: jax.device_put(t, devs[0])),
                              ("engine_2dev", cfg2, cfg2.fns, lambda t: jax.device_put(t, sh)),
                              ("engine_direct_1dev", cfg, cfg.fns_direct, lambda t: jax.device_put(t, devs[0])),
                              ("engine_direct_2dev", cfg2, cfg2.fns_direct, lambda t: jax.device_put(t, sh))):
        init_v, data_v, advance_v, _ = fns
        dk, ik, nk, hyper = put(c.dk), put(c.ik), put(c.nk), put(c.hyper)
        boxes[name] = dict(s=init_v(dk, ik, hyper), data=data_v(dk, hyper), hyper=hyper, nk=nk, adv=advance_v)

    def eng(name, K):
        b = boxes[name]
        b["s"] = b["adv"](b["s"], b["data"], b["hyper"], b["nk"], jnp.int32(K))
        jax.block_until_ready(b["s"])

    ens = cfg.torch_ensemble(seed=7)
    nthr = os.cpu_count()

    def torch_run(K):
        torch.set_num_threads(nthr)
        ens.advance(K)
        torch_threads_seen.add(torch.get_num_threads())

    torch_threads_seen = set()

    runs = {k: functools.partial(eng, k) for k in boxes}
    runs["torch_default"] = torch_run
    a1 = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (ROOF_N, ROOF_N), jnp.float32), devs[0])
    a2 = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (2, ROOF_N, ROOF_N), jnp.float32), sh)
    dot1, dot2 = jax.jit(lambda u: u @ u), jax.jit(lambda u: jnp.einsum("bij,bjk->bik", u, u))
    dot1(a1).block_until_ready(), dot2(a2).block_until_ready()
    compile_s, t1 = first_calls(runs)
    K = int(max(1, min(100, round(block_s / t1))))
    log("  [devices] first call (compile + 1 step): " + ", ".join(f"{k} {v:.2f}s" for k, v in compile_s.items())
        + f"; engine_1dev 1 step {t1 * 1e3:.0f} ms -> K = {K}")
    rows = interleave(runs, M, K, pairs, tag="[devices] ",
                      extra=[("dot_1dev", lambda: dot1(a1).block_until_ready()),
                             ("dot_2dev", lambda: dot2(a2).block_until_ready())])
    finals = {k: (np.asarray(boxes[k]["s"].z["w"]), np.asarray(boxes[k]["s"].z["a"])) for k in boxes}
    finals["torch_default"] = ens.state()
    same = {k: float(max(np.abs(finals["engine_1dev"][i] - finals[k][i]).max() for i in (0, 1)))
            for k in ("engine_2dev", "engine_direct_1dev", "engine_direct_2dev")}
    ok, report = bst.stats_agree(cfg, {"engine": finals["engine_1dev"], "torch_default": finals["torch_default"]},
                                 STATS_SIGMAS)
    threads = {"engine_1dev": "xla, 1 host device", "engine_2dev": "xla, 2 host devices",
               "engine_direct_1dev": "xla, 1 host device", "engine_direct_2dev": "xla, 2 host devices",
               "torch_default": f"torch {nthr} threads (get_num_threads: {sorted(torch_threads_seen)})",
               "dot_1dev": "xla, 1 host device", "dot_2dev": "xla, 2 host devices"}
    recs = records(rows, M, K, ["engine_1dev", "engine_2dev", "engine_direct_1dev", "engine_direct_2dev"], compile_s,
                   threads, "dot_1dev", "devices")
    for rec in recs:
        k = rec["implementation"]
        rec["peak_rss_mb_process"] = bst.hwm_mb()
        rec["engine_group"], rec["engine_direct_group"] = {"1dev": (cfg.group, cfg.group_direct),
                                                           "2dev": (cfg2.group, cfg2.group_direct)}.get(k[-4:], (None, None))
        if k in same:
            rec["max_abs_dz_vs_engine_1dev"] = same[k]
        if k == "torch_default":
            rec["statistics"] = report["torch_default"]
    log(f"  [devices] max|z - z_engine_1dev| (same noise): {same}; torch_default statistics (|z| vs engine_1dev): "
        + ", ".join(f"{k} {v['z_vs_engine']:.1f}" for k, v in report["torch_default"].items()))
    if any(v > SHARED_Z_ATOL for v in same.values()) or not ok:
        raise SystemExit(f"devices worker: answer check failed (max|dz| {same}; statistics ok: {ok})")
    return recs


def run_worker(args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "devices", "--pairs", str(args.pairs),
           "--block-s", str(args.block_s), "--M", str(args.M)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines() if "Warning" not in line))
    if proc.returncode != 0:
        raise SystemExit(f"worker devices failed (rc {proc.returncode})")
    lines = proc.stdout.splitlines()
    sys.stdout.write("".join(line + "\n" for line in lines if not line.startswith("RESULT ")))
    recs = [json.loads(line[7:]) for line in lines if line.startswith("RESULT ")]
    log(f"  worker: {time.perf_counter() - t0:.0f} s")
    return recs


# ==================================================================================================


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=7, help="interleaved rounds after the warm-up round (>= 5)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 rounds, short blocks")
    ap.add_argument("--M", type=int, default=4, help="networks in the ensemble")
    ap.add_argument("--block-s", type=float, default=None, help="target seconds of one engine block (K steps)")
    ap.add_argument("--impls", default=None, help="comma-separated, engine first; default engine,engine_direct,"
                    "onehot,torch_1thread (+torch_default when not --pin-cpu)")
    ap.add_argument("--skip-devices", action="store_true")
    ap.add_argument("--pin-cpu", action="store_true", help="(handled by benchenv) whole process on one core")
    ap.add_argument("--worker", choices=("devices",))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.pairs = min(args.pairs, 2)
    if args.block_s is None:
        args.block_s = 0.3 if args.quick else 0.6

    if args.worker == "devices":
        for rec in worker_devices(args.M, args.pairs, args.block_s):
            print("RESULT " + json.dumps(rec), flush=True)
        return

    import torch

    t_start = time.perf_counter()
    which = (args.impls or "engine,engine_direct,onehot,torch_1thread" + ("" if PINNED is not None else ",torch_default")).split(",")
    if which[0] != "engine":
        raise SystemExit("--impls must start with engine (the reference of every ratio)")
    common = dict(benchmark="sims_modular",
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  versions=dict(versions(), torch=torch.__version__), thread_env=THREAD_ENV,
                  cpu_affinity=sorted(os.sched_getaffinity(0)), pinned_cpu=PINNED, torch_default_threads=os.cpu_count(),
                  quick=args.quick, command=" ".join(sys.argv),
                  sim_readout=READOUT.get("readout", "langevin (only option)"),
                  flop_count="equivalent: 6 P^3 N per network-step for every implementation ((h^2) a forward, "
                             "(h^2)^T r and r a^T backward of the direct formulation); the closed form's own: "
                             "18 N^2 P + 24 N P^2")
    log(f"sims_modular benchmark: {', '.join(which)}; {args.pairs} rounds after warm-up; block ~{args.block_s} s; "
        f"load {os.getloadavg()}")
    recs = bench_main(Setup(args.M), which, args.pairs, args.block_s)
    if not args.skip_devices:
        log("\n== both cores (subprocess: engine on 1 and 2 host devices, torch default threads)")
        dev = run_worker(args)
        summarise(dev, ["engine_1dev", "engine_2dev", "engine_direct_1dev", "engine_direct_2dev"])
        recs += dev
    benchenv.write_results(recs, common, {name: p.record() for name, p in PROVENANCE.items()}, t_start, args.out,
                           args.no_write, log)


if __name__ == "__main__":
    main()
