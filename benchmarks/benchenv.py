"""Shared set-up of the benchmarks (BENCHMARKING.md): import this module FIRST.

On import it pins the thread counts of every library (before numpy/scipy/jax load) and, with
``--pin-cpu`` on the command line, restricts the whole process to one core (XLA's CPU runtime still
uses helper threads otherwise: CPU/wall ~1.35 when a second core is free; the bare
``intra_op_parallelism_threads=1`` token in XLA_FLAGS is not an XLA flag and is ignored).  It also
provides the timing, statistics, memory, version and provenance helpers both benchmarks record.
"""

from __future__ import annotations

import os
import sys

THREAD_ENV = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
os.environ.update(THREAD_ENV)

PINNED = None
if "--pin-cpu" in sys.argv:
    PINNED = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {PINNED})

import hashlib  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def timed(fn, reps=1):
    """(last result, wall_s per call, cpu_s per call, loadavg_1min_after) over ``reps`` back-to-back calls."""
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        out = fn()
        out = jax.block_until_ready(out)
    t1, c1 = time.perf_counter(), time.process_time()
    return out, (t1 - t0) / reps, (c1 - c0) / reps, os.getloadavg()[0]


def stats(xs):
    xs = list(xs)
    return dict(median=statistics.median(xs), min=min(xs), max=max(xs))


def git(*a):
    try:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def versions():
    import jaxlib

    return dict(jax=jax.__version__, jaxlib=jaxlib.__version__, scipy=scipy.__version__, numpy=np.__version__,
                python=platform.python_version(), platform=platform.platform(),
                cpu_count=os.cpu_count(), jax_backend=jax.default_backend(),
                jax_devices=[str(d) for d in jax.devices()])


class SolverProvenance:
    """Which solver source a run timed: its sha256 as imported, the commit holding exactly that source
    (None for an uncommitted edit) and the git state at import and at record time (src/ may be edited
    or committed by others while a run is in progress).  A package's ``__init__.py`` stands for the
    whole package: every ``.py`` file of its folder is hashed (a model is one package per layer)."""

    def __init__(self, module_file: str):
        self.path = Path(module_file).resolve()
        self.root = self.path.parent if self.path.name == "__init__.py" else self.path
        self.rel = str(self.root.relative_to(REPO))
        self.files = (sorted(p.relative_to(REPO) for p in self.root.rglob("*.py")) if self.root.is_dir()
                      else [self.path.relative_to(REPO)])
        self.sha256 = self._digest(lambda rel: (REPO / rel).read_bytes())
        self.at_import = dict(git_commit_at_import=git("rev-parse", "HEAD"),
                              src_dirty_at_import=bool(git("status", "--porcelain", "--", "src")))

    def _digest(self, read) -> str:
        h = hashlib.sha256()
        for rel in self.files:
            h.update(str(rel).encode() + b"\0" + read(rel) + b"\0")
        return h.hexdigest()

    def _commit(self, depth: int = 30):
        for c in (git("log", f"-{depth}", "--format=%H", "--", self.rel) or "").split():
            def read(rel, c=c):
                return subprocess.run(["git", "show", f"{c}:{rel}"], cwd=REPO, capture_output=True,
                                      timeout=10).stdout
            if self._digest(read) == self.sha256:
                return c
        return None

    def record(self) -> dict:
        return dict(self.at_import, git_commit_at_record=git("rev-parse", "HEAD"), solver_file=self.rel,
                    solver_sha256=self.sha256, solver_matches_commit=self._commit(),
                    solver_tracked=bool(git("ls-files", self.rel)),
                    solver_changed_since_import=self._digest(lambda rel: (REPO / rel).read_bytes()) != self.sha256)


def write_results(recs, common: dict, provenance: dict, t_start: float, out, no_write: bool, log=print) -> None:
    """The shared tail of the simulation benchmarks: stamp every record with ``common`` (plus the total
    wall time) and the solvers' provenance, log the peak RSS, and append the records to ``out`` as
    JSON lines unless ``no_write``."""
    import json

    common["total_wall_s"] = time.perf_counter() - t_start
    for r in recs:
        r.update(common, provenance=provenance)
    log(f"\ntotal {common['total_wall_s']:.0f} s; peak RSS of the main process {peak_rss_mb():.0f} MB")
    if not no_write:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
        log(f"wrote {len(recs)} lines to {out}")
