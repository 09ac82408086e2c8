"""Benchmark: finite-d teacher-student theory, JAX solver vs a hand-written SciPy baseline.

Follows /work/shared/BENCHMARKING.md: threads pinned before JAX is imported, compilation excluded
and reported separately, interleaved A/B pairs (median/min/max of the per-pair ratios), process
CPU seconds per wall second and load average next to every figure, peak RSS, and an answer check
(|Δb| and |Δc/eps| < 1e-6 at every compared point, else the run fails without writing results).

Workloads
  sweep    41-point sigma^2 sweep np.linspace(0.05, 0.35, 41) at the paper's config (beta = 1)
  diagram  64 x 64 phase diagram s2 in linspace(0.05, 0.4, 64) x N in linspace(100, 3000, 64),
           sa2 = 8/N.  The baseline runs on a fixed random subset (seed 0) of the points; the
           ratio compares seconds per point, and the full-diagram baseline time is extrapolated.
  beta64   the paper's config scaled to beta = 64 (s2 = 0.14), one point: b and c/eps from both.

A = ``grokphase.theory.teacher_student.solve_finite_d`` (public API, whole batch in one call; its
result is already on the host).  B = ``scipy_baseline_ts.solve_point`` (damped fixed point, quad).
C (secondary, reported next to B) = ``scipy_baseline_ts.solve_point_root`` (MINPACK hybr on the same
residual, same quadrature, damped-iteration fallback), timed in the same interleaved rounds.

Usage: python benchmarks/bench_theory_ts.py [--pairs 5] [--subset 24] [--quick] [--no-root] [--pin-cpu]
"""

from __future__ import annotations

# --- threads: set before numpy/scipy/jax are imported ---------------------------------------------
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchenv  # noqa: E402  (first: thread env and --pin-cpu before numpy/jax load)
from benchenv import PINNED, THREAD_ENV, peak_rss_mb, stats, timed, versions  # noqa: E402,F401

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import jax  # noqa: E402  (grokphase enables float64)
import jax.numpy as jnp  # noqa: E402

from grokphase.theory import teacher_student as ts  # noqa: E402


PROVENANCE = benchenv.SolverProvenance(ts.__file__)  # the solver source as imported

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import scipy_baseline_ts as base  # noqa: E402

RESULTS = HERE / "results" / "theory_ts.jsonl"
TOL = 1e-6
SWEEP_BASELINE_BUDGET_S = 60.0
FULL_SHAPE = (64, 64)


# --- helpers --------------------------------------------------------------------------------------





def flat_params(p: ts.TeacherStudentParams) -> ts.TeacherStudentParams:
    b = p.broadcast()
    return ts.TeacherStudentParams(**{k: np.asarray(getattr(b, k), dtype=np.float64).reshape(-1)
                                      for k in ts.PARAM_NAMES})


def point(p: ts.TeacherStudentParams, i: int) -> tuple[float, ...]:
    return tuple(float(np.asarray(getattr(p, k))[i]) for k in ts.PARAM_NAMES)


def run_jax(p):
    sol = ts.solve_finite_d(p)
    return sol


def run_baseline(solver, p, idx):
    """Solve each point; each result carries its own wall time (``wall_s``) for the per-point spread."""
    out = []
    for i in idx:
        t0 = time.perf_counter()
        r = solver(*point(p, int(i)))
        r["wall_s"] = time.perf_counter() - t0
        out.append(r)
    return out




def diffs(jax_sol, p, idx, results):
    b_j = np.asarray(jax_sol.b).reshape(-1)[idx]
    c_j = np.asarray(jax_sol.c).reshape(-1)[idx]
    eps = np.asarray(p.eps).reshape(-1)[idx]
    b_s = np.array([r["b"] for r in results])
    c_s = np.array([r["c"] for r in results])
    db = np.abs(b_s - b_j)
    dc = np.abs((c_s - c_j) / eps)
    return float(db.max()), float(dc.max()), int(np.argmax(np.maximum(db, dc)))


def check_agreement(name, jax_sol, p, idx, results):
    not_conv = [int(i) for i, r in zip(idx, results) if not r["converged"]]
    jstat = np.asarray(jax_sol.status).reshape(-1)[idx]
    db, dc, worst = diffs(jax_sol, p, idx, results)
    print(f"  [{name}] agreement over {len(idx)} points: max|Δb| = {db:.3e}, max|Δc/eps| = {dc:.3e}"
          f" (worst at flat index {int(idx[worst])}: {point(p, int(idx[worst]))})", flush=True)
    problems = []
    if not_conv:
        problems.append(f"{name} did not converge at flat indices {not_conv}")
    if np.any(jstat != ts.Status.CONVERGED):
        problems.append(f"JAX status not converged at {list(np.asarray(idx)[jstat != 0])}")
    if not (db < TOL and dc < TOL):
        problems.append(f"{name} and JAX disagree: max|Δb| = {db:.3e}, max|Δc/eps| = {dc:.3e} (tol {TOL})")
    if problems:
        for s in problems:
            print("AGREEMENT FAILURE: " + s, file=sys.stderr, flush=True)
        raise SystemExit("agreement check failed; no results written")
    return db, dc


def roofline_gflops(n=1024, reps=5):
    """Single-threaded float64 matmul throughput (context only, no % of roofline is claimed)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    ts_ = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        ts_.append(time.perf_counter() - t0)
    return 2.0 * n**3 / min(ts_) / 1e9














# --- one workload ---------------------------------------------------------------------------------

def bench_workload(name, p, idx, pairs, use_root, extrapolate_to=None, budget_s=None, subset=24):
    """Interleaved rounds: A (JAX, all points), B (damped-FP baseline on idx), C (root baseline on idx).

    With ``budget_s``: if the baseline's warm-up pass over ``idx`` takes longer, the timed rounds use
    a random subset (seed 0) of ``subset`` of those points (the agreement check still covers all)."""
    n_total = int(np.asarray(p.s2).size)
    K = ts.default_grid_size(p)
    print(f"\n== {name}: {n_total} points (JAX grid {K}), baseline on {len(idx)} points, {pairs} pairs",
          flush=True)
    load0 = os.getloadavg()

    # compile (AOT, same function and static arguments as the public call) and warm-up
    # the public call pads the batch to a bucketed size (if this version of the solver does)
    padded = ts._padded(p)[0] if hasattr(ts, "_padded") else p
    n_padded = int(np.asarray(padded.s2).size)
    t0 = time.perf_counter()
    ts.solve_finite_d_batch.lower(padded, grid_size=K, maxiter=100, density=False).compile()
    compile_s = time.perf_counter() - t0
    sol, first_s, first_cpu, _ = timed(lambda: run_jax(p))
    print(f"  JAX AOT compile {compile_s:.2f} s; first public call {first_s:.2f} s; "
          f"iterations max {int(np.max(sol.iterations))}, statuses {np.bincount(np.asarray(sol.status).ravel())}",
          flush=True)

    # baseline warm-up run: also the agreement check (both are deterministic)
    res_b, wb, cb, _ = timed(lambda: run_baseline(base.solve_point, p, idx))
    print(f"  baseline warm-up {wb:.2f} s ({wb / len(idx):.3f} s/point), iterations "
          f"{[r['iterations'] for r in res_b]}", flush=True)
    db, dc = check_agreement("scipy damped FP", sol, p, idx, res_b)
    n_checked = len(idx)
    if budget_s is not None and wb > budget_s and subset < len(idx):
        keep = np.sort(np.random.default_rng(0).choice(len(idx), size=subset, replace=False))
        idx, res_b = idx[keep], [res_b[k] for k in keep]
        print(f"  baseline pass over {n_checked} points exceeds {budget_s:.0f} s: timing a {subset}-point subset",
              flush=True)
    db_root = dc_root = None
    if use_root:
        res_c, wc, _, _ = timed(lambda: run_baseline(base.solve_point_root, p, idx))
        print(f"  root baseline warm-up {wc:.2f} s; fallbacks {sum(r['fallback'] for r in res_c)}", flush=True)
        db_root, dc_root = check_agreement("scipy root(hybr)", sol, p, idx, res_c)

    rounds = []
    per_point_rounds = []
    for k in range(pairs):
        r = {}
        s, w, c, la = timed(lambda: run_jax(p))
        r.update(jax_s=w, jax_cpu_per_wall=c / w, jax_load1=la)
        out, w, c, la = timed(lambda: run_baseline(base.solve_point, p, idx))
        r.update(baseline_s=w, baseline_cpu_per_wall=c / w, baseline_load1=la)
        per_point_rounds.append([x["wall_s"] for x in out])
        r["ratio"] = (r["baseline_s"] / len(idx)) / (r["jax_s"] / n_total)
        if use_root:
            out, w, c, la = timed(lambda: run_baseline(base.solve_point_root, p, idx))
            r.update(root_s=w, root_cpu_per_wall=c / w, root_load1=la)
            r["root_ratio"] = (r["root_s"] / len(idx)) / (r["jax_s"] / n_total)
        rounds.append(r)
        print(f"  pair {k + 1}: JAX {r['jax_s']:.3f} s (cpu/wall {r['jax_cpu_per_wall']:.2f}) | baseline "
              f"{r['baseline_s']:.2f} s (cpu/wall {r['baseline_cpu_per_wall']:.2f}) | ratio/point {r['ratio']:.1f}"
              + (f" | root {r['root_s']:.2f} s, ratio {r['root_ratio']:.1f}" if use_root else "")
              + f" | load {r['baseline_load1']:.2f}", flush=True)

    # per-point baseline cost: median over the rounds (for the extrapolation's spread)
    per_point = np.median(np.array(per_point_rounds), axis=0)

    jax_med = statistics.median(r["jax_s"] for r in rounds)
    base_med = statistics.median(r["baseline_s"] for r in rounds)
    rec = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        implementations=dict(A="grokphase.theory.teacher_student.solve_finite_d (JAX, jit+vmap, damped Newton on concave F, trapezoid on sinh grid)",
                             B="benchmarks/scipy_baseline_ts.solve_point (damped fixed point on (b,c), scipy.integrate.quad)",
                             C=("benchmarks/scipy_baseline_ts.solve_point_root (scipy.optimize.root hybr, same quad; FP fallback)"
                                if use_root else None)),
        workload=name,
        sizes=dict(points=n_total, baseline_points=len(idx), agreement_points=n_checked, baseline_subset_seed=(0 if len(idx) < n_total else None),
                   jax_grid_size=K, jax_batch_padded_to=n_padded, shape=list(np.asarray(p.s2).shape) if name != "diagram" else list(FULL_SHAPE)),
        dtype="float64",
        threads=dict(THREAD_ENV, cpu_affinity=sorted(os.sched_getaffinity(0)), pinned=PINNED is not None,
                     note="JAX on the default single CPU device; SciPy/NumPy single-threaded"),
        versions=versions(),
        provenance=PROVENANCE.record(),
        pairs=pairs,
        jax_compile_s=compile_s,
        jax_first_call_s=first_s,
        jax_s=jax_med,
        jax_s_min=min(r["jax_s"] for r in rounds),
        jax_s_per_point=jax_med / n_total,
        jax_newton_iterations_max=int(np.max(sol.iterations)),
        baseline_s=base_med,
        baseline_s_per_point=base_med / len(idx),
        baseline_iterations=dict(median=float(np.median([r["iterations"] for r in res_b])),
                                 max=int(max(r["iterations"] for r in res_b))),
        ratio=stats(r["ratio"] for r in rounds),
        cpu_per_wall=dict(jax=stats(r["jax_cpu_per_wall"] for r in rounds),
                          baseline=stats(r["baseline_cpu_per_wall"] for r in rounds)),
        loadavg=dict(start=list(load0), end=list(os.getloadavg()),
                     per_pair_1min=[round(r["baseline_load1"], 2) for r in rounds]),
        max_abs_diff_b=db,
        max_abs_diff_c_over_eps=dc,
        rounds=rounds,
    )
    if extrapolate_to is not None:
        se = per_point.std(ddof=1) / np.sqrt(per_point.size) if per_point.size > 1 else float("nan")
        rec["baseline_full_extrapolated_s"] = float(base_med / len(idx) * extrapolate_to)
        rec["baseline_full_extrapolated_se_s"] = float(se * extrapolate_to) if np.isfinite(se) else None
        rec["baseline_subset_indices"] = [int(i) for i in idx]
        rec["baseline_subset_point_s"] = [round(float(x), 4) for x in per_point]
        rec["jax_full_s"] = jax_med
        rec["baseline_point_s_distribution"] = dict(median=float(np.median(per_point)), max=float(per_point.max()),
                                                    min=float(per_point.min()))
    if use_root:
        root_med = statistics.median(r["root_s"] for r in rounds)
        rec.update(root_s=root_med, root_s_per_point=root_med / len(idx),
                   root_ratio=stats(r["root_ratio"] for r in rounds),
                   root_cpu_per_wall=stats(r["root_cpu_per_wall"] for r in rounds),
                   root_max_abs_diff_b=db_root, root_max_abs_diff_c_over_eps=dc_root,
                   root_fallbacks=int(sum(r["fallback"] for r in res_c)),
                   root_evaluations=dict(median=float(np.median([r["iterations"] for r in res_c])),
                                         max=int(max(r["iterations"] for r in res_c))))
        if extrapolate_to is not None:
            rec["root_full_extrapolated_s"] = float(root_med / len(idx) * extrapolate_to)
    rec["peak_rss_mb"] = peak_rss_mb()
    print(f"  => JAX {jax_med:.3f} s ({jax_med / n_total * 1e3:.3f} ms/point), baseline {base_med:.2f} s on "
          f"{len(idx)} points ({base_med / len(idx):.3f} s/point), ratio median {rec['ratio']['median']:.1f} "
          f"[{rec['ratio']['min']:.1f}, {rec['ratio']['max']:.1f}]", flush=True)
    if extrapolate_to is not None:
        print(f"  => baseline extrapolated to {extrapolate_to} points: {rec['baseline_full_extrapolated_s']:.0f} "
              f"± {rec['baseline_full_extrapolated_se_s']:.0f} s (s.e. from the subset's spread)", flush=True)
    return rec, sol, res_b


def beta64_point(pairs, use_root):
    p = flat_params(ts.TeacherStudentParams().scaled(beta=64))
    idx = np.array([0])
    rec, sol, res_b = bench_workload("beta64", p, idx, pairs, use_root)
    rb = res_b[0]
    eps = float(p.eps[0])
    rec["beta64"] = dict(
        params={k: float(np.asarray(getattr(p, k))[0]) for k in ts.PARAM_NAMES},
        jax=dict(b=float(sol.b[0]), c_over_eps=float(sol.c[0] / eps), iterations=int(sol.iterations[0])),
        scipy=dict(b=rb["b"], c_over_eps=rb["c"] / eps, iterations=rb["iterations"], residual=rb["residual"]),
        scaling_limit=None,
    )
    lim = ts.solve_limit(p)
    rec["beta64"]["scaling_limit"] = dict(b=float(lim.b[0]), c_over_eps=float(lim.c[0] / eps))
    print(f"  beta=64: JAX b={sol.b[0]:.8f} c/eps={sol.c[0] / eps:.8f} | SciPy b={rb['b']:.8f} "
          f"c/eps={rb['c'] / eps:.8f} | scaling limit b={lim.b[0]:.6f} c/eps={lim.c[0] / eps:.6f}", flush=True)
    return rec


RESULTS_APPROX = HERE / "results" / "theory_ts_exact.jsonl"


def approximations_diagram(pairs: int, out: Path, no_write: bool) -> dict:
    """The 64 x 64 finite-d diagram (the `diagram` workload's grid) in the exact two-variable
    approximation (THEORY.md §3b, the default) against the paper's concentrated one, both through the
    public ``solve_finite_d`` (per-point grids, refinement, status check); interleaved pairs after a
    warm-up call of each (compile + first run, recorded)."""
    s2, N = np.meshgrid(np.linspace(0.05, 0.4, 64), np.linspace(100, 3000, 64), indexing="ij")
    p = flat_params(ts.TeacherStudentParams(s2=s2, N=N))
    load = lambda: os.getloadavg()  # noqa: E731
    start = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), load=load())

    def run(ap):
        c0, w0 = time.process_time(), time.perf_counter()
        sol = ts.solve_finite_d(p, approximation=ap)
        w = time.perf_counter() - w0
        return sol, w, (time.process_time() - c0) / w

    first = {}
    sols = {}
    for ap in ("exact", "concentrated"):
        sols[ap], w, _ = run(ap)
        first[ap] = w
        print(f"  {ap}: first call (compile + run) {w:.1f} s", flush=True)
    rows = []
    for k in range(pairs):
        e, we, ce = run("exact")
        c, wc, cc = run("concentrated")
        assert np.array_equal(e.b, sols["exact"].b) and np.array_equal(c.b, sols["concentrated"].b)
        rows.append(dict(exact_s=we, concentrated_s=wc, ratio=we / wc, cpu_per_wall_exact=ce,
                         cpu_per_wall_concentrated=cc, load1=load()[0]))
        print(f"  pair {k}: exact {we:.2f} s (cpu/wall {ce:.2f}), concentrated {wc:.3f} s (cpu/wall {cc:.2f}), "
              f"ratio {we / wc:.1f}, load {rows[-1]['load1']:.2f}", flush=True)
    ex, co = sols["exact"], sols["concentrated"]
    ratios = [r["ratio"] for r in rows]
    rec = dict(
        date=start["date"], workload="diagram_exact_vs_concentrated",
        implementations=dict(A="ts.solve_finite_d(approximation='exact'): 2-D (q, log t) trapezoid, K x J nodes",
                             B="ts.solve_finite_d(approximation='concentrated'): 1-D q trapezoid (paper's Claim II)"),
        sizes=dict(points=int(s2.size), shape=list(s2.shape),
                   q_grid_sizes=sorted(set(int(k) for k in ts.point_grid_sizes(p))),
                   t_grid_sizes=sorted(set(int(j) for j in ts.t_grid_size(p)))),
        dtype="float64", threads=dict(THREAD_ENV, cpu_affinity=sorted(os.sched_getaffinity(0)),
                                      pinned=bool(PINNED)),
        versions=versions(), provenance=PROVENANCE.record(),
        first_call_s=first, pairs=rows,
        exact_s=dict(zip(("median", "min", "max"), (statistics.median([r["exact_s"] for r in rows]),
                                                    min(r["exact_s"] for r in rows), max(r["exact_s"] for r in rows)))),
        concentrated_s=dict(zip(("median", "min", "max"),
                                (statistics.median([r["concentrated_s"] for r in rows]),
                                 min(r["concentrated_s"] for r in rows), max(r["concentrated_s"] for r in rows)))),
        ratio_exact_over_concentrated=dict(median=statistics.median(ratios), min=min(ratios), max=max(ratios)),
        load_start=start["load"], load_end=load(), peak_rss_mb=peak_rss_mb(),
        check=dict(all_converged=bool(np.all(ex.status == 0) and np.all(co.status == 0)),
                   repeat_runs_bitwise_equal=True,
                   max_abs_diff_b_exact_vs_concentrated=float(np.max(np.abs(ex.b - co.b))),
                   max_abs_diff_cubic_learned=float(np.max(np.abs(ex.cubic_learned - co.cubic_learned))),
                   exact_max_quad_error=float(np.max(ex.quad_error))),
        target="exact 64 x 64 diagram < 120 s on this machine",
    )
    print(f"  exact {rec['exact_s']['median']:.1f} s, concentrated {rec['concentrated_s']['median']:.2f} s, "
          f"ratio {rec['ratio_exact_over_concentrated']}", flush=True)
    if not no_write:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"appended 1 record to {out}")
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5, help="interleaved A/B pairs after warm-up (>= 5 for results)")
    ap.add_argument("--subset", type=int, default=24, help="diagram points the baseline solves (seed 0)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 pairs, 8-point subsets")
    ap.add_argument("--no-root", action="store_true", help="skip the secondary scipy.optimize.root baseline")
    ap.add_argument("--check-points", type=int, default=128,
                    help="extra diagram points (seed 1) checked against the root baseline, untimed")
    ap.add_argument("--pin-cpu", action="store_true",
                    help="run the whole process on one core (sched_setaffinity), so both sides get <= 1 CPU")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--approximations", action="store_true",
                    help="only the exact-vs-concentrated 64 x 64 diagram (-> results/theory_ts_exact.jsonl)")
    args = ap.parse_args(argv)
    if args.approximations:
        print(f"threads: {THREAD_ENV}")
        approximations_diagram(args.pairs if not args.quick else 2, RESULTS_APPROX if args.out == RESULTS else args.out,
                               args.no_write)
        return
    pairs, subset = (2, 8) if args.quick else (args.pairs, args.subset)
    use_root = not args.no_root

    print(f"threads: {THREAD_ENV}")
    print(f"versions: {versions()}")
    print(f"provenance: {PROVENANCE.record()}")
    roof = roofline_gflops()
    print(f"single-thread float64 matmul (1024^3): {roof:.1f} GFLOP/s (context)")
    records = []

    # (a) the 41-point sweep at the paper's configuration
    sweep = flat_params(ts.TeacherStudentParams(s2=np.linspace(0.05, 0.35, 41)))
    idx = np.sort(np.random.default_rng(0).choice(41, size=8, replace=False)) if args.quick else np.arange(41)
    records.append(bench_workload("sweep", sweep, idx, pairs, use_root, budget_s=SWEEP_BASELINE_BUDGET_S,
                                  subset=subset)[0])

    # (b) the 64 x 64 phase diagram
    s2, N = np.meshgrid(np.linspace(0.05, 0.4, 64), np.linspace(100, 3000, 64), indexing="ij")
    diagram = flat_params(ts.TeacherStudentParams(s2=s2, N=N))
    idx = np.sort(np.random.default_rng(0).choice(s2.size, size=subset, replace=False))
    rec, sol, _ = bench_workload("diagram", diagram, idx, pairs, use_root, extrapolate_to=s2.size)
    n_extra = 16 if args.quick else args.check_points
    if n_extra > 0:
        extra = np.sort(np.random.default_rng(1).choice(s2.size, size=n_extra, replace=False))
        t0 = time.perf_counter()
        res = run_baseline(base.solve_point_root, diagram, extra)
        print(f"  extra agreement pass ({n_extra} points, root baseline, {time.perf_counter() - t0:.1f} s, "
              f"{sum(r['fallback'] for r in res)} fallbacks):", flush=True)
        db, dc = check_agreement("scipy root(hybr), extra points", sol, diagram, extra, res)
        rec["extra_agreement"] = dict(points=n_extra, seed=1, solver="solve_point_root",
                                      max_abs_diff_b=db, max_abs_diff_c_over_eps=dc,
                                      fallbacks=int(sum(r["fallback"] for r in res)))
    records.append(rec)

    # (c) the beta = 64 paper point
    records.append(beta64_point(pairs, use_root))

    for r in records:
        r["roofline_matmul_gflops_1thread"] = roof
        r["quick"] = bool(args.quick)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        print(f"\nappended {len(records)} records to {args.out}")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
