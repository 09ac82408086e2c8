"""``grokphase theory single-index``: the exact finite-d theory of the single-index family (any
activation, any Hermite target; THEORY.md §6) at one sigma^2 or a sweep."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from grokphase.axes import parse_range
from grokphase.errors import ParameterError
from grokphase.theory.single_index import (ACTIVATIONS, PAPER_TARGET, SingleIndexParams, get_activation, get_target,
                                          limit_support)
from grokphase.theory.single_index.overlaps import MAX_DEGREE
from grokphase.theory.single_index.results import (build_single_index_gp_curve, build_single_index_phase_diagram,
                                                   build_single_index_sweep, resolve_degrees, scaled_params)
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



# ------------------------------------------------------------------------------------------------
# the family on the teacher-student commands (--activation / --target / --degrees / --kmax)
# ------------------------------------------------------------------------------------------------

def _family_base(args) -> SingleIndexParams:
    return SingleIndexParams(N=args.N, n=args.n, d=args.d, s2=SingleIndexParams.s2, sa2=args.sa2, sw2=args.sw2)


def _family_s2(args) -> np.ndarray:
    if args.s2_sweep is not None:
        if args.s2 is not None:
            raise ParameterError("give either --s2 or --s2-sweep, not both")
        return parse_range(args.s2_sweep, "--s2-sweep", positive=True)[0]
    return np.array([SingleIndexParams.s2 if args.s2 is None else args.s2])


def _per_degree(row, name, degrees) -> dict:
    return {str(k): float(row[name].sel(degree=k)) for k in degrees}


def run_family_teacher_student(args, family) -> int:
    """``theory teacher-student`` for a non-paper model: finite d (--approximation), and with --limit
    the scaling limit per sigma^2, with --transition Claim IV's s2_c (or the reason there is none)."""
    s2 = _family_s2(args)
    base = _family_base(args)
    from grokphase.theory.results import check_corrections
    corrections = check_corrections(getattr(args, "corrections", None))
    if corrections and args.limit:
        raise ParameterError("--corrections: the finite-n corrections vanish in the scaling limit (n -> infinity); "
                             "drop --limit to get them on the finite-d theory")
    if args.kmax is not None and not 0 <= args.kmax <= MAX_DEGREE:
        raise ParameterError(f"--kmax {args.kmax}: must be in 0..{MAX_DEGREE}")
    if args.limit or args.transition:
        reason = limit_support(family.target, family.activation, family.degrees)
        if reason is not None:
            flag = "--limit" if args.limit else "--transition"
            raise ParameterError(f"{flag}: the scaling limit is not available for {family.label}: {reason}")
    if not args.limit:
        try:
            scaled_params(base, s2, args.beta)
        except ParameterError as exc:
            raise ParameterError(f"--beta {args.beta:g} takes the scaled model out of range: {exc}") from None
    t0 = time.perf_counter()
    ds = build_single_index_sweep(base, s2, family.target, family.activation,
                                  None if family.k_max is not None else family.degrees, k_max=family.k_max,
                                  beta=args.beta, approximation=args.approximation, finite_d=not args.limit,
                                  limit=bool(args.limit), transition=bool(args.transition), corrections=corrections)
    elapsed = time.perf_counter() - t0
    degrees = family.degrees
    in_target = [k for k in degrees if k in family.target.degrees]
    points: list[dict[str, Any]] = []
    lines = [f"{family.label}, {args.approximation}" + ("" if args.limit else f", beta = {args.beta:g}")]
    if args.limit:
        reason = ds["limit_status"].attrs.get("reason")
        lines.append(f"{'s2':>9} {'u':>9} {'phase':>7} {'pi1':>8} {'q*':>6}  scaling-limit learned fraction per target degree")
        for i, v in enumerate(s2):
            row = ds.isel(s2=i)
            code = int(row["limit_phase"])
            pt = {"s2": float(v), "u": float(row["u"]), "r": float(row["r"]),
                  "phase": _phase_label(code) if code >= 0 else None, "status": _status_label(row["limit_status"]),
                  "learned": _per_degree(row, "limit_learned", in_target),
                  "discrepancy": _per_degree(row, "limit_discrepancy", degrees),
                  **{k: float(row[f"limit_{k}"]) for k in ("pi1", "q_star", "t_star", "free_energy", "degeneracy")}}
            points.append(pt)
            text = "  ".join(f"He{k} {x:.5f}" for k, x in pt["learned"].items())
            lines.append(f"{float(v):9.4f} {pt['u']:9.3f} {str(pt['phase']):>7} {pt['pi1']:8.4f} {pt['q_star']:6.3f}  {text}")
        if reason is not None:
            lines.append(f"scaling limit not available: {reason}")
    else:
        lines.append(f"{'s2':>9} {'phase':>7} {'free energy':>12} {'droplet':>8}  learned fraction per target degree")
        for i, v in enumerate(s2):
            row = ds.isel(s2=i)
            pt = {"beta": float(args.beta), "s2": float(row["s2_scaled"]), "u": float(row["u"]), "r": float(row["r"]),
                  "phase": _phase_label(row["phase"]), "status": _status_label(row["status"]),
                  "free_energy": float(row["free_energy"]), "droplet_fraction": float(row["droplet_fraction"]),
                  "residual": float(row["residual"]), "iterations": int(row["iterations"]),
                  "learned": _per_degree(row, "learned", in_target),
                  "discrepancy": _per_degree(row, "discrepancy", degrees)}
            text = "  ".join(f"He{k} {x:.5f}" for k, x in pt["learned"].items())
            if "ridge_learned" in ds:
                pt["ridge_learned"] = _per_degree(row, "ridge_learned", in_target)
                pt["ridge_kappa"], pt["ridge_s2_eff"] = float(row["ridge_kappa"]), float(row["ridge_s2_eff"])
                pt["ridge_phase"] = _phase_label(row["ridge_phase"])
                text += "  (ridge: " + "  ".join(f"He{k} {x:.5f}" for k, x in pt["ridge_learned"].items()) + ")"
            if "basis_shift" in ds:
                pt["basis_shift"] = _per_degree(row, "basis_shift", in_target)
                text += "  (shift vs target basis: " + ", ".join(f"He{k} {x:+.2e}" for k, x in pt["basis_shift"].items()) + ")"
            points.append(pt)
            lines.append(f"{float(v):9.4f} {pt['phase']:>7} {pt['free_energy']:12.6f} {pt['droplet_fraction']:8.5f}  {text}")
    summary: dict[str, Any] = {"approximation": args.approximation, "activation": family.activation.name,
                               "target": family.target.spec, "degrees": list(degrees), "points": points}
    if corrections:
        summary["corrections"] = list(corrections)
    if args.transition:
        for k in ("s2_c", "u_c", "q_star_c", "t_star_c"):
            summary[k] = float(ds.attrs[k]) if np.isfinite(ds.attrs[k]) else None
        if summary["s2_c"] is None:
            summary["s2_c_reason"] = ds.attrs["s2_c_reason"]
            lines.append(f"scaling-limit transition ({args.approximation}): none: {ds.attrs['s2_c_reason']}")
        else:
            lines.append(f"scaling-limit transition ({args.approximation}): s2_c = {summary['s2_c']:.6f}, "
                         f"u_c = {summary['u_c']:.4f}, q*_c = {summary['q_star_c']:.4f}, t*_c = {summary['t_star_c']:.4f}")
    _log(args, f"grokphase: teacher-student theory ({family.activation.name}, {family.target.spec}, "
               f"{args.approximation}), {s2.size} sigma^2 in {elapsed:.2f} s")
    return _finish(args, ds, summary, lines)


def run_family_gp(args, family) -> int:
    """``theory gp-teacher-student`` for a non-paper model: per-degree NNGP eigenvalues (exact
    Rayleigh quotients) and EK learning curves."""
    if args.approximation != "exact":
        raise ParameterError(f"--approximation {args.approximation} is not available for the single-index family "
                             f"({family.label}): its GP baseline uses the exact Rayleigh quotients")
    if args.plot:
        raise ParameterError(f"--plot is not available for the single-index family ({family.label}) yet; "
                             "use --out and plot the Dataset")
    s2 = _family_s2(args)
    if args.n_sweep is not None:
        n = parse_range(args.n_sweep, "--n-sweep", positive=True)[0]
    else:
        n = np.array([args.n])
    ds = build_single_index_gp_curve(_family_base(args), s2, n, family.target, family.activation, family.degrees)
    degrees = family.degrees
    lam = {str(k): float(x) for k, x in zip(degrees, ds["nngp_eigenvalue"].values)}
    points = [{"s2": float(a), "n": float(b), "learned": {str(k): float(ds["learned"].sel(s2=a, n=b, degree=k))
                                                          for k in degrees}} for a in s2 for b in n]
    n_half = {str(k): [float(x) for x in ds["n_half"].sel(degree=k).values] for k in degrees}
    summary = {"activation": family.activation.name, "target": family.target.spec, "degrees": list(degrees),
               "nngp_eigenvalues": lam, "n_half": n_half, "approximation": "exact",
               "learning_curve": "equivalent kernel", "points": points}
    lines = [f"{family.label}: NNGP eigenvalues (exact Rayleigh quotients) "
             + ", ".join(f"lambda{k} = {x:.6e}" for k, x in lam.items()),
             *(f"s2 = {a:g}: half learned at n = " + ", ".join(f"{n_half[str(k)][i]:.4e} (He{k})" for k in degrees)
               for i, a in enumerate(s2)),
             f"{'s2':>9} {'n':>12}  " + " ".join(f"{'He' + str(k):>11}" for k in degrees),
             *(f"{p['s2']:9.4f} {p['n']:12.5g}  " + " ".join(f"{x:11.4e}" for x in p["learned"].values())
               for p in points)]
    return _finish(args, ds, summary, lines)


def run_family_phase_diagram(args, family) -> int:
    """``theory phase-diagram teacher-student`` for a non-paper model."""
    from grokphase.axes import parse_axis
    from grokphase.theory import teacher_student as ts
    from grokphase.cli.common import _base_params
    allowed = tuple(k for k in ts.PARAM_NAMES if k != "eps") + ts.DERIVED_AXES
    x = parse_axis(args.x, allowed, "--x")
    y = parse_axis(args.y, allowed, "--y")
    base = _base_params(args)
    if args.limit:
        reason = limit_support(family.target, family.activation, family.degrees)
        if reason is not None:
            raise ParameterError(f"--limit: the scaling limit is not available for {family.label}: {reason}")
    t0 = time.perf_counter()
    ds = build_single_index_phase_diagram(base, x, y, family.target, family.activation, family.degrees,
                                          limit=args.limit, beta=args.beta, alpha=args.alpha,
                                          sa2_times_N=8.0 if args.sa2 is None else None,
                                          approximation=args.approximation)
    elapsed = time.perf_counter() - t0
    from grokphase.theory.teacher_student import PHASE_LABELS
    counts = {label: int((ds["phase"].values == code).sum()) for code, label in PHASE_LABELS.items()}
    in_target = [k for k in family.degrees if k in family.target.degrees]
    ranges = {str(k): [float(np.nanmin(ds["learned"].sel(degree=k))), float(np.nanmax(ds["learned"].sel(degree=k)))]
              for k in in_target}
    boundary = [{y.name: float(yv), x.name: (None if not math.isfinite(xv) else float(xv))}
                for yv, xv in zip(y.values, ds["boundary_x"].values)]
    summary = {"x": x.name, "y": y.name, "shape": [int(y.values.size), int(x.values.size)],
               "solver": "limit" if args.limit else "finite-d", "approximation": args.approximation,
               "activation": family.activation.name, "target": family.target.spec, "degrees": list(family.degrees),
               "phase_counts": counts, "learned_range": ranges, "boundary": boundary, "seconds": elapsed}
    lines = [f"phase diagram {y.name} x {x.name} ({y.values.size} x {x.values.size}, {summary['solver']}, "
             f"{args.approximation}) for {family.label} in {elapsed:.2f} s",
             "phase counts: " + ", ".join(f"{k}: {v}" for k, v in counts.items()),
             "learned fraction range: " + ", ".join(f"He{k} {a:.4f}..{b:.4f}" for k, (a, b) in ranges.items())]
    if "boundary_reason" in ds.attrs:
        summary["boundary_reason"] = ds.attrs["boundary_reason"]
        lines.append(f"limit transition: none: {ds.attrs['boundary_reason']}")
    else:
        lines.append(f"limit transition ({args.approximation}; {x.name} at each {y.name}):")
        lines += [f"  {y.name} = {b[y.name]:.6g}: {x.name}_c = {b[x.name]}" for b in boundary[:: max(1, len(boundary) // 8)]]
    return _finish(args, ds, summary, lines)
