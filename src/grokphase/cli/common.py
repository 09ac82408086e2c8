"""Argument types and the shared tail of every command (save, plot, print)."""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any, Sequence

import numpy as np

from grokphase.axes import parse_range
from grokphase.errors import ParameterError, ResultFileError
from grokphase.io import save_dataset, to_json
from grokphase.plotting import plot_result
from grokphase.theory.teacher_student import PHASE_LABELS, Status, TeacherStudentParams

class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line: ``grokphase: error: ...`` (exit status 2)."""

    def error(self, message):  # noqa: D401
        self.exit(2, f"grokphase: error: {message}\n")


def _positive(text: str) -> float:
    try:
        if "/" in text:  # fractions such as 1/8
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _add_ts_params(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model parameters (the beta = 1 configuration; defaults: paper App. C)")
    P = TeacherStudentParams       # the defaults live in the dataclass (App. C)
    g.add_argument("--N", type=_positive, default=P.N, help=f"hidden width (default {P.N:g})")
    g.add_argument("--n", type=_positive, default=P.n, help=f"training points (default {P.n:g})")
    g.add_argument("--d", type=_positive, default=P.d, help=f"input dimension (default {P.d:g})")
    g.add_argument("--s2", type=_positive, default=None, help=f"sigma^2, noise variance / temperature (default {P.s2:g})")
    g.add_argument("--sa2", type=_positive, default=None,
                   help="sigma_a^2, readout prior a_i ~ N(0, sa2/N) (default 8/N, following N when N varies)")
    g.add_argument("--sw2", type=_positive, default=P.sw2, help=f"sigma_w^2, input prior (default {P.sw2:g})")
    g.add_argument("--eps", type=_finite, default=P.eps, help=f"cubic strength of the teacher (default {P.eps:g})")


def _add_approximation(p: argparse.ArgumentParser) -> None:
    p.add_argument("--approximation", choices=("exact", "concentrated"), default="exact",
                   help="exact (default): |w_perp|^2 integrated as a second order parameter (THEORY.md §3b); "
                        "concentrated: the paper's reduction with |w_perp|^2 fixed at sw2 (Claim II)")


def _add_scaling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beta", type=_positive, default=1.0, help="Table-1 scaling beta (default 1)")
    p.add_argument("--alpha", type=_positive, default=None, help="Table-1 scaling alpha (default: alpha = beta)")


def _add_output(p: argparse.ArgumentParser, plot_help: str) -> None:
    p.add_argument("--plot", metavar="FILE.png", default=None, help=plot_help)
    p.add_argument("--out", metavar="FILE.nc", default=None, help="save the results as an annotated netCDF Dataset")
    p.add_argument("--json", action="store_true", help="print a one-object JSON summary on stdout")


def _base_params(args):

    return TeacherStudentParams(N=args.N, n=args.n, d=args.d, s2=TeacherStudentParams.s2 if args.s2 is None else args.s2,
                                sa2=args.sa2, sw2=args.sw2, eps=args.eps)


def _s2_values(args) -> np.ndarray:

    if args.s2_sweep is not None:
        if args.s2 is not None:

            raise ParameterError("give either --s2 or --s2-sweep, not both")
        return parse_range(args.s2_sweep, "--s2-sweep", positive=True)[0]
    return np.array([TeacherStudentParams.s2 if args.s2 is None else args.s2])


def missing_variable(err: KeyError, files: dict[str, Any]) -> ResultFileError | None:
    """The error to report when ``err`` is xarray's "No variable named 'X'" for a variable that one of
    ``files`` ({path: Dataset} read from the user's files) lacks; None otherwise (a bug: re-raise)."""
    match = re.match(r"No variable named '([^']+)'", str(err.args[0]) if err.args else "")
    if match is None:
        return None
    name = match.group(1)
    lacking = [path for path, ds in files.items() if name not in ds.variables]
    if not lacking:
        return None
    kind = files[lacking[0]].attrs.get("grokphase_kind", "result")
    return ResultFileError(f"{lacking[0]} lacks the variable {name!r} that a {kind} file has; it is incomplete or "
                           f"was not written by this grokphase")


def _emit(args, summary: dict[str, Any], text_lines: Sequence[str]) -> None:

    if args.json:
        sys.stdout.write(to_json(summary) + "\n")
    else:
        sys.stdout.write("\n".join(text_lines) + "\n")


def _finish(args, ds, summary: dict[str, Any], lines: Sequence[str]) -> int:
    """Save (--out), draw from the saved data (--plot) and print the summary; the shared tail of
    every command."""

    if args.out:
        save_dataset(ds, args.out)
        summary["out"] = args.out
    if args.plot:
        plot_result(ds, args.plot)
        summary["plot"] = args.plot
    _emit(args, summary, lines)
    return 0


def _log(args, message: str) -> None:
    print(message, file=sys.stderr)


def _phase_label(code) -> str:

    return PHASE_LABELS[int(code)]


def _status_label(code) -> str:

    return Status(int(code)).label
