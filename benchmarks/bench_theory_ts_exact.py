"""Benchmark: the exact (q, t) finite-d teacher-student diagram, this tree's solver against a baseline
commit's (issue 18, "Speed of the exact (q, t) theory"), with the concentrated diagram timed alongside.

Follows /work/shared/BENCHMARKING.md.  Two versions of one package cannot share a process, so each
runs in its own warm worker process (``--worker``), both pinned to the same core (``--pin-cpu``) or
both free, and the driver hands them the work in turn: A B A B ... after one warm-up call each
(compile + first run, recorded separately).  Every timed call is the public
``ts.solve_finite_d(p, approximation=...)`` on the whole batch (per-point grids, refinement, status
check), timed inside the worker (wall and process CPU seconds); the driver records the load average
after every call.

  A  this tree's ``src/`` (exact approximation; its concentrated diagram is timed in the same rounds)
  B  ``git archive <baseline> src`` unpacked in a temporary folder (default: the commit before the
     fast exact solver, ca92861), exact approximation

Workload: the 64 x 64 diagram of ``grokphase theory phase-diagram teacher-student`` (s2 in
linspace(0.05, 0.4, 64) x N in linspace(100, 3000, 64), sa2 = 8/N, the paper's other parameters:
n = 3000, d = 150, sw2 = 0.5, eps = -0.3); ``--points M`` takes every (4096/M)-th point (development).

Answer check (before anything is written): A's and B's exact solutions agree to ``TOL`` = 1e-10 in
b, c, linear/cubic learned, free energy, droplet fraction, Q, t_droplet, t_bulk, q_barrier, log_norm
(NaN where the other is NaN), and status and phase are identical; repeat calls are bitwise equal.

Usage: python benchmarks/bench_theory_ts_exact.py [--pairs 5] [--pin-cpu] [--baseline REV] [--points M]
       [--out FILE] [--no-write]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if "--worker" in sys.argv:  # the worker imports grokphase from the folder it is given, before anything else
    _src = sys.argv[sys.argv.index("--worker") + 1]
    sys.path.insert(0, _src)

import benchenv  # noqa: E402  (thread env and --pin-cpu before numpy/jax load)
from benchenv import PINNED, THREAD_ENV, peak_rss_mb, versions  # noqa: E402

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "theory_ts_exact.jsonl"
BASELINE = "ca92861"        # the last commit with the previous exact solver (grid rule, Newton from v = 0)
TOL = 1e-10
TARGET_S = 5.0
COMPARED = ("b", "c", "linear_learned", "cubic_learned", "free_energy", "droplet_fraction", "Q", "t_droplet",
            "t_bulk", "q_barrier", "q_droplet", "log_norm")


def diagram(points: int | None):
    from grokphase.theory import teacher_student as ts

    s2, N = np.meshgrid(np.linspace(0.05, 0.4, 64), np.linspace(100, 3000, 64), indexing="ij")
    s2, N = s2.reshape(-1), N.reshape(-1)
    if points:
        s2, N = s2[:: max(1, s2.size // points)][:points], N[:: max(1, N.size // points)][:points]
    return ts.TeacherStudentParams(s2=s2, N=N, sa2=8.0 / N)


# --- worker ---------------------------------------------------------------------------------------


def worker(points: int | None, dump: Path) -> None:
    """Read approximations from stdin, solve the diagram with each, answer one JSON line per call."""
    import grokphase
    from grokphase.theory import teacher_student as ts

    p = diagram(points)
    first: dict[str, object] = {}
    print(json.dumps(dict(ready=True, grokphase=grokphase.__file__)), flush=True)
    for line in sys.stdin:
        ap = line.strip()
        if not ap:
            break
        c0, w0 = time.process_time(), time.perf_counter()
        sol = ts.solve_finite_d(p, approximation=ap)
        wall = time.perf_counter() - w0
        cpu = time.process_time() - c0
        fields = {k: np.asarray(v) for k, v in sol._asdict().items() if v is not None}
        if ap not in first:
            first[ap] = fields
            np.savez(dump.with_name(f"{dump.stem}_{ap}.npz"), **fields)
            same = True
        else:
            same = all(np.array_equal(first[ap][k], fields[k], equal_nan=True) for k in fields)
        print(json.dumps(dict(wall_s=wall, cpu_s=cpu, repeat_bitwise_equal=same, peak_rss_mb=peak_rss_mb(),
                              statuses=np.unique(fields["status"]).tolist(),
                              iterations_mean=float(fields["iterations"].mean()))), flush=True)


# --- driver ---------------------------------------------------------------------------------------


class Worker:
    def __init__(self, name: str, src: Path, points: int | None, tmp: Path, pin: bool):
        self.name = name
        cmd = [sys.executable, __file__, "--worker", str(src), "--dump", str(tmp / f"{name}.npz")]
        cmd += ["--points", str(points)] if points else []
        cmd += ["--pin-cpu"] if pin else []
        env = dict(os.environ, PYTHONPATH=str(src))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        hello = json.loads(self.proc.stdout.readline())
        self.module = hello["grokphase"]
        self.dump = tmp / f"{name}.npz"

    def call(self, ap: str) -> dict:
        self.proc.stdin.write(ap + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.name} died")
        rec = json.loads(line)
        rec["load1"] = os.getloadavg()[0]
        rec["cpu_per_wall"] = rec["cpu_s"] / rec["wall_s"]
        return rec

    def solution(self, ap: str) -> dict:
        with np.load(self.dump.with_name(f"{self.dump.stem}_{ap}.npz")) as z:
            return {k: z[k] for k in z.files}

    def close(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def agreement(a: dict, b: dict) -> dict:
    out = {}
    for k in COMPARED:
        x, y = a[k], b[k]
        nan_same = bool(np.array_equal(np.isnan(x), np.isnan(y)))
        diff = float(np.nanmax(np.abs(x - y))) if np.any(~np.isnan(x)) else 0.0
        out[k] = dict(max_abs_diff=diff, nan_pattern_equal=nan_same)
    for k in ("status", "phase"):
        out[k] = dict(identical=bool(np.array_equal(a[k], b[k])))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--baseline", default=BASELINE, help="git revision whose src/ is the baseline B")
    ap.add_argument("--points", type=int, default=None, help="a subset of the diagram (development)")
    ap.add_argument("--pin-cpu", action="store_true", help="every process on one core (sched_setaffinity)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dump", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.points, args.dump)
        return

    start = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 load=os.getloadavg())
    head = benchenv.git("rev-parse", "HEAD")
    baseline = benchenv.git("rev-parse", args.baseline)
    dirty = bool(benchenv.git("status", "--porcelain", "--", "src"))
    print(f"threads: {THREAD_ENV}, pinned: {PINNED}; A = this tree (HEAD {head[:10]}, src dirty: {dirty}), "
          f"B = {args.baseline} ({baseline[:10]})", flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        base_src = tmp / "baseline"
        base_src.mkdir()
        archive = subprocess.run(["git", "archive", baseline, "src"], cwd=benchenv.REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base_src)], input=archive, check=True)
        A = Worker("A", benchenv.REPO / "src", args.points, tmp, bool(PINNED is not None))
        B = Worker("B", base_src / "src", args.points, tmp, bool(PINNED is not None))
        print(f"A imports {A.module}\nB imports {B.module}", flush=True)
        first = {}
        for w, apx in ((A, "exact"), (B, "exact"), (A, "concentrated")):
            rec = w.call(apx)
            first[f"{w.name}_{apx}"] = rec
            print(f"  first call {w.name} {apx}: {rec['wall_s']:.1f} s (compile + run), statuses {rec['statuses']}",
                  flush=True)
        check = agreement(A.solution("exact"), B.solution("exact"))
        worst = max(v["max_abs_diff"] for k, v in check.items() if "max_abs_diff" in v)
        ok = (worst < TOL and all(v.get("nan_pattern_equal", True) and v.get("identical", True)
                                  for v in check.values()))
        print(f"  agreement A vs B (exact): max abs diff over {len(COMPARED)} fields {worst:.3e} "
              f"({'ok' if ok else 'FAIL'}); " + ", ".join(f"{k} {v['max_abs_diff']:.1e}" for k, v in check.items()
                                                            if "max_abs_diff" in v), flush=True)
        if not ok:
            print(json.dumps(check, indent=1), file=sys.stderr)
            raise SystemExit("agreement check failed; no results written")
        rows = []
        for k in range(args.pairs):
            a, b, c = A.call("exact"), B.call("exact"), A.call("concentrated")
            rows.append(dict(A_exact=a, B_exact=b, A_concentrated=c, ratio_B_over_A=b["wall_s"] / a["wall_s"],
                             ratio_A_exact_over_concentrated=a["wall_s"] / c["wall_s"]))
            print(f"  pair {k}: A exact {a['wall_s']:.2f} s (cpu/wall {a['cpu_per_wall']:.2f}), B exact "
                  f"{b['wall_s']:.2f} s ({b['cpu_per_wall']:.2f}), A concentrated {c['wall_s']:.2f} s "
                  f"({c['cpu_per_wall']:.2f}); B/A {rows[-1]['ratio_B_over_A']:.1f}, load {c['load1']:.2f}",
                  flush=True)
        for w in (A, B):
            w.close()
    if not all(r[s]["repeat_bitwise_equal"] for r in rows for s in ("A_exact", "B_exact", "A_concentrated")):
        raise SystemExit("a repeat call differed from the first; no results written")

    def summary(key, field="wall_s"):
        xs = [r[key][field] if isinstance(r[key], dict) else r[key] for r in rows]
        return dict(median=statistics.median(xs), min=min(xs), max=max(xs))

    from grokphase.theory import teacher_student as ts  # this tree's, for the sizes

    p = diagram(args.points)
    rec = dict(
        date=start["date"], workload="diagram_exact_fast_vs_baseline",
        implementations=dict(
            A="this tree: ts.solve_finite_d(approximation='exact'), Newton started on the nested 1/4 x 1/4 rule, "
              "one exponential per node, grid sums and half-rule checks as matrix products with the hoisted "
              "moment basis, one flat Newton/line-search loop, padded points skipped",
            B=f"baseline {args.baseline} ({baseline}): the same 2-D (q, log t) trapezoid rule, Newton from v = 0",
            A_concentrated="this tree: ts.solve_finite_d(approximation='concentrated')"),
        sizes=dict(points=int(np.asarray(p.s2).size), q_grid_sizes=sorted(set(int(k) for k in ts.point_grid_sizes(p))),
                   t_grid_sizes=sorted(set(int(j) for j in ts.t_grid_size(p)))),
        dtype="float64", threads=dict(THREAD_ENV, pinned_cpu=PINNED), versions=versions(),
        provenance=dict(head=head, src_dirty=dirty, baseline=baseline, A_module=A.module),
        first_call_s={k: v["wall_s"] for k, v in first.items()},
        pairs=rows,
        A_exact_s=summary("A_exact"), B_exact_s=summary("B_exact"), A_concentrated_s=summary("A_concentrated"),
        A_exact_cpu_s=summary("A_exact", "cpu_s"), B_exact_cpu_s=summary("B_exact", "cpu_s"),
        ratio_B_over_A=summary("ratio_B_over_A"),
        ratio_A_exact_over_concentrated=summary("ratio_A_exact_over_concentrated"),
        peak_rss_mb=dict(A=max(r["A_exact"]["peak_rss_mb"] for r in rows),
                         B=max(r["B_exact"]["peak_rss_mb"] for r in rows)),
        load_start=start["load"], load_end=os.getloadavg(),
        check=dict(tolerance=TOL, agreement=check, repeat_runs_bitwise_equal=True),
        target=f"exact 64 x 64 diagram < {TARGET_S} s on one core at {TOL} agreement with the baseline",
    )
    print(f"  A exact {rec['A_exact_s']['median']:.2f} s [{rec['A_exact_s']['min']:.2f}, {rec['A_exact_s']['max']:.2f}]"
          f", B exact {rec['B_exact_s']['median']:.2f} s, A concentrated {rec['A_concentrated_s']['median']:.2f} s; "
          f"B/A {rec['ratio_B_over_A']['median']:.1f} [{rec['ratio_B_over_A']['min']:.1f}, "
          f"{rec['ratio_B_over_A']['max']:.1f}]", flush=True)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"appended 1 record to {args.out}")


if __name__ == "__main__":
    main()
