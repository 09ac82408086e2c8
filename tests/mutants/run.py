#!/usr/bin/env python
"""Mutation check (issue 16): every hand-picked wrong copy of a central formula must fail the fast tests.

Each mutant in ``mutants.toml`` is (id, what, original, replacement).  The original snippet is found by
content, not by file path, in every ``.py`` file under ``src/grokphase/`` (so moving code between files
does not break the list): it must occur exactly once in the whole tree, otherwise the mutant is *stale*
(a refactor edited or duplicated the formula: update the list).

For each mutant ``src/`` is copied to a temporary directory, the one replacement is applied there, and
the fast tier of the suite (``-m "not slow"``) runs against the copy with ``PYTHONPATH=<tmp>/src``
first, which shadows the editable install (checked in every test process by the ``shadow_check``
plugin, which stops the session, never counted as caught, if grokphase came from anywhere else; the
baseline run prints where it came from).  The guard files ``tests/test_guard_*.py`` run first, the rest of ``tests/`` after
them, with ``-x``: a caught mutant stops at its first failing test.  Caught means pytest reported test
failures (exit code 1); passing, a timeout, or any other exit code (collection/usage errors) is not
caught.  The unmutated copy runs the guard files first: they must pass, or the harness is broken.

    python tests/mutants/run.py                 # all mutants, guard files then the whole fast tier
    python tests/mutants/run.py --fast-only     # each mutant's own files + the guard files (quick iteration)
    python tests/mutants/run.py --only ts_cubic_projection,langevin_noise
    python tests/mutants/run.py --list          # ids, descriptions, where each snippet is now

Exit status 0 when every selected mutant is caught and none is stale.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = SRC / "grokphase"
TESTS = REPO / "tests"
MUTANTS = Path(__file__).resolve().with_name("mutants.toml")
GUARD_GLOB = "test_guard_*.py"
PYTEST_ARGS = ["-x", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-p", "shadow_check", "--tb=line"]


@dataclass(frozen=True)
class Mutant:
    id: str
    what: str
    original: str
    replacement: str
    first: tuple[str, ...] = ()


def load_mutants(path: Path = MUTANTS) -> list[Mutant]:
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    out, seen = [], set()
    for entry in raw["mutant"]:
        m = Mutant(entry["id"], entry["what"], entry["original"], entry["replacement"], tuple(entry.get("first", ())))
        if m.id in seen:
            raise SystemExit(f"mutants.toml: duplicate id {m.id!r}")
        if m.original == m.replacement:
            raise SystemExit(f"mutants.toml: {m.id}: replacement equals the original")
        missing = [f for f in m.first if not (REPO / f).is_file()]
        if missing:
            raise SystemExit(f"mutants.toml: {m.id}: 'first' names missing test files {missing}")
        seen.add(m.id)
        out.append(m)
    return out


def package_sources(root: Path = PACKAGE) -> dict[Path, str]:
    return {p: p.read_text() for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def locate(m: Mutant, sources: dict[Path, str]) -> list[tuple[Path, int]]:
    """Every (file, line) where the original snippet starts."""
    hits = []
    for path, text in sources.items():
        start = 0
        while (i := text.find(m.original, start)) >= 0:
            hits.append((path, text.count("\n", 0, i) + 1))
            start = i + 1
    return hits


def copy_src(dest: Path) -> Path:
    shutil.copytree(SRC, dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest / "src"


def test_files(fast_only: bool) -> list[str]:
    """Guard files first, then (unless ``fast_only``) every other test file, as explicit paths: pytest
    merges a file argument into a directory argument's own order, so listing ``tests/`` would not
    keep the guards first."""
    guards = sorted(TESTS.glob(GUARD_GLOB))
    rest = [] if fast_only else [p for p in sorted(TESTS.glob("test_*.py")) if p not in guards]
    return [str(p.relative_to(REPO)) for p in guards + rest]


def env_for(src: Path) -> dict:
    """The copy's src first on PYTHONPATH (ahead of the editable install's .pth entry), then this
    directory for the ``shadow_check`` plugin, which verifies inside every test process that grokphase
    came from ``GROKPHASE_MUTANT_SRC``."""
    env = dict(os.environ)
    paths = [str(src), str(Path(__file__).resolve().parent)]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["GROKPHASE_MUTANT_SRC"] = str(src)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def check_shadowing(src: Path) -> str:
    """A plain interpreter with the harness's environment imports grokphase from ``src`` (the test
    processes check the same themselves, through the shadow_check plugin)."""
    out = subprocess.run([sys.executable, "-c", "import grokphase; print(grokphase.__file__)"], cwd=REPO,
                         env=env_for(src), capture_output=True, text=True, timeout=300)
    where = out.stdout.strip()
    if out.returncode != 0 or not Path(where).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"harness broken: grokphase imported from {where or out.stderr.strip()!r}, not from {src}")
    return where


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)
MARKER = "grokphase-mutant-shadow-check: grokphase imported from "     # printed by shadow_check.py


def run_pytest(src: Path, files: list[str], timeout: float) -> tuple[int | None, float, str, str | None]:
    """(pytest exit code or None on timeout, seconds, first failing test or a short reason, where the
    test process imported grokphase from)."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", *PYTEST_ARGS, *files]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env_for(src), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t0, f"timeout after {timeout:.0f} s", None
    dt = time.perf_counter() - t0
    text = (proc.stdout + proc.stderr).replace("\r", "\n")
    where = re.search("^" + re.escape(MARKER) + r"(.+)$", text, re.M)
    m = _FAILED.search(text)
    if m:
        first = m.group(1)
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(MARKER)]
        first = lines[-1] if lines else ""
    return proc.returncode, dt, first, where.group(1).strip() if where else None


def ordered(files: list[str], first: tuple[str, ...]) -> list[str]:
    """The mutant's ``first`` files (the tests expected to catch it), then the rest of the selection in
    its order: a caught mutant then costs one pytest start-up and one file."""
    return list(first) + [f for f in files if f not in first]


def run_mutant(m: Mutant, sources: dict[Path, str], files: list[str], timeout: float, keep: bool,
               use_first: bool = True) -> tuple[str, float, str]:
    files = ordered(files, m.first if use_first else ())
    hits = locate(m, sources)
    if len(hits) != 1:
        where = ", ".join(f"{p.relative_to(REPO)}:{ln}" for p, ln in hits) or "nowhere"
        return "stale", 0.0, f"original snippet found {len(hits)} times ({where})"
    path, _ = hits[0]
    tmp = Path(tempfile.mkdtemp(prefix=f"grokphase-mutant-{m.id}-"))
    try:
        src = copy_src(tmp)
        target = src / path.relative_to(SRC)
        text = target.read_text()
        target.write_text(text.replace(m.original, m.replacement, 1))
        rc, dt, first, _ = run_pytest(src, files, timeout)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if rc == 1:
        return "caught", dt, first
    if rc is None:
        return "SURVIVED", dt, first
    if rc == 0:
        return "SURVIVED", dt, "all selected tests passed"
    return "SURVIVED", dt, f"pytest exit code {rc} (not a test failure): {first}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--list", action="store_true", help="list the mutants and where each snippet is; run nothing")
    ap.add_argument("--fast-only", action="store_true", help="run only each mutant's 'first' files and the guard files tests/test_guard_*.py, "
                         "not the rest of the fast tier")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant (a timeout is not caught)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies (for debugging)")
    ap.add_argument("--files", help="comma-separated test files to run instead of the default selection and the "
                                    "mutants' 'first' files (for finding which existing tests catch a mutant)")
    args = ap.parse_args(argv)

    mutants = load_mutants()
    if args.only:
        want = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(want) - {m.id for m in mutants})
        if unknown:
            ap.error(f"unknown mutant id(s) {unknown}; see --list")
        mutants = [m for m in mutants if m.id in want]
    sources = package_sources()

    if args.list:
        stale = 0
        for m in mutants:
            hits = locate(m, sources)
            stale += len(hits) != 1
            where = ", ".join(f"{p.relative_to(REPO)}:{ln}" for p, ln in hits) or "nowhere"
            flag = "" if len(hits) == 1 else f"  STALE ({len(hits)} matches)"
            print(f"{m.id:28s} {where}{flag}\n{'':28s} {m.what}")
        print(f"{len(mutants)} mutants, {stale} stale")
        return 1 if stale else 0

    files = test_files(args.fast_only)
    guards = [f for f in files if Path(f).name.startswith("test_guard_")]
    if args.files:
        files = [s.strip() for s in args.files.split(",") if s.strip()]
    if not guards:
        raise SystemExit("no guard files tests/test_guard_*.py")
    t_start = time.perf_counter()

    # sanity: the copy shadows the editable install, and the unmutated copy passes the guard tests
    tmp = Path(tempfile.mkdtemp(prefix="grokphase-mutant-baseline-"))
    try:
        src = copy_src(tmp)
        check_shadowing(src)
        rc, dt, first, where = run_pytest(src, guards, args.timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if rc != 0:
        print(f"harness broken: the unmutated copy fails the guard tests (exit {rc}, {dt:.0f} s): {first}")
        return 2
    if where is None or not Path(where).is_relative_to(tmp.resolve()):
        print(f"harness broken: the test process imported grokphase from {where}, not from the copy in {tmp}")
        return 2
    print(f"baseline: the test process imports grokphase from {where}", flush=True)
    print(f"baseline: unmutated copy passes {len(guards)} guard files in {dt:.0f} s", flush=True)

    counts = {"caught": 0, "SURVIVED": 0, "stale": 0}
    for m in mutants:
        verdict, dt, first = run_mutant(m, sources, files, args.timeout, args.keep, use_first=not args.files)
        counts[verdict] += 1
        print(f"{m.id:28s} {verdict:8s} {dt:6.1f} s  {first}", flush=True)
    total = time.perf_counter() - t_start
    tier = "own + guard files only" if args.fast_only else "own + guard files + fast tier"
    print(f"summary: {counts['caught']}/{len(mutants)} caught, {counts['SURVIVED']} survived, "
          f"{counts['stale']} stale ({tier}, {total:.0f} s)")
    return 0 if counts["caught"] == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
