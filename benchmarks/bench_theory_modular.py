"""Benchmark: finite-P modular-addition theory, JAX solver vs hand-written SciPy/NumPy baselines.

Follows /work/shared/BENCHMARKING.md (and bench_theory_ts.py): threads pinned before JAX is imported,
compilation excluded and reported separately, interleaved rounds A B C A B C ... (median/min/max of
the per-round ratios), process CPU seconds per wall second and load average next to every figure, peak
RSS, and an answer check (|Δa| < 1e-6 at every compared point, else the run exits without writing).

Workloads
  exact    200-point sigma^2 sweep np.linspace(0.1, 0.3, 200) at Fig. 3 (N=1000, P=401, sa2=0.002/N,
           gamma=1e-4) with the exact 2-D quadrature.
             A = grokphase.theory.modular.solve(p, method="exact")  (jit+vmap, all 200 points per call)
             B = scipy_baseline_modular.solve_point(..., moment="quad")  brentq + nested scipy quad,
                 on a fixed random subset (seed 0) of --subset-quad points: ratio per point
             C = scipy_baseline_modular.solve_point(..., moment="grid")  brentq + NumPy log-space
                 Gauss-Legendre tensor grid, on a fixed random subset (seed 0) of --subset-grid points
  diagram  64 x 64 phase diagram with the saddle mixture: s2 in linspace(0.1, 0.3, 64) x N in
           linspace(500, 2000, 64), sa2 = 0.002/N, P = 401, gamma = 1e-4.
             A = solve(p)  (saddle),  B = brentq per point on the eq. 41-42 formula (all 4096 points),
             C = scipy_baseline_modular.solve_saddle_vectorized (NumPy, all points at once).
           Issue target: A under 10 s and >= 20x faster than B.

Work count (exact): with the fixed 64-step bisection (solver at commit 044b2d1), A evaluates the 8-node
tensor grid (n8 = 520 nodes per axis) 67 times per point (f(-1), bisection's own f(lo), 64 halvings, the
final value) plus the 4-node error check (260^2), whatever the point (not reported for other root finders); C evaluates the same kind of grid once per brentq step (5-30 steps).  Both are reported
as grid points per second, so "JAX faster per grid point" and "fewer evaluations" are separable.

Usage: python benchmarks/bench_theory_modular.py [--pairs 5] [--subset-quad 8] [--subset-grid 40]
       [--quick] [--pin-cpu] [--out FILE] [--no-write]
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
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402



from grokphase.theory import modular as md  # noqa: E402

PROVENANCE = benchenv.SolverProvenance(md.__file__)  # the solver source as imported

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import scipy_baseline_modular as base  # noqa: E402

RESULTS = HERE / "results" / "theory_modular.jsonl"
TOL = 1e-6
TARGET_DIAGRAM_S = 10.0
TARGET_RATIO = 20.0


# --- helpers (as in bench_theory_ts.py) -------------------------------------------------------------



















def flat(p: md.ModularParams) -> md.ModularParams:
    b = p.broadcast()
    return md.ModularParams(**{k: np.asarray(getattr(b, k), dtype=np.float64).reshape(-1) for k in md.PARAM_NAMES})


def point(p: md.ModularParams, i: int) -> tuple[float, ...]:
    return tuple(float(np.asarray(getattr(p, k))[i]) for k in md.PARAM_NAMES)   # (N, P, s2, sa2, gamma)


def run_points(p, idx, moment):
    """Solve each point with the per-point baseline; each result carries its own wall time."""
    out = []
    for i in idx:
        t0 = time.perf_counter()
        r = base.solve_point(*point(p, int(i)), moment=moment)
        r["wall_s"] = time.perf_counter() - t0
        out.append(r)
    return out


def check(name, a_ref, a_other, where):
    """max |Δa| over the compared points; exits (no results written) beyond TOL."""
    d = np.abs(np.asarray(a_other) - np.asarray(a_ref))
    worst = int(np.argmax(d))
    print(f"  [{name}] agreement over {d.size} points: max|Δa| = {d.max():.3e} (worst at {where(worst)})", flush=True)
    if not np.all(d < TOL):
        print(f"AGREEMENT FAILURE: {name} and JAX disagree: max|Δa| = {d.max():.3e} (tol {TOL})", file=sys.stderr)
        raise SystemExit("agreement check failed; no results written")
    return float(d.max())


def common_record(name, pairs):
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        workload=name, dtype="float64",
        threads=dict(THREAD_ENV, cpu_affinity=sorted(os.sched_getaffinity(0)), pinned=PINNED is not None,
                     note="JAX on the default single CPU device; SciPy/NumPy single-threaded"),
        versions=versions(), provenance=PROVENANCE.record(), pairs=pairs)


# --- workload: exact quadrature sweep ----------------------------------------------------------------

N8 = (md.N_GEOM + md.N_PATCH + 1) * md._GL_NODES       # nodes per axis, 8-node rule
N4 = (md.N_GEOM + md.N_PATCH + 1) * (md._GL_NODES // 2)
# 67 evaluations per point holds for the fixed 64-step bisection of the solver this was written against
# (commit 044b2d1); with any other root finder the count is unknown from outside and is not reported.
BISECTION_64 = "bisect(f, lo, hi, iters=64)" in Path(md.__file__).read_text()
JAX_GRID_POINTS_PER_POINT = 67 * N8**2 + N4**2 if BISECTION_64 else None


def bench_exact(pairs, n_sweep, n_quad, n_grid):
    p = flat(md.ModularParams(s2=np.linspace(0.1, 0.3, n_sweep)))
    n = n_sweep
    rng = np.random.default_rng(0)
    idx_q = np.sort(rng.choice(n, size=n_quad, replace=False))
    idx_g = np.sort(np.random.default_rng(0).choice(n, size=n_grid, replace=False))
    print(f"\n== exact: {n} points, P = 401 (JAX all points; B nested quad on {n_quad}; C NumPy grid on {n_grid}); "
          f"{pairs} rounds", flush=True)
    load0 = os.getloadavg()
    padded, _ = md._padded(p)
    t0 = time.perf_counter()
    md.solve_batch.lower(padded, method="exact").compile()
    compile_s = time.perf_counter() - t0
    sol, first_s, _, _ = timed(lambda: md.solve(p, method="exact"))
    print(f"  JAX AOT compile {compile_s:.1f} s; first public call {first_s:.1f} s (compiles again + runs); "
          f"statuses {np.bincount(np.asarray(sol.status).ravel())}", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # quad's roundoff notes at epsrel 1e-10
        run_points(p, idx_q[:1], "quad")         # import / first-call warm-up of the baselines
    run_points(p, idx_g[:1], "grid")

    rounds, per_q, per_g = [], [], []
    res_q = res_g = None
    for k in range(pairs):
        r = {}
        s, w, c, la = timed(lambda: md.solve(p, method="exact"))
        r.update(jax_s=w, jax_cpu_per_wall=c / w, jax_load1=la)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res_q, w, c, la = timed(lambda: run_points(p, idx_q, "quad"))
        r.update(quad_s=w, quad_cpu_per_wall=c / w, quad_load1=la)
        res_g, w, c, la = timed(lambda: run_points(p, idx_g, "grid"))
        r.update(grid_s=w, grid_cpu_per_wall=c / w, grid_load1=la)
        r["ratio_quad"] = (r["quad_s"] / n_quad) / (r["jax_s"] / n)
        r["ratio_grid"] = (r["grid_s"] / n_grid) / (r["jax_s"] / n)
        per_q.append([x["wall_s"] for x in res_q])
        per_g.append([x["wall_s"] for x in res_g])
        rounds.append(r)
        print(f"  round {k + 1}: JAX {r['jax_s']:.1f} s ({r['jax_s'] / n:.3f} s/pt, cpu/wall {r['jax_cpu_per_wall']:.2f})"
              f" | B quad {r['quad_s']:.1f} s ({r['quad_s'] / n_quad:.2f} s/pt) ratio {r['ratio_quad']:.1f}"
              f" | C grid {r['grid_s']:.1f} s ({r['grid_s'] / n_grid:.3f} s/pt) ratio {r['ratio_grid']:.2f}"
              f" | load {la:.2f}", flush=True)
        if k == 0:   # all three are deterministic: check the answers once, before spending more time
            sl = lambda j: f"s2={float(p.s2[j]):.5f}"  # noqa: E731
            dq = check("B nested quad", s.a[idx_q], [x["a"] for x in res_q], lambda j: sl(idx_q[j]))
            dg = check("C NumPy grid", s.a[idx_g], [x["a"] for x in res_g], lambda j: sl(idx_g[j]))
            assert np.all(np.asarray(s.status) == md.Status.CONVERGED)

    jax_med = statistics.median(r["jax_s"] for r in rounds)
    q_med = statistics.median(r["quad_s"] for r in rounds)
    g_med = statistics.median(r["grid_s"] for r in rounds)
    pq = np.median(np.array(per_q), axis=0)
    pg = np.median(np.array(per_g), axis=0)
    ev_g = np.array([x["evaluations"] for x in res_g])
    ev_q = np.array([x["evaluations"] for x in res_q])
    rec = common_record("exact", pairs)
    rec.update(
        implementations=dict(
            A="grokphase.theory.modular.solve(method='exact') (JAX jit+vmap; fixed 64-step bisection; 8-node "
              "composite Gauss-Legendre tensor grid in log space, 4-node error check)",
            B="benchmarks/scipy_baseline_modular.solve_point(moment='quad') (brentq xtol 1e-14; nested "
              "scipy.integrate.quad, epsrel 1e-10 per level, break points at the saddles)",
            C="benchmarks/scipy_baseline_modular.solve_point(moment='grid') (brentq; NumPy 8-node "
              "Gauss-Legendre tensor grid, logsumexp)"),
        sizes=dict(points=n, P=401, quad_points=n_quad, grid_points=n_grid, subset_seed=0,
                   quad_subset_s2=[round(float(p.s2[i]), 6) for i in idx_q],
                   jax_batch_padded_to=int(np.asarray(padded.s2).size), nodes_per_axis_8=N8, nodes_per_axis_4=N4),
        jax_compile_s=compile_s, jax_first_call_s=first_s,
        jax_s=jax_med, jax_s_min=min(r["jax_s"] for r in rounds), jax_s_per_point=jax_med / n,
        quad_s=q_med, quad_s_per_point=q_med / n_quad, quad_full_extrapolated_s=q_med / n_quad * n,
        quad_full_extrapolated_se_s=float(pq.std(ddof=1) / np.sqrt(pq.size) * n) if pq.size > 1 else None,
        quad_point_s=[round(float(x), 4) for x in pq],
        quad_brentq_evaluations=dict(median=float(np.median(ev_q)), max=int(ev_q.max())),
        grid_s=g_med, grid_s_per_point=g_med / n_grid, grid_full_extrapolated_s=g_med / n_grid * n,
        grid_brentq_evaluations=dict(median=float(np.median(ev_g)), mean=float(ev_g.mean()), max=int(ev_g.max())),
        grid_point_s=dict(median=float(np.median(pg)), min=float(pg.min()), max=float(pg.max())),
        ratio_quad=stats(r["ratio_quad"] for r in rounds),
        ratio_grid=stats(r["ratio_grid"] for r in rounds),
        work=dict(jax_grid_points_per_point=JAX_GRID_POINTS_PER_POINT,
                  grid_grid_points_per_point_mean=float((ev_g.mean()) * N8**2),
                  jax_grid_points_per_s=(JAX_GRID_POINTS_PER_POINT * n / jax_med if BISECTION_64 else None),
                  grid_grid_points_per_s=float(ev_g.sum() * N8**2 / g_med),
                  note="grid points = evaluations of exp(-S) on the tensor grid; N8 nodes per axis"),
        cpu_per_wall=dict(jax=stats(r["jax_cpu_per_wall"] for r in rounds),
                          quad=stats(r["quad_cpu_per_wall"] for r in rounds),
                          grid=stats(r["grid_cpu_per_wall"] for r in rounds)),
        loadavg=dict(start=list(load0), end=list(os.getloadavg()),
                     per_round_1min=[round(r["grid_load1"], 2) for r in rounds]),
        max_abs_diff_a_quad=dq, max_abs_diff_a_grid=dg, rounds=rounds)
    rec["peak_rss_mb"] = peak_rss_mb()
    print(f"  => JAX {jax_med:.1f} s for {n} points ({jax_med / n:.3f} s/pt, compile {compile_s:.1f} s) | "
          f"B {q_med / n_quad:.2f} s/pt (~{q_med / n_quad * n:.0f} s for the sweep), ratio "
          f"{rec['ratio_quad']['median']:.1f} [{rec['ratio_quad']['min']:.1f}, {rec['ratio_quad']['max']:.1f}] | "
          f"C {g_med / n_grid:.3f} s/pt, ratio {rec['ratio_grid']['median']:.2f} "
          f"[{rec['ratio_grid']['min']:.2f}, {rec['ratio_grid']['max']:.2f}]", flush=True)
    jax_work = (f"JAX {JAX_GRID_POINTS_PER_POINT / 1e6:.1f} M grid points/pt, "
                f"{rec['work']['jax_grid_points_per_s'] / 1e6:.0f} M/s" if BISECTION_64 else "JAX: root finder changed, not counted")
    print(f"  => work: {jax_work}; C {rec['work']['grid_grid_points_per_point_mean'] / 1e6:.1f} "
          f"M/pt (brentq {ev_g.mean():.1f} evaluations), {rec['work']['grid_grid_points_per_s'] / 1e6:.0f} M/s", flush=True)
    return rec


# --- workload: saddle phase diagram --------------------------------------------------------------------

def bench_diagram(pairs, shape=(64, 64), jax_reps=10, vec_reps=5):
    s2, N = np.meshgrid(np.linspace(0.1, 0.3, shape[0]), np.linspace(500, 2000, shape[1]), indexing="ij")
    params = md.ModularParams(s2=s2, N=N)            # sa2 = 0.002/N by default
    p = flat(params)
    n = s2.size
    print(f"\n== diagram: {shape[0]} x {shape[1]} = {n} points, saddle mixture; {pairs} rounds "
          f"(A x{jax_reps}, C x{vec_reps} per round)", flush=True)
    load0 = os.getloadavg()
    padded, _ = md._padded(p)
    t0 = time.perf_counter()
    md.solve_batch.lower(padded, method="saddle").compile()
    compile_s = time.perf_counter() - t0
    sol, first_s, _, _ = timed(lambda: md.solve(params))
    print(f"  JAX AOT compile {compile_s:.2f} s; first public call {first_s:.2f} s; phases "
          f"{np.bincount(np.asarray(sol.phase).ravel(), minlength=3)} (GFL, GMFL-I, GMFL-II)", flush=True)
    args = tuple(np.asarray(getattr(p, k)) for k in md.PARAM_NAMES)
    vec = lambda: base.solve_saddle_vectorized(*args)  # noqa: E731
    vec()
    idx = np.arange(n)
    rounds = []
    res_b = a_c = None
    for k in range(pairs):
        r = {}
        s, w, c, la = timed(lambda: md.solve(params), reps=jax_reps)
        r.update(jax_s=w, jax_cpu_per_wall=c / w, jax_load1=la)
        res_b, w, c, la = timed(lambda: run_points(p, idx, "saddle"))
        r.update(brentq_s=w, brentq_cpu_per_wall=c / w, brentq_load1=la)
        a_c, w, c, la = timed(vec, reps=vec_reps)
        r.update(numpy_s=w, numpy_cpu_per_wall=c / w, numpy_load1=la)
        r["ratio_brentq"] = r["brentq_s"] / r["jax_s"]
        r["ratio_numpy"] = r["numpy_s"] / r["jax_s"]
        rounds.append(r)
        print(f"  round {k + 1}: JAX {r['jax_s'] * 1e3:.1f} ms (cpu/wall {r['jax_cpu_per_wall']:.2f}) | B brentq "
              f"{r['brentq_s']:.3f} s, ratio {r['ratio_brentq']:.1f} | C NumPy {r['numpy_s'] * 1e3:.1f} ms, ratio "
              f"{r['ratio_numpy']:.2f} | load {la:.2f}", flush=True)
        if k == 0:
            where = lambda j: f"s2={float(p.s2[j]):.4f}, N={float(p.N[j]):.1f}"  # noqa: E731
            db = check("B brentq", np.asarray(s.a).ravel(), [x["a"] for x in res_b], where)
            dc = check("C NumPy vectorised", np.asarray(s.a).ravel(), a_c, where)
    jax_med = statistics.median(r["jax_s"] for r in rounds)
    b_med = statistics.median(r["brentq_s"] for r in rounds)
    c_med = statistics.median(r["numpy_s"] for r in rounds)
    ev = np.array([x["evaluations"] for x in res_b])
    rec = common_record("diagram", pairs)
    rec.update(
        implementations=dict(
            A="grokphase.theory.modular.solve(method='saddle') (JAX jit+vmap, 64-step bisection; public call incl. "
              "padding, host transfer, status check)",
            B="benchmarks/scipy_baseline_modular.solve_point(moment='saddle') (scipy.optimize.brentq per point, "
              "eq. 41-42 in math)",
            C="benchmarks/scipy_baseline_modular.solve_saddle_vectorized (NumPy, 64-step bisection on all points)"),
        sizes=dict(points=n, shape=list(shape), P=401, gamma=1e-4, sa2="0.002/N",
                   jax_batch_padded_to=int(np.asarray(padded.s2).size), jax_reps_per_round=jax_reps,
                   numpy_reps_per_round=vec_reps),
        jax_compile_s=compile_s, jax_first_call_s=first_s,
        jax_s=jax_med, jax_s_min=min(r["jax_s"] for r in rounds), jax_s_per_point=jax_med / n,
        brentq_s=b_med, brentq_s_per_point=b_med / n,
        brentq_evaluations=dict(median=float(np.median(ev)), mean=float(ev.mean()), max=int(ev.max())),
        numpy_s=c_med,
        ratio_brentq=stats(r["ratio_brentq"] for r in rounds),
        ratio_numpy=stats(r["ratio_numpy"] for r in rounds),
        target=dict(diagram_under_s=TARGET_DIAGRAM_S, ratio_at_least=TARGET_RATIO,
                    diagram_met=bool(jax_med < TARGET_DIAGRAM_S),
                    ratio_met=bool(statistics.median(r["ratio_brentq"] for r in rounds) >= TARGET_RATIO),
                    ratio_met_every_round=bool(min(r["ratio_brentq"] for r in rounds) >= TARGET_RATIO)),
        cpu_per_wall=dict(jax=stats(r["jax_cpu_per_wall"] for r in rounds),
                          brentq=stats(r["brentq_cpu_per_wall"] for r in rounds),
                          numpy=stats(r["numpy_cpu_per_wall"] for r in rounds)),
        loadavg=dict(start=list(load0), end=list(os.getloadavg()),
                     per_round_1min=[round(r["brentq_load1"], 2) for r in rounds]),
        max_abs_diff_a_brentq=db, max_abs_diff_a_numpy=dc, rounds=rounds)
    rec["peak_rss_mb"] = peak_rss_mb()
    print(f"  => JAX {jax_med * 1e3:.1f} ms [{rec['jax_s_min'] * 1e3:.1f}] (compile {compile_s:.2f} s) | B brentq "
          f"{b_med:.3f} s, ratio {rec['ratio_brentq']['median']:.1f} [{rec['ratio_brentq']['min']:.1f}, "
          f"{rec['ratio_brentq']['max']:.1f}] | C NumPy {c_med * 1e3:.1f} ms, ratio {rec['ratio_numpy']['median']:.2f} | "
          f"target (<{TARGET_DIAGRAM_S:.0f} s, >={TARGET_RATIO:.0f}x): {rec['target']}", flush=True)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5, help="interleaved rounds after warm-up (>= 5 for results)")
    ap.add_argument("--subset-quad", type=int, default=8, help="exact-sweep points the nested-quad baseline solves")
    ap.add_argument("--subset-grid", type=int, default=40, help="exact-sweep points the NumPy-grid baseline solves")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 rounds, 24-point exact sweep, small subsets")
    ap.add_argument("--only", choices=("exact", "diagram"), help="run one workload")
    ap.add_argument("--pin-cpu", action="store_true",
                    help="run the whole process on one core (sched_setaffinity), so all sides get <= 1 CPU")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    pairs = 2 if args.quick else args.pairs
    print(f"threads: {THREAD_ENV}; pinned core: {PINNED}")
    print(f"versions: {versions()}")
    print(f"provenance: {PROVENANCE.record()}")
    records = []
    if args.only in (None, "diagram"):
        records.append(bench_diagram(pairs))
    if args.only in (None, "exact"):
        if args.quick:
            records.append(bench_exact(pairs, 24, 3, 6))
        else:
            records.append(bench_exact(pairs, 200, args.subset_quad, args.subset_grid))
    for r in records:
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
