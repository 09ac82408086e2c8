"""``grokphase theory single-index``: the exact finite-d theory of the single-index family (any
activation, any Hermite target; THEORY.md §6) at one sigma^2 or a sweep."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from grokphase.axes import parse_range
from grokphase.errors import ParameterError
from grokphase.theory.single_index import ACTIVATIONS, PAPER_TARGET, SingleIndexParams, get_activation, get_target
from grokphase.theory.single_index.overlaps import MAX_DEGREE
from grokphase.theory.single_index.results import build_single_index_sweep, resolve_degrees, scaled_params
from grokphase.cli.common import _finish, _log, _phase_label, _positive, _status_label


def add_parser(tsub) -> None:
    """Register ``single-index`` under the ``theory`` sub-commands ``tsub``."""
    P = SingleIndexParams            # the defaults live in the dataclass (App. C)
    p = tsub.add_parser("single-index", help="finite-d theory for any activation and any Hermite target (preview)",
                        description="Solve the exact (q, t) finite-d theory of a two-layer network with activation "
                                    "--activation learning y = sum_k c_k He_k(w*.x) (--target 'k:c_k,...') at one "
                                    "sigma^2 or a sweep: learned fraction 1 - v_k/yhat_k per degree of the basis, "
                                    "phase, free energy, droplet fraction.")
    p.add_argument("--activation", default="erf", metavar="NAME",
                   help=f"one of {', '.join(ACTIVATIONS)} (default erf)")
    p.add_argument("--target", default=PAPER_TARGET, metavar="K:C,...",
                   help=f"degree:coefficient of He_k, degrees 0..{MAX_DEGREE} (default {PAPER_TARGET}, the paper's)")
    basis = p.add_mutually_exclusive_group()
    basis.add_argument("--degrees", default=None, metavar="K1,K2,...",
                       help="discrepancy basis; must contain the target's degrees (default: the target's degrees)")
    basis.add_argument("--kmax", type=int, default=None, metavar="K",
                       help="enlarged basis: the target's degrees and every degree <= K the activation couples; "
                            "reports the shift of each learned fraction against the target's basis")
    g = p.add_argument_group("model parameters (the beta = 1 configuration; defaults: paper App. C)")
    g.add_argument("--N", type=_positive, default=P.N, help=f"hidden width (default {P.N:g})")
    g.add_argument("--n", type=_positive, default=P.n, help=f"training points (default {P.n:g})")
    g.add_argument("--d", type=_positive, default=P.d, help=f"input dimension (default {P.d:g})")
    g.add_argument("--s2", type=_positive, default=None, help=f"sigma^2 (default {P.s2:g})")
    g.add_argument("--sa2", type=_positive, default=None, help="readout prior a_i ~ N(0, sa2/N) (default 8/N)")
    g.add_argument("--sw2", type=_positive, default=P.sw2, help=f"input prior (default {P.sw2:g})")
    p.add_argument("--beta", type=_positive, default=1.0,
                   help="Table-1 scaling beta: N -> beta N, n -> beta n, d -> sqrt(beta) d, sa2 -> sa2/sqrt(beta) "
                        "(default 1)")
    p.add_argument("--s2-sweep", metavar="START:STOP:NUM[:log]", default=None, help="sweep sigma^2")
    p.add_argument("--nngp", action="store_true",
                   help="also report the per-degree NNGP eigenvalues and their EK learned fractions")
    p.add_argument("--out", metavar="FILE.nc", default=None, help="save the results as an annotated netCDF Dataset")
    p.add_argument("--json", action="store_true", help="print a one-object JSON summary on stdout")
    p.add_argument("--no-progress", action="store_true", help="accepted for symmetry with the other theory "
                                                               "commands (this one draws no progress bar)")
    p.set_defaults(func=cmd_theory_single_index, plot=None)


def _degree_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError:
        raise ParameterError(f"--degrees {text!r}: expected integers separated by commas, e.g. 1,3") from None


def cmd_theory_single_index(args) -> int:
    activation = get_activation(args.activation)
    target = get_target(args.target)
    if args.s2_sweep is not None:
        if args.s2 is not None:
            raise ParameterError("give either --s2 or --s2-sweep, not both")
        s2 = parse_range(args.s2_sweep, "--s2-sweep", positive=True)[0]
    else:
        s2 = np.array([SingleIndexParams.s2 if args.s2 is None else args.s2])
    if args.kmax is not None and not 0 <= args.kmax <= MAX_DEGREE:
        raise ParameterError(f"--kmax {args.kmax}: must be in 0..{MAX_DEGREE}")
    degrees = resolve_degrees(target, activation, None if args.degrees is None else _degree_list(args.degrees),
                              args.kmax)              # checked before any solve
    base = SingleIndexParams(N=args.N, n=args.n, d=args.d, s2=SingleIndexParams.s2, sa2=args.sa2, sw2=args.sw2)
    try:
        scaled_params(base, s2, args.beta)
    except ParameterError as exc:
        raise ParameterError(f"--beta {args.beta:g} takes the scaled model out of range: {exc}") from None
    t0 = time.perf_counter()
    ds = build_single_index_sweep(base, s2, target, activation, None if args.kmax is not None else degrees,
                                  k_max=args.kmax, beta=args.beta,
                                  nngp=args.nngp)
    elapsed = time.perf_counter() - t0
    in_target = [k for k in degrees if k in target.degrees]
    points: list[dict[str, Any]] = []
    lines = [f"{activation.name} student, target {target.spec}, basis {{{','.join(map(str, degrees))}}}, "
             f"beta = {args.beta:g}",
             f"{'s2':>9} {'phase':>7} {'free energy':>12} {'droplet':>8}  learned fraction per target degree"]
    for i, v in enumerate(s2):
        row = ds.isel(s2=i)
        learned = {str(k): float(row["learned"].sel(degree=k)) for k in in_target}
        pt: dict[str, Any] = {"s2": float(row["s2_scaled"]), "u": float(row["u"]), "r": float(row["r"]),
                              "phase": _phase_label(row["phase"]), "status": _status_label(row["status"]),
                              "free_energy": float(row["free_energy"]),
                              "droplet_fraction": float(row["droplet_fraction"]), "learned": learned,
                              "discrepancy": {str(k): float(row["discrepancy"].sel(degree=k)) for k in degrees}}
        text = "  ".join(f"He{k} {x:.5f}" for k, x in learned.items())
        if "basis_shift" in ds:
            pt["basis_shift"] = {str(k): float(row["basis_shift"].sel(degree=k)) for k in in_target}
            text += "  (shift vs target basis: " + ", ".join(f"He{k} {x:+.2e}" for k, x in pt["basis_shift"].items()) + ")"
        if "gp_learned" in ds:
            pt["gp_learned"] = {str(k): float(row["gp_learned"].sel(degree=k)) for k in in_target}
            text += "  GP: " + ", ".join(f"He{k} {x:.3e}" for k, x in pt["gp_learned"].items())
        points.append(pt)
        lines.append(f"{float(v):9.4f} {pt['phase']:>7} {pt['free_energy']:12.6f} {pt['droplet_fraction']:8.5f}  {text}")
    summary: dict[str, Any] = {"activation": activation.name, "target": target.spec, "degrees": list(degrees),
                               "beta": args.beta, "points": points}
    if "nngp_eigenvalue" in ds:
        summary["nngp_eigenvalues"] = {str(k): float(x) for k, x in zip(degrees, ds["nngp_eigenvalue"].values)}
        lines.append("NNGP eigenvalues: " + ", ".join(f"lambda{k} = {x:.6e}"
                                                      for k, x in zip(degrees, ds["nngp_eigenvalue"].values)))
    _log(args, f"grokphase: single-index theory ({activation.name}, {target.spec}), {s2.size} sigma^2 "
               f"in {elapsed:.2f} s")
    return _finish(args, ds, summary, lines)

