"""Finite-n mean-field theory at the simulated sizes (issue 22): :func:`grokphase.theory.finite_n.solve_finite_n`
on the simulations' own training sets (data-set keys of ``sims.teacher_student.run.member_keys``), averaged over
data sets, next to the exact EK (q, t) theory.

    python -m grokphase.experiments.finite_n --s2 0.17 --alpha 1 --datasets 0 1 2 3 --out results/finite_n/x.json

``--alpha a`` is the EK control of ``sims/perp_norm.toml``: n -> a n and s2 -> a s2 at the same N, d, sa2
(u and r unchanged)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import jax
import numpy as np

from grokphase.theory import finite_n as fn
from grokphase.theory.teacher_student import TeacherStudentParams, solve_finite_d

#: beta = 1/8 of the paper's configuration (sims/perp_norm.toml): N = 88, d = 53, n = 375, sa2 = (8/700) sqrt(8)
BETA_8 = {"N": 88.0, "n": 375.0, "d": 53.0, "sa2": 8.0 / 700.0 * math.sqrt(8.0), "sw2": 0.5, "eps": -0.3}


def run_point(base: dict, s2: float, alpha: float, datasets, seed: int = 0, config: fn.FiniteNConfig = fn.FiniteNConfig(),
              sampler_seed: int = 1, verbose: bool = False, retry: bool = True) -> dict:
    """Solve every listed data set at (n alpha, s2 alpha); returns per-data-set numbers, their mean and the
    standard error over the converged data sets, and the EK (exact finite-d) theory at the same point.  With
    ``retry`` a data set that does not converge is solved once more from tau0 = tau_EK/2 with fresh chains
    and twice the iterations (``retried`` in its row)."""
    p = TeacherStudentParams(**{**base, "n": float(round(base["n"] * alpha)), "s2": s2 * alpha})
    ek = solve_finite_d(p)
    out = {"params": {k: float(v) for k, v in p.as_dict().items()}, "alpha": alpha, "seed": seed,
           "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
           "ek_linear": float(1.0 - np.asarray(ek.b)), "ek_cubic": float(1.0 - np.asarray(ek.c) / base["eps"]),
           "datasets": []}
    for i in datasets:
        t0 = time.time()
        x, y, ws = fn.draw_dataset(fn.dataset_key(seed, i), int(p.n), int(p.d), base["eps"])
        key = jax.random.fold_in(jax.random.PRNGKey(sampler_seed), i)
        sol = fn.solve_finite_n(p, x, y, ws, key, config, verbose=verbose)
        retried = False
        if not sol.converged and retry:
            # caught in the runaway state (chains stuck in modes the current tau no longer supports):
            # one fresh start, from half the EK discrepancy, with fresh chains and twice the iterations
            retried = True
            tau0 = 0.5 * fn.ek_tau(p, fn.make_problem(p, x, y, ws).s)
            sol = fn.solve_finite_n(p, x, y, ws, jax.random.fold_in(key, 1000),
                                    dataclasses.replace(config, iterations=2 * config.iterations), tau0=tau0,
                                    verbose=verbose)
        row = {k: float(v) for k, v in sol._asdict().items() if np.ndim(v) == 0}
        row.update(dataset=int(i), seconds=time.time() - t0, retried=retried)
        out["datasets"].append(row)
        print(json.dumps(row), flush=True)
    ok = [r for r in out["datasets"] if r["converged"]]       # the mean is over converged data sets only
    out["failed"] = [r["dataset"] for r in out["datasets"] if not r["converged"]]
    for name in ("linear_learned", "cubic_learned", "droplet_mass"):
        v = np.array([r[name] for r in ok])
        out[name] = float(v.mean())
        out[f"{name}_sem"] = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--s2", type=float, default=0.17)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--datasets", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--q-size", type=int, default=24)
    ap.add_argument("--walkers", type=int, default=24)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--block-steps", type=int, default=60)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--out", required=True)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    cfg = fn.FiniteNConfig(q_size=a.q_size, walkers=a.walkers, iterations=a.iterations, steps=a.steps,
                           blocks=a.blocks, block_steps=a.block_steps, stride=a.stride)
    res = run_point(BETA_8, a.s2, a.alpha, a.datasets, a.seed, cfg, verbose=a.verbose)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "datasets"}))


if __name__ == "__main__":
    main()
