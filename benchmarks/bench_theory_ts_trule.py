"""Benchmark: the exact (q, t) teacher-student theory with the saddle t-rule against the grid t-rule.

Follows /work/shared/BENCHMARKING.md: threads pinned before JAX is imported (``--pin-cpu``: the whole
process on one core), compilation excluded and reported separately (first call of each rule),
interleaved A/B pairs (median/min/max of per-pair ratios), process CPU seconds per wall second and the
load average next to every figure, peak RSS, and an answer check: b, c, the learned fractions and the
free energy of the two rules must agree to 1e-10 at every point (else no record is written).

Workload: the 64 x 64 finite-d diagram of ``bench_theory_ts.py`` (s2 in linspace(0.05, 0.4, 64) x N in
linspace(100, 3000, 64), sa2 = 8/N, the paper's other parameters), ``approximation="exact"``.
A = ``solve_finite_d(t_rule="saddle")``, B = ``solve_finite_d(t_rule="grid")`` (today's default).

Usage: python benchmarks/bench_theory_ts_trule.py [--pairs 5] [--pin-cpu] [--no-write]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchenv  # noqa: E402  (first: thread env and --pin-cpu before numpy/jax load)
from benchenv import PINNED, THREAD_ENV, peak_rss_mb, versions  # noqa: E402

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from grokphase.theory import teacher_student as ts  # noqa: E402
from grokphase.theory.teacher_student import quadrature  # noqa: E402

PROVENANCE = benchenv.SolverProvenance(ts.__file__)
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "theory_ts_trule.jsonl"
TOL = 1e-10
FIELDS = ("b", "c", "linear_learned", "cubic_learned", "free_energy")


def med(xs):
    return dict(median=statistics.median(xs), min=min(xs), max=max(xs))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5, help="interleaved A/B pairs after warm-up (>= 5 for results)")
    ap.add_argument("--pin-cpu", action="store_true", help="run the whole process on one core")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    print(f"threads: {THREAD_ENV}, affinity {sorted(os.sched_getaffinity(0))}", flush=True)
    s2, N = np.meshgrid(np.linspace(0.05, 0.4, 64), np.linspace(100, 3000, 64), indexing="ij")
    b = ts.TeacherStudentParams(s2=s2, N=N).broadcast()
    p = ts.TeacherStudentParams(**{k: np.asarray(getattr(b, k)).reshape(-1) for k in ts.PARAM_NAMES})
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_start = os.getloadavg()

    def run(rule):
        c0, w0 = time.process_time(), time.perf_counter()
        sol = ts.solve_finite_d(p, approximation="exact", t_rule=rule)
        w = time.perf_counter() - w0
        return sol, w, (time.process_time() - c0) / w

    first, sols = {}, {}
    for rule in ("saddle", "grid"):
        sols[rule], first[rule], _ = run(rule)
        print(f"  {rule}: first call (compile + run) {first[rule]:.1f} s", flush=True)
    A, B = sols["saddle"], sols["grid"]
    diffs = {f: float(np.nanmax(np.abs(getattr(A, f) - getattr(B, f)))) for f in FIELDS}
    diffs["droplet_fraction"] = float(np.nanmax(np.abs(A.droplet_fraction - B.droplet_fraction)))
    print(f"  max |saddle - grid|: {diffs}", flush=True)
    ok = all(diffs[f] <= TOL for f in FIELDS) and np.all(A.status == 0) and np.all(B.status == 0)
    rows = []
    for k in range(args.pairs):
        a, wa, ca = run("saddle")
        g, wg, cg = run("grid")
        assert np.array_equal(a.b, A.b) and np.array_equal(g.b, B.b)
        rows.append(dict(saddle_s=wa, grid_s=wg, ratio=wg / wa, cpu_per_wall_saddle=ca, cpu_per_wall_grid=cg,
                         load1=os.getloadavg()[0]))
        print(f"  pair {k}: saddle {wa:.2f} s (cpu/wall {ca:.2f}), grid {wg:.2f} s (cpu/wall {cg:.2f}), "
              f"speed-up {wg / wa:.1f}x, load {rows[-1]['load1']:.2f}", flush=True)
    rec = dict(
        date=date, workload="diagram_exact_saddle_vs_grid_trule",
        implementations=dict(A="ts.solve_finite_d(approximation='exact', t_rule='saddle'): Gauss-Hermite in the "
                               f"steepest-descent variable around each q-node's t-saddle, {quadrature.SADDLE_T_NODES} "
                               "nodes at level 0, checked against twice the nodes (SADDLE_TOL "
                               f"{quadrature.SADDLE_TOL:g})",
                             B="ts.solve_finite_d(approximation='exact', t_rule='grid'): trapezoid in log t, "
                               "J nodes over the prior's range"),
        sizes=dict(points=int(s2.size), shape=list(s2.shape),
                   q_grid_sizes=sorted(set(int(k) for k in ts.point_grid_sizes(p))),
                   grid_t_sizes=sorted(set(int(j) for j in ts.t_grid_size(p))),
                   saddle_t_nodes=quadrature.SADDLE_T_NODES),
        dtype="float64", threads=dict(THREAD_ENV, cpu_affinity=sorted(os.sched_getaffinity(0)), pinned=bool(PINNED)),
        versions=versions(), provenance=PROVENANCE.record(), first_call_s=first, pairs=rows,
        saddle_s=med([r["saddle_s"] for r in rows]), grid_s=med([r["grid_s"] for r in rows]),
        speedup_grid_over_saddle=med([r["ratio"] for r in rows]),
        load_start=list(load_start), load_end=list(os.getloadavg()), peak_rss_mb=peak_rss_mb(),
        check=dict(all_converged=bool(np.all(A.status == 0) and np.all(B.status == 0)), tolerance=TOL,
                   max_abs_diff=diffs, repeat_runs_bitwise_equal=True,
                   saddle_iterations=med([int(x) for x in np.asarray(A.iterations)]),
                   grid_iterations=med([int(x) for x in np.asarray(B.iterations)])),
        target="exact 64 x 64 diagram < 5 s on one core at 1e-10 agreement with the grid rule",
        note="shared 2-core machine, other work running (load average recorded): wall times vary 1.5-2.5x; "
             "compare the interleaved ratio",
    )
    print(f"  saddle {rec['saddle_s']['median']:.2f} s, grid {rec['grid_s']['median']:.2f} s, "
          f"speed-up {rec['speedup_grid_over_saddle']}", flush=True)
    if not ok:
        print("answer check FAILED: no record written", flush=True)
        sys.exit(1)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"appended 1 record to {args.out}")


if __name__ == "__main__":
    main()
