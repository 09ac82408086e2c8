"""Gibbs readout of the modular Langevin engine: primal (N x N) vs dual (n x n, Matheron) draw.

    .venv/bin/python benchmarks/bench_gibbs_readout.py --pin-cpu [--pairs 7] [--N 1024,2048] [--P 23]
        [--out FILE] [--no-write]

What is timed: one exact draw of the readout z_a ~ p(z_a | w) of one network on the whole table
(n = P^2 training pairs), float32 input weights, float64 algebra, jitted, `block_until_ready` after every
call — the per-step cost that `--readout gibbs` adds when N >= P^2 (below that the engine uses the
O(N^2 P) closed-form Gram, not timed here).

* primal: features F (n, N), Lambda = I + (c^2/s2) F^T F (N x N), Cholesky, mean + chol^-T xi
  (`modular._draw_from_gram`, what `gibbs_readout` did for every N before the dual form);
* dual: K = c^2 F F^T + s2 I (n x n), z = xi + c F^T K^-1 (y - c F xi - sqrt(s2) eps)
  (`modular.gibbs_readout`, used automatically when N > n).

Interleaved rounds (order reversed every other round), CPU/wall recorded per block (BENCHMARKING.md).
Answer check before timing (nothing is written if it fails): with xi = eps = 0 both give the
conditional mean; each is compared with the primal form computed entirely in float64 (max relative
difference <= 1e-4: both form their Gram matrix from float32 features, as the engine does).
"""

from __future__ import annotations

import benchenv  # noqa: F401  (first: thread pinning)

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchenv import REPO, PINNED, THREAD_ENV, SolverProvenance, stats, timed, versions

sys.path.insert(0, str(REPO / "src"))
import grokphase  # noqa: E402,F401
from grokphase.sims import modular  # noqa: E402
from grokphase.sims.modular import readout  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "gibbs_readout.jsonl"
PROVENANCE = SolverProvenance(readout.__file__)


def setup(P: int, N: int, s2: float = 4e-4):
    pairs = jnp.asarray(modular.all_pairs(P))
    y = modular.targets(pairs, P, jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(0), (2 * P, N), jnp.float32)
    n = P * P
    xi = jax.random.normal(jax.random.PRNGKey(1), (N, P), jnp.float64)
    eps = jax.random.normal(jax.random.PRNGKey(2), (n, P), jnp.float64)
    # readout scale c = sqrt(sa2/N) of sims/modular_superheating.toml's regime (s1 = 4e-4, gamma = 0.3)
    c = float(np.sqrt(4e-4 ** 2 * np.sqrt(0.3) / (np.sqrt(3) * P * P)))

    @jax.jit
    def primal(w, xi):
        F = (w[pairs[:, 0]] + w[P + pairs[:, 1]]) ** 2
        return modular._draw_from_gram((F.T @ F).astype(jnp.float64), (F.T @ y).astype(jnp.float64), c, s2, xi)

    @jax.jit
    def dual(w, xi, eps):
        return modular.gibbs_readout(w, pairs, y, c, s2, xi, eps)

    zN, zn = jnp.zeros((N, P)), jnp.zeros((n, P))
    ref = np.asarray(primal(w.astype(jnp.float64), zN))             # everything in float64
    m_p, m_d = np.asarray(primal(w, zN)), np.asarray(dual(w, zN, zn))
    err = {k: float(np.max(np.abs(m - ref)) / np.max(np.abs(ref))) for k, m in (("primal", m_p), ("dual", m_d))}
    if not max(err.values()) <= 1e-4:
        raise SystemExit(f"answer check failed at P={P}, N={N}: conditional means off the float64 reference by {err}")
    return {"primal": lambda: primal(w, xi), "dual": lambda: dual(w, xi, eps)}, err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=7, help="interleaved rounds after one warm-up round")
    ap.add_argument("--P", type=int, default=23)
    ap.add_argument("--N", default="1024,2048")
    ap.add_argument("--reps", type=int, default=5, help="calls per timed block")
    ap.add_argument("--pin-cpu", action="store_true", help="(handled by benchenv) whole process on one core")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    common = dict(benchmark="gibbs_readout",
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  versions=versions(), thread_env=THREAD_ENV, cpu_affinity=sorted(os.sched_getaffinity(0)),
                  pinned_cpu=PINNED, command=" ".join(sys.argv))
    recs = []
    for N in (int(x) for x in args.N.split(",")):
        runs, err = setup(args.P, N)
        for f in runs.values():
            jax.block_until_ready(f())
        rows = {k: [] for k in runs}
        for r in range(args.pairs + 1):
            for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                _, wall, cpu, load = timed(runs[k], args.reps)
                if r:
                    rows[k].append((wall, cpu / wall, load))
        ratio = [p[0] / d[0] for p, d in zip(rows["primal"], rows["dual"])]
        print(f"P={args.P} N={N} n={args.P ** 2}: primal {np.median([x[0] for x in rows['primal']]) * 1e3:.1f} ms, "
              f"dual {np.median([x[0] for x in rows['dual']]) * 1e3:.1f} ms per draw; primal/dual per round "
              f"median {np.median(ratio):.2f} [{min(ratio):.2f}, {max(ratio):.2f}]; mean vs float64 reference "
              f"primal {err['primal']:.1e}, dual {err['dual']:.1e}")
        for k, v in rows.items():
            recs.append(dict(workload="gibbs_readout", implementation=k, P=args.P, N=N, n=args.P ** 2,
                             rounds=args.pairs, reps=args.reps, draw_s=stats(x[0] for x in v),
                             cpu_per_wall=stats(x[1] for x in v), load1=stats(x[2] for x in v),
                             speedup_dual_over_primal=stats(ratio), mean_check_rel=err))
    benchenv.write_results(recs, common, {"modular.py": PROVENANCE.record()}, t_start, args.out, args.no_write)


if __name__ == "__main__":
    main()
