"""Theory commands: ``grokphase theory teacher-student | gp-teacher-student | modular | gp-modular |
phase-diagram MODEL``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from grokphase.axes import parse_axis, parse_list, parse_range
from grokphase._params import plain
from grokphase.errors import ParameterError, SolverError
from grokphase.theory import modular as md, teacher_student as ts
from grokphase.theory.modular import ModularParams
from grokphase.theory.results import check_corrections
from grokphase.theory.results import build_gp_learning_curve, build_modular_gp_curve, build_modular_phase_diagram, build_modular_sweep, build_teacher_student_phase_diagram, build_teacher_student_sweep
from grokphase.theory.teacher_student import PHASE_LABELS
from grokphase.cli.single_index import add_parser as add_single_index_parser
from grokphase.cli.common import (_add_approximation, _add_output, _add_scaling, _add_ts_params, _base_params, _finish,
                                  _finite, _log, _Parser, _phase_label, _positive, _s2_values, _status_label)
from grokphase.cli.common import _add_family, _emit, _family, _refuse
from grokphase.cli.sims import _int_ge
from grokphase.experiments.finite_n import STARTS, run_finite_n, scaled_point
from grokphase.theory.finite_n import FiniteNConfig
from grokphase.theory.teacher_student import TeacherStudentParams

DEFAULT_BETAS = (1 / 8, 1 / 2, 1.0, 2.0, 8.0)


def add_parsers(groups) -> None:
    theory = groups.add_parser("theory", help="mean-field theory solvers")
    tsub = theory.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = tsub.add_parser("teacher-student", help="finite-d or scaling-limit theory of the cubic teacher / erf student",
                        description="Solve the teacher-student theory at one sigma^2 or a sweep. With --plot: the "
                                    "theory half of the paper's Fig. 2 (betas 1/8, 1/2, 1, 2, 8, the limit, the GP).")
    _add_ts_params(p)
    _add_scaling(p)
    p.add_argument("--s2-sweep", metavar="START:STOP:NUM[:log]", default=None, help="sweep sigma^2")
    p.add_argument("--betas", metavar="B1,B2,...", default=None, help="several betas (fractions allowed, e.g. 1/8)")
    p.add_argument("--limit", action="store_true", help="report the scaling-limit solver's points")
    p.add_argument("--transition", action="store_true", help="report the limit transition s2_c and u_c")
    p.add_argument("--density-s2", metavar="S1,S2", default=None,
                   help="sigma^2 values for log p(q) (default: one on each side of the transition when plotting)")
    p.add_argument("--corrections", metavar="NAME", default=None,
                   help="finite-n correction of the finite-d theory: 'ridge' (the renormalised ridge of finite-n "
                        "kernel regression, docs/finite_size.md section 4); adds ridge_* columns and variables")
    _add_approximation(p)
    _add_family(p, kmax=True)
    _add_output(p, "write the Fig. 2 theory figure (PNG or PDF)")
    _add_progress(p)
    p.set_defaults(func=cmd_theory_teacher_student)

    p = tsub.add_parser("finite-n", help="finite-n mean-field theory on the simulations' own training sets (issue 22)",
                        description="Solve the N -> infinity theory without the equivalent-kernel step on the "
                                    "training sets the simulations draw (data set i of --seed), at one or several "
                                    "sigma^2, and average over data sets (docs/finite_size.md).  With --out the file "
                                    "is rewritten after every solve, and a rerun with the same parameters resumes it.")
    _add_finite_n_params(p)
    p.set_defaults(func=cmd_theory_finite_n)

    p = tsub.add_parser("gp-teacher-student", help="infinite-width GP (NNGP) baseline, EK learning curves",
                        description="Exact Rayleigh quotients of the arcsine kernel and EK learned fractions.")
    _add_ts_params(p)
    p.add_argument("--s2-sweep", metavar="START:STOP:NUM[:log]", default=None, help="sweep sigma^2")
    p.add_argument("--n-sweep", metavar="START:STOP:NUM[:log]", default=None, help="sweep n (learning curve)")
    p.add_argument("--corrections", metavar="NAME", default=None,
                   help="'ridge': also the finite-n learning curve with the renormalised ridge (eigenlearning), "
                        "docs/finite_size.md section 4")
    _add_approximation(p)
    _add_family(p)
    _add_output(p, "plot the learning curves")
    p.set_defaults(func=cmd_theory_gp)
    add_single_index_parser(tsub)

    p = tsub.add_parser("modular", help="modular-addition theory (Fourier-mode action, GFL / GMFL-I / GMFL-II)",
                        description="Solve the modular-addition theory at one sigma^2 or a sweep. With --plot: the "
                                    "paper's Fig. 3 (default sweep 0.1:0.3:201).")
    _add_modular_params(p)
    p.add_argument("--beta", type=_positive, default=1.0, help=_BETA_HELP)
    p.add_argument("--s2-sweep", metavar="START:STOP:NUM[:log]", default=None, help="sweep sigma^2 (beta = 1 units)")
    p.add_argument("--method", choices=("saddle", "exact"), default="saddle",
                   help="<Phi Psi> from the saddle mixture (eq. 41-42) or exact 2-D quadrature")
    _add_convention(p)
    p.add_argument("--transitions", action="store_true", help="report the P -> infinity transition sigma^2")
    p.add_argument("--density-s2", metavar="S1,S2,...", default=None, help="sigma^2 values for panel (a)")
    _add_output(p, "write the Fig. 3 figure")
    _add_progress(p)
    p.set_defaults(func=cmd_theory_modular)

    p = tsub.add_parser("gp-modular", help="NNGP kernel spectrum and EK learning curve of the modular model")
    p.add_argument("--P", type=_positive, default=ModularParams.P)
    p.add_argument("--Ps", metavar="P1,P2,...", default=None, help="several moduli")
    p.add_argument("--N", type=_positive, default=ModularParams.N)
    p.add_argument("--sa2", type=_positive, default=None, help="default 0.002/N")
    p.add_argument("--s2", type=_positive, default=None, help=f"default {ModularParams.s2:g}")
    p.add_argument("--n-sweep", metavar="START:STOP:NUM[:log]", default=None)
    _add_output(p, "plot the learning curves")
    p.set_defaults(func=cmd_theory_gp_modular)

    pd = tsub.add_parser("phase-diagram", help="phase diagrams over two parameters")
    pdsub = pd.add_subparsers(dest="model", required=True, parser_class=_Parser)
    p = pdsub.add_parser("teacher-student", help="teacher-student phase diagram",
                         description="Phase label and learned fractions over a 2-D grid of any two of "
                                     "N, n, d, s2, sa2, sw2, eps, u, r (u varies sa2 at fixed r; r varies N at fixed u).")
    p.add_argument("--x", default="s2:0.05:0.4:64", metavar="NAME:START:STOP:NUM[:log]")
    p.add_argument("--y", default="N:100:3000:64", metavar="NAME:START:STOP:NUM[:log]")
    p.add_argument("--limit", action="store_true", help="scaling-limit solver instead of finite d")
    p.add_argument("--corrections", metavar="NAME", default=None,
                   help="'ridge': also the renormalised-ridge (finite-n) theory on the grid (ridge_* variables, its "
                        "GFL | GMFL-I crossover in the figure): the phase diagram at the actual n")
    _add_approximation(p)
    _add_ts_params(p)
    _add_scaling(p)
    _add_family(p)
    _add_output(p, "plot the diagram")
    _add_progress(p)
    p.set_defaults(func=cmd_phase_diagram_ts)

    p = pdsub.add_parser("modular", help="modular-addition phase diagram",
                         description="Finite-P phase, target component and droplet fraction over a 2-D grid of any "
                                     "two of s2, N, P, sa2, gamma, with the P -> infinity boundaries.")
    p.add_argument("--x", default="s2:0.1:0.3:64", metavar="NAME:START:STOP:NUM[:log]")
    p.add_argument("--y", default="N:500:2000:64", metavar="NAME:START:STOP:NUM[:log]")
    p.add_argument("--method", choices=("saddle", "exact"), default="saddle")
    _add_convention(p)
    p.add_argument("--beta", type=_positive, default=1.0, help=_BETA_HELP)
    _add_modular_params(p)
    _add_output(p, "plot the diagram")
    _add_progress(p)
    p.set_defaults(func=cmd_phase_diagram_modular)


#: help of each FiniteNConfig field as a ``theory finite-n`` option (the meaning lives in its docstring)
_FINITE_N_HELP = {
    "q_size": "grid points of the overlap q on [0, q_max]", "q_max": "end of the q grid",
    "walkers": "MALA chains per grid point", "iterations": "Newton iterations on tau (burn-in)",
    "steps": "MALA steps per iteration", "damping": "damping of the Newton step",
    "blocks": "production blocks (batch means)", "block_steps": "MALA steps per production block",
    "step_size": "initial MALA step", "target_accept": "MALA acceptance the step adapts to",
    "trust": "trust region: a step moves tau by at most trust |tau|",
    "stride": "the n x n moments are sampled every stride-th step",
}


def _add_finite_n_params(p: argparse.ArgumentParser) -> None:
    """``theory finite-n``'s options: the paper's model (as ``theory teacher-student``, with several --s2),
    the Table-1 scaling (sizes rounded to integers as the simulations round them), the data sets and the
    solver settings of :class:`~grokphase.theory.finite_n.FiniteNConfig` (defaults: the dataclass's)."""
    g = p.add_argument_group("model parameters (the beta = 1 configuration; defaults: paper App. C)")
    P = TeacherStudentParams
    g.add_argument("--N", type=_positive, default=P.N, help=f"hidden width (default {P.N:g})")
    g.add_argument("--n", type=_positive, default=P.n, help=f"training points (default {P.n:g})")
    g.add_argument("--d", type=_positive, default=P.d, help=f"input dimension (default {P.d:g})")
    g.add_argument("--s2", metavar="S1,S2,...", default=None,
                   help=f"sigma^2 value(s) at beta = 1, scaled by alpha/beta (default {P.s2:g})")
    g.add_argument("--sa2", type=_positive, default=None, help="readout prior a_i ~ N(0, sa2/N) (default 8/N)")
    g.add_argument("--sw2", type=_positive, default=P.sw2, help=f"input prior (default {P.sw2:g})")
    g.add_argument("--eps", type=_finite, default=P.eps, help=f"cubic strength of the teacher, nonzero (default {P.eps:g})")
    p.add_argument("--beta", type=_positive, default=1.0,
                   help="Table-1 scaling beta: N -> beta N, d -> sqrt(beta) d, sa2 -> sa2/sqrt(beta) (default 1)")
    p.add_argument("--alpha", type=_positive, default=None,
                   help="Table-1 alpha: n -> alpha n, s2 -> (alpha/beta) s2 (default beta; at --beta 1/8, --alpha 1/2 "
                        "is the EK control n x 4, s2 x 4)")
    g = p.add_argument_group("data sets")
    g.add_argument("--datasets", nargs="+", default=["0"], metavar="I|I:J",
                   help="data-set indices of the simulations (I:J = I, ..., J-1; default 0)")
    g.add_argument("--seed", type=_int_ge(0), default=0, help="the simulations' seed (default 0)")
    g.add_argument("--sampler-seed", type=_int_ge(0), default=1, help="the neuron sampler's seed (default 1)")
    g = p.add_argument_group("solver settings (defaults: FiniteNConfig; docs/finite_size.md used --q-size 24 "
                             "--walkers 24 --steps 12 --blocks 3 --block-steps 60)")
    for field in dataclasses.fields(FiniteNConfig):
        kind = _int_ge(1) if field.type in ("int", int) else _positive
        g.add_argument("--" + field.name.replace("_", "-"), type=kind, default=None,
                       help=f"{_FINITE_N_HELP[field.name]} (default {field.default:g})")
    g.add_argument("--no-retry", action="store_true",
                   help="do not retry a run-away solve (by default it is retried once: continuation from the nearest "
                        "larger sigma^2's converged solution of the same data set, else from tau_EK/2)")
    p.add_argument("--one-loop", action="store_true",
                   help="also the one-loop (first order in 1/N) finite-width correction of each solve and the finite-N "
                        "prediction finite n + one loop (docs/finite_size.md)")
    p.add_argument("--out", metavar="FILE.nc", default=None,
                   help="save the results (netCDF), rewritten after every solve; an existing file with the same "
                        "parameters is resumed")
    p.add_argument("--json", action="store_true", help="print a one-object JSON summary on stdout")
    _add_progress(p)


def _dataset_indices(tokens) -> list[int]:
    """--datasets: indices I and half-open ranges I:J, each data set once."""
    out: list[int] = []
    for token in tokens:
        try:
            if ":" in token:
                lo, hi = (int(v) for v in token.split(":"))
                if not 0 <= lo < hi:
                    raise ValueError
                out.extend(range(lo, hi))
            else:
                out.append(int(token))
                if out[-1] < 0:
                    raise ValueError
        except ValueError:
            raise ParameterError(f"--datasets: {token!r} is not an index >= 0 or a range I:J with 0 <= I < J") from None
    twice = sorted({i for i in out if out.count(i) > 1})
    if twice:
        raise ParameterError(f"--datasets: data set {twice[0]} given twice")
    return out


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar on stderr (shown for solves that take more than 2 s)")


def _check_scaled(make, args, betas) -> None:
    """Build the Table-1 scaled parameters (``make()``) before any solve; a magnitude error there is
    blamed on --beta / --alpha, which caused it."""
    try:
        make()
    except ParameterError as exc:
        what = " ".join(f"--beta {plain(float(b))}" for b in np.atleast_1d(betas))
        if getattr(args, "alpha", None) is not None:
            what += f", --alpha {plain(float(args.alpha))}"
        raise ParameterError(f"{what} takes the scaled model out of range: {exc}") from None


@contextlib.contextmanager
def _progress(args, desc: str):
    """A tqdm bar on stderr over the solver's points (as the simulations' bars; off with
    --no-progress).  It appears only once the work has taken 2 s, so quick solves print nothing,
    and is cleared when done: the result lines stay the only output."""
    bar = tqdm(total=None, unit="point", desc=desc, file=sys.stderr, dynamic_ncols=True, delay=2.0,
               leave=False, disable=args.no_progress)
    try:
        yield bar
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------------
# theory teacher-student
# ------------------------------------------------------------------------------------------------


def _learned(linear, cubic) -> dict:
    """The per-degree learned fractions of the paper's model: {"1": 1 - b, "3": 1 - c/eps}."""
    return {"1": float(linear), "3": float(cubic)}


def cmd_theory_teacher_student(args) -> int:
    family = _family(args)
    if family is not None:
        from grokphase.cli.single_index import run_family_teacher_student
        _refuse(args, family, ("betas", "alpha", "density_s2"))
        return run_family_teacher_student(args, family)
    corrections = check_corrections(args.corrections)
    if corrections and args.limit:
        raise ParameterError("--corrections: the finite-n corrections vanish in the scaling limit (n -> infinity); "
                             "drop --limit to get them on the finite-d theory")
    base = _base_params(args)
    s2 = _s2_values(args)
    if args.betas is not None:
        betas = parse_list(args.betas, "--betas")
    elif args.plot:
        betas = np.array(sorted(set(DEFAULT_BETAS) | {args.beta}))
    else:
        betas = np.array([args.beta])
    ratio = None if args.alpha is None else args.alpha / args.beta
    density_s2 = parse_list(args.density_s2, "--density-s2") if args.density_s2 else None
    want_density = bool(args.plot) or density_s2 is not None
    if (not args.limit) or args.plot:   # the limit is scale-invariant; finite d uses the scaled model
        bb = np.asarray(betas, dtype=float)[:, None]
        _check_scaled(lambda: base.replace(s2=s2[None, :]).scaled(alpha=bb * (1.0 if ratio is None else ratio),
                                                                  beta=bb), args, betas)
    t0 = time.perf_counter()
    # the limit curves are always computed (file and figure show them), but a limit failure is an
    # error only with --limit: a finite-d solve never fails on a point the user did not ask for
    with _progress(args, f"teacher-student theory ({args.approximation})") as bar:
        ds = build_teacher_student_sweep(base, s2, betas, ratio, limit=True,
                                         finite_d=(not args.limit) or bool(args.plot), gp_baseline=True,
                                         density_s2=density_s2 if want_density else None,
                                         approximation=args.approximation, check_limit=bool(args.limit),
                                         progress=bar, corrections=corrections)
    if not want_density:
        ds = ds.drop_vars([v for v in ("log_p", "density_droplet_fraction", "density_t_droplet", "density_t_bulk",
                                       "limit_action") if v in ds])
    elapsed = time.perf_counter() - t0
    points = []
    lines = []
    if args.limit:
        lines.append(f"{'s2':>9} {'u':>9} {'phase':>7} {'b':>9} {'c':>9} {'lin':>7} {'cubic':>7} {'pi1':>7} {'q*':>6}")
        for i, v in enumerate(s2):
            sel = {k: float(ds[f"limit_{k}"].values[i]) for k in ("b", "c", "linear_learned", "cubic_learned",
                                                                   "droplet_fraction", "pi1", "q_star", "t_star",
                                                                   "free_energy")}
            pt = {"s2": float(v), "u": float(base.replace(s2=v).u), "r": float(base.replace(s2=v).r), **sel,
                  "phase": _phase_label(ds["limit_phase"].values[i]),
                  "status": _status_label(ds["limit_status"].values[i])}
            # droplet / bulk |w_perp|^2 of the limit: t* at the droplet saddle (GMFL-I only), sw2 in the bulk
            pt["t_droplet"] = pt["t_star"] if pt["pi1"] > 0 else None
            pt["t_bulk"] = float(base.sw2)
            pt["learned"] = _learned(pt["linear_learned"], pt["cubic_learned"])
            points.append(pt)
            lines.append(f"{v:9.4f} {pt['u']:9.3f} {pt['phase']:>7} {pt['b']:9.5f} {pt['c']:9.5f} "
                         f"{pt['linear_learned']:7.4f} {pt['cubic_learned']:7.4f} {pt['pi1']:7.3f} {pt['q_star']:6.3f}")
    else:
        ridge = "ridge" in corrections
        lines.append(f"{'beta':>6} {'s2':>9} {'u':>9} {'phase':>7} {'b':>9} {'c':>9} {'lin':>7} {'cubic':>7} {'droplet':>8}"
                     + (f" {'ridge lin':>9} {'ridge cub':>9} {'n kappa/s2':>10}" if ridge else ""))
        for beta in np.atleast_1d(args.beta if args.betas is None and not args.plot else betas):
            for i, v in enumerate(s2):
                row = ds.sel(beta=beta).isel(s2=i)
                pt = {"beta": float(beta), "alpha": float(beta * (1.0 if ratio is None else ratio)),
                      "s2": float(row["s2_scaled"]), "u": float(ds["u"].values[i]), "r": float(ds["r"].values[i])}
                for k in ("b", "c", "linear_learned", "cubic_learned", "droplet_fraction", "free_energy", "residual",
                          "t_droplet", "t_bulk"):
                    pt[k] = float(row[k])
                pt["iterations"] = int(row["iterations"])
                pt["phase"] = _phase_label(row["phase"])
                pt["status"] = _status_label(row["status"])
                pt["learned"] = _learned(pt["linear_learned"], pt["cubic_learned"])
                if ridge:
                    for k in ("b", "c", "linear_learned", "cubic_learned", "droplet_fraction", "kappa", "s2_eff"):
                        pt[f"ridge_{k}"] = float(row[f"ridge_{k}"])
                    pt["ridge_phase"] = _phase_label(row["ridge_phase"])
                points.append(pt)
                lines.append(f"{beta:6.3g} {pt['s2']:9.4f} {pt['u']:9.3f} {pt['phase']:>7} {pt['b']:9.5f} "
                             f"{pt['c']:9.5f} {pt['linear_learned']:7.4f} {pt['cubic_learned']:7.4f} "
                             f"{pt['droplet_fraction']:8.5f}"
                             + (f" {pt['ridge_linear_learned']:9.4f} {pt['ridge_cubic_learned']:9.4f} "
                                f"{pt['ridge_s2_eff'] / pt['s2']:10.5f}" if ridge else ""))
    summary: dict[str, Any] = {"approximation": args.approximation, "points": points}
    if corrections:
        summary["corrections"] = list(corrections)
    if args.transition:
        summary["s2_c"] = float(ds.attrs["s2_c"])
        summary["u_c"] = float(ds.attrs["u_c"])
        summary["q_star_c"] = float(ds.attrs["q_star_c"])
        summary["t_star_c"] = float(ds.attrs["t_star_c"])
        if not math.isfinite(summary["s2_c"]):

            raise SolverError("no GFL -> GMFL-I transition within s2/100 .. 100*s2 for these parameters")
        lines.append(f"scaling-limit transition ({args.approximation}): s2_c = {summary['s2_c']:.6f}, "
                     f"u_c = {summary['u_c']:.4f}, q*_c = {summary['q_star_c']:.4f}, t*_c = {summary['t_star_c']:.4f}")
    _log(args, f"grokphase: teacher-student theory ({args.approximation}), {s2.size} sigma^2 x {betas.size} beta "
               f"in {elapsed:.2f} s")
    return _finish(args, ds, summary, lines)


# ------------------------------------------------------------------------------------------------
# theory finite-n
# ------------------------------------------------------------------------------------------------


def cmd_theory_finite_n(args) -> int:
    s2 = parse_list(args.s2, "--s2") if args.s2 is not None else np.array([TeacherStudentParams.s2])
    if np.unique(s2).size != s2.size:
        raise ParameterError(f"--s2: values must be distinct, got {args.s2}")
    if args.eps == 0.0:
        raise ParameterError("--eps must be nonzero (the cubic learned fraction divides by it)")
    base = TeacherStudentParams(N=args.N, n=args.n, d=args.d, s2=s2, sa2=args.sa2, sw2=args.sw2, eps=args.eps)
    alpha = args.beta if args.alpha is None else args.alpha
    try:
        point = scaled_point(base, args.beta, alpha)
        for name in ("n", "d"):
            if float(getattr(point, name)) < 2:
                raise ParameterError(f"{name} = {float(getattr(point, name)):g} after rounding; the training set needs >= 2")
    except ParameterError as exc:
        if args.beta == 1.0 and alpha == 1.0:
            raise
        raise ParameterError(f"--beta {plain(args.beta)}, --alpha {plain(alpha)}: the scaled model is out of range: "
                             f"{exc}") from None
    datasets = _dataset_indices(args.datasets)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(FiniteNConfig) if getattr(args, f.name) is not None}
    try:
        config = FiniteNConfig(**given)
    except ParameterError as exc:           # name the option, not the dataclass field
        msg = str(exc)
        field = msg.split(" ", 1)[0]
        raise ParameterError(f"--{field.replace('_', '-')} {msg.split(' ', 1)[1]}" if field in given else msg) from None
    t0 = time.perf_counter()
    with _progress(args, "finite-n theory") as bar:
        bar.unit = "solve"
        ds = run_finite_n(point, datasets, seed=args.seed, sampler_seed=args.sampler_seed, config=config,
                          retry=not args.no_retry, beta=args.beta, alpha=alpha, out=args.out, progress=bar,
                          one_loop=args.one_loop)
    elapsed = time.perf_counter() - t0
    summary, lines = finite_n_summary(ds)
    _log(args, f"grokphase: finite-n theory, {ds.sizes['s2']} sigma^2 x {ds.sizes['dataset']} data sets "
               f"(N = {float(point.N):g}, n = {float(point.n):g}, d = {float(point.d):g}) in {elapsed:.1f} s")
    if args.out:
        summary["out"] = args.out          # written (atomically) by run_finite_n after every solve
    _emit(args, summary, lines)
    return 0


def finite_n_summary(ds) -> tuple[dict, list[str]]:
    """(JSON summary, text lines) of a finite-n result: per sigma^2 the means over converged data sets with
    their standard errors and the EK theory; per (sigma^2, data set) the learned fractions and status."""
    points, rows = [], []
    lines = [f"{'s2':>8} {'linear (finite n)':>19} {'EK':>7} {'cubic (finite n)':>19} {'EK':>7} {'converged':>10}"]
    for j, v in enumerate(ds["s2"].values):
        pt = {"s2": float(v), "s2_reference": float(ds["s2_reference"].values[j])}
        for k in ("linear_learned", "linear_learned_sem", "cubic_learned", "cubic_learned_sem", "droplet_mass",
                  "droplet_mass_sem", "ek_linear_learned", "ek_cubic_learned"):
            pt[k] = float(ds[k].values[j])
        pt["n_converged"], pt["n_solved"] = int(ds["n_converged"].values[j]), int(ds["n_solved"].values[j])
        pt["failed"] = [int(i) for i, ok, done in zip(ds["dataset"].values, ds["converged"].values[j],
                                                       ds["solved"].values[j]) if done and not ok]
        loop = "linear_corrected" in ds
        if loop:
            for k in ("linear_one_loop", "cubic_one_loop", "linear_corrected", "cubic_corrected"):
                pt[k], pt[f"{k}_sem"] = float(ds[k].values[j]), float(ds[f"{k}_sem"].values[j])
        points.append(pt)
        lines.append(f"{v:8.4g} {pt['linear_learned']:10.4f}±{pt['linear_learned_sem']:<8.4f} {pt['ek_linear_learned']:7.4f} "
                     f"{pt['cubic_learned']:10.4f}±{pt['cubic_learned_sem']:<8.4f} {pt['ek_cubic_learned']:7.4f} "
                     f"{pt['n_converged']:>4}/{pt['n_solved']}")
        if loop:
            lines.append(f"{'+ 1/N':>8} {pt['linear_corrected']:10.4f}±{pt['linear_corrected_sem']:<8.4f} {'':7} "
                         f"{pt['cubic_corrected']:10.4f}±{pt['cubic_corrected_sem']:<8.4f}   (one loop: linear "
                         f"{pt['linear_one_loop']:+.4f}, cubic {pt['cubic_one_loop']:+.4f})")
        for k, i in enumerate(ds["dataset"].values):
            if not bool(ds["solved"].values[j, k]):
                continue
            rows.append({"s2": float(v), "dataset": int(i),
                         **{name: float(ds[name].values[j, k]) for name in (
                             "linear_learned_dataset", "linear_learned_mc_error", "cubic_learned_dataset",
                             "cubic_learned_mc_error", "droplet_mass_dataset", "residual", "seconds")},
                         **{name: float(ds[name].values[j, k]) for name in (
                             "linear_one_loop_dataset", "cubic_one_loop_dataset") if name in ds},
                         "converged": bool(ds["converged"].values[j, k]), "retried": bool(ds["retried"].values[j, k]),
                         "start": STARTS.get(int(ds["start"].values[j, k]), "none")})
    failed = [f"s2 = {r['s2']:g} data set {r['dataset']} (|grad G|/|y| = {r['residual']:.3g})" for r in rows
              if not r["converged"]]
    if failed:
        lines.append("not converged (left out of the means): " + "; ".join(failed))
    retried = [f"s2 = {r['s2']:g} data set {r['dataset']} ({r['start']})" for r in rows if r["retried"]]
    if retried:
        lines.append("retried: " + "; ".join(retried))
    return {"points": points, "datasets": rows, "N": float(ds.attrs["N"]), "n": float(ds.attrs["n"]),
            "d": float(ds.attrs["d"]), "sa2": float(ds.attrs["sa2"])}, lines


# ------------------------------------------------------------------------------------------------
# theory gp-teacher-student
# ------------------------------------------------------------------------------------------------


def cmd_theory_gp(args) -> int:
    family = _family(args)
    if family is not None:
        from grokphase.cli.single_index import run_family_gp
        _refuse(args, family, ("corrections",))
        return run_family_gp(args, family)
    corrections = check_corrections(args.corrections)
    base = _base_params(args)
    s2 = _s2_values(args)
    if args.n_sweep is not None:
        n = parse_range(args.n_sweep, "--n-sweep", positive=True)[0]
    elif args.plot:
        n = np.geomspace(10.0, 1e10, 91)
    else:
        n = np.array([args.n])
    ds = build_gp_learning_curve(base, s2, n, approximation=args.approximation, corrections=corrections)
    ridge = "ridge" in corrections
    points = [{"s2": float(a), "n": float(b), "linear_learned": float(ds["linear_learned"].sel(s2=a, n=b)),
               "cubic_learned": float(ds["cubic_learned"].sel(s2=a, n=b))} for a in s2 for b in n]
    for pt in points:
        pt["learned"] = _learned(pt["linear_learned"], pt["cubic_learned"])
        if ridge:
            for k in ("linear_learned", "cubic_learned", "kappa"):
                pt[f"ridge_{k}"] = float(ds[f"ridge_{k}"].sel(s2=pt["s2"], n=pt["n"]))
    nh = ds["n_half_cubic"].values
    nl = ds["n_half_linear"].values
    summary = {"lambda1": ds.attrs["lambda1"], "lambda3": ds.attrs["lambda3"], "lambda13": ds.attrs["lambda13"],
               "n_half_cubic": float(nh[0]) if nh.size == 1 else nh.tolist(),
               "n_half_linear": float(nl[0]) if nl.size == 1 else nl.tolist(),
               "approximation": args.approximation, "learning_curve": "equivalent kernel", "points": points}
    what = ("exact Rayleigh quotients" if args.approximation == "exact"
            else "concentrated |w_perp|^2 = sw2, u -> 0 kernel of the paper's reduction")
    lines = [f"lambda1 = {summary['lambda1']:.6e}, lambda3 = {summary['lambda3']:.6e} ({what})",
             *(f"s2 = {a:g}: cubic half learned at n = {h:.4e}, linear at n = {l_:.4e}" for a, h, l_ in zip(s2, nh, nl)),
             f"{'s2':>9} {'n':>12} {'linear':>9} {'cubic':>11}" + (f" {'ridge lin':>9} {'ridge cub':>11}" if ridge else ""),
             *(f"{p['s2']:9.4f} {p['n']:12.5g} {p['linear_learned']:9.5f} {p['cubic_learned']:11.4e}"
               + (f" {p['ridge_linear_learned']:9.5f} {p['ridge_cubic_learned']:11.4e}" if ridge else "") for p in points)]
    if ridge:
        summary["corrections"] = list(corrections)
    return _finish(args, ds, summary, lines)


# ------------------------------------------------------------------------------------------------
# theory phase-diagram teacher-student
# ------------------------------------------------------------------------------------------------


def cmd_phase_diagram_ts(args) -> int:
    family = _family(args)
    if family is not None:
        from grokphase.cli.single_index import run_family_phase_diagram
        _refuse(args, family, ("corrections",))
        return run_family_phase_diagram(args, family)
    corrections = check_corrections(args.corrections)
    if corrections and args.limit:
        raise ParameterError("--corrections: the finite-n corrections vanish in the scaling limit (n -> infinity); "
                             "drop --limit to get them on the finite-d theory")
    allowed = ts.PARAM_NAMES + ts.DERIVED_AXES
    x = parse_axis(args.x, allowed, "--x")
    y = parse_axis(args.y, allowed, "--y")
    base = _base_params(args)
    _check_scaled(lambda: base.scaled(alpha=args.alpha, beta=args.beta), args, [args.beta])
    t0 = time.perf_counter()
    with _progress(args, f"phase diagram {y.name} x {x.name}") as bar:
        ds = build_teacher_student_phase_diagram(base, x, y, limit=args.limit, beta=args.beta, alpha=args.alpha,
                                                 sa2_times_N=8.0 if args.sa2 is None else None,
                                                 approximation=args.approximation, progress=bar,
                                                 corrections=corrections)
    elapsed = time.perf_counter() - t0
    counts = {label: int((ds["phase"].values == code).sum()) for code, label in ts.PHASE_LABELS.items()}
    boundary = [{y.name: float(yv), x.name: (None if not math.isfinite(xv) else float(xv))}
                for yv, xv in zip(y.values, ds["boundary_x"].values)]
    summary = {"x": x.name, "y": y.name, "shape": [int(y.values.size), int(x.values.size)],
               "solver": "limit" if args.limit else "finite-d", "approximation": args.approximation,
               "phase_counts": counts,
               "cubic_learned_range": [float(ds["cubic_learned"].min()), float(ds["cubic_learned"].max())],
               "boundary": boundary, "seconds": elapsed}
    if corrections:
        summary["corrections"] = list(corrections)
        summary["ridge_phase_counts"] = {label: int((ds["ridge_phase"].values == code).sum())
                                         for code, label in ts.PHASE_LABELS.items()}
        summary["ridge_cubic_learned_range"] = [float(ds["ridge_cubic_learned"].min()),
                                                float(ds["ridge_cubic_learned"].max())]
    lines = [f"phase diagram {y.name} x {x.name} ({y.values.size} x {x.values.size}, {summary['solver']}, "
             f"{args.approximation}) in {elapsed:.2f} s",
             "phase counts: " + ", ".join(f"{k}: {v}" for k, v in counts.items()),
             *(["renormalised ridge (finite n), phase counts: "
                + ", ".join(f"{k}: {v}" for k, v in summary["ridge_phase_counts"].items())] if corrections else []),
             f"limit transition ({args.approximation}; {x.name} at each {y.name}):",
             *(f"  {y.name} = {b[y.name]:.6g}: {x.name}_c = {b[x.name]}" for b in boundary[:: max(1, len(boundary) // 8)])]
    return _finish(args, ds, summary, lines)


# ------------------------------------------------------------------------------------------------
# theory modular
# ------------------------------------------------------------------------------------------------


def _add_modular_params(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model parameters (defaults: the paper's Fig. 3)")
    M = ModularParams              # the defaults live in the dataclass (Fig. 3)
    g.add_argument("--N", type=_positive, default=M.N, help=f"hidden width (default {M.N:g})")
    g.add_argument("--P", type=_positive, default=M.P, help=f"modulus (default {M.P:g}; prime for the theory)")
    g.add_argument("--s2", type=_positive, default=None, help=f"sigma^2 (default {M.s2:g})")
    g.add_argument("--sa2", type=_positive, default=None,
                   help="readout prior a ~ N(0, sa2/N) (default 0.002/N, following N when N varies)")
    g.add_argument("--gamma", type=_positive, default=M.gamma, help=f"sextic Fourier penalty strength (default {M.gamma:g})")


_BETA_HELP = ("scaling along which the chosen convention's P -> infinity solution is invariant: paper (Table 1) "
              "N->b^2 N, P->sqrt(b) P, sa2->sa2/b, s2->s2/b; network N->b N, P->sqrt(b) P, sa2->sa2/b^2, s2->s2/b")


def _add_convention(p: argparse.ArgumentParser) -> None:
    p.add_argument("--convention", choices=("paper", "network"), default="paper",
                   help="paper: mode weight e^{-S_k}, lambda = sa2 <Phi Psi> (eq. 38, default); network: the "
                        "network's own normalisation, e^{-2 S_k} per complex mode pair and lambda = 4 P^2 sa2 "
                        "<Phi Psi> (reduces to the NNGP eigenvalue 4 sa2 at u -> 0)")


def _modular_base(args):

    return ModularParams(N=args.N, P=args.P, s2=ModularParams.s2 if args.s2 is None else args.s2, sa2=args.sa2, gamma=args.gamma)


def cmd_theory_modular(args) -> int:

    base = _modular_base(args)
    _check_scaled(lambda: base.scaled(args.beta, args.convention), args, [args.beta])
    if args.s2_sweep is not None:
        if args.s2 is not None:

            raise ParameterError("give either --s2 or --s2-sweep, not both")
        s2 = parse_range(args.s2_sweep, "--s2-sweep", positive=True)[0]
    elif args.plot:
        s2 = np.linspace(0.1, 0.3, 201)
    else:
        s2 = np.array([ModularParams.s2 if args.s2 is None else args.s2])
    density_s2 = parse_list(args.density_s2, "--density-s2") if args.density_s2 else None
    t0 = time.perf_counter()
    with _progress(args, f"modular theory ({args.method})") as bar:
        ds = build_modular_sweep(base, s2, method=args.method, convention=args.convention, beta=args.beta,
                                 density_s2=density_s2, progress=bar)
    elapsed = time.perf_counter() - t0
    points, lines = [], [f"{'s2':>9} {'u':>10} {'a':>10} {'1+a':>8} {'droplet':>8} {'phase':>8}  (P -> inf: a, phase)"]
    for i, v in enumerate(s2):
        row = ds.isel(s2=i)
        pt = {"s2": float(v), "u": float(row["u"]), "a": float(row["a"]), "target_component": float(row["target_component"]),
              "droplet_fraction": float(row["droplet_fraction"]), "phase": _phase_label(row["phase"]),
              "status": _status_label(row["status"]), "lam": float(row["lam"]), "phi_plus": float(row["phi_plus"]),
              "action_gap": float(row["action_gap"]), "limit_a": float(row["limit_a"]),
              "limit_phase": _phase_label(row["limit_phase"])}
        points.append(pt)
        lines.append(f"{v:9.4f} {pt['u']:10.5f} {pt['a']:10.6f} {pt['target_component']:8.5f} "
                     f"{pt['droplet_fraction']:8.3g} {pt['phase']:>8}  ({pt['limit_a']:.6f}, {pt['limit_phase']})")
    summary: dict[str, Any] = {"method": args.method, "convention": args.convention, "points": points}
    if args.transitions:
        for k in ("gmfl1_s2", "gmfl2_s2", "spinodal_s2", "supercooled_spinodal_s2"):
            summary[k] = float(ds.attrs[k])
        def fmt(k):
            return f"{summary[k]:.6g}" + (" (<= 0: never reached)" if summary[k] <= 0 else "")

        lines.append(f"P -> infinity: GMFL-I below s2 = {fmt('gmfl1_s2')}, GMFL-II below s2 = {fmt('gmfl2_s2')}; "
                     f"ordered branch ends (spinodal) at s2 = {fmt('spinodal_s2')}")
    _log(args, f"grokphase: modular theory ({args.method}, {args.convention} convention), {s2.size} sigma^2 "
               f"in {elapsed:.2f} s")
    return _finish(args, ds, summary, lines)


def cmd_theory_gp_modular(args) -> int:

    P = parse_list(args.Ps, "--Ps") if args.Ps else np.array([args.P])
    sa2 = args.sa2 if args.sa2 is not None else 0.002 / args.N
    s2 = ModularParams.s2 if args.s2 is None else args.s2
    n = parse_range(args.n_sweep, "--n-sweep", positive=True)[0] if args.n_sweep else np.geomspace(1.0, 1e12, 97)
    ds = build_modular_gp_curve(P, sa2, s2, n)
    summary = {"P": P.tolist(), "sa2": sa2, "s2": s2, "n_half": ds["n_half"].values.tolist(),
               "n_half_over_P2": (ds["n_half"].values / P**2).tolist(),
               "eigenvalues": ds["eigenvalues"].values.tolist(), "multiplicities": ds["multiplicities"].values.tolist()}
    lines = [f"P = {p:g}: NNGP eigenvalues {ev[0]:.4e} (x1), {ev[1]:.4e} (x{int(m[1])}), {ev[2]:.4e} (x{int(m[2])}, target); "
             f"target half learned at n = {nh:.4e} = {nh / p**2:.4g} P^2"
             for p, ev, m, nh in zip(P, ds["eigenvalues"].values, ds["multiplicities"].values, ds["n_half"].values)]
    return _finish(args, ds, summary, lines)


def cmd_phase_diagram_modular(args) -> int:

    x = parse_axis(args.x, md.PARAM_NAMES, "--x")
    y = parse_axis(args.y, md.PARAM_NAMES, "--y")
    base = _modular_base(args)
    _check_scaled(lambda: base.scaled(args.beta, args.convention), args, [args.beta])
    t0 = time.perf_counter()
    with _progress(args, f"modular phase diagram {y.name} x {x.name} ({args.method})") as bar:
        ds = build_modular_phase_diagram(base, x, y, method=args.method, convention=args.convention,
                                         beta=args.beta, sa2_times_N=0.002 if args.sa2 is None else None,
                                         progress=bar)
    elapsed = time.perf_counter() - t0
    counts = {label: int((ds["phase"].values == code).sum()) for code, label in _phase_labels().items()}
    limit_counts = {label: int((ds["limit_phase"].values == code).sum()) for code, label in _phase_labels().items()}
    summary = {"x": x.name, "y": y.name, "shape": [int(y.values.size), int(x.values.size)], "method": args.method,
               "convention": args.convention, "phase_counts": counts, "limit_phase_counts": limit_counts,
               "target_component_range": [float(ds["target_component"].min()), float(ds["target_component"].max())],
               "seconds": elapsed}
    lines = [f"modular phase diagram {y.name} x {x.name} ({y.values.size} x {x.values.size}, {args.method}, "
             f"{args.convention} convention) in {elapsed:.2f} s",
             "finite-P phase counts: " + ", ".join(f"{k}: {v}" for k, v in counts.items()),
             "P -> infinity phase counts: " + ", ".join(f"{k}: {v}" for k, v in limit_counts.items())]
    return _finish(args, ds, summary, lines)


def _phase_labels():

    return PHASE_LABELS
