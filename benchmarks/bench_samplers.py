"""Sampler efficiency on the teacher-student posterior: effective samples per CPU-second (issue 20).

    .venv/bin/python benchmarks/bench_samplers.py --pin-cpu [--beta 0.125] [--steps 20000] [--pairs 3]
        [--datasets 4] [--inits 2] [--samplers plain,gibbs,...] [--out FILE] [--no-write]

The posterior: the paper's model at the Table-1 scaling ``--beta`` (beta = 1/8: N = 88, d = 53, n = 375;
beta = 1/2: N = 350, d = 106, n = 1500) at s2 = 0.14 (beta = 1 units, GMFL-I), ``--datasets`` data sets x
``--inits`` chains, all from the prior.  The samplers (each at its own step size, in the engine's
dimensionless units: the Langevin rate of the prior-preconditioned unit variables):

* ``plain``: grokphase's unadjusted Langevin on (w, a), lr = 0.05 (the documented choice: its O(lr) bias is
  below the error bars at beta = 1/8, sims/perp_norm.toml);
* ``gibbs``: the readout drawn exactly from its Gaussian conditional before every Langevin step on w,
  lr = 0.05 (the readout's effect alone);
* ``mala``: Metropolis-adjusted Langevin on (w, a), lr = 0.3 (exact at any lr; acceptance reported);
* ``gibbs+mala``: both, lr = 0.3;
* ``pcn-mala``: MALA with the prior-exact (pCN-Langevin) noise and a constant block preconditioner, the
  readout's step lr * 0.3 (``prior_exact``, ``readout_lr_scale``; docs/samplers.md), lr = 0.4: tuned at
  beta = 1/2 for an acceptance near 0.6; ``pcn-mala-b``: the same with readout_lr_scale 0.15, lr = 0.5;
  ``pcn-mala-c``: the prior-exact noise alone (readout and first layer at one rate), lr = 0.3;
* ``plain-rb``, ``mala-rb``, ``pcn-mala-c-rb``: plain, mala and pcn-mala-c with Rao-Blackwellised records
  (``rao_blackwell``: the learned fractions at the readout's conditional mean E[a | w]; the same chains);
* ``pcn-refresh``, ``mala-refresh``: pcn-mala-c and mala with the readout also redrawn exactly at the start of
  every record interval (``readout = "refresh"``: every 10 steps here);
* ``blackjax-sgld`` and ``blackjax-mala``: BlackJAX's ``sgld`` (full-batch gradient: unadjusted Langevin)
  and ``mala`` kernels on the same log density of the unit variables, log p(z) = -L(theta(z))/s2 - |z|^2/2,
  with step_size = lr * s2 (the same chains as plain / mala up to the noise stream), lr 0.05 and 0.3;
  the same data sets and initial states, one ``lax.scan`` per chain, ``vmap`` over chains.  Needs the
  ``bench`` extra (``pip install -e '.[bench]'``).

What is measured: the bulk ESS and the precision (1/MCSE^2 of the mean) of the cubic (and linear) learned fraction (the exact population
projection, recorded every 10 steps, after a quarter of the steps as burn-in), summed over data sets
(split-R-hat/ESS across the inits of each data set: :func:`grokphase.analysis.diagnostics.diagnose`), per
CPU-second of the run (compilation excluded: every sampler runs once untimed first).  Interleaved rounds
(the sampler order reversed every other round), a new seed per round; per round the ratio of each
sampler's ESS/s (and precision/s: the fair measure between records of different variance, e.g. the
Rao-Blackwellised ones) to plain's; reported: median, min and max over rounds, CPU/wall and the load average.

Answer check: every sampler's time-averaged learned fractions are compared with the exact sampler
(gibbs+mala, or mala where gibbs+mala is not run) by a paired z-score over data sets; plain's and gibbs's discretisation bias shows there.
"""

from __future__ import annotations

import benchenv  # noqa: F401  (first: thread pinning)

import argparse
import dataclasses
import datetime
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchenv import PINNED, REPO, THREAD_ENV, SolverProvenance, stats, versions

sys.path.insert(0, str(REPO / "src"))
import grokphase  # noqa: E402,F401  (float64 enabled)
from grokphase.analysis.diagnostics import chain_statistics, diagnose  # noqa: E402
from grokphase.sims import driver  # noqa: E402
from grokphase.sims.models import scale_params  # noqa: E402
from grokphase.sims.teacher_student.config import SQRT6, TeacherStudentSim  # noqa: E402
from grokphase.sims.teacher_student.run import build_members, run_teacher_student  # noqa: E402
from grokphase.sims.teacher_student.task import make_task, population_projections  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "samplers.jsonl"
PROVENANCE = SolverProvenance(driver.__file__)
RECORD_EVERY = 10
#: test points of the grokphase runs: their records (every 10 steps) evaluate the network on them, which
#: at the default n_test = 3000 costs most of a step; the benchmarked observable is the exact projection
N_TEST = 100
#: sampler -> (implementation, options, lr)
SAMPLERS = {
    "plain": ("grokphase", {}, 0.05),
    "gibbs": ("grokphase", {"readout": "gibbs"}, 0.05),
    "mala": ("grokphase", {"mala": True}, 0.3),
    "gibbs+mala": ("grokphase", {"readout": "gibbs", "mala": True}, 0.3),
    "pcn-mala": ("grokphase", {"mala": True, "prior_exact": True, "readout_lr_scale": 0.3}, 0.4),
    "pcn-mala-b": ("grokphase", {"mala": True, "prior_exact": True, "readout_lr_scale": 0.15}, 0.5),
    "pcn-mala-c": ("grokphase", {"mala": True, "prior_exact": True}, 0.3),
    "plain-rb": ("grokphase", {"rao_blackwell": True}, 0.05),
    "mala-rb": ("grokphase", {"mala": True, "rao_blackwell": True}, 0.3),
    "pcn-mala-c-rb": ("grokphase", {"mala": True, "prior_exact": True, "rao_blackwell": True}, 0.3),
    "pcn-refresh": ("grokphase", {"mala": True, "prior_exact": True, "readout": "refresh"}, 0.3),
    "mala-refresh": ("grokphase", {"mala": True, "readout": "refresh"}, 0.3),
    "blackjax-sgld": ("blackjax", {"kernel": "sgld"}, 0.05),
    "blackjax-mala": ("blackjax", {"kernel": "mala"}, 0.3),
}


def make_sim(args, name: str, seed: int, steps: int | None = None) -> TeacherStudentSim:
    impl, opts, lr = SAMPLERS[name]
    steps = args.steps if steps is None else steps
    sim = TeacherStudentSim.from_scaling(beta=args.beta, s2=(args.s2,), datasets=args.datasets, inits=args.inits,
                                         steps=steps, burn_in=steps // 4, record_every=RECORD_EVERY,
                                         seed=seed, lr=lr, n_test=N_TEST, **(opts if impl == "grokphase" else {}))
    if args.ek != 1:
        # the equivalent-kernel control of sims/perp_norm.toml: n -> k n, s2 -> k s2 (u and r unchanged), lr -> lr/k
        # (the preconditioned step lr * s2, and so every sampler's step in the unit variables, unchanged)
        k = args.ek
        sim = dataclasses.replace(sim, n=k * sim.n, s2=tuple(k * v for v in sim.s2), lr=sim.lr / k)
    return sim


def efficiency(traj: np.ndarray, times: np.ndarray, burn_in: int) -> dict:
    """Bulk ESS and precision (sum of 1/MCSE^2 of the data sets' means) summed over data sets, and the
    per-data-set means of a (dataset, init, time) trajectory.  The precision compares estimators of one
    posterior mean with different variances (Rao-Blackwellised records): ESS counts samples of the record's
    own variance, which the conditional expectation shrinks."""
    keep = times > burn_in
    ess, precision, means = 0.0, 0.0, []
    for x in traj:
        st = chain_statistics(x[:, keep])
        ess += st["ess_bulk"]
        precision += 1.0 / st["mcse"] ** 2
        means.append(float(x[:, keep].mean()))
    return {"ess": ess, "precision": precision, "means": np.asarray(means)}


def run_grokphase(args, name: str, seed: int, steps: int | None = None) -> dict:
    sim = make_sim(args, name, seed, steps)
    c0, t0 = time.process_time(), time.perf_counter()
    ds = run_teacher_student(sim)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    times = ds["time"].values
    out = {"wall_s": wall, "cpu_s": cpu}
    for obs in ("cubic_learned", "linear_learned"):
        traj = ds[f"{obs}_trajectory"].values[0]                       # (dataset, init, time)
        out[obs] = efficiency(traj, times, sim.burn_in)
    diag = diagnose(ds).sel(observable="cubic_learned")
    out["rhat_max"] = float(np.nanmax(diag["rhat"].values))
    if "metropolis_acceptance" in ds:
        out["acceptance"] = float(ds["metropolis_acceptance"].values[0])
    return out


#: BlackJAX chains advance in jitted blocks of this many steps (one compilation for any chain length)
BLOCK = 500


def blackjax_runner(args, name: str):
    """A function (seed, steps) -> (records (M, T, 2), acceptance (M,)) running BlackJAX's kernel on the
    grokphase posterior of every (data set, init) member (jitted blocks of BLOCK steps, vmapped over
    members), and the sampler's sim."""
    import blackjax

    _, opts, lr = SAMPLERS[name]
    sim0 = make_sim(args, name, 0)
    task = make_task(sim0)
    step_size = sim0.lr * sim0.s2[0]                # the engine's lr in units of the Langevin temperature

    def same_dtypes(new, old):
        """BlackJAX draws its noise in the default dtype: keep the chain in the sim's dtype."""
        return jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype), new, old)

    def parts(data_key, hyper):
        data = task.make_data(data_key, hyper)

        def logdensity(z):
            theta = scale_params(z, task.prior_std(z, hyper))
            return -task.loss(theta, data) / hyper.s2 - 0.5 * sum(jnp.sum(v * v) for v in jax.tree_util.tree_leaves(z))

        def observe(z):
            theta = scale_params(z, task.prior_std(z, hyper))
            p1, p3 = population_projections(theta["w"], theta["a"], data["w_star"])
            return jnp.stack([p3 / (SQRT6 * hyper.eps), p1])

        if opts["kernel"] == "sgld":
            grad = jax.grad(logdensity)
            kernel = blackjax.sgld(lambda z, _batch: grad(z))

            def one(state, k):
                return same_dtypes(kernel.step(k, state, None, step_size), state), jnp.zeros(())

            def position(state):
                return state

            def init(z):
                return z
        else:
            kernel = blackjax.mala(logdensity, step_size)

            def one(state, k):
                new, info = kernel.step(k, state)
                return same_dtypes(new, state), info.is_accepted.astype(jnp.float32)

            def position(state):
                return state.position
            init = kernel.init
        return data, init, one, position, observe

    def init_member(data_key, init_key, hyper):
        data, init, *_ = parts(data_key, hyper)
        return init(task.init(init_key, data, hyper))

    def block_member(state, data_key, noise_key, hyper, t0):
        _, _, one, position, observe = parts(data_key, hyper)

        def record(state, t):
            keys = jax.vmap(lambda i: jax.random.fold_in(noise_key, t + i))(jnp.arange(RECORD_EVERY))
            state, acc = jax.lax.scan(one, state, keys)
            return state, (observe(position(state)), jnp.sum(acc))

        state, (rec, acc) = jax.lax.scan(record, state, t0 + RECORD_EVERY * jnp.arange(BLOCK // RECORD_EVERY))
        return state, rec, jnp.sum(acc)

    init_v = jax.jit(jax.vmap(init_member))
    block_v = jax.jit(jax.vmap(block_member, in_axes=(0, 0, 0, 0, None)))

    def run(seed: int, steps: int):
        """BlackJAX's MALA cannot keep float32 chains with 64-bit mode on (its accept/reject branches
        differ in dtype): the chains run with it off, in float32 like grokphase's."""
        sim = make_sim(args, name, seed)
        members, _ = build_members(sim)
        with jax.enable_x64(False):
            hyper = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), members.hyper)
            data_keys, init_keys, noise_keys = (jnp.asarray(k) for k in (members.data_keys, members.init_keys,
                                                                           members.noise_keys))
            state = init_v(data_keys, init_keys, hyper)
            recs, acc = [], 0.0
            for t0 in range(0, steps, BLOCK):
                state, rec, a = block_v(state, data_keys, noise_keys, hyper, t0)
                recs.append(rec)
                acc = acc + a
            rec = jax.block_until_ready(jnp.concatenate(recs, axis=1))
        return np.asarray(rec, np.float64), np.asarray(acc) / steps

    return run, sim0


def run_blackjax(args, name: str, seed: int, runner, steps: int | None = None) -> dict:
    run, sim0 = runner
    steps = args.steps if steps is None else steps
    c0, t0 = time.process_time(), time.perf_counter()
    rec, acc = run(seed, steps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rec = rec.reshape(args.datasets, args.inits, -1, 2)
    times = RECORD_EVERY * np.arange(1, rec.shape[2] + 1)
    out = {"wall_s": wall, "cpu_s": cpu, "cubic_learned": efficiency(rec[..., 0], times, steps // 4),
           "linear_learned": efficiency(rec[..., 1], times, steps // 4)}
    if SAMPLERS[name][1]["kernel"] == "mala":
        out["acceptance"] = float(np.mean(acc))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beta", type=float, default=0.125)
    ap.add_argument("--s2", type=float, default=0.14)
    ap.add_argument("--ek", type=int, default=1, metavar="K",
                    help="equivalent-kernel control: n -> K n, s2 -> K s2, every lr -> lr/K (sims/perp_norm.toml)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--datasets", type=int, default=4)
    ap.add_argument("--inits", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=3, help="interleaved rounds after one warm-up round")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--lr", default="", metavar="NAME=LR,...",
                    help="step sizes replacing the defaults, e.g. mala=0.15,gibbs+mala=0.15 (larger models need "
                         "smaller MALA steps for the same acceptance)")
    ap.add_argument("--warmup-steps", type=int, default=4 * BLOCK,
                    help="steps of the untimed compilation run per sampler (a multiple of %d)" % BLOCK)
    ap.add_argument("--pin-cpu", action="store_true", help="(handled by benchenv) whole process on one core")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.steps % BLOCK:
        ap.error(f"--steps must be a multiple of {BLOCK}")
    for item in filter(None, args.lr.split(",")):
        key, _, value = item.partition("=")
        if key not in SAMPLERS:
            ap.error(f"--lr: unknown sampler {key!r}")
        SAMPLERS[key] = (*SAMPLERS[key][:2], float(value))
    names = args.samplers.split(",")
    unknown = [n for n in names if n not in SAMPLERS]
    if unknown or "plain" not in names:
        ap.error(f"--samplers: unknown {unknown}" if unknown else "--samplers must include plain (the baseline)")
    t_start = time.perf_counter()
    runners = {n: blackjax_runner(args, n) for n in names if SAMPLERS[n][0] == "blackjax"}

    def once(name, seed, steps=None):
        if SAMPLERS[name][0] == "grokphase":
            return run_grokphase(args, name, seed, steps)
        return run_blackjax(args, name, seed, runners[name], steps)

    # warm-up (compilation): a short untimed run per sampler (the engine's step loop and BlackJAX's blocks
    # take the chain length as data: the timed runs do not compile again)
    compile_s = {}
    for name in names:
        t0 = time.perf_counter()
        once(name, 10_000, args.warmup_steps)
        compile_s[name] = time.perf_counter() - t0
        print(f"warm-up {name}: {compile_s[name]:.1f} s", flush=True)
    rounds = []
    for r in range(args.pairs):
        order = names if r % 2 == 0 else names[::-1]
        res = {}
        for name in order:
            res[name] = once(name, r)
            x = res[name]
            print(f"round {r} {name:14s} cpu {x['cpu_s']:7.1f} s (cpu/wall {x['cpu_s'] / x['wall_s']:.2f})  "
                  f"ESS cubic {x['cubic_learned']['ess']:7.1f} linear {x['linear_learned']['ess']:7.1f}  "
                  f"cubic {x['cubic_learned']['means'].mean():.4f}"
                  + (f"  acceptance {x['acceptance']:.3f}" if "acceptance" in x else ""), flush=True)
        rounds.append(res)
    sim = make_sim(args, "plain", 0)
    recs = []
    # the exact reference: gibbs+mala, else mala (at beta = 1/2 gibbs+mala costs 3x a plain run), else plain
    ref = next((r for r in ("gibbs+mala", "mala") if r in names), "plain")
    for name in names:
        per = [rd[name] for rd in rounds]
        eff = {obs: [p[obs]["ess"] / p["cpu_s"] for p in per] for obs in ("cubic_learned", "linear_learned")}
        ratio = {obs: [p[obs]["ess"] / p["cpu_s"] / (rd["plain"][obs]["ess"] / rd["plain"]["cpu_s"])
                       for p, rd in zip(per, rounds)] for obs in eff}
        # precision (1/MCSE^2) per CPU-second relative to plain's: the time to a given standard error
        prec_ratio = {obs: [p[obs]["precision"] / p["cpu_s"] / (rd["plain"][obs]["precision"] / rd["plain"]["cpu_s"])
                            for p, rd in zip(per, rounds)] for obs in eff}
        # answer check: paired differences over (round, data set) against the exact reference sampler
        zs = {}
        for obs in ("cubic_learned", "linear_learned"):
            diff = np.concatenate([p[obs]["means"] - rd[ref][obs]["means"] for p, rd in zip(per, rounds)])
            se = diff.std(ddof=1) / np.sqrt(diff.size) if diff.size > 1 else np.nan
            zs[obs] = {"mean_difference": float(diff.mean()), "se": float(se),
                       "z": float(diff.mean() / se) if se > 0 else 0.0,
                       "mean": float(np.mean([p[obs]["means"].mean() for p in per]))}
        rec = dict(benchmark="samplers", sampler=name, implementation=SAMPLERS[name][0], lr=SAMPLERS[name][2],
                   options={k: v for k, v in SAMPLERS[name][1].items() if k != "kernel"},
                   beta=args.beta, ek=args.ek, N=sim.N, n=sim.n, d=sim.d, s2=float(sim.s2[0]), steps=args.steps, record_every=RECORD_EVERY,
                   burn_in=sim.burn_in, datasets=args.datasets, inits=args.inits, rounds=args.pairs,
                   ess_per_cpu_s={o: stats(v) for o, v in eff.items()},
                   ratio_to_plain={o: stats(v) for o, v in ratio.items()},
                   precision_ratio_to_plain={o: stats(v) for o, v in prec_ratio.items()},
                   cpu_s=stats([p["cpu_s"] for p in per]), cpu_per_wall=stats([p["cpu_s"] / p["wall_s"] for p in per]),
                   warmup_s=compile_s[name], versus_reference={"reference": ref, **zs},
                   acceptance=stats([p["acceptance"] for p in per]) if "acceptance" in per[0] else None,
                   rhat_max=max(p.get("rhat_max", np.nan) for p in per), loadavg_1min=os.getloadavg()[0])
        recs.append(rec)
        print(f"{name:14s} ESS/cpu-s cubic {rec['ess_per_cpu_s']['cubic_learned']['median']:.3f}  ratio to plain "
              f"{rec['ratio_to_plain']['cubic_learned']['median']:.2f} [{rec['ratio_to_plain']['cubic_learned']['min']:.2f}, "
              f"{rec['ratio_to_plain']['cubic_learned']['max']:.2f}]  precision/s x plain "
              f"{rec['precision_ratio_to_plain']['cubic_learned']['median']:.2f} "
              f"(linear {rec['precision_ratio_to_plain']['linear_learned']['median']:.2f})  "
              f"cubic {zs['cubic_learned']['mean']:.4f} "
              f"(z vs {ref} {zs['cubic_learned']['z']:+.1f})  linear {zs['linear_learned']['mean']:.4f} "
              f"(z {zs['linear_learned']['z']:+.1f})", flush=True)
    common = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  threads=THREAD_ENV, pinned_cpu=PINNED, versions=versions())
    try:
        import blackjax
        common["blackjax"] = blackjax.__version__
    except ImportError:
        pass
    benchenv.write_results(recs, common, {"driver.py": PROVENANCE.record()}, t_start, args.out, args.no_write)


if __name__ == "__main__":
    main()
