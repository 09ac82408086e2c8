"""Command-line interface: ``grokphase <group> <command> [options]``.

Every command accepts ``--json`` (one JSON object on stdout, nothing else there) and ``--out FILE.nc``
(an annotated xarray Dataset).  Bad input exits with status 2 and a one-line message naming the
problem, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Sequence

import jax

from grokphase import __version__, enable_compilation_cache
from grokphase.cli.common import _emit, _Parser, missing_variable
from grokphase.cli.diagnostics import add_parsers as add_diagnostics_parsers
from grokphase.cli.free_energy import add_parser as add_free_energy_parser
from grokphase.cli.preflight import given_dests, preflight
from grokphase.cli.reproduce import add_parser as add_reproduce_parser
from grokphase.cli.sims import add_parsers as add_sim_parsers
from grokphase.cli.theory import add_parsers as add_theory_parsers
from grokphase.errors import GrokphaseError
from grokphase.experiments import distributed
from grokphase.experiments.devices import request_host_devices
from grokphase.io import load_dataset
from grokphase.plotting import plot_result

# ------------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------------


def cmd_plot(args) -> int:

    ds = load_dataset(args.result)
    try:
        paths = plot_result(ds, args.out, also_pdf=args.pdf)
    except KeyError as err:
        raise missing_variable(err, {args.result: ds}) or err from None
    _emit(args, {"plots": [str(p) for p in paths]}, [f"wrote {p}" for p in paths])
    return 0


# ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grokphase", description="Theory and simulations of grokking as a first-order phase "
                                                   "transition (Rubin, Seroussi & Ringel, ICLR 2024).")

    parser.add_argument("--version", action="version", version=f"grokphase {__version__}")
    groups = parser.add_subparsers(dest="group", required=True, parser_class=_Parser)

    add_theory_parsers(groups)
    add_sim_parsers(groups)
    add_reproduce_parser(groups)
    add_free_energy_parser(groups)
    add_diagnostics_parsers(groups)

    p = groups.add_parser("plot", help="draw the figure of a saved result file")
    p.add_argument("result", metavar="RESULT.nc")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.add_argument("--pdf", action="store_true", help="also write a PDF next to the PNG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    n_processes = 1
    if getattr(args, "distributed", False):
        try:
            _, n_processes = distributed.initialize()        # before JAX starts a backend
        except GrokphaseError as exc:
            print(f"grokphase: error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:    # noqa: BLE001 - jax.distributed.initialize's own failures, in one line
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            print(f"grokphase: error: --distributed: JAX could not join the run's processes "
                  f"({type(exc).__name__}: {first}); check JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
                  "JAX_PROCESS_ID", file=sys.stderr)
            return 2
    if getattr(args, "devices", None):
        request_host_devices(args.devices)
    enable_compilation_cache()
    if n_processes > 1:
        return _run_distributed(parser, args, argv)
    return _run(parser, args, argv)


def _run_distributed(parser, args, argv) -> int:
    """One process of a multi-process run: the command's output (stdout) comes from process 0 only;
    every process reports its errors (stderr).  A process that fails leaves at once (``os._exit``):
    the normal exit would wait at JAX's shutdown barrier for processes that will never come."""
    # native libraries print to file descriptor 1 (Gloo: "Rank 0 is connected to 1 peer ranks"): send that
    # to stderr, so that stdout carries the command's output alone (--json), and only process 0's
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(real_stdout, "w") if distributed.process_id() == 0 else open(os.devnull, "w")
    prefix = f"grokphase: error: process {distributed.process_id()} of {distributed.num_processes()}: "
    try:
        code = _run(parser, args, argv, prefix)
    except BaseException:                # noqa: BLE001 - a traceback, then leave without the barrier
        traceback.print_exc()
        code = 1
    if code != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(parser, args, argv, prefix: str = "grokphase: error: ") -> int:
    try:
        preflight(args, given_dests(parser, args, sys.argv[1:] if argv is None else argv))   # before any computation
        return int(args.func(args) or 0)
    except GrokphaseError as exc:
        print(f"{prefix}{exc}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as exc:  # a full disk, a vanished folder, an array beyond memory
        print(f"{prefix}{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except jax.errors.JaxRuntimeError as exc:
        if "RESOURCE_EXHAUSTED" not in str(exc):
            raise                        # not the user's input: keep the traceback
        print(f"{prefix}out of device memory (lower --memory-gb / --ensemble-chunk or the sizes): "
              + str(exc).splitlines()[0][:200], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grokphase: interrupted", file=sys.stderr)
        return 130
