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


DISTRIBUTED_HELP = ("run as one of several processes (jax.distributed): every process runs this same command; "
                    "the layout comes from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID or the "
                    "cluster (SLURM, Open MPI, ...); process 0 writes the results (docs/cluster.md)")


def add_device_options(p, devices: bool = True) -> None:
    """``--devices K`` (share each ensemble chunk over K devices, every process's together) and
    ``--distributed`` (a multi-process run: :mod:`grokphase.experiments.distributed`)."""
    if devices:
        def count(text: str) -> int:
            if not text.isdigit() or int(text) < 1:
                raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
            return int(text)

        p.add_argument("--devices", type=count, default=None,
                       help="share each ensemble chunk over K devices (on CPU: K host devices; with "
                            "--distributed, K counts every process's devices)")
    p.add_argument("--distributed", action="store_true", help=DISTRIBUTED_HELP)


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


# --- the single-index family on the teacher-student commands (issue 18) ---------------------------

def _add_family(p: argparse.ArgumentParser, kmax: bool = False) -> None:
    """--activation, --target, --degrees (and --kmax): the single-index family.  None given (or erf
    with a target equal to He1 + eps He3) keeps the paper's model and its code path."""
    from grokphase.theory.single_index import ACTIVATIONS, PAPER_TARGET
    g = p.add_argument_group("single-index family (default: the paper's erf student on He1 + eps He3)")
    g.add_argument("--activation", default=None, metavar="NAME", help=f"one of {', '.join(ACTIVATIONS)} (default erf)")
    g.add_argument("--target", default=None, metavar="K:C,...",
                   help=f"degree:coefficient of He_k, degrees 0..8 (default: He1 + eps He3, i.e. {PAPER_TARGET})")
    g.add_argument("--degrees", default=None, metavar="K1,K2,...",
                   help="discrepancy basis; must contain the target's degrees (default: the target's degrees)")
    if kmax:
        g.add_argument("--kmax", type=int, default=None, metavar="K",
                       help="enlarged basis: the target's degrees and every degree <= K the activation couples, "
                            "with the shift of each learned fraction against the target's basis")


def _degree_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError:
        raise ParameterError(f"--degrees {text!r}: expected integers separated by commas, e.g. 1,3") from None


class Family:
    """A non-paper model of the single-index family, resolved from the command line."""

    def __init__(self, activation, target, degrees, k_max):
        self.activation, self.target, self.degrees, self.k_max = activation, target, degrees, k_max

    @property
    def label(self) -> str:
        return (f"{self.activation.name} student, target {self.target.spec}, "
                f"basis {{{','.join(map(str, self.degrees))}}}")


def _family(args) -> "Family | None":
    """None for the paper's model (no family flag, or erf on a target equal to He1 + eps He3 with the
    basis {1, 3}: then ``args.eps`` is set to the target's eps and today's code path runs); a
    :class:`Family` otherwise.  Bad names, targets or bases are one ParameterError."""
    from grokphase.theory.single_index import get_activation, get_target
    from grokphase.theory.single_index.results import resolve_degrees
    act_name, spec, deg_text = getattr(args, "activation", None), getattr(args, "target", None), getattr(args, "degrees", None)
    k_max = getattr(args, "kmax", None)
    if act_name is None and spec is None and deg_text is None and k_max is None:
        return None
    activation = get_activation("erf" if act_name is None else act_name)
    if spec is not None and args.eps != TeacherStudentParams.eps:
        raise ParameterError("give either --eps or --target, not both (the target sets the He3 coefficient)")
    target = get_target(spec) if spec is not None else get_target(f"1:1,3:{args.eps!r}")
    if deg_text is not None and k_max is not None:
        raise ParameterError("give either --degrees or --kmax, not both")
    degrees = resolve_degrees(target, activation, None if deg_text is None else _degree_list(deg_text), k_max)
    paper_like = (activation.name == "erf" and activation.fn is get_activation("erf").fn and k_max is None
                  and target.degrees == (1, 3) and target.coefficient(1) == 1.0 and degrees == (1, 3))
    if paper_like:
        args.eps = target.coefficient(3)
        return None
    return Family(activation, target, degrees, k_max)


def _refuse(args, family: "Family", flags: Sequence[str]) -> None:
    """One ParameterError for the first of ``flags`` (argparse dests) given that the family does not
    implement."""
    for dest in flags:
        value = getattr(args, dest, None)
        if value not in (None, False):
            raise ParameterError(f"--{dest.replace('_', '-')} is not available for the single-index family "
                                 f"({family.label}); it applies to the paper's erf model only")
