"""Benchmark: the teacher-student Langevin ensemble engine against BlackJAX, PyTorch and hand-written JAX.

Follows /work/shared/BENCHMARKING.md: threads pinned before JAX is imported (``benchenv``),
compilation excluded (the first call of each implementation compiles and is reported on its own),
interleaved rounds (every implementation once per round; the order alternates between rounds) with
the median/min/max of the per-round time ratios, process CPU seconds per wall second and the load
average next to every figure, peak RSS, and answer checks (the run fails without writing results if
any implementation disagrees).

What is timed: ``K`` Langevin steps of an ensemble of M networks (the engine's
``advance_v(state, data, hyper, noise_keys, K)``, i.e. the inner loop of ``run_ensemble`` between
two record times, without observations or host transfers).  Work count: 4 n d N FLOP per
network-step (the two (n, d) x (d, N) matmuls of the forward and backward pass; the O(n N)
element-wise work and the O(n N) matrix-vector products are not counted).

Two settings (XLA:CPU runs dots and large fusions on its own intra-op thread pool whatever
``--xla_cpu_multi_thread_eigen=false`` says, so "one core" needs the affinity mask):

* main process, with ``--pin-cpu`` (recommended): the whole process on one core, every
  implementation single-threaded: engine, engine_tuned, hand, (hand_tuned), blackjax,
  torch_1thread, and the one-core float32/float64 ``jnp.dot`` roofline in every round;
* ``--worker devices`` subprocess, both cores (affinity reset): the engine on 1 host device (XLA's
  intra-op threads use both cores), the engine on 2 host devices (jax_num_cpu_devices = 2, the
  member axis sharded as run_ensemble does), torch with its default threads (os.cpu_count()), and
  the dot on 1 and on 2 devices.  Without --pin-cpu the main process also times torch_default.

Implementations (all sample the same chain: z <- z - lr (dL/dz + s2 z) + sqrt(2 lr s2) xi in the
engine's preconditioned unit variables theta = prior_std * z):

  engine         grokphase.sims.driver._make_functions(make_task(sim)): Flax model + Optax Langevin,
                 jit(vmap(fori_loop)), autodiff gradient.
  engine_tuned   the engine's own ``driver._member_step`` with two changes a port would make:
                 lax.map over groups of ENGINE_GROUP vmapped members, and a vectorisable float64 erf.
  hand           pure JAX, no Flax/Optax: the same jit(vmap(fori_loop)) structure, hand-written
                 backward pass, the engine's noise streams.
  hand_tuned     ``hand`` with the same two changes (``TUNED``); not in the default list.
  blackjax       blackjax.sgld on the same Flax model, log density -(L + s2 |z|^2/2), step_size = lr,
                 temperature = s2 (blackjax: x + h grad log p + sqrt(2 T h) xi), vmapped over chains,
                 fori_loop over steps, key fold_in(noise_key, step).
  torch_1thread  benchmarks/torch_baseline_ts.py: eager torch.bmm over the ensemble, hand backward,
                 torch.set_num_threads(1).
  torch_default  the same with torch.set_num_threads(os.cpu_count()) (torch's own default without
                 OMP_NUM_THREADS, which benchenv sets to 1).
  roofline       jnp.dot of two 2048 x 2048 float32 (and float64) matrices, timed in every round.

Answer checks: (1) one step from the same state with identical noise (the engine's noise fed to
hand and torch; BlackJAX's own noise reconstructed with blackjax.util.generate_gaussian_noise and
subtracted from both): every implementation's deterministic part of the update must match the
engine's to 2e-5 (float32) / 1e-11 (float64) in max abs; (2) after the timed steps (same number for
every implementation, independent noise except engine_tuned and hand): ensemble means of the train
MSE and of |z|^2 agree within 5 standard errors; (3) ``--stats-steps`` steps at beta = 1/8 from the
same start: the same comparison after the chains have relaxed; (4) the 1- and 2-device engine runs
give the same z.

``--worker memory`` runs ``run_teacher_student`` for 1024 networks at beta = 1/2 (float32, default
memory_budget) for 2 steps and reports its own peak RSS, also just before ``build_dataset``.  It
runs next to the (untimed) statistics run; the devices worker runs alone, last.

Usage: python benchmarks/bench_sims_ts.py --pin-cpu [--pairs 5] [--quick] [--block-s 0.3] [--only 0.5]
       [--impls engine,...] [--stats-steps 200] [--skip-devices] [--skip-memory] [--out FILE] [--no-write]
"""

from __future__ import annotations

# --- threads: set before numpy/jax/torch are imported ---------------------------------------------
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if "--worker" in sys.argv:   # workers use both cores, even when started by a pinned (--pin-cpu) parent;
    os.sched_setaffinity(0, range(os.cpu_count()))   # before any library starts its threads
import benchenv  # noqa: E402  (first: thread env and --pin-cpu before numpy/jax load)
from benchenv import PINNED, THREAD_ENV, peak_rss_mb, stats, versions  # noqa: E402

WORKER = sys.argv[sys.argv.index("--worker") + 1] if "--worker" in sys.argv else None
if WORKER == "devices":   # 2 host devices; before the JAX backend initialises (benchenv imports jax, does not start it)
    os.environ["XLA_FLAGS"] = os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=2"
    benchenv.jax.config.update("jax_num_cpu_devices", 2)   # (jax reads XLA_FLAGS at import: this is what counts)

import argparse  # noqa: E402
import importlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from grokphase.sims import driver, langevin, models  # noqa: E402  (grokphase enables float64)
from grokphase.sims import teacher_student as ts_sim  # noqa: E402
from grokphase.sims.driver import _make_functions, default_group  # noqa: E402
from grokphase.sims.models import TwoLayerNet  # noqa: E402
from grokphase.sims.teacher_student import TeacherStudentSim, build_members, make_task  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "sims_ts.jsonl"
PROVENANCE = {Path(m.__file__).name: benchenv.SolverProvenance(m.__file__)
              for m in (driver, ts_sim, langevin, models)}

LR, S2 = 0.02, 0.2
BETAS = (0.125, 0.5)
ENSEMBLES = (32, 128)
DTYPE_NAMES = ("float32", "float64")
ONE_STEP_TOL = {"float32": 2e-5, "float64": 1e-11}
STATS_SIGMAS = 5.0
ROOF_N = 2048


def log(*a):
    print(*a, flush=True)


def hwm_mb():
    """Peak resident memory of this process's address space (/proc/self/status VmHWM), in MB.
    Unlike getrusage's ru_maxrss it starts afresh at exec: a subprocess started by a large parent
    would otherwise inherit the parent's peak at fork time."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return peak_rss_mb()


# ==================================================================================================
# hand-written pure-JAX step (no Flax, no Optax)

# Cephes' rational approximations of erf (|x| < 1) and erfc (1 <= |x| < 8), evaluated branch-free so
# that XLA vectorises them (XLA:CPU calls the scalar libm erf for float64: ~20 ns per element).
from grokphase.sims.special import TWO_OVER_SQRT_PI, erf_vectorised  # noqa: E402
from grokphase.sims.special import erf as special_erf  # noqa: E402


def noise_leaf_ids():
    """The fold_in ids of the engine's noise streams for the leaves "a" and "w" (the engine keys
    each parameter's stream by a hash of its tree path since langevin._path_id; by the leaf index
    in the flattened dict, a = 0 and w = 1, before)."""
    path_id = getattr(langevin, "_path_id", None)
    if path_id is None:
        return 0, 1
    (pa, _), (pw, _) = jax.tree_util.tree_flatten_with_path({"a": 0, "w": 0})[0]
    return path_id(pa), path_id(pw)


NOISE_ID_A, NOISE_ID_W = noise_leaf_ids()


def _hand_grads(zw, za, x, y, sw, sa, erf, rows):
    """(L, dL/dz_w, dL/dz_a) of one network, backward pass written out; ``rows``: process the n
    training points in blocks of this many rows (a lax.scan), so (rows, N) temporaries stay in cache."""
    w = sw * zw
    a = sa * za
    c = jnp.asarray(TWO_OVER_SQRT_PI, x.dtype)

    def block(xb, yb):
        h = xb @ w
        phi = erf(h)
        r = phi @ a - yb
        dh = (r[:, None] * a[None, :]) * (c * jnp.exp(-h * h))
        return 0.5 * jnp.sum(r * r), xb.T @ dh, r @ phi

    if rows is None or rows >= x.shape[0]:
        loss, gw, ga = block(x, y)
    else:
        nb = x.shape[0] // rows
        if nb * rows != x.shape[0]:
            raise ValueError(f"rows={rows} must divide n={x.shape[0]}")

        def body(carry, xy):
            return jax.tree_util.tree_map(jnp.add, carry, block(*xy)), None

        init = (jnp.zeros((), x.dtype), jnp.zeros_like(zw), jnp.zeros_like(za))
        (loss, gw, ga), _ = jax.lax.scan(body, init, (x.reshape(nb, rows, -1), y.reshape(nb, rows)))
    return loss, sw * gw, sa * ga


def _hand_member(state, x, y, hp, noise_key, n_steps, erf, rows):
    """``n_steps`` Langevin steps of one network; state = (z_w, z_a, step, diverged_at),
    hp = (std_w, std_a, lr, s2) in the parameter dtype.  Same noise streams as the engine
    (:func:`noise_leaf_ids`)."""
    zw, za, step0, div = state
    sw, sa, lr, s2 = hp
    scale = jnp.sqrt(2.0 * lr * s2)

    def body(i, carry):
        zw, za, div = carry
        step = step0 + i
        loss, gw, ga = _hand_grads(zw, za, x, y, sw, sa, erf, rows)
        k = jax.random.fold_in(noise_key, step)
        xi_a = jax.random.normal(jax.random.fold_in(k, NOISE_ID_A), za.shape, za.dtype)
        xi_w = jax.random.normal(jax.random.fold_in(k, NOISE_ID_W), zw.shape, zw.dtype)
        za = za + ((-lr) * (ga + s2 * za) + scale * xi_a)
        zw = zw + ((-lr) * (gw + s2 * zw) + scale * xi_w)
        div = jnp.where(~jnp.isfinite(loss) & (div < 0), step, div)
        return zw, za, div

    zw, za, div = jax.lax.fori_loop(0, n_steps, body, (zw, za, div))
    return zw, za, step0 + n_steps, div


def make_hand(dtype, *, erf="xla", group=None, rows=None):
    """jitted advance(state, x, y, hp, noise_keys, n_steps) over the ensemble.

    erf: "xla" (jax.scipy.special.erf) or "vectorised" (:func:`erf_vectorised`, float64 only).
    group: None = vmap over all members (the engine's structure); g = lax.map over groups of g
    vmapped members, each group running all its steps (the (g, n, N) temporaries stay in cache).
    """
    f_erf = erf_vectorised if (erf == "vectorised" and jnp.dtype(dtype) == jnp.float64) else jax.scipy.special.erf

    def one(state, x, y, hp, key, n_steps):
        return _hand_member(state, x, y, hp, key, n_steps, f_erf, rows)

    if group is None:
        fn = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None))
    else:
        def fn(state, x, y, hp, key, n_steps):
            return jax.lax.map(lambda a: one(*a, n_steps), (state, x, y, hp, key), batch_size=group)
    return jax.jit(fn, donate_argnums=0)


#: the hand-written variant with the improvements measured to help (README "where the time goes")
TUNED = dict(erf="vectorised", group=4)
#: members per vmapped group of ``engine_tuned`` (lax.map over groups)
ENGINE_GROUP = 4


def erf_activation(x):
    """The engine_tuned model's activation (now also the engine's default, grokphase.sims.special.erf)."""
    return special_erf(x)


def make_engine_tuned(sim, group=ENGINE_GROUP):
    """The engine's own per-member step (``driver._member_step`` on ``make_task``), changed only in
    (i) the model's activation (:func:`erf_activation`) and (ii) the ensemble loop: ``lax.map`` over
    groups of ``group`` vmapped members instead of one vmap over all (what a port to
    ``driver._make_functions`` would do).  Returns (task, advance)."""
    task = make_task(sim, model=TwoLayerNet(sim.N, activation=erf_activation))

    def advance_member(state, data, hyper, noise_key, n_steps):
        def body(i, carry):
            z, opt_state, diverged_at = carry
            step = state.step + i
            z, opt_state, loss, _ = driver._member_step(task, z, opt_state, data, hyper, noise_key, step)
            diverged_at = jnp.where(~jnp.isfinite(loss) & (diverged_at < 0), step, diverged_at)
            return z, opt_state, diverged_at

        z, opt_state, div = jax.lax.fori_loop(0, n_steps, body, (state.z, state.opt_state, state.diverged_at))
        return state._replace(z=z, opt_state=opt_state, diverged_at=div, step=state.step + n_steps)

    def advance(state, data, hyper, noise_keys, n_steps):
        return jax.lax.map(lambda a: advance_member(*a, n_steps), (state, data, hyper, noise_keys),
                           batch_size=group)

    return task, jax.jit(advance, donate_argnums=0)


# ==================================================================================================
# BlackJAX


def make_blackjax(N):
    import blackjax

    model = TwoLayerNet(N)

    def logdensity(z, batch):
        x, y, sw, sa, s2 = batch
        f = model.apply({"params": {"a": sa * z["a"], "w": sw * z["w"]}}, x)
        prior = 0.5 * s2 * (jnp.sum(z["a"] ** 2) + jnp.sum(z["w"] ** 2))
        return -(0.5 * jnp.sum((f - y) ** 2) + prior)      # -(L + s2 |z|^2 / 2): update units

    sgld = blackjax.sgld(lambda z, batch: jax.grad(logdensity)(z, batch))

    def chain(state, x, y, hp, key, n_steps):
        z, step0 = state
        sw, sa, lr, s2 = hp

        def body(i, z):
            return sgld.step(jax.random.fold_in(key, step0 + i), z, (x, y, sw, sa, s2), lr, s2)

        return jax.lax.fori_loop(0, n_steps, body, z), step0 + n_steps

    adv = jax.jit(jax.vmap(chain, in_axes=(0, 0, 0, 0, 0, None)), donate_argnums=0)

    def call(state, x, y, hp, keys, n_steps):
        # blackjax.util.generate_gaussian_noise promotes float32 positions to float64 when
        # jax_enable_x64 is on (grokphase turns it on); a float32 BlackJAX user runs without x64.
        with jax.enable_x64(x.dtype == jnp.float64):
            return adv(state, x, y, hp, keys, n_steps)

    return sgld, call


# ==================================================================================================
# set-up of one configuration


class Config:
    """Everything for one (beta, M, dtype): the engine's data and initial state, shared by all."""

    def __init__(self, beta, M, dtype_name, lr=LR, s2=S2):
        self.beta, self.M, self.dtype_name = beta, M, dtype_name
        self.dtype = jnp.dtype(dtype_name)
        self.sim = sim = TeacherStudentSim.from_scaling(beta=beta, s2=(s2,), datasets=M, inits=1, steps=1000,
                                                        burn_in=0, lr=lr, dtype=dtype_name)
        self.N, self.n, self.d = sim.N, sim.n, sim.d
        self.flop_per_net_step = 4.0 * sim.n * sim.d * sim.N
        self.task = make_task(sim)
        members, _ = build_members(sim)
        self.members = members
        # exactly what run_ensemble uses on this machine (grouped advance on one CPU device)
        self.fns = _make_functions(self.task, default_group(len(jax.devices())))
        init_v, data_v, _, _ = self.fns
        self.hyper = jax.tree_util.tree_map(jnp.asarray, members.hyper)
        self.dk, self.ik, self.nk = (jnp.asarray(k) for k in members[:3])
        self.data = data_v(self.dk, self.hyper)
        z0 = init_v(self.dk, self.ik, self.hyper).z
        self.z0 = {k: np.asarray(v) for k, v in z0.items()}
        h = members.hyper
        self.hp_np = (np.sqrt(h.sw2 / sim.d), np.sqrt(h.sa2 / sim.N), np.asarray(h.lr), np.asarray(h.s2))
        self.hp = tuple(jnp.asarray(v, self.dtype) for v in self.hp_np)
        self.x_np, self.y_np = np.asarray(self.data["x"]), np.asarray(self.data["y"])

    def engine_state(self):
        return self.fns[0](self.dk, self.ik, self.hyper)

    def hand_state(self):
        M = self.M
        return (jnp.asarray(self.z0["w"]), jnp.asarray(self.z0["a"]), jnp.zeros((M,), jnp.int32),
                -jnp.ones((M,), jnp.int32))

    def engine_noise(self, step):
        """The engine's standard-normal draws at ``step``: (xi_w, xi_a) per member."""
        def one(key):
            k = jax.random.fold_in(key, step)
            return (jax.random.normal(jax.random.fold_in(k, NOISE_ID_W), (self.d, self.N), self.dtype),
                    jax.random.normal(jax.random.fold_in(k, NOISE_ID_A), (self.N,), self.dtype))
        return jax.vmap(one)(self.nk)

    def observables(self, zw, za):
        """Per member: train MSE, mean z_w^2, mean z_a^2 (float64, on the host)."""
        from scipy.special import erf

        zw, za = np.asarray(zw, np.float64), np.asarray(za, np.float64)
        mse = np.empty(self.M)
        for m in range(self.M):
            x, y = self.x_np[m].astype(np.float64), self.y_np[m].astype(np.float64)
            f = erf(x @ (self.hp_np[0][m] * zw[m])) @ (self.hp_np[1][m] * za[m])
            mse[m] = np.mean((f - y) ** 2)
        return dict(train_mse=mse, zw2=np.mean(zw ** 2, axis=(1, 2)), za2=np.mean(za ** 2, axis=1))


class Impl:
    """A named implementation: ``run(K)`` advances its own state by K steps and blocks;
    ``z()`` returns (z_w, z_a) as host arrays."""

    def __init__(self, name, run, z, threads, setup=None):
        self.name, self.run, self.z, self.threads, self.setup = name, run, z, threads, setup


def build_impls(cfg: Config, which):
    if any(w.startswith("torch") for w in which):
        import torch

        import torch_baseline_ts as tb

    impls = []
    _, _, advance_v, _ = cfg.fns

    if "engine" in which:
        box = {"s": cfg.engine_state()}

        def run(K, box=box):
            box["s"] = advance_v(box["s"], cfg.data, cfg.hyper, cfg.nk, jnp.int32(K))
            jax.block_until_ready(box["s"])

        impls.append(Impl("engine", run, lambda box=box: (box["s"].z["w"], box["s"].z["a"]), "xla 1 core"))

    if "engine_tuned" in which:
        _, adv = make_engine_tuned(cfg.sim)
        box = {"s": cfg.engine_state()}

        def run(K, box=box, adv=adv):
            box["s"] = adv(box["s"], cfg.data, cfg.hyper, cfg.nk, jnp.int32(K))
            jax.block_until_ready(box["s"])

        impls.append(Impl("engine_tuned", run, lambda box=box: (box["s"].z["w"], box["s"].z["a"]), "xla 1 core"))

    for name, kw in (("hand", {}), ("hand_tuned", TUNED)):
        if name not in which:
            continue
        adv = make_hand(cfg.dtype, **kw)
        box = {"s": cfg.hand_state()}

        def run(K, box=box, adv=adv):
            box["s"] = adv(box["s"], cfg.data["x"], cfg.data["y"], cfg.hp, cfg.nk, jnp.int32(K))
            jax.block_until_ready(box["s"])

        impls.append(Impl(name, run, lambda box=box: box["s"][:2], "xla 1 core"))

    if "blackjax" in which:
        _, adv = make_blackjax(cfg.N)
        box = {"s": ({k: jnp.asarray(v) for k, v in cfg.z0.items()}, jnp.zeros((cfg.M,), jnp.int32))}

        def run(K, box=box, adv=adv):
            box["s"] = adv(box["s"], cfg.data["x"], cfg.data["y"], cfg.hp, cfg.nk, jnp.int32(K))
            jax.block_until_ready(box["s"])

        impls.append(Impl("blackjax", run, lambda box=box: (box["s"][0]["w"], box["s"][0]["a"]), "xla 1 core"))

    for name, nthr in (("torch_default", os.cpu_count()), ("torch_1thread", 1)):
        if name not in which:
            continue
        ens = tb.TorchEnsemble(cfg.x_np, cfg.y_np, cfg.z0["w"], cfg.z0["a"], *cfg.hp_np, dtype=cfg.dtype_name,
                               seed=1 + len(impls))

        def run(K, ens=ens, nthr=nthr):
            torch.set_num_threads(nthr)
            ens.advance(K)

        impls.append(Impl(name, run, lambda ens=ens: ens.state(), f"torch {nthr} thread(s)"))
    return impls


# ==================================================================================================
# answer checks


def one_step_check(cfg: Config, which):
    """Max |deterministic part of one update - engine's| for every implementation (same start)."""
    _, _, advance_v, _ = cfg.fns
    xi_w, xi_a = (np.asarray(v) for v in cfg.engine_noise(0))
    scale = np.sqrt(2.0 * cfg.hp_np[2] * cfg.hp_np[3]).astype(cfg.dtype)
    s = advance_v(cfg.engine_state(), cfg.data, cfg.hyper, cfg.nk, jnp.int32(1))
    ew, ea = np.asarray(s.z["w"]), np.asarray(s.z["a"])
    ref_w, ref_a = ew - scale[:, None, None] * xi_w, ea - scale[:, None] * xi_a   # drift: z0 + update - noise
    out = {}

    def err(w, a, nw=xi_w, na=xi_a):
        dw = np.abs((w - scale[:, None, None] * nw) - ref_w).max()
        da = np.abs((a - scale[:, None] * na) - ref_a).max()
        return float(max(dw, da))

    if "engine_tuned" in which:
        _, adv = make_engine_tuned(cfg.sim)
        st = adv(cfg.engine_state(), cfg.data, cfg.hyper, cfg.nk, jnp.int32(1))
        out["engine_tuned"] = err(np.asarray(st.z["w"]), np.asarray(st.z["a"]))
    for name, kw in (("hand", {}), ("hand_tuned", TUNED)):
        if name in which:
            st = make_hand(cfg.dtype, **kw)(cfg.hand_state(), cfg.data["x"], cfg.data["y"], cfg.hp, cfg.nk,
                                            jnp.int32(1))
            out[name] = err(np.asarray(st[0]), np.asarray(st[1]))
    if "blackjax" in which:
        import blackjax.util

        _, adv = make_blackjax(cfg.N)
        z0 = {k: jnp.asarray(v) for k, v in cfg.z0.items()}
        (z1, _) = adv((z0, jnp.zeros((cfg.M,), jnp.int32)), cfg.data["x"], cfg.data["y"], cfg.hp, cfg.nk,
                      jnp.int32(1))
        with jax.enable_x64(cfg.dtype == jnp.float64):
            z0 = {k: jnp.asarray(v) for k, v in cfg.z0.items()}     # (the first z0 was donated)
            noise = jax.vmap(lambda k, z: blackjax.util.generate_gaussian_noise(jax.random.fold_in(k, 0), z))(cfg.nk, z0)
        out["blackjax"] = err(np.asarray(z1["w"]), np.asarray(z1["a"]), np.asarray(noise["w"]),
                              np.asarray(noise["a"]))
    if any(n.startswith("torch") for n in which):
        import torch

        import torch_baseline_ts as tb

        torch.set_num_threads(1)
        ens = tb.TorchEnsemble(cfg.x_np, cfg.y_np, cfg.z0["w"], cfg.z0["a"], *cfg.hp_np, dtype=cfg.dtype_name)
        with torch.inference_mode():
            ens.step(noise=(xi_w, xi_a))
        w, a = ens.state()
        out["torch"] = err(w, a)
    return out


def stats_agree(cfg: Config, finals: dict, tol_sigmas=STATS_SIGMAS):
    """Ensemble means of the observables of every implementation vs the engine's."""
    obs = {name: cfg.observables(*z) for name, z in finals.items()}
    ref = obs["engine"]
    report, ok = {}, True
    for name, o in obs.items():
        rep = {}
        for k in ref:
            m, se = float(np.mean(o[k])), float(np.std(o[k], ddof=1) / np.sqrt(cfg.M))
            m0, se0 = float(np.mean(ref[k])), float(np.std(ref[k], ddof=1) / np.sqrt(cfg.M))
            z = abs(m - m0) / max(math.hypot(se, se0), 1e-12 * abs(m0) + 1e-300)
            rep[k] = dict(mean=m, sem=se, z_vs_engine=z)
            ok &= z < tol_sigmas
        report[name] = rep
    return ok, report


# ==================================================================================================
# timing


def make_roofline(n=ROOF_N):
    out = {}
    for dt in ("float32", "float64"):
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.dtype(dt))
        f = jax.jit(lambda u, v: jnp.dot(u, v))
        f(a, a).block_until_ready()
        out[dt] = (lambda f=f, a=a: f(a, a).block_until_ready())
    return out


def time_block(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    t1, c1 = time.perf_counter(), time.process_time()
    return t1 - t0, c1 - c0, os.getloadavg()[0]


def bench_config(cfg: Config, which, pairs, block_s, roof):
    """Compile, check one step, calibrate K, then 1 warm-up + ``pairs`` interleaved rounds."""
    log(f"\n== beta={cfg.beta:g} (N={cfg.N}, d={cfg.d}, n={cfg.n}), M={cfg.M}, {cfg.dtype_name}")
    load_start = os.getloadavg()
    errs = one_step_check(cfg, which)
    tol = ONE_STEP_TOL[cfg.dtype_name]
    log("  one-step check, max |drift - engine's|: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items())
        + f" (tol {tol:g})")
    bad = {k: v for k, v in errs.items() if not v < tol}
    if bad:
        raise SystemExit(f"ONE-STEP CHECK FAILED at beta={cfg.beta}, M={cfg.M}, {cfg.dtype_name}: {bad}")

    impls = build_impls(cfg, which)
    compile_s = {}
    for im in impls:                      # first call: compile (JAX) / allocator warm-up (torch) + 1 step
        t0 = time.perf_counter()
        im.run(1)
        compile_s[im.name] = time.perf_counter() - t0
    t1 = min(time_block(lambda: impls[0].run(1))[0] for _ in range(2))
    K = int(max(1, min(200, round(block_s / t1))))
    log("  first call (compile + 1 step): " + ", ".join(f"{k} {v:.2f}s" for k, v in compile_s.items())
        + f"; engine 1 step {t1 * 1e3:.1f} ms -> K = {K} steps per block")
    for im in impls[1:]:                  # the engine is at step 3 now: bring the others there too
        im.run(1), im.run(1)

    rows = {im.name: [] for im in impls}
    roof_rows = {dt: [] for dt in roof}
    order = [im for im in impls]
    for r in range(pairs + 1):
        seq = order if r % 2 == 0 else order[::-1]
        for im in seq:
            w, c, la = time_block(lambda: im.run(K))
            if r:
                rows[im.name].append((w, c, la))
        for dt, f in roof.items():
            w, c, la = time_block(f)
            if r:
                roof_rows[dt].append((w, c, la))
        if r:
            log(f"  round {r}: " + ", ".join(f"{k} {cfg.M * K / v[-1][0]:.0f}" for k, v in rows.items())
                + f" net-steps/s; roof f32 {2 * ROOF_N ** 3 / roof_rows['float32'][-1][0] / 1e9:.0f} GF/s;"
                + f" load {os.getloadavg()[0]:.2f}")
    finals = {im.name: tuple(np.asarray(v) for v in im.z()) for im in impls}
    ok, report = stats_agree(cfg, finals)
    total_steps = 3 + K * (pairs + 1)
    log("  statistics after the timed steps (z vs engine): "
        + "; ".join(f"{n}: " + ", ".join(f"{k} {v['z_vs_engine']:.1f}" for k, v in rep.items())
                    for n, rep in report.items() if n != "engine"))
    if not ok:
        raise SystemExit(f"STATISTICS CHECK FAILED at beta={cfg.beta}, M={cfg.M}, {cfg.dtype_name}")

    eng = np.array([w for w, _, _ in rows["engine"]])
    roof32 = 2.0 * ROOF_N ** 3 / np.array([w for w, _, _ in roof_rows["float32"]]) / 1e9
    roofdt = 2.0 * ROOF_N ** 3 / np.array([w for w, _, _ in roof_rows[cfg.dtype_name]]) / 1e9
    recs = []
    for im in impls:
        w = np.array([x[0] for x in rows[im.name]])
        c = np.array([x[1] for x in rows[im.name]])
        la = [x[2] for x in rows[im.name]]
        nsps = cfg.M * K / w
        gf = nsps * cfg.flop_per_net_step / 1e9
        rec = dict(workload="advance", implementation=im.name, beta=cfg.beta, N=cfg.N, d=cfg.d, n=cfg.n, M=cfg.M,
                   dtype=cfg.dtype_name, lr=LR, s2=S2, threads=im.threads, steps_per_block=K,
                   total_steps=total_steps, rounds=pairs,
                   block_s=stats(w), net_steps_per_s=stats(nsps), gflops=stats(gf),
                   flop_per_net_step=cfg.flop_per_net_step,
                   cpu_per_wall=stats(c / w), load1=stats(la),
                   compile_or_first_call_s=compile_s[im.name],
                   pct_roofline_f32=stats(100.0 * gf / roof32), pct_roofline_same_dtype=stats(100.0 * gf / roofdt),
                   statistics=report[im.name])
        if im.name != "engine":
            rec["engine_speedup"] = stats(w / eng)          # > 1: the engine is faster
            rec["one_step_max_abs_err"] = errs.get(im.name, errs.get("torch"))
        recs.append(rec)
    recs.append(dict(workload="roofline", implementation="jnp.dot", beta=cfg.beta, M=cfg.M, dtype=cfg.dtype_name,
                     threads="xla 1 core", size=ROOF_N, gflops_f32=stats(roof32), gflops_same_dtype=stats(roofdt),
                     cpu_per_wall=stats([x[1] / x[0] for x in roof_rows["float32"]])))
    for rec in recs:
        rec.update(load_start=load_start, load_end=os.getloadavg(), peak_rss_mb_process=peak_rss_mb())
    summary = {r["implementation"]: r for r in recs if r["workload"] == "advance"}
    log("  median net-steps/s: " + ", ".join(f"{k} {v['net_steps_per_s']['median']:.0f}" for k, v in summary.items())
        + f"; engine {summary['engine']['gflops']['median']:.1f} GF/s = "
        f"{summary['engine']['pct_roofline_f32']['median']:.0f}% of f32 roofline")
    log("  engine speed-up (median [min, max]): " + ", ".join(
        f"{k} {v['engine_speedup']['median']:.2f} [{v['engine_speedup']['min']:.2f}, {v['engine_speedup']['max']:.2f}]"
        for k, v in summary.items() if k != "engine"))
    return recs


def stats_run(steps, M, which):
    """A longer run at beta = 1/8 from the same start: equal statistics after the chains relax."""
    cfg = Config(0.125, M, "float32")
    impls = build_impls(cfg, which)
    t0 = time.perf_counter()
    for im in impls:
        im.run(steps)
    finals = {im.name: tuple(np.asarray(v) for v in im.z()) for im in impls}
    ok, report = stats_agree(cfg, finals)
    log(f"\n== statistics after {steps} steps at beta=1/8, M={M} (lr {LR}, s2 {S2}; {time.perf_counter() - t0:.0f} s):")
    for name, rep in report.items():
        log(f"  {name:14s} " + ", ".join(f"{k} {v['mean']:.4f} ± {v['sem']:.4f} (z {v['z_vs_engine']:.1f})"
                                        for k, v in rep.items()))
    start = cfg.observables(cfg.z0["w"], cfg.z0["a"])
    log("  at the start:  " + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in start.items()))
    if not ok:
        raise SystemExit("STATISTICS CHECK FAILED in the long run")
    return dict(workload="statistics", beta=0.125, M=M, dtype="float32", steps=steps, lr=LR, s2=S2,
                statistics=report, start={k: float(np.mean(v)) for k, v in start.items()}, passed=bool(ok))


# ==================================================================================================
# subprocess workers


def worker_devices(pairs, block_s, configs):
    """Engine on 1 vs 2 host devices (member axis sharded as run_ensemble does), torch 2 threads,
    and the dot on 1 vs 2 devices (each device one 2048^2 dot), interleaved."""
    import torch
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import torch_baseline_ts as tb

    devs = jax.devices()
    assert len(devs) == 2, devs
    sh = NamedSharding(Mesh(np.asarray(devs), ("member",)), PartitionSpec("member"))
    out = []
    a1 = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (ROOF_N, ROOF_N), jnp.float32), devs[0])
    a2 = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (2, ROOF_N, ROOF_N), jnp.float32), sh)
    dot1 = jax.jit(lambda u: u @ u)
    dot2 = jax.jit(lambda u: jnp.einsum("bij,bjk->bik", u, u))
    dot1(a1).block_until_ready(), dot2(a2).block_until_ready()
    for beta, M, dt in configs:
        cfg = Config(beta, M, dt)
        init_v, data_v, advance_v, _ = cfg.fns
        boxes = {}
        for name, put in (("engine_1dev", lambda t: jax.device_put(t, devs[0])),
                          ("engine_2dev", lambda t: jax.device_put(t, sh))):
            dk, ik, nk, hyper = put(cfg.dk), put(cfg.ik), put(cfg.nk), put(cfg.hyper)
            data = data_v(dk, hyper)
            boxes[name] = dict(s=init_v(dk, ik, hyper), data=data, hyper=hyper, nk=nk)
        finals = {}

        def eng(name, K):
            b = boxes[name]
            b["s"] = advance_v(b["s"], b["data"], b["hyper"], b["nk"], jnp.int32(K))
            jax.block_until_ready(b["s"])

        ens = tb.TorchEnsemble(cfg.x_np, cfg.y_np, cfg.z0["w"], cfg.z0["a"], *cfg.hp_np, dtype=dt)
        torch.set_num_threads(os.cpu_count())
        runs = {"engine_1dev": lambda K: eng("engine_1dev", K), "engine_2dev": lambda K: eng("engine_2dev", K),
                "torch_default": lambda K: ens.advance(K)}
        compile_s = {}
        for k, f in runs.items():
            t0 = time.perf_counter()
            f(1)
            compile_s[k] = time.perf_counter() - t0
        t1 = min(time_block(lambda: runs["engine_1dev"](1))[0] for _ in range(2))
        for k in ("engine_2dev", "torch_default"):        # all at step 3
            runs[k](1), runs[k](1)
        K = int(max(1, min(200, round(block_s / t1))))
        rows = {k: [] for k in list(runs) + ["dot_1dev", "dot_2dev"]}
        names = list(runs)
        for r in range(pairs + 1):
            for k in (names if r % 2 == 0 else names[::-1]):
                res = time_block(lambda: runs[k](K))
                if r:
                    rows[k].append(res)
            for k, f in (("dot_1dev", lambda: dot1(a1).block_until_ready()),
                         ("dot_2dev", lambda: dot2(a2).block_until_ready())):
                res = time_block(f)
                if r:
                    rows[k].append(res)
            if r:
                print(f"  [devices] beta={beta:g} M={M} {dt} round {r}: " + ", ".join(
                    f"{k} {M * K / rows[k][-1][0]:.0f}" for k in names) + " net-steps/s", file=sys.stderr, flush=True)
        for k in ("engine_1dev", "engine_2dev"):
            s = boxes[k]["s"]
            finals[k] = (np.asarray(s.z["w"]), np.asarray(s.z["a"]))
        finals["torch_default"] = ens.state()
        obs = {k: cfg.observables(*z) for k, z in finals.items()}
        same = float(np.max(np.abs(finals["engine_1dev"][0] - finals["engine_2dev"][0])))
        e1 = np.array([w for w, _, _ in rows["engine_1dev"]])
        tdef = np.array([w for w, _, _ in rows["torch_default"]])
        for k in rows:
            w = np.array([x[0] for x in rows[k]])
            c = np.array([x[1] for x in rows[k]])
            rec = dict(workload="devices", implementation=k, beta=beta, N=cfg.N, d=cfg.d, n=cfg.n, M=M, dtype=dt,
                       rounds=pairs, cpu_per_wall=stats(c / w), load1=stats([x[2] for x in rows[k]]),
                       block_s=stats(w))
            if k.startswith("dot"):
                nb = 1 if k == "dot_1dev" else 2
                rec.update(gflops_f32=stats(nb * 2.0 * ROOF_N ** 3 / w / 1e9), size=ROOF_N)
            else:
                nsps = M * K / w
                rec.update(steps_per_block=K, net_steps_per_s=stats(nsps), compile_or_first_call_s=compile_s[k],
                           gflops=stats(nsps * cfg.flop_per_net_step / 1e9),
                           speedup_vs_engine_1dev=stats(e1 / w), speedup_vs_torch_default=stats(tdef / w),
                           threads={"engine_1dev": "xla, 1 host device", "engine_2dev": "xla, 2 host devices",
                                    "torch_default": f"torch {os.cpu_count()} threads"}[k],
                           train_mse_mean=float(np.mean(obs[k]["train_mse"])))
                if k == "engine_2dev":
                    rec["max_abs_dz_vs_1dev"] = same
            out.append(rec)
        if same > ONE_STEP_TOL[dt] * 100:
            raise SystemExit(f"1- and 2-device engine runs differ: max |dz| = {same}")
    for rec in out:
        rec["peak_rss_mb_process"] = hwm_mb()
    return out


def worker_memory(networks, steps):
    """run_teacher_student for ``networks`` networks at beta = 1/2 (float32, default memory_budget)."""
    sim = TeacherStudentSim.from_scaling(beta=0.5, s2=(S2,), datasets=networks, inits=1, steps=steps,
                                         burn_in=0, record_every=steps, lr=LR, dtype="float32")
    budget = 2e9
    chunk = max(1, int(budget // sim.bytes_per_network()))
    stages = {}
    run_module = importlib.import_module("grokphase.sims.teacher_student.run")   # the protocol's model hooks
    original_model = run_module.MODEL
    original = original_model.build_dataset

    def probed_build_dataset(*a, **kw):   # peak RSS of the ensemble run, before the result Dataset is built
        stages["peak_rss_mb_before_build_dataset"] = hwm_mb()
        t = time.perf_counter()
        out = original(*a, **kw)
        stages["build_dataset_s"] = time.perf_counter() - t
        return out

    run_module.MODEL = original_model._replace(build_dataset=probed_build_dataset)
    t0 = time.perf_counter()
    try:
        ds = ts_sim.run_teacher_student(sim)
    finally:
        run_module.MODEL = original_model
    wall = time.perf_counter() - t0
    return [dict(workload="memory", implementation="run_teacher_student", beta=0.5, N=sim.N, d=sim.d, n=sim.n,
                 M=networks, dtype="float32", steps=steps, memory_budget=budget, ensemble_chunk=chunk,
                 bytes_per_network_estimate=sim.bytes_per_network(), wall_s=wall,
                 engine_seconds=float(ds.attrs["seconds"]),
                 net_steps_per_s_incl_observe=float(ds.attrs["network_steps_per_second"]),
                 peak_rss_mb=hwm_mb(), ru_maxrss_mb=peak_rss_mb(), train_mse=float(ds["train_mse"].values[0]),
                 **stages)]


def start_worker(kind, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--pairs", str(args.pairs),
           "--block-s", str(args.block_s)] + (["--quick"] if args.quick else []) \
        + ([] if args.devices_all else ["--devices-m128"])
    for b in args.only or ():
        cmd += ["--only", str(b)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), time.perf_counter()


def finish_worker(kind, started):
    proc, t0 = started
    out, err = proc.communicate(timeout=1800)
    sys.stderr.write("".join(line + "\n" for line in err.splitlines() if "Warning" not in line and "as_tensor" not in line))
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} failed (rc {proc.returncode})")
    recs = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    log(f"  worker {kind}: {time.perf_counter() - t0:.0f} s")
    return recs


# ==================================================================================================


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5, help="interleaved rounds after the warm-up round (>= 5)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 rounds, short blocks, small workers")
    ap.add_argument("--block-s", type=float, default=None, help="target seconds of one engine block (K steps)")
    ap.add_argument("--only", type=float, action="append", help="only this beta (repeatable)")
    ap.add_argument("--impls", default=None, help="comma-separated, engine first; default: engine,engine_tuned,hand,"
                    "blackjax,torch_1thread (+torch_default when not --pin-cpu); also hand_tuned")
    ap.add_argument("--stats-steps", type=int, default=None)
    ap.add_argument("--M", type=int, action="append", help="only this ensemble size (repeatable; default 32, 128)")
    ap.add_argument("--dtype", action="append", choices=DTYPE_NAMES, help="only this dtype (repeatable)")
    ap.add_argument("--skip-devices", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="only the memory worker (and write its record)")
    ap.add_argument("--devices-all", action="store_true", help="devices worker on M = 32 too (default: M = 128 only)")
    ap.add_argument("--devices-m128", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pin-cpu", action="store_true", help="(handled by benchenv) whole process on one core")
    ap.add_argument("--worker", choices=("devices", "memory"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.pairs = min(args.pairs, 2)
    if args.block_s is None:
        args.block_s = 0.12 if args.quick else 0.3

    if args.worker == "devices":
        cfgs = [(b, M, dt) for b in (args.only or BETAS) for M in (ENSEMBLES[-1:] if args.devices_m128 else ENSEMBLES)
                for dt in DTYPE_NAMES]
        for rec in worker_devices(args.pairs, args.block_s, cfgs[-2:-1] if args.quick else cfgs):
            print("RESULT " + json.dumps(rec), flush=True)
        return
    if args.worker == "memory":
        for rec in worker_memory(256 if args.quick else 1024, 2):
            print("RESULT " + json.dumps(rec), flush=True)
        return

    import flax
    import optax

    which = (args.impls or "engine,engine_tuned,hand,blackjax,torch_1thread"
             + ("" if PINNED is not None else ",torch_default")).split(",")
    optional = {}
    for mod in ("blackjax", "torch"):     # comparison-only: the `bench` extra
        try:
            optional[mod] = __import__(mod).__version__
        except ImportError:
            optional[mod] = None
    missing = [w for w in which if (w.startswith("torch") and optional["torch"] is None)
               or (w == "blackjax" and optional["blackjax"] is None)]
    if missing or (not args.skip_devices and optional["torch"] is None):
        raise SystemExit(f"{', '.join(missing) or 'the devices worker (torch_default)'} need(s) the bench extra "
                         "(pip install -e '.[bench]'); or pass --impls engine,hand,engine_tuned --skip-devices")

    t_start = time.perf_counter()
    if which[0] != "engine":
        raise SystemExit("--impls must start with engine (the reference of every ratio)")
    common = dict(
        benchmark="sims_ts", date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        versions=dict(versions(), flax=flax.__version__, optax=optax.__version__, **optional),
        thread_env=THREAD_ENV, cpu_affinity=sorted(os.sched_getaffinity(0)), pinned_cpu=PINNED,
        torch_default_threads=os.cpu_count(), quick=args.quick, command=" ".join(sys.argv))
    log(f"sims_ts benchmark: {', '.join(which)}; {args.pairs} rounds after warm-up; block ~{args.block_s} s; "
        f"load {os.getloadavg()}")
    if args.memory_only:
        args.skip_devices, args.stats_steps, betas = True, 0, ()
    else:
        betas = args.only or BETAS
    roof = make_roofline()
    recs = []
    for beta in betas:
        for M in args.M or ENSEMBLES:
            for dt in args.dtype or DTYPE_NAMES:
                recs += bench_config(Config(beta, M, dt), which, args.pairs, args.block_s, roof)
    # the memory worker is not timed: it runs next to the (untimed) statistics run
    mem_worker = None if args.skip_memory else start_worker("memory", args)
    steps = args.stats_steps if args.stats_steps is not None else (60 if args.quick else 200)
    if steps > 0:
        recs.append(stats_run(steps, 32 if args.quick else 48, which))
    if mem_worker is not None:
        log("\n== memory: run_teacher_student, beta=1/2 (subprocess)")
        mem = finish_worker("memory", mem_worker)
        for r in mem:
            log(f"  {r['M']} networks x {r['steps']} steps, chunk {r['ensemble_chunk']}: peak RSS {r['peak_rss_mb']:.0f} MB,"
                f" {r['wall_s']:.1f} s")
        recs += mem
    if not args.skip_devices:
        log("\n== 2 host devices (subprocess)")
        recs += finish_worker("devices", start_worker("devices", args))
        for r in recs:
            if r["workload"] == "devices":
                v = r.get("net_steps_per_s") or r.get("gflops_f32")
                log(f"  beta={r['beta']:g} M={r['M']} {r['implementation']:14s} {v['median']:.0f} "
                    + ("net-steps/s" if "net_steps_per_s" in r else "GF/s")
                    + (f", speed-up vs 1 dev {r['speedup_vs_engine_1dev']['median']:.2f}" if "speedup_vs_engine_1dev" in r else "")
                    + f", CPU/wall {r['cpu_per_wall']['median']:.2f}")
    benchenv.write_results(recs, common, {name: p.record() for name, p in PROVENANCE.items()}, t_start, args.out,
                           args.no_write, log)


if __name__ == "__main__":
    main()
