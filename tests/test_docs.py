"""Documentation that cannot rot: every example of README.md and docs/*.md is executed or parsed.

* ```python blocks run in-process, each in a fresh namespace, in an empty working directory (a block
  that starts with ``# fragment`` is a sketch that cannot run alone: only its imports run).  A
  ``print(...)`` line whose comment quotes numbers (``# name = 0.21710; q* = 0.8737``, ``# -> 0.8737``,
  ``~`` and ``≈`` count too) must print exactly that many numbers, each equal to the quoted one to
  the quoted digits.
* ```bash / ```console blocks: every ``grokphase`` command line is parsed by the real parser, every
  file it reads (``*.toml``) exists and every file it writes lies under ``results/`` or
  ``figures/``; ``--help`` lines run; a command preceded by a ``# -> name = value, ...`` comment runs
  in-process (cheap ones only: the documentation keeps it that way) and each ``name`` must appear in
  its output (a JSON key, top level or first point, or ``name = value`` in the text) with the quoted
  value; every other command runs in the checkout up to the point where it would compute (its
  solvers, simulations, comparisons and figures replaced by a sentinel), so an option the CLI refuses
  (one that does not apply, a contradictory pair, a network over the memory budget) fails the test.
  ``make`` targets exist in the Makefile; script paths exist.
* Every relative link and image of README.md and docs/ points at an existing file (and heading).
* No example leaves a file outside ``results/`` and ``figures/`` of its working directory.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from grokphase import cli
from grokphase.cli import build_parser, main
from grokphase.cli import reproduce as cli_reproduce
from grokphase.cli import sims as cli_sims
from grokphase.cli import single_index as cli_single_index
from grokphase.cli import theory as cli_theory
from grokphase.experiments.models import modular as modular_model
from grokphase.experiments.models import teacher_student as ts_model
from grokphase.sims import driver, protocols

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
OUTPUT_DIRS = ("results/", "figures/")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
QUOTED = re.compile(r"(?:=|->|~|≈)\s*(" + NUMBER + r")")
NAMED = re.compile(r"([A-Za-z_][\w*^]*)\s*=\s*(" + NUMBER + r")")
PRINTED = re.compile(r"(?<![\w.])" + NUMBER + r"(?![\w.])")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def blocks(langs):
    """(file, first line number, language, text) of every fenced block in ``langs``."""
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) in langs:
                out.append((path, text.count("\n", 0, m.start()) + 2, m.group(1), m.group(2)))
    return out


def matches(actual: float, quoted: str) -> bool:
    """``actual`` rounds to ``quoted`` at the digits quoted (0.217099 covers [0.2170985, 0.2170995])."""
    mantissa, _, exponent = quoted.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    half_unit = 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return abs(float(actual) - float(quoted)) <= half_unit * (1 + 1e-9)


# ----------------------------------------------------------------------------------- python blocks

def quoted_in_comment(line: str) -> list[str] | None:
    """The numbers a ``print(...)`` line's comment quotes, or None for a line that quotes none."""
    code, sep, comment = line.partition("#")
    if not sep or not code.strip().startswith("print("):
        return None
    found = QUOTED.findall(comment)
    return found or None


def check_python(source: str, where: str, workdir: Path) -> list[str]:
    """Run ``source`` in a fresh namespace; return the list of quoted numbers that do not match."""
    printed: dict[int, list[str]] = {}
    filename = f"<{where}>"

    def recording_print(*args, sep=" ", end="\n", **kwargs):
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename != filename:
            frame = frame.f_back
        line = frame.f_lineno if frame is not None else -1
        printed.setdefault(line, []).append(sep.join(str(a) for a in args))

    if source.startswith("# fragment"):        # a sketch that cannot run alone: its imports must work
        tree = ast.parse(source)
        tree.body = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        exec(compile(tree, filename, "exec"), {"__name__": "__docs__"})
        return []
    code = compile(source, filename, "exec")
    with contextlib.chdir(workdir):
        exec(code, {"__name__": "__docs__", "print": recording_print})
    problems = []
    for number, line in enumerate(source.splitlines(), start=1):
        quoted = quoted_in_comment(line)
        if quoted is None:
            continue
        values = PRINTED.findall(" ".join(printed.get(number, [])))
        if len(values) != len(quoted):
            problems.append(f"{where}+{number - 1}: quotes {quoted}, printed {values}")
            continue
        problems += [f"{where}+{number - 1}: quotes {q}, prints {v}" for q, v in zip(quoted, values)
                     if not matches(float(v), q)]
    return problems


# ------------------------------------------------------------------------------------- bash blocks

def commands(text: str):
    """(argv, checks) per command line: continuations joined, comments dropped, ``$ `` prompts
    removed; ``checks`` are the (name, value) pairs of the ``# -> ...`` lines right above it."""
    out, pending = [], []
    for raw in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("# ->"):
                pending += NAMED.findall(line)
            continue
        out.append((shlex.split(line, comments=True), pending))
        pending = []
    return out


def grokphase_argv(argv):
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):     # VAR=value grokphase ...
        argv = argv[1:]
    if argv and argv[-1] == "&":                                     # started in the background
        argv = argv[:-1]
    if argv and argv[0] in ("grokphase", ".venv/bin/grokphase"):
        return argv[1:]
    if argv[:3] in (["python", "-m", "grokphase.cli"], [".venv/bin/python", "-m", "grokphase.cli"]):
        return argv[3:]
    return None


def lookup(output: str, name: str):
    """The value called ``name`` in a command's output: a JSON key (top level, then the first point)
    or ``name = value`` in text."""
    try:
        data = json.loads(output)
    except ValueError:
        found = re.findall(re.escape(name) + r"\s*=\s*(" + NUMBER + ")", output)
        return float(found[0]) if found else None
    for table in (data, *(data.get("points") or [])[:1]):
        if isinstance(table, dict) and isinstance(table.get(name), (int, float)):
            return float(table[name])
    return None


class ReachedWork(Exception):
    """Raised by the patched entry points: the command passed every check and would now compute."""


WORK = [(cli_theory, name) for name in ("build_teacher_student_sweep", "build_modular_sweep", "build_gp_learning_curve",
                                        "build_modular_gp_curve", "build_teacher_student_phase_diagram",
                                        "build_modular_phase_diagram", "run_finite_n")]
WORK += [(cli_single_index, "build_single_index_sweep"), (cli_single_index, "build_single_index_phase_diagram"),
         (cli_single_index, "build_single_index_gp_curve"), (ts_model, "run_teacher_student"), (modular_model, "run_modular"), (protocols, "run"),
         (driver, "run_ensemble"), (cli_sims, "run_experiment"), (cli_sims, "compare_teacher_student"),
         (modular_model, "compare_modular"), (cli_reproduce, "reproduce"), (cli, "plot_result")]


def _reached(*a, **k):
    raise ReachedWork


def checked_up_to_work(args, monkeypatch) -> tuple[int | None, str]:
    """Run a documented command in the checkout with every computing entry point replaced by one that
    raises :class:`ReachedWork`: (None, "") when the command passes all of the CLI's checks (types,
    ranges, options that apply, memory, outputs, experiment files) and reaches its computation, else
    (exit code, stderr)."""
    args = list(args)
    if "--devices" in args:                    # host devices are fixed once JAX has started in this process
        i = args.index("--devices")
        del args[i:i + 2]
    if "--distributed" in args:                # this process cannot join a multi-process run
        args.remove("--distributed")
    with monkeypatch.context() as m:
        for module, name in WORK:
            m.setattr(module, name, _reached, raising=False)
        try:
            rc, _, err = run_cli(args, ROOT)
        except ReachedWork:
            return None, ""
    return rc, err


def run_cli(args, workdir: Path):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(workdir), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(args)
        except SystemExit as exc:              # --help
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def check_output(output: str, checks) -> list[str]:
    problems = []
    for name, quoted in checks:
        value = lookup(output, name)
        if value is None:
            problems.append(f"{name} not in the output")
        elif not matches(value, quoted):
            problems.append(f"{name}: quoted {quoted}, printed {value!r}")
    return problems


def files_left(workdir: Path) -> list[str]:
    return sorted(p.name for p in workdir.iterdir() if p.name not in ("results", "figures"))


# ------------------------------------------------------------------------------------------- tests

PY_BLOCKS = blocks({"python"})
SH_BLOCKS = blocks({"bash", "console", "sh", "shell"})


def _id(block):
    return f"{_rel(block[0])}:{block[1]}"


def test_readme_is_short_and_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    first = FENCE.search(readme).group(2)
    assert [line.split("#")[0].strip() for line in first.splitlines()] == ["make demo", "make test"]
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert {"demo", "test", "docs", "install", "mutants"} <= targets


def test_examples_were_found():
    """The extraction itself: a README Python example and theory commands are seen."""
    assert any(path.name == "README.md" for path, *_ in PY_BLOCKS)
    argvs = [grokphase_argv(a) for *_, text in SH_BLOCKS for a, _ in commands(text)]
    assert sum(a is not None for a in argvs) > 30
    checked = [c for *_, text in SH_BLOCKS for _, c in commands(text) if c]
    assert len(checked) >= 4


@pytest.mark.parametrize("block", PY_BLOCKS, ids=_id)
def test_python_example_runs_and_prints_what_it_quotes(block, tmp_path):
    path, line, _, source = block
    problems = check_python(source, f"{_rel(path)}:{line}", tmp_path)
    assert not problems, "\n".join(problems)
    assert not files_left(tmp_path), f"the example wrote outside results/ and figures/: {files_left(tmp_path)}"


@pytest.mark.parametrize("block", SH_BLOCKS, ids=_id)
def test_command_lines(block, tmp_path, monkeypatch):
    path, line, _, text = block
    makefile = (ROOT / "Makefile").read_text()
    parser = build_parser()
    for argv, checks in commands(text):
        where = f"{_rel(path)}:{line}: {shlex.join(argv)}"
        args = grokphase_argv(argv)
        if args is None:                        # make, source, bash script.sh, python script.py
            if argv[0] == "make":
                for target in argv[1:]:
                    assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{where}: no such target"
            for token in argv[1:]:
                if re.fullmatch(r"[\w./-]+\.(sh|py|toml|md)", token) and not token.startswith(".venv/"):
                    assert (ROOT / token).exists(), f"{where}: {token} does not exist"
            assert not checks, f"{where}: quoted numbers are only checked on grokphase commands"
            continue
        if "--help" in args or "-h" in args:
            rc, out, err = run_cli(args, tmp_path)
            assert rc == 0 and "usage: grokphase" in out, f"{where}: rc {rc}, {err}"
            continue
        try:
            ns = parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: does not parse")
        for token in args:
            if token.endswith(".toml"):
                assert (ROOT / token).is_file(), f"{where}: {token} does not exist"
        for dest in ("out", "plot", "out_dir", "cache_dir", "checkpoint_dir"):
            value = getattr(ns, dest, None)
            if isinstance(value, str):
                assert (value.rstrip("/") + "/").startswith(OUTPUT_DIRS), f"{where}: writes {value} outside results/ and figures/"
        if checks:
            rc, out, err = run_cli(args, tmp_path)
            assert rc == 0, f"{where}: exit {rc}: {err}"
            problems = check_output(out, checks)
            assert not problems, f"{where}: " + "; ".join(problems)
        else:                                   # too long to run: every check up to the work must pass
            rc, err = checked_up_to_work(args, monkeypatch)
            missing_result = rc == 2 and re.search(r"(results|figures)/\S+ (does not exist|not found)", err)
            assert rc is None or missing_result, f"{where}: refused before its work (exit {rc}): {err.strip()}"
    assert not files_left(tmp_path), f"{_rel(path)}:{line} wrote outside results/ and figures/"


def _slug(heading: str) -> str:
    """MkDocs' (Python-Markdown toc) anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[-\s]+", "-", text).strip("-")


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_relative_links_point_at_existing_files(path):
    text = FENCE.sub("", path.read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md":
            headings = re.findall(r"^#+\s+(.*)$", FENCE.sub("", dest.read_text()), re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{_rel(path)}: broken links {broken}"


# ------------------------------------------------------------------------- the checker can fail

def test_checker_rejects_stale_numbers(tmp_path):
    """The rot of issue 17: a comment quoting the paper's reduction (0.1787, 0.828) next to a print
    of the exact theory (0.2171, 0.874), and a CLI comment quoting 0.217097 for 0.21709905."""
    stale = "x, y = 0.21709904971187977, 0.8737205725447906\nprint(x, y)  # sigma^2_c ~ 0.1787; q* ~ 0.828\n"
    assert len(check_python(stale, "stale", tmp_path)) == 2
    fresh = stale.replace("~ 0.1787; q* ~ 0.828", "= 0.21710; q* = 0.8737")
    assert check_python(fresh, "fresh", tmp_path) == []
    assert check_python("print(1.5, 2.5)  # -> 1.5\n", "count", tmp_path)        # a printed number not quoted
    text = "scaling-limit transition (exact): s2_c = 0.217099, u_c = 20.7840"
    assert check_output(text, [("s2_c", "0.217097")]) and not check_output(text, [("s2_c", "0.217099")])
    assert check_output('{"points": [{"b": 0.1832}]}', [("c", "0.1")])            # a missing name fails
    assert not check_output('{"s2_c": 0.21709904971187977}', [("s2_c", "0.2171")])
    assert matches(0.21709905, "0.217099") and not matches(0.21709905, "0.21709")
    assert matches(1.4e3, "1.4e3") and not matches(1.5e3, "1.4e3")
